using TelemetryAgent.Profiling.Startup;
using TelemetryAgent.Protocol.Messages;
using WireImport = TelemetryAgent.Protocol.Messages.Import;
using WireFirstInvocation = TelemetryAgent.Protocol.Messages.FirstInvocation;

namespace TelemetryAgent.Sessions;

/// <summary>
/// The start-up phase's messages (Stats fields 11 and 12) as model values, checked: a parent is an earlier entry of
/// the same list, times do not run backwards, and the lists are bounded. A violation throws
/// <see cref="InvalidDataException"/>, which the session turns into <c>InvalidRecord</c>.
/// </summary>
internal static class StartupTranslation
{
    /// <summary>The most imports one tree may list (the shim sends at most a few thousand, under the frame limit).</summary>
    public const int MaxImports = 100_000;

    /// <summary>First invocations kept per process (the shim times 3 by default, at most 1000).</summary>
    public const int MaxFirstInvocations = 1000;

    public static StartupPhase ToStartupPhase(Startup startup)
    {
        if (startup.ReadyNs < startup.ShimStartNs)
            throw new InvalidDataException($"start-up ready at {startup.ReadyNs} ns, before the shim started at {startup.ShimStartNs} ns");
        return new StartupPhase(
            ToRule(startup.ReadyRule),
            startup.ReadyTarget,
            Math.Max(0, startup.ProcessStartNs),
            Math.Max(0, startup.ProcessStartResolutionNs),
            startup.ShimStartNs,
            startup.ReadyNs,
            Math.Max(0, startup.InterpreterCpuNs),
            Math.Max(0, startup.ShimStartCpuNs),
            ToTree(startup.Imports),
            startup.ImportsDropped,
            (int)Math.Min(startup.FirstInvocationsPlanned, MaxFirstInvocations));
    }

    public static Profiling.Startup.FirstInvocation ToFirstInvocation(WireFirstInvocation invocation)
    {
        if (invocation.Number == 0) throw new InvalidDataException("a first invocation numbered 0");
        if (invocation.EndNs < invocation.StartNs)
            throw new InvalidDataException($"first invocation {invocation.Number} ends before it starts");
        // A trigger that is not one of the conventions' values (a newer shim's) is left out, not an error.
        var trigger = Profiling.Startup.FirstInvocation.Triggers.Contains(invocation.Trigger) ? invocation.Trigger : "";
        return new Profiling.Startup.FirstInvocation((int)Math.Min(invocation.Number, int.MaxValue), invocation.StartNs,
            invocation.EndNs, invocation.Raised, ToTree(invocation.Imports), trigger);
    }

    private static ImportTree ToTree(IReadOnlyList<WireImport> imports)
    {
        if (imports.Count == 0) return ImportTree.Empty;
        if (imports.Count > MaxImports) throw new InvalidDataException($"{imports.Count} imports in one tree, more than {MaxImports}");
        var records = new ImportRecord[imports.Count];
        for (var index = 0; index < imports.Count; index++)
        {
            var import = imports[index];
            // parent is 1-based on the wire (0: none) and names an earlier entry.
            if (import.Parent > index)
                throw new InvalidDataException($"import {index + 1} ({import.Module}) names parent {import.Parent}, which is not an earlier entry");
            if (import.EndNs < import.StartNs)
                throw new InvalidDataException($"import {index + 1} ({import.Module}) ends before it starts");
            if (import.FindNs < 0 || import.LoadNs < 0 || import.ExecNs < 0)
                throw new InvalidDataException($"import {index + 1} ({import.Module}) has a negative time");
            records[index] = new ImportRecord(import.Module, (int)import.Parent - 1, import.StartNs, import.EndNs,
                import.FindNs, import.LoadNs, import.ExecNs, import.Failed);
        }
        return new ImportTree(records);
    }

    private static ReadyRule ToRule(Startup.Types.ReadyRule rule) => rule switch
    {
        Startup.Types.ReadyRule.ReadyOnFunction => ReadyRule.OnFunction,
        Startup.Types.ReadyRule.ReadyLambdaHandler => ReadyRule.LambdaHandler,
        Startup.Types.ReadyRule.ReadyMarked => ReadyRule.Marked,
        Startup.Types.ReadyRule.ReadyMainModuleEnd => ReadyRule.MainModuleEnd,
        Startup.Types.ReadyRule.ReadyExit => ReadyRule.Exit,
        _ => ReadyRule.Unknown,
    };
}

using System.Globalization;
using System.Text;
using TelemetryAgent.Profiling;
using TelemetryAgent.Profiling.Formats;
using TelemetryAgent.Profiling.Startup;

namespace TelemetryAgent.Cli;

/// <summary>The start-up part of <see cref="ConsoleSummary"/>: per process with a start-up, its total and phases, the
/// costliest imports by self time, and the first invocation against the median of the later ones.</summary>
internal static class StartupConsoleLines
{
    public const int CostliestImports = 10;

    public static void Append(StringBuilder text, IReadOnlyList<ProcessProfile> processes)
    {
        var culture = CultureInfo.InvariantCulture;
        foreach (var process in processes)
        {
            if (process.Startup is not { } startup) continue;
            var imports = startup.Imports;
            text.Append('\n').Append(culture, $"Start-up of {ProfileLabels.Process(process)}: {TimeFormat.Nanoseconds(startup.TotalNs)} ")
                .Append(culture, $"to ready ({ReadyText(startup)})\n");
            text.Append("  ");
            if (startup.ProcessStartKnown) text.Append(culture, $"interpreter {TimeFormat.Nanoseconds(startup.InterpreterNs)}, ");
            text.Append(culture, $"imports {TimeFormat.Nanoseconds(imports.TotalNs)} ({imports.Imports.Count:N0} modules")
                .Append(startup.ImportsDropped > 0 ? string.Create(culture, $", {startup.ImportsDropped:N0} more not listed") : "")
                .Append(culture, $"), other {TimeFormat.Nanoseconds(startup.OtherNs)}\n");
            var costliest = imports.CostliestBySelfTime(CostliestImports);
            if (costliest.Count > 0)
            {
                text.Append(culture, $"  {costliest.Count} costliest imports by self time:\n");
                ConsoleSummary.AppendTable(text, ["self", "cumulative", "module"], numericColumns: 2, [.. costliest.Select(import => new[]
                {
                    TimeFormat.Nanoseconds(import.SelfNs),
                    TimeFormat.Nanoseconds(import.CumulativeNs),
                    import.Failed ? import.Module + " (failed)" : import.Module,
                })], indent: "    ");
            }
            AppendFirstInvocation(text, process.FirstInvocations);
        }
    }

    private static void AppendFirstInvocation(StringBuilder text, IReadOnlyList<FirstInvocation> invocations)
    {
        var culture = CultureInfo.InvariantCulture;
        if (FirstInvocationComparison.Of(invocations) is { } comparison)
        {
            text.Append(culture, $"  First invocation: {TimeFormat.Nanoseconds(comparison.First.DurationNs)}; ")
                .Append(culture, $"median of the {comparison.Later} later: {TimeFormat.Nanoseconds(comparison.LaterMedianNs)}");
            if (comparison.ImportsOnlyInFirst.Count > 0)
            {
                text.Append(culture, $"; imports only in the first: {TimeFormat.Nanoseconds(comparison.ImportsOnlyInFirstNs)} (")
                    .Append(string.Join(", ", comparison.ImportsOnlyInFirst.Take(5).Select(import => import.Module)))
                    .Append(comparison.ImportsOnlyInFirst.Count > 5 ? ", …)" : ")");
            }
            text.Append('\n');
            if (comparison.FunctionsOnlyInFirst is { Count: > 0 } functions)
            {
                text.Append(culture, $"  Functions only the first ran: {functions.Count:N0}, {TimeFormat.Nanoseconds(comparison.FunctionsOnlyInFirstSelfNs)} of self time (")
                    .Append(string.Join(", ", functions.Take(5).Select(function => $"{function.Function.QualifiedName} {TimeFormat.Nanoseconds(function.SelfNs)}")))
                    .Append(functions.Count > 5 ? ", …)\n" : ")\n");
            }
        }
        else if (invocations.FirstOrDefault(invocation => invocation.Number == 1) is { } first)
        {
            text.Append(culture, $"  First invocation: {TimeFormat.Nanoseconds(first.DurationNs)} (no later one recorded)\n");
        }
    }

    private static string ReadyText(StartupPhase startup) => startup.Rule switch
    {
        ReadyRule.OnFunction => $"first call of {startup.ReadyTarget}",
        ReadyRule.LambdaHandler => $"first call of the Lambda handler {startup.ReadyTarget}",
        ReadyRule.Marked => "telemetry_shim.mark_ready()",
        ReadyRule.MainModuleEnd => "end of the main module",
        ReadyRule.Exit => "program exit",
        _ => "unknown rule",
    };
}

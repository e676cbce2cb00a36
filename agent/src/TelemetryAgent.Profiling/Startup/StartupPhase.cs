namespace TelemetryAgent.Profiling.Startup;

/// <summary>What ended the start-up phase (proto/PROTOCOL.md "Start-up").</summary>
public enum ReadyRule
{
    Unknown,
    /// <summary>The first call of the function <c>--ready-on</c> / <c>TELEMETRY_SHIM_READY_ON</c> names.</summary>
    OnFunction,
    /// <summary>The first call of AWS Lambda's handler (<c>_HANDLER</c>).</summary>
    LambdaHandler,
    /// <summary><c>telemetry_shim.mark_ready()</c>.</summary>
    Marked,
    /// <summary>The main module's code ended.</summary>
    MainModuleEnd,
    /// <summary>The program exited before any other rule applied.</summary>
    Exit,
}

/// <summary>
/// A process's start-up: from the process's start (the kernel's start time, to <see cref="ProcessStartResolutionNs"/>)
/// through the interpreter's own start until the shim began, then the imports until ready. Times are on the shim's
/// monotonic clock (the profile's <see cref="ClockMapping"/> turns them into wall time). Never changes once made.
/// </summary>
public sealed record StartupPhase(
    ReadyRule Rule,
    string ReadyTarget,
    long ProcessStartNs,
    long ProcessStartResolutionNs,
    long ShimStartNs,
    long ReadyNs,
    long InterpreterCpuNs,
    long ShimStartCpuNs,
    ImportTree Imports,
    long ImportsDropped,
    int FirstInvocationsPlanned)
{
    public bool ProcessStartKnown => ProcessStartNs > 0 && ProcessStartNs <= ShimStartNs;

    /// <summary>Where the phase begins: the process's start when known, else the shim's.</summary>
    public long BeginNs => ProcessStartKnown ? ProcessStartNs : ShimStartNs;

    /// <summary>Process start (or the shim's start, when unknown) to ready.</summary>
    public long TotalNs => Math.Max(0, ReadyNs - BeginNs);

    /// <summary>The interpreter's own start (initialisation, site, sitecustomize, the shim's import) before the shim began; 0 when unknown.</summary>
    public long InterpreterNs => ProcessStartKnown ? ShimStartNs - ProcessStartNs : 0;

    /// <summary>From the shim's start to ready, outside imports (the program's own top-level code, waiting).</summary>
    public long OtherNs => Math.Max(0, ReadyNs - ShimStartNs - Imports.TotalNs);

    /// <summary>How the rule is written in the outputs, e.g. <c>on_function</c>.</summary>
    public static string RuleName(ReadyRule rule) => rule switch
    {
        ReadyRule.OnFunction => "on_function",
        ReadyRule.LambdaHandler => "lambda_handler",
        ReadyRule.Marked => "mark_ready",
        ReadyRule.MainModuleEnd => "main_module_end",
        ReadyRule.Exit => "exit",
        _ => "unknown",
    };
}

/// <summary>
/// One of the first calls of the ready-on function, numbered from 1 (the call that made the program ready);
/// <paramref name="Trigger"/> is its <c>faas.trigger</c> (http, pubsub, datasource, timer, other), or empty when not known.
/// </summary>
public sealed record FirstInvocation(int Number, long StartNs, long EndNs, bool Raised, ImportTree Imports, string Trigger = "")
{
    /// <summary>The values of <c>faas.trigger</c> in the OpenTelemetry semantic conventions.</summary>
    public static readonly IReadOnlySet<string> Triggers = new HashSet<string>(StringComparer.Ordinal) { "http", "pubsub", "datasource", "timer", "other" };

    public long DurationNs => Math.Max(0, EndNs - StartNs);

    /// <summary>
    /// Its exact call tree (<see cref="InvocationCallTree"/>): a root whose child is the ready-on function; null when
    /// it was not recorded (modes other than full, or a shim that does not say which function is the ready-on one).
    /// </summary>
    public CallNode? CallTree { get; init; }

    /// <summary>Calls and self time per function in <see cref="CallTree"/> (every path summed); empty without one.</summary>
    public IReadOnlyDictionary<FunctionInfo, FunctionInInvocation> Functions()
    {
        var functions = new Dictionary<FunctionInfo, FunctionInInvocation>();
        if (CallTree is null) return functions;
        var pending = new Stack<CallNode>(CallTree.Children);
        while (pending.TryPop(out var node))
        {
            var sum = functions.GetValueOrDefault(node.Function!) ?? new FunctionInInvocation(node.Function!, 0, 0);
            functions[node.Function!] = sum with { Calls = sum.Calls + node.Calls, SelfNs = sum.SelfNs + node.SelfNs };
            foreach (var child in node.Children) pending.Push(child);
        }
        return functions;
    }
}

/// <summary>A function's calls and self time within one invocation.</summary>
public sealed record FunctionInInvocation(FunctionInfo Function, long Calls, long SelfNs);

/// <summary>The first invocation against the later ones: its time, their median, and the imports only it made.</summary>
/// <param name="FunctionsOnlyInFirst">
/// The functions the first invocation ran and no later one did, costliest self time first; null unless every one of
/// them has its call tree.
/// </param>
public sealed record FirstInvocationComparison(FirstInvocation First, int Later, long LaterMedianNs, IReadOnlyList<ImportRecord> ImportsOnlyInFirst,
    IReadOnlyList<FunctionInInvocation>? FunctionsOnlyInFirst = null)
{
    /// <summary>What the first paid beyond a typical later one.</summary>
    public long ExtraNs => First.DurationNs - LaterMedianNs;

    /// <summary>The time of the imports only the first made (top-level ones, nested ones counted in them).</summary>
    public long ImportsOnlyInFirstNs { get; } = ImportsOnlyInFirst.Where(record => record.Parent < 0).Sum(record => record.CumulativeNs);

    /// <summary>The self time of <see cref="FunctionsOnlyInFirst"/> in the first invocation (0 without call trees).</summary>
    public long FunctionsOnlyInFirstSelfNs => FunctionsOnlyInFirst?.Sum(function => function.SelfNs) ?? 0;

    /// <summary>Null without a first invocation and at least one later.</summary>
    public static FirstInvocationComparison? Of(IReadOnlyList<FirstInvocation> invocations)
    {
        ArgumentNullException.ThrowIfNull(invocations);
        var first = invocations.FirstOrDefault(invocation => invocation.Number == 1);
        var later = invocations.Where(invocation => invocation.Number > 1).Select(invocation => invocation.DurationNs).Order().ToArray();
        if (first is null || later.Length == 0) return null;
        var median = later.Length % 2 == 1 ? later[later.Length / 2] : (later[later.Length / 2 - 1] + later[later.Length / 2]) / 2;
        var laterModules = invocations.Where(invocation => invocation.Number > 1)
            .SelectMany(invocation => invocation.Imports.Imports).Select(record => record.Module).ToHashSet(StringComparer.Ordinal);
        var onlyFirst = first.Imports.Imports.Where(record => !laterModules.Contains(record.Module)).ToArray();
        IReadOnlyList<FunctionInInvocation>? functionsOnlyFirst = null;
        if (invocations.All(invocation => invocation.CallTree is not null))
        {
            var laterFunctions = invocations.Where(invocation => invocation.Number > 1)
                .SelectMany(invocation => invocation.Functions().Keys).ToHashSet();
            functionsOnlyFirst = [.. first.Functions().Values.Where(function => !laterFunctions.Contains(function.Function))
                .OrderByDescending(function => function.SelfNs).ThenBy(function => function.Function.Label, StringComparer.Ordinal)];
        }
        return new FirstInvocationComparison(first, later.Length, median, onlyFirst, functionsOnlyFirst);
    }
}

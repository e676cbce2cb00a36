using System.Diagnostics.Metrics;
using TelemetryAgent.Profiling;
using static TelemetryAgent.Export.Python.PythonTelemetryNames;

namespace TelemetryAgent.Export.Python;

/// <summary>
/// The metrics of one Python process: observable instruments that read the latest frozen profile (a checkpoint or
/// the completed profile) when the SDK collects, never one measurement per event. All are cumulative since HELLO.
/// </summary>
/// <remarks>
/// Functions are a bounded set: the first <see cref="MaxFunctions"/> functions by self time are chosen at the first
/// export that sees them and keep their series for the life of the process (a series that comes and goes reads as a
/// reset to cumulative backends); every other function is summed in one series named <see cref="OtherFunctions"/>.
/// Once the set is full, which the first export of any real program fills, the other series only grows.
/// </remarks>
internal sealed class ProcessMetrics : IDisposable
{
    public const int MaxFunctions = 50;

    /// <summary>
    /// Series of <see cref="Exceptions"/> beyond which the SDK sums measurements in one overflow series
    /// (<c>otel.metric.overflow = true</c>): distinct (type, fate) pairs of one process rarely come close.
    /// </summary>
    public const int MaxExceptionSeries = 512;

    private readonly HashSet<FunctionKey> _chosen = [];
    private volatile Snapshot? _snapshot;

    public ProcessMetrics()
    {
        Meter = new Meter(Scope, typeof(ProcessMetrics).Assembly.GetName().Version?.ToString());
        Meter.CreateObservableCounter(FunctionCalls, () => Observe(s => s.Functions, f => f.Calls), "{call}",
            "Calls (PY_START) of the function; generators and coroutines count resumes apart.");
        Meter.CreateObservableCounter(FunctionSelfTime, () => Observe(s => s.Functions, f => f.SelfNs / 1e9), "s",
            "Time spent in the function itself (not in the Python functions it called).");
        Meter.CreateObservableCounter(FunctionTotalTime, () => Observe(s => s.Functions, f => f.TotalNs / 1e9), "s",
            "Time from the function's start to its end, callees included (outermost frame of a recursion only).");
        Meter.CreateObservableCounter(Exceptions, () => Observe(s => s.Exceptions, e => e.Count), "{exception}",
            "Exceptions by type and fate (handled, escaped_thread, escaped_program, unraisable, asyncio_unhandled, in_flight, unknown).");
        Meter.CreateObservableCounter(EventsReceived, () => Single(s => s.Profile.EventsReceived), "{event}",
            "Event records the agent received from the process.");
        Meter.CreateObservableCounter(ShimEventsRecorded, () => Single(s => s.Profile.ShimStats.EventsRecorded), "{event}",
            "Events the shim recorded (its latest report).");
        Meter.CreateObservableCounter(ShimEventsSent, () => Single(s => s.Profile.ShimStats.EventsSent), "{event}",
            "Events the shim sent to the agent.");
        Meter.CreateObservableCounter(ShimEventsDropped, () => Single(s => s.Profile.ShimStats.EventsDropped), "{event}",
            "Events the shim recorded but could not deliver (no agent, a full buffer).");
        Meter.CreateObservableCounter(ShimConnects, () => Single(s => s.Profile.ShimStats.Connects), "{connection}",
            "Connections the shim made to the agent (1 without reconnects).");
        Meter.CreateObservableCounter(ShimCallbackErrors, () => Single(s => s.Profile.ShimStats.CallbackErrors), "{error}",
            "Errors inside the shim's callbacks (each switched the failing part off).");
        Meter.CreateObservableGauge(ShimOverhead, () => Ratio(s => s.Profile.ShimStats.AchievedOverhead), "1",
            "The shim's own estimate of its cost: its time (callbacks and sender) over the process's wall time (burst mode steers it to its budget).");
        Meter.CreateObservableGauge(RecordingScale, () => Ratio(s => s.Profile.Recording.IsSampled ? s.Profile.Windows.Scale : 1.0), "1",
            "What the call metrics were multiplied by: 1 when every call is recorded (full mode), the represented over the recorded time in burst mode.");
    }

    public Meter Meter { get; }

    /// <summary>How many series each instrument can have: the SDK allocates room for that many up front.</summary>
    public static int CardinalityLimit(Instrument instrument) => instrument.Name switch
    {
        FunctionCalls or FunctionSelfTime or FunctionTotalTime => MaxFunctions + 1,
        Exceptions => MaxExceptionSeries,
        _ => 1,
    };

    /// <summary>The profile the next collection reads. Call from one thread at a time (the process's export queue).</summary>
    public void Update(ProcessProfile frozen) => _snapshot = Snapshot.Take(frozen, _chosen);

    public void Dispose() => Meter.Dispose();

    private IEnumerable<Measurement<T>> Observe<TItem, T>(Func<Snapshot, IReadOnlyList<TItem>> items, Func<TItem, T> value)
        where TItem : ISeries where T : struct
    {
        if (_snapshot is not { } snapshot) return [];
        return items(snapshot).Select(item => new Measurement<T>(value(item), item.Tags));
    }

    private IEnumerable<Measurement<long>> Single(Func<Snapshot, long> value)
        => _snapshot is { } snapshot ? [new Measurement<long>(value(snapshot))] : [];

    /// <summary>One measurement tagged with the recording mode (full, burst, exceptions); none when unknown.</summary>
    private IEnumerable<Measurement<double>> Ratio(Func<Snapshot, double?> value)
        => _snapshot is { } snapshot && value(snapshot) is { } ratio
            ? [new Measurement<double>(ratio, new KeyValuePair<string, object?>(RecordingModeAttribute, snapshot.Profile.Recording.Mode))]
            : [];

    private IEnumerable<Measurement<long>> Single(Func<Snapshot, ulong> value)
        => Single(snapshot => (long)Math.Min(value(snapshot), long.MaxValue));

    private interface ISeries
    {
        KeyValuePair<string, object?>[] Tags { get; }
    }

    /// <summary>What identifies a function's series: its attributes.</summary>
    private readonly record struct FunctionKey(string Name, string File, int Line);

    private sealed record FunctionSeries(KeyValuePair<string, object?>[] Tags, long Calls, long SelfNs, long TotalNs) : ISeries;

    private sealed record ExceptionSeries(KeyValuePair<string, object?>[] Tags, long Count) : ISeries;

    /// <summary>The measurements of one frozen profile, computed once rather than at every callback.</summary>
    private sealed record Snapshot(ProcessProfile Profile, IReadOnlyList<FunctionSeries> Functions, IReadOnlyList<ExceptionSeries> Exceptions)
    {
        public static Snapshot Take(ProcessProfile frozen, HashSet<FunctionKey> chosen)
        {
            // Equal attributes are one series: two code objects of one function (rare) are summed.
            var sums = new Dictionary<FunctionKey, (long Calls, long SelfNs, long TotalNs)>();
            long otherCalls = 0, otherSelf = 0, otherTotal = 0;
            var anyOther = false;
            foreach (var stats in frozen.FunctionStatistics()) // by self time, largest first
            {
                var key = KeyOf(stats.Function);
                if (!chosen.Contains(key))
                {
                    if (chosen.Count >= MaxFunctions)
                    {
                        otherCalls += stats.Calls;
                        otherSelf += stats.SelfNs;
                        otherTotal += stats.TotalNs;
                        anyOther = true;
                        continue;
                    }
                    chosen.Add(key);
                }
                var sum = sums.GetValueOrDefault(key);
                sums[key] = (sum.Calls + stats.Calls, sum.SelfNs + stats.SelfNs, sum.TotalNs + stats.TotalNs);
            }
            var functions = sums.Select(entry => new FunctionSeries(
                [
                    new(CodeFunctionName, entry.Key.Name),
                    new(CodeFilePath, entry.Key.File),
                    new(CodeLineNumber, (long)entry.Key.Line),
                ],
                entry.Value.Calls, entry.Value.SelfNs, entry.Value.TotalNs)).ToList();
            if (anyOther) functions.Add(new FunctionSeries([new(CodeFunctionName, OtherFunctions)], otherCalls, otherSelf, otherTotal));

            var exceptions = new Dictionary<(string Type, string Fate), long>();
            foreach (var group in frozen.Exceptions.Groups)
            {
                var type = ExceptionLogs.TypeOf(group);
                foreach (var (fate, count) in FateTally.Of(group.Fates).NonZero())
                {
                    exceptions[(type, fate)] = FateTally.Saturating(exceptions.GetValueOrDefault((type, fate)), count);
                }
            }
            return new Snapshot(frozen, functions, exceptions
                .Select(entry => new ExceptionSeries([new(ExceptionType, entry.Key.Type), new(ExceptionFate, entry.Key.Fate)], entry.Value))
                .ToList());
        }

        /// <summary><c>module.qualname</c> (semconv: fully qualified), the file as Python has it, the first line.</summary>
        private static FunctionKey KeyOf(FunctionInfo function)
            => new(QualifiedName(function), function.FileName, function.FirstLine);
    }

    public static string QualifiedName(FunctionInfo function)
        => function.Module.Length > 0 ? $"{function.Module}.{function.QualifiedName}" : function.QualifiedName;
}

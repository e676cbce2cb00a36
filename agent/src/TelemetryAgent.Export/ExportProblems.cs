using TelemetryAgent.Export.Settings;
using TelemetryAgent.Profiling;

namespace TelemetryAgent.Export;

/// <summary>
/// Says each kind of export problem once in the agent's log, with how to see the rest (the agent's metrics), and counts
/// the final exports of processes that were lost.
/// </summary>
internal sealed class ExportProblems(TextWriter log, OtlpSettings settings)
{
    private readonly HashSet<string> _reported = [];
    private readonly System.Collections.Concurrent.ConcurrentDictionary<OtlpSignal, long> _lost = new();

    /// <summary>Final exports given up, by signal: that process's last metrics or logs never reached the collector.</summary>
    public IReadOnlyDictionary<OtlpSignal, long> LostExports => _lost;

    public void Report(string kind, string message, string countedIn = "telemetry_agent.export.failures")
    {
        lock (_reported)
        {
            if (!_reported.Add(kind)) return;
        }
        lock (log) log.WriteLine($"telemetry-agent: OTLP export: {message}; later failures of this kind are counted in {countedIn}, not logged.");
    }

    /// <summary>Counts a process's final export of <paramref name="signals"/> as lost, and says so (once per signal).</summary>
    public void Lost(ProcessIdentity process, IReadOnlyList<OtlpSignal> signals, string why)
    {
        foreach (var signal in signals)
        {
            _lost.AddOrUpdate(signal, 1, static (_, n) => n + 1);
            var name = signal.ToString().ToLowerInvariant();
            Report($"lost {name}", $"the final {name} of pid {process.Pid} ({process.ServiceName}) could not be sent to {settings.For(signal).Url} " +
                                   $"({why}): they are lost", "telemetry_agent.export.lost");
        }
    }
}

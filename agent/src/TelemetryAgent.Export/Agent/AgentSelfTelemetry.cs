using System.Diagnostics.Metrics;
using OpenTelemetry;
using OpenTelemetry.Metrics;
using TelemetryAgent.Export.Otlp;
using TelemetryAgent.Export.Python;
using TelemetryAgent.Export.Sdk;
using TelemetryAgent.Export.Settings;
using TelemetryAgent.Profiling;

namespace TelemetryAgent.Export.Agent;

/// <summary>
/// The agent's own metrics under its own resource (<c>service.name = telemetry-agent</c>): connections (accepted,
/// open, refused, ended), events received, protocol errors by violation, HELLO pid mismatches, and OTLP export
/// requests, failures and profiles by outcome. Read from the host's counters (<see cref="AgentStatisticsSnapshot"/>) and the exporters' own
/// counters (observable instruments: nothing is recorded per event). Exported every checkpoint interval
/// (serve) and once more at shutdown.
/// </summary>
internal sealed class AgentSelfTelemetry : IDisposable
{
    public const string ServiceName = "telemetry-agent";
    public const string Scope = "telemetry_agent";

    private readonly Meter _meter;
    private readonly OpenTelemetrySdk _sdk;
    private readonly DeliveryTracker _delivery = new();

    public AgentSelfTelemetry(OtlpSettings settings, Func<AgentStatisticsSnapshot> statistics, ExportTransport transport, ExportCounters profiles,
        ExportProblems problems, TimeSpan? interval)
    {
        var version = typeof(AgentSelfTelemetry).Assembly.GetName().Version?.ToString() ?? "0";
        _meter = new Meter(Scope, version);
        _meter.CreateObservableUpDownCounter("telemetry_agent.connections.open", () => statistics().ConnectionsActive, "{connection}",
            "Shim connections open now.");
        _meter.CreateObservableCounter("telemetry_agent.connections.accepted", () => statistics().ConnectionsAccepted, "{connection}",
            "Shim connections accepted since the agent started (refused ones included).");
        _meter.CreateObservableCounter("telemetry_agent.connections.rejected", () => ByName(statistics().ConnectionsRejected, "error.type"),
            "{connection}", "Connections refused before they were read, by reason (UidNotAllowed, TooManyConnections, NoPeerCredentials).");
        _meter.CreateObservableCounter("telemetry_agent.connections.ended", () => ByName(statistics().ConnectionEnds, "telemetry_agent.connection.end_reason"),
            "{connection}", "Ended shim connections by how they ended (Goodbye, EndOfStream, ProtocolError, TransportError, Cancelled).");
        _meter.CreateObservableCounter("telemetry_agent.protocol.errors", () => ByName(statistics().ProtocolErrors, "error.type"),
            "{connection}", "Connections ended by a protocol violation, by violation (BadMagic, UndefinedId, ...).");
        _meter.CreateObservableCounter("telemetry_agent.peer.pid_mismatches", () => statistics().PeerPidMismatches, "{connection}",
            "Connections whose HELLO pid differed from the peer's pid (SO_PEERCRED): flagged, still served.");
        _meter.CreateObservableCounter("telemetry_agent.events.received", () => statistics().EventsReceived, "{event}",
            "Event records received from every shim, open connections included (rate: events per second).");
        _meter.CreateObservableCounter("telemetry_agent.export.requests",
            () => transport.Requests.Select(entry => new Measurement<long>(entry.Value, new KeyValuePair<string, object?>("telemetry_agent.signal", SignalName(entry.Key))))
                .Append(new Measurement<long>(profiles.RequestsSent + profiles.Retries,
                    new KeyValuePair<string, object?>("telemetry_agent.signal", SignalName(OtlpSignal.Profiles)))),
            "{request}", "OTLP requests sent, retries included, by signal.");
        _meter.CreateObservableCounter("telemetry_agent.export.profiles",
            () => new[]
            {
                ProfilesOutcome("sent", profiles.ProfilesSent), ProfilesOutcome("dropped", profiles.ProfilesDropped),
                ProfilesOutcome("failed", profiles.ProfilesFailed), ProfilesOutcome("rejected", profiles.ProfilesRejected),
            },
            "{profile}", "OTLP profiles by outcome: sent, dropped (queue full or agent stopped), failed for good, rejected by the server.");
        _meter.CreateObservableCounter("telemetry_agent.export.failures",
            () => transport.Failures.Select(entry => new Measurement<long>(entry.Value,
                new KeyValuePair<string, object?>("telemetry_agent.signal", SignalName(entry.Key.Signal)),
                new KeyValuePair<string, object?>("error.type", entry.Key.Reason))),
            "{request}", "OTLP requests that failed (a retried request counts each time), by signal and reason.");
        _meter.CreateObservableCounter("telemetry_agent.export.lost",
            () => problems.LostExports.Select(entry => new Measurement<long>(entry.Value,
                new KeyValuePair<string, object?>("telemetry_agent.signal", SignalName(entry.Key)))),
            "{export}", "Final exports of a process's metrics or logs that never reached the collector (every retry failed, or the agent stopped first), by signal.");

        KeyValuePair<string, object>[] resource =
        [
            new("service.name", ServiceName),
            new("service.version", version),
            new("service.instance.id", Guid.NewGuid().ToString()),
            new("host.name", Environment.MachineName),
            new("process.pid", (long)Environment.ProcessId),
        ];
        _sdk = OtlpSdk.Create(settings, resource, _meter, interval, transport, delivery: _delivery);
    }

    public static string SignalName(OtlpSignal signal) => signal.ToString().ToLowerInvariant();

    /// <summary>Exports the final values, within the timeout; false when they were not delivered.</summary>
    public bool Shutdown(TimeSpan timeout)
    {
        _delivery.Reset(OtlpSignal.Metrics);
        return _sdk.MeterProvider.Shutdown((int)timeout.TotalMilliseconds) && _delivery.Delivered(OtlpSignal.Metrics) != false;
    }

    public void Dispose()
    {
        _sdk.Dispose();
        _meter.Dispose();
    }

    private static Measurement<long> ProfilesOutcome(string outcome, long count)
        => new(count, new KeyValuePair<string, object?>("telemetry_agent.outcome", outcome));

    private static IEnumerable<Measurement<long>> ByName(IReadOnlyDictionary<string, long> counts, string attribute)
        => counts.Select(entry => new Measurement<long>(entry.Value, new KeyValuePair<string, object?>(attribute, entry.Key)));
}

using System.Diagnostics.Metrics;
using OpenTelemetry;
using OpenTelemetry.Metrics;
using TelemetryAgent.Export.Sdk;
using TelemetryAgent.Export.Settings;

namespace TelemetryAgent.Export.Agent;

/// <summary>
/// The agent's own metrics under its own resource (<c>service.name = telemetry-agent</c>): connections, events
/// received, protocol errors by violation, and OTLP export requests and failures. Exported every checkpoint interval
/// (serve) and once more at shutdown.
/// </summary>
internal sealed class AgentSelfTelemetry : IDisposable
{
    public const string ServiceName = "telemetry-agent";
    public const string Scope = "telemetry_agent";

    private readonly Meter _meter;
    private readonly OpenTelemetrySdk _sdk;

    public AgentSelfTelemetry(OtlpSettings settings, IAgentTelemetrySource source, ExportTransport transport, TimeSpan? interval)
    {
        var version = typeof(AgentSelfTelemetry).Assembly.GetName().Version?.ToString() ?? "0";
        _meter = new Meter(Scope, version);
        _meter.CreateObservableUpDownCounter("telemetry_agent.connections.open", () => source.Snapshot().ConnectionsOpen, "{connection}",
            "Shim connections open now (from their HELLO).");
        _meter.CreateObservableCounter("telemetry_agent.connections.accepted", () => source.Snapshot().ConnectionsAccepted, "{connection}",
            "Shim connections that said HELLO since the agent started.");
        _meter.CreateObservableCounter("telemetry_agent.connections.ended", () => ByName(source.Snapshot().ConnectionEnds, "telemetry_agent.connection.end_reason"),
            "{connection}", "Ended shim connections by how they ended (Goodbye, EndOfStream, ProtocolError, TransportError, Cancelled).");
        _meter.CreateObservableCounter("telemetry_agent.protocol.errors", () => ByName(source.Snapshot().ProtocolErrors, "error.type"),
            "{connection}", "Connections ended by a protocol violation, by violation (BadMagic, UndefinedId, ...).");
        _meter.CreateObservableCounter("telemetry_agent.events.received", () => source.Snapshot().EventsReceived, "{event}",
            "Event records received from every shim (rate: events per second).");
        _meter.CreateObservableCounter("telemetry_agent.export.requests",
            () => transport.Requests.Select(entry => new Measurement<long>(entry.Value, new KeyValuePair<string, object?>("telemetry_agent.signal", SignalName(entry.Key)))),
            "{request}", "OTLP requests the SDK exporters sent, retries included.");
        _meter.CreateObservableCounter("telemetry_agent.export.failures",
            () => transport.Failures.Select(entry => new Measurement<long>(entry.Value,
                new KeyValuePair<string, object?>("telemetry_agent.signal", SignalName(entry.Key.Signal)),
                new KeyValuePair<string, object?>("error.type", entry.Key.Reason))),
            "{request}", "OTLP requests that failed (a retried request counts each time), by signal and reason.");

        KeyValuePair<string, object>[] resource =
        [
            new("service.name", ServiceName),
            new("service.version", version),
            new("service.instance.id", Guid.NewGuid().ToString()),
            new("host.name", Environment.MachineName),
            new("process.pid", (long)Environment.ProcessId),
        ];
        _sdk = OtlpSdk.Create(settings, resource, _meter, interval, transport);
    }

    public static string SignalName(OtlpSignal signal) => signal.ToString().ToLowerInvariant();

    /// <summary>Exports the final values, within the timeout.</summary>
    public void Shutdown(TimeSpan timeout)
    {
        _sdk.MeterProvider.Shutdown((int)timeout.TotalMilliseconds);
    }

    public void Dispose()
    {
        _sdk.Dispose();
        _meter.Dispose();
    }

    private static IEnumerable<Measurement<long>> ByName(IReadOnlyDictionary<string, long> counts, string attribute)
        => counts.Select(entry => new Measurement<long>(entry.Value, new KeyValuePair<string, object?>(attribute, entry.Key)));
}

namespace TelemetryAgent.Export.Agent;

/// <summary>The agent's own counters, as its telemetry (service.name = telemetry-agent) reports them.</summary>
/// <param name="ConnectionsOpen">Connections open now.</param>
/// <param name="ConnectionsAccepted">Connections accepted since the agent started.</param>
/// <param name="ConnectionEnds">Ended connections by <see cref="Sessions.ConnectionEndReason"/> name.</param>
/// <param name="ProtocolErrors">Connections ended by a protocol violation, by <see cref="Protocol.ProtocolViolation"/> name.</param>
/// <param name="EventsReceived">Event records received from every shim.</param>
public sealed record AgentTelemetrySnapshot(
    long ConnectionsOpen,
    long ConnectionsAccepted,
    IReadOnlyDictionary<string, long> ConnectionEnds,
    IReadOnlyDictionary<string, long> ProtocolErrors,
    long EventsReceived);

/// <summary>
/// Where the agent's own telemetry reads its counters. <see cref="ObservedAgentTelemetry"/> counts what process
/// observers see; the agent's statistics (Hosting) can implement it with what the transport sees as well.
/// </summary>
/// <remarks>Called on the SDK's collection thread: return a consistent copy, quickly, and never throw.</remarks>
public interface IAgentTelemetrySource
{
    AgentTelemetrySnapshot Snapshot();
}

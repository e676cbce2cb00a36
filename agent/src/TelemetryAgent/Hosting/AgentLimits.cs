using TelemetryAgent.Sessions;

namespace TelemetryAgent.Hosting;

/// <summary>
/// Every limit of the agent with its default, in one place (the CLI's options take their defaults from here;
/// docs/operations.md explains each). Per-connection limits are in <see cref="Session"/>.
/// </summary>
public sealed record AgentLimits
{
    public static AgentLimits Default { get; } = new();

    /// <summary>Connections open at once; one more is closed at once (counted as <c>TooManyConnections</c>).</summary>
    public int MaxConnections { get; init; } = 1024;

    /// <summary>
    /// Estimated bytes of call trees, functions and threads over all open connections (and, for `run`, the finished
    /// ones it keeps); a connection that needs more ends with <c>AggregateMemoryExhausted</c>.
    /// </summary>
    public long MaxAggregateMemoryBytes { get; init; } = 1L << 30;

    public SessionLimits Session { get; init; } = SessionLimits.Default;
}

namespace TelemetryAgent.Profiling;

/// <summary>The agent's counters at one moment (connections, events, how connections ended); the host keeps the live counts.</summary>
public sealed record AgentStatisticsSnapshot(
    long ConnectionsAccepted,
    long ConnectionsActive,
    IReadOnlyDictionary<string, long> ConnectionsRejected,
    long EventsReceived,
    IReadOnlyDictionary<string, long> ConnectionEnds,
    IReadOnlyDictionary<string, long> ProtocolErrors,
    long PeerPidMismatches)
{
    /// <summary>Nothing counted yet.</summary>
    public static AgentStatisticsSnapshot Empty { get; } = new(0, 0, new Dictionary<string, long>(), 0,
        new Dictionary<string, long>(), new Dictionary<string, long>(), 0);

    public long Rejected => ConnectionsRejected.Values.Sum();

    /// <summary>One line per counter group, for the log.</summary>
    public override string ToString() =>
        $"connections accepted {ConnectionsAccepted:N0}, active {ConnectionsActive:N0}, rejected {Rejected:N0}{Details(ConnectionsRejected)}; " +
        $"events received {EventsReceived:N0}; connection ends{Details(ConnectionEnds, " none")}; " +
        $"protocol errors {ProtocolErrors.Values.Sum():N0}{Details(ProtocolErrors)}; HELLO pid mismatches {PeerPidMismatches:N0}";

    private static string Details(IReadOnlyDictionary<string, long> counts, string whenEmpty = "")
        => counts.Count == 0 ? whenEmpty : " (" + string.Join(", ", counts.Select(pair => $"{pair.Key} {pair.Value:N0}")) + ")";
}

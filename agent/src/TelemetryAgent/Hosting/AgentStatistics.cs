using System.Collections.Concurrent;
using TelemetryAgent.Profiling;
using TelemetryAgent.Sessions;

namespace TelemetryAgent.Hosting;

/// <summary>
/// The agent's own counters, for its log and its own telemetry: connections accepted, active and rejected (by
/// reason), events received, how connections ended (by reason) and protocol errors (by violation). Thread-safe:
/// connection tasks write, any thread takes a <see cref="Snapshot"/>.
/// </summary>
public sealed class AgentStatistics
{
    /// <summary>Why a connection was refused before it was read.</summary>
    public static class RejectReasons
    {
        public const string UidNotAllowed = "UidNotAllowed";
        public const string TooManyConnections = "TooManyConnections";
        public const string NoPeerCredentials = "NoPeerCredentials";
    }

    private readonly ConcurrentDictionary<ProcessSession, byte> _open = new();
    private readonly ConcurrentDictionary<string, long> _rejected = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, long> _ends = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, long> _protocolErrors = new(StringComparer.Ordinal);
    private long _accepted;
    private long _active;
    private long _eventsOfEndedConnections;
    private long _peerPidMismatches;

    /// <summary>The sessions of the connections open now.</summary>
    public IEnumerable<ProcessSession> OpenSessions => _open.Keys;

    /// <summary>Counts an accepted connection; returns how many were accepted so far.</summary>
    public long ConnectionAccepted() => Interlocked.Increment(ref _accepted);

    /// <summary>Counts a refused connection; returns how many were refused for this reason so far.</summary>
    public long ConnectionRejected(string reason) => _rejected.AddOrUpdate(reason, 1, (_, count) => count + 1);

    /// <summary>Makes the connection active unless <paramref name="maxActive"/> are already.</summary>
    public bool TryOpen(ProcessSession session, int maxActive)
    {
        if (Interlocked.Increment(ref _active) > maxActive)
        {
            Interlocked.Decrement(ref _active);
            return false;
        }
        _open[session] = 0;
        return true;
    }

    /// <summary>Counts how an opened connection ended; its events move from the live sum to the total.</summary>
    public void ConnectionEnded(ProcessSession session, ConnectionEnd end)
    {
        _ends.AddOrUpdate(end.Reason.ToString(), 1, (_, count) => count + 1);
        if (end.Violation is { } violation) _protocolErrors.AddOrUpdate(violation.ToString(), 1, (_, count) => count + 1);
        if (session.Profile is { PeerPidMatches: false }) Interlocked.Increment(ref _peerPidMismatches);
        Interlocked.Add(ref _eventsOfEndedConnections, session.Profile?.EventsReceived ?? 0);
        _open.TryRemove(session, out _);
        Interlocked.Decrement(ref _active);
    }

    public AgentStatisticsSnapshot Snapshot()
    {
        // Open sessions are read while their connection writes them: a count may be a moment old, never torn.
        long live = 0;
        foreach (var session in _open.Keys) live += session.Profile?.EventsReceived ?? 0;
        return new AgentStatisticsSnapshot(
            Interlocked.Read(ref _accepted),
            Interlocked.Read(ref _active),
            Sorted(_rejected),
            Interlocked.Read(ref _eventsOfEndedConnections) + live,
            Sorted(_ends),
            Sorted(_protocolErrors),
            Interlocked.Read(ref _peerPidMismatches));
    }

    private static IReadOnlyDictionary<string, long> Sorted(ConcurrentDictionary<string, long> counts)
        => new SortedDictionary<string, long>(counts.ToDictionary(), StringComparer.Ordinal);
}

namespace TelemetryAgent.Profiling;

/// <summary>
/// All processes profiled by one agent run. Thread-safe: sessions register their profile when HELLO arrives and
/// publish it when they complete; readers take snapshots.
/// </summary>
/// <remarks>
/// Consistency comes from ownership, not from copying: a session alone writes its profile until it completes,
/// and a completed profile never changes. A snapshot therefore lists completed profiles (safe to export) and,
/// separately, only the identities of the running ones.
/// </remarks>
public sealed class ProfileStore
{
    private readonly Lock _lock = new();
    private readonly List<ProcessProfile> _running = [];
    private readonly List<ProcessProfile> _completed = [];
    private readonly Dictionary<string, long> _connectionsWithoutProfile = new(StringComparer.Ordinal);

    /// <summary>Called by a session when its HELLO arrives.</summary>
    public void Register(ProcessProfile profile)
    {
        ArgumentNullException.ThrowIfNull(profile);
        lock (_lock) _running.Add(profile);
    }

    /// <summary>Called by a session once its profile is completed (and will not change again).</summary>
    public void Publish(ProcessProfile profile)
    {
        ArgumentNullException.ThrowIfNull(profile);
        if (!profile.IsCompleted) throw new InvalidOperationException("Only a completed profile can be published.");
        lock (_lock)
        {
            _running.Remove(profile);
            _completed.Add(profile);
        }
    }

    /// <summary>Counts a connection that ended before it said HELLO (for example, a wrong magic).</summary>
    public void RecordConnectionWithoutProfile(ConnectionOutcome end)
    {
        lock (_lock)
        {
            _connectionsWithoutProfile.TryGetValue(end.Label, out var count);
            _connectionsWithoutProfile[end.Label] = count + 1;
        }
    }

    public ProfileStoreSnapshot Snapshot()
    {
        lock (_lock)
        {
            return new ProfileStoreSnapshot(
                [.. _completed],
                [.. _running.Select(profile => profile.Identity)],
                new Dictionary<string, long>(_connectionsWithoutProfile, StringComparer.Ordinal));
        }
    }
}

/// <summary>A consistent view of a <see cref="ProfileStore"/> at one moment.</summary>
/// <param name="Completed">Completed profiles in completion order; immutable, safe to export.</param>
/// <param name="Running">Processes whose connection is still open.</param>
/// <param name="ConnectionsWithoutProfile">Connections that ended before HELLO, by end label.</param>
public sealed record ProfileStoreSnapshot(
    IReadOnlyList<ProcessProfile> Completed,
    IReadOnlyList<ProcessIdentity> Running,
    IReadOnlyDictionary<string, long> ConnectionsWithoutProfile);

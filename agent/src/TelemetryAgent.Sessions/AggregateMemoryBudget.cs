namespace TelemetryAgent.Sessions;

/// <summary>
/// The memory the agent lets all sessions' aggregates (call-tree nodes, functions, threads and their stacks) take
/// together, by estimate. Sessions reserve it in chunks, so the shared counter is touched once per chunk, not per
/// node. Thread-safe.
/// </summary>
public sealed class AggregateMemoryBudget
{
    /// <summary>What a session reserves at a time.</summary>
    public const long ChunkBytes = 256 * 1024;

    private long _reserved;

    public AggregateMemoryBudget(long limitBytes)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(limitBytes, ChunkBytes);
        LimitBytes = limitBytes;
    }

    public long LimitBytes { get; }

    /// <summary>Bytes reserved by sessions now (an upper bound of their estimated use).</summary>
    public long ReservedBytes => Interlocked.Read(ref _reserved);

    /// <summary>
    /// Called when a reservation does not fit: lets something that is only kept (an ended process the live views
    /// still show) go, giving its bytes back; false when there is nothing left to let go. Thread-safe.
    /// </summary>
    public Func<bool>? Reclaim { get; set; }

    /// <summary>Reserves <paramref name="bytes"/> when they fit under the limit, after <see cref="Reclaim"/> if need be.</summary>
    public bool TryReserve(long bytes)
    {
        while (true)
        {
            var current = Interlocked.Read(ref _reserved);
            if (current + bytes > LimitBytes)
            {
                if (Reclaim?.Invoke() == true) continue;
                return false;
            }
            if (Interlocked.CompareExchange(ref _reserved, current + bytes, current) == current) return true;
        }
    }

    /// <summary>Gives back what a session reserved, once its aggregates are no longer held.</summary>
    public void Release(long bytes) => Interlocked.Add(ref _reserved, -bytes);
}

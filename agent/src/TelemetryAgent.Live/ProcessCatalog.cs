using TelemetryAgent.Profiling;

namespace TelemetryAgent.Live;

/// <summary>One connection as the live views see it: its profile while it is written, and a way to take a snapshot.</summary>
/// <remarks>The host implements it over its session; the live views never see a session.</remarks>
public interface ILiveConnection
{
    /// <summary>The profile being written (its counters and timeline are safe to read); null until HELLO.</summary>
    ProcessProfile? Profile { get; }

    /// <summary>A frozen copy taken on the session's thread after its next frame (the final profile once it ended).</summary>
    Task<ProcessProfile> SnapshotAsync();

    /// <summary>
    /// What <c>SnapshotAsync().FunctionStatistics()</c> would give, without a copy of the trees: taken on the session's
    /// thread at the cost of what changed since the previous request (the completed profile's once it ended).
    /// </summary>
    Task<IReadOnlyList<FunctionStats>> FunctionStatisticsAsync();
}

/// <summary>How many ended processes the live views keep, and for how long.</summary>
public sealed record RetentionSettings
{
    public static RetentionSettings Default { get; } = new();

    /// <summary>Ended processes kept at most; the oldest ended goes first.</summary>
    public int MaxEndedProcesses { get; init; } = 100;

    /// <summary>How long an ended process stays after it ended.</summary>
    public TimeSpan KeepEndedFor { get; init; } = TimeSpan.FromHours(1);
}

/// <summary>A process the live views know: running, or ended and kept for a while.</summary>
public sealed class LiveProcess
{
    private readonly ILiveConnection _connection;
    private readonly Action? _release;
    private ProcessProfile? _ended;

    internal LiveProcess(ulong id, ILiveConnection connection, Action? release)
    {
        Id = id;
        _connection = connection;
        _release = release;
    }

    /// <summary>The connection's number in this agent (a process that reconnected has several).</summary>
    public ulong Id { get; }

    /// <summary>The running profile, or the completed one; null until HELLO.</summary>
    public ProcessProfile? Profile => Volatile.Read(ref _ended) ?? _connection.Profile;

    /// <summary>The completed profile once the connection ended.</summary>
    public ProcessProfile? Ended => Volatile.Read(ref _ended);

    public bool IsRunning => Ended is null;

    /// <summary>Cumulative since HELLO: a checkpoint of a running process, the final profile of an ended one.</summary>
    public Task<ProcessProfile> SnapshotAsync() => Ended is { } ended ? Task.FromResult(ended) : _connection.SnapshotAsync();

    /// <summary>The function statistics of <see cref="SnapshotAsync"/>, taken without copying a running process's trees.</summary>
    public Task<IReadOnlyList<FunctionStats>> FunctionStatisticsAsync()
        => Ended is { } ended ? Task.FromResult(ended.FunctionStatistics()) : _connection.FunctionStatisticsAsync();

    internal void MarkEnded(ProcessProfile completed) => Volatile.Write(ref _ended, completed);

    internal void Release() => _release?.Invoke();
}

/// <summary>
/// The processes the live views answer for: every open connection that said HELLO, and ended ones within
/// <see cref="RetentionSettings"/> (their trees and timelines stay in the agent's memory budget until they go; when
/// the budget runs short, <see cref="EvictOldestEnded"/> makes room for running processes first). Thread-safe.
/// </summary>
public sealed class ProcessCatalog(RetentionSettings? retention = null, TimeProvider? time = null)
{
    private readonly RetentionSettings _retention = retention ?? RetentionSettings.Default;
    private readonly TimeProvider _time = time ?? TimeProvider.System;
    private readonly Lock _lock = new();
    private readonly List<LiveProcess> _processes = [];
    private ulong _nextId;

    public RetentionSettings Retention => _retention;

    /// <summary>Adds an open connection; <paramref name="release"/> runs once it is let go (its memory given back).</summary>
    public LiveProcess Add(ILiveConnection connection, Action? release = null)
    {
        ArgumentNullException.ThrowIfNull(connection);
        lock (_lock)
        {
            var process = new LiveProcess(++_nextId, connection, release);
            _processes.Add(process);
            return process;
        }
    }

    /// <summary>The connection ended: kept with its completed profile (or let go at once when it never said HELLO).</summary>
    public void Ended(LiveProcess process, ProcessProfile? completed)
    {
        ArgumentNullException.ThrowIfNull(process);
        var released = new List<LiveProcess>();
        lock (_lock)
        {
            if (completed is null || _retention.MaxEndedProcesses == 0)
            {
                if (_processes.Remove(process)) released.Add(process);
            }
            else
            {
                process.MarkEnded(completed);
            }
            released.AddRange(TrimLocked());
        }
        foreach (var gone in released) gone.Release();
    }

    /// <summary>Drops ended processes past their time; the host calls it now and then.</summary>
    public void Trim()
    {
        List<LiveProcess> released;
        lock (_lock) released = TrimLocked();
        foreach (var gone in released) gone.Release();
    }

    /// <summary>Lets the oldest ended process go (its memory back to the budget); false when none is kept.</summary>
    public bool EvictOldestEnded()
    {
        LiveProcess? oldest;
        lock (_lock)
        {
            oldest = _processes.Where(process => !process.IsRunning).MinBy(process => process.Ended!.EndedAt);
            if (oldest is null) return false;
            _processes.Remove(oldest);
        }
        oldest.Release();
        return true;
    }

    /// <summary>Every process that said HELLO, running and kept, oldest connection first.</summary>
    public IReadOnlyList<LiveProcess> Processes()
    {
        lock (_lock) return [.. _processes.Where(process => process.Profile is not null)];
    }

    /// <summary>Lets every process go (the agent stops).</summary>
    public void Clear()
    {
        List<LiveProcess> all;
        lock (_lock)
        {
            all = [.. _processes];
            _processes.Clear();
        }
        foreach (var process in all) process.Release();
    }

    private List<LiveProcess> TrimLocked()
    {
        var now = _time.GetUtcNow();
        var ended = _processes.Where(process => !process.IsRunning).OrderBy(process => process.Ended!.EndedAt).ToList();
        var released = new List<LiveProcess>();
        foreach (var process in ended)
        {
            var tooMany = ended.Count - released.Count > _retention.MaxEndedProcesses;
            var tooOld = now - process.Ended!.EndedAt >= _retention.KeepEndedFor;
            if (!tooMany && !tooOld) continue;
            _processes.Remove(process);
            released.Add(process);
        }
        return released;
    }
}

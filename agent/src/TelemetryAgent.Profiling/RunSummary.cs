namespace TelemetryAgent.Profiling;

/// <summary>
/// The figures of one agent run, computed once and shared by summary.json and the console summary: the completed
/// processes in a stable order, totals, and per-function statistics merged over all processes.
/// </summary>
public sealed class RunSummary
{
    private RunSummary(
        DateTimeOffset startedAt,
        DateTimeOffset endedAt,
        IReadOnlyList<ProcessProfile> processes,
        int runningProcessesLeftOut,
        IReadOnlyList<FunctionStats> functions,
        IReadOnlyDictionary<string, long> connectionsWithoutHello)
    {
        ConnectionsWithoutHello = connectionsWithoutHello;
        StartedAt = startedAt;
        EndedAt = endedAt;
        Processes = processes;
        RunningProcessesLeftOut = runningProcessesLeftOut;
        Functions = functions;
        foreach (var process in processes)
        {
            Threads += process.Threads.Count;
            EventsReceived += process.EventsReceived;
            EventsDropped += process.EventsDropped;
            ImplicitExits += process.ImplicitExits;
            UnmatchedExits += process.UnmatchedExits;
            ClampedTimestamps += process.ClampedTimestamps;
            DepthLimitedPushes += process.DepthLimitedPushes;
        }
        foreach (var function in functions) Calls += function.Calls;

        var groups = new List<ProcessExceptionGroup>();
        foreach (var process in processes)
        {
            ExceptionFates.Add(process.Exceptions.Fates);
            foreach (var group in process.Exceptions.Groups) groups.Add(new ProcessExceptionGroup(process, group));
        }
        groups.Sort((a, b) => ExceptionGroupOrder.Compare(a.Group, b.Group));
        ExceptionGroups = groups;
        foreach (var (_, group) in groups)
        {
            if (!group.IsLibraryInternal) continue;
            LibraryInternalGroups++;
            LibraryInternalFates.Add(group.Fates);
        }
    }

    public DateTimeOffset StartedAt { get; }
    public DateTimeOffset EndedAt { get; }
    public long DurationNs => Math.Max(0, (EndedAt - StartedAt).Ticks) * TimeSpan.NanosecondsPerTick;

    /// <summary>Completed processes (or checkpoints of running ones), ordered by connection time, then pid.</summary>
    public IReadOnlyList<ProcessProfile> Processes { get; }
    /// <summary>Profiles given that were still being written (neither completed nor a checkpoint), left out.</summary>
    public int RunningProcessesLeftOut { get; }
    /// <summary>All functions of all processes, largest self time first.</summary>
    public IReadOnlyList<FunctionStats> Functions { get; }

    /// <summary>Connections that ended before HELLO, by end label (<see cref="ProfileStoreSnapshot.ConnectionsWithoutProfile"/>).</summary>
    public IReadOnlyDictionary<string, long> ConnectionsWithoutHello { get; }

    public int Threads { get; }
    public long EventsReceived { get; }
    public ulong EventsDropped { get; }
    public long ImplicitExits { get; }
    public long UnmatchedExits { get; }
    public long ClampedTimestamps { get; }
    public long DepthLimitedPushes { get; }
    public long Calls { get; }

    /// <summary>All exceptions of all processes by fate.</summary>
    public FateCounts ExceptionFates { get; } = new();

    /// <summary>Every exception group of every process: the program's first, most exceptions first
    /// (<see cref="ExceptionGroupOrder"/>).</summary>
    public IReadOnlyList<ProcessExceptionGroup> ExceptionGroups { get; }

    /// <summary>Groups of <see cref="ExceptionAggregate.IsLibraryInternal"/> exceptions, and their exceptions by fate.</summary>
    public int LibraryInternalGroups { get; }
    public FateCounts LibraryInternalFates { get; } = new();

    /// <summary>
    /// Summarizes the frozen profiles among <paramref name="profiles"/> (completed ones, and checkpoints of running
    /// ones). The run spans <paramref name="startedAt"/> to <paramref name="endedAt"/> when given, else from the first
    /// connection to the last disconnection or checkpoint (or <paramref name="now"/> when there was none).
    /// </summary>
    public static RunSummary Create(
        IReadOnlyList<ProcessProfile> profiles, DateTimeOffset now, DateTimeOffset? startedAt = null, DateTimeOffset? endedAt = null,
        IReadOnlyDictionary<string, long>? connectionsWithoutHello = null)
    {
        ArgumentNullException.ThrowIfNull(profiles);
        var completed = profiles.Where(profile => profile.IsFrozen)
            .OrderBy(profile => profile.ConnectedAt)
            .ThenBy(profile => profile.Identity.Pid)
            .ToArray();
        var start = startedAt ?? (completed.Length > 0 ? completed.Min(profile => profile.ConnectedAt) : now);
        var end = endedAt ?? (completed.Length > 0 ? completed.Max(profile => (profile.EndedAt ?? profile.CheckpointTakenAt)!.Value) : now);
        var functions = FunctionStats.Compute(completed.SelectMany(profile => profile.Threads).Select(thread => thread.Root));
        return new RunSummary(start, end, completed, profiles.Count - completed.Length, functions,
            connectionsWithoutHello ?? new Dictionary<string, long>());
    }
}

/// <summary>An exception group with the process it belongs to.</summary>
public sealed record ProcessExceptionGroup(ProcessProfile Process, ExceptionAggregate Group);

/// <summary>The order in which outputs list exception groups, in one place.</summary>
public static class ExceptionGroupOrder
{
    /// <summary>
    /// Groups that involve the program first, then those raised and handled inside library code
    /// (<see cref="ExceptionAggregate.IsLibraryInternal"/>: they would otherwise bury the program's own errors under
    /// the standard library's control flow), "[other exceptions]" last; within each, most exceptions first, then the
    /// earliest seen, then by fingerprint.
    /// </summary>
    public static int Compare(ExceptionAggregate a, ExceptionAggregate b)
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        var order = Rank(a).CompareTo(Rank(b));
        if (order == 0) order = b.Count.CompareTo(a.Count);
        if (order == 0) order = (a.FirstRaisedNs == 0).CompareTo(b.FirstRaisedNs == 0);
        if (order == 0) order = a.FirstRaisedNs.CompareTo(b.FirstRaisedNs);
        if (order == 0) order = string.CompareOrdinal(a.Fingerprint, b.Fingerprint);
        return order;
    }

    private static int Rank(ExceptionAggregate group)
        => group.Kind == ExceptionAggregateKind.Other ? 2 : group.IsLibraryInternal ? 1 : 0;

    public static IReadOnlyList<ExceptionAggregate> Sorted(IEnumerable<ExceptionAggregate> groups)
    {
        var sorted = groups.ToList();
        sorted.Sort(Compare);
        return sorted;
    }
}

using TelemetryAgent.Profiling.Startup;

namespace TelemetryAgent.Profiling;

/// <summary>
/// Everything recorded from one connection of one Python process: who it is, its threads' call trees and the
/// counters that say how complete the data is.
/// </summary>
/// <remarks>
/// Written only by the session that created it, on that session's thread. Once
/// <see cref="IsCompleted"/> is true it never changes again, so exporters may read it from any thread. A
/// checkpoint (<see cref="IsCheckpoint"/>) is a copy the session took while running: it never changes either.
/// </remarks>
public sealed class ProcessProfile
{
    private readonly List<ThreadProfile> _threads = [];
    private readonly List<FunctionInfo> _functions = [];
    private IReadOnlyList<FunctionStats>? _functionStats;
    private readonly List<FirstInvocation> _firstInvocations = [];
    private readonly List<CapturedCallTree> _unmatchedCallTrees = [];

    internal ProcessProfile(ProcessIdentity identity, ClockMapping clock, DateTimeOffset connectedAt, ExceptionLimits? exceptionLimits = null,
        RecordingMode? recording = null)
        : this(identity, clock, connectedAt, new ProcessExceptions(exceptionLimits ?? ExceptionLimits.Default), recording ?? RecordingMode.FullMode)
    {
    }

    private ProcessProfile(ProcessIdentity identity, ClockMapping clock, DateTimeOffset connectedAt, ProcessExceptions exceptions,
        RecordingMode recording)
    {
        Identity = identity;
        Recording = recording;
        Clock = clock;
        ConnectedAt = connectedAt;
        Exceptions = exceptions;
    }

    public ProcessIdentity Identity { get; }
    public ClockMapping Clock { get; }

    /// <summary>What the shim recorded (mode, windows, budget, filters), from HELLO.</summary>
    public RecordingMode Recording { get; }
    /// <summary>Burst mode: the windows and the scale applied to the call trees when the profile completed.</summary>
    public SamplingWindows Windows { get; private init; } = new();

    /// <summary>When the agent received HELLO, by the agent's clock.</summary>
    public DateTimeOffset ConnectedAt { get; }
    /// <summary>When the session completed, by the agent's clock; null while it is running.</summary>
    public DateTimeOffset? EndedAt { get; internal set; }

    /// <summary>How the connection ended; null while it is running.</summary>
    public ConnectionOutcome? End { get; internal set; }
    /// <summary>GOODBYE's reason (e.g. <c>ReasonExit</c>) when the shim said goodbye.</summary>
    public string? GoodbyeReason { get; internal set; }
    /// <summary>GOODBYE's free text, when the shim gave one.</summary>
    public string? GoodbyeDetail { get; internal set; }

    public bool IsCompleted => End is not null;

    /// <summary>The peer's credentials read from the socket when it connected; null when unknown (tests, pipes).</summary>
    public PeerProcess? Peer { get; internal set; }
    /// <summary>
    /// False when HELLO's pid differs from the peer's pid (flagged, not refused: a process in another pid namespace
    /// sees other pids); null when the peer is unknown.
    /// </summary>
    public bool? PeerPidMatches => Peer is { } peer ? peer.Pid == Identity.Pid : null;

    /// <summary>When this is a checkpoint: the agent's time it was taken at; else null.</summary>
    public DateTimeOffset? CheckpointTakenAt { get; private init; }

    /// <summary>A copy taken while the process was running: cumulative since HELLO, never changes.</summary>
    public bool IsCheckpoint => CheckpointTakenAt is not null;

    /// <summary>
    /// For a profile of part of a process's life (<see cref="ProcessTimeline.Select"/>): the span its figures cover,
    /// in Unix nanoseconds. Null for a whole profile (cumulative since HELLO).
    /// </summary>
    public ProfileSpan? Span { get; private init; }

    /// <summary>
    /// The figures of this process bucketed in time, when the session keeps them (serve); null otherwise and in copies.
    /// Safe to read from any thread.
    /// </summary>
    public ProcessTimeline? Timeline { get; internal set; }

    /// <summary>Completed or a checkpoint: safe to read from any thread.</summary>
    public bool IsFrozen => IsCompleted || IsCheckpoint;

    /// <summary>Threads in the order they were first defined.</summary>
    public IReadOnlyList<ThreadProfile> Threads => _threads;
    /// <summary>Functions in the order they were defined.</summary>
    public IReadOnlyList<FunctionInfo> Functions => _functions;

    /// <summary>The process's exceptions, grouped by fingerprint.</summary>
    public ProcessExceptions Exceptions { get; }

    /// <summary>The latest counters the shim reported (STATS, or GOODBYE's final stats).</summary>
    public ShimStatistics ShimStats { get; internal set; } = ShimStatistics.None;

    /// <summary>The start-up phase (imports until ready), once the shim sent it; null before that or from older shims.</summary>
    public StartupPhase? Startup { get; internal set; }

    /// <summary>The first calls of the ready-on function the shim timed, in the order they arrived.</summary>
    public IReadOnlyList<FirstInvocation> FirstInvocations => _firstInvocations;

    /// <summary>Adds a first invocation the shim timed, with its call tree when the session has it already.</summary>
    internal void AddFirstInvocation(FirstInvocation invocation)
    {
        var tree = _unmatchedCallTrees.Where(tree => tree.Matches(invocation)).MinBy(tree => tree.Distance(invocation));
        if (tree is not null)
        {
            _unmatchedCallTrees.Remove(tree);
            invocation = invocation with { CallTree = tree.Root };
        }
        _firstInvocations.Add(invocation);
    }

    /// <summary>
    /// The call tree of an outermost call of the ready-on function from <paramref name="startNs"/> (the session's
    /// clock for it), given to the first invocation the shim timed there, now or when that arrives. The shim and the
    /// session number calls alike only while both see all of them (not across a reconnection), so calls are matched
    /// by time.
    /// </summary>
    internal void AddInvocationCallTree(long startNs, CallNode tree)
    {
        var captured = new CapturedCallTree(startNs, tree);
        var index = -1;
        for (var i = 0; i < _firstInvocations.Count; i++)
        {
            var candidate = _firstInvocations[i];
            if (candidate.CallTree is not null || !captured.Matches(candidate)) continue;
            if (index < 0 || captured.Distance(candidate) < captured.Distance(_firstInvocations[index])) index = i;
        }
        if (index >= 0) _firstInvocations[index] = _firstInvocations[index] with { CallTree = tree };
        else _unmatchedCallTrees.Add(captured);
    }

    private sealed record CapturedCallTree(long StartNs, CallNode Root)
    {
        // The shim times an invocation where its start-up phase sees the call, beside the event the session
        // records: microseconds apart, more on a loaded machine.
        private const long ToleranceNs = 5_000_000;

        public bool Matches(FirstInvocation invocation)
            => StartNs >= invocation.StartNs - ToleranceNs && StartNs <= Math.Max(invocation.EndNs, invocation.StartNs) + ToleranceNs;

        public long Distance(FirstInvocation invocation) => Math.Abs(StartNs - invocation.StartNs);
    }

    /// <summary>Event records received over this connection.</summary>
    public long EventsReceived { get; internal set; }
    /// <summary>Events the shim recorded but could not deliver (from its counters).</summary>
    public ulong EventsDropped => ShimStats.EventsDropped;
    /// <summary>Frames closed because an exit of a frame below them arrived first.</summary>
    public long ImplicitExits { get; internal set; }
    /// <summary>Exits of frames that were not on the stack, ignored.</summary>
    public long UnmatchedExits { get; internal set; }
    /// <summary>Events whose timestamp was earlier than the thread's previous one, taken as equal to it.</summary>
    public long ClampedTimestamps { get; internal set; }
    /// <summary>Pushes beyond the stack depth limit: counted and paired, not added to the tree.</summary>
    public long DepthLimitedPushes { get; internal set; }
    /// <summary>Call-tree nodes of all threads (distinct stacks), "[truncated]" nodes included.</summary>
    public long CallTreeNodes { get; internal set; }
    /// <summary>Pushes whose path had no node once the call-tree limit was reached: counted in a "[truncated]" node.</summary>
    public long TruncatedPushes { get; internal set; }
    /// <summary>Frames still open when the connection ended, closed at its last timestamp.</summary>
    public long FramesOpenAtEnd { get; internal set; }

    /// <summary>Monotonic time of the first and last event of the connection (0 when there was none).</summary>
    public long FirstTimestampNs { get; internal set; }
    public long LastTimestampNs { get; internal set; }

    /// <summary>Time from the first to the last event (or GOODBYE's clock when it is later).</summary>
    public long DurationNs => Math.Max(0, LastTimestampNs - FirstTimestampNs);

    /// <summary>Wall time of the first event (of the connection when there was none), in Unix nanoseconds.</summary>
    public long FirstEventUnixNs => FirstTimestampNs != 0 ? Clock.ToUnixNs(FirstTimestampNs) : UnixNs(ConnectedAt);

    /// <summary>Wall time of the latest event this profile holds (of the connection when there was none).</summary>
    public long LastEventUnixNs => LastTimestampNs != 0 ? Clock.ToUnixNs(LastTimestampNs) : UnixNs(ConnectedAt);

    private static long UnixNs(DateTimeOffset time) => (time - DateTimeOffset.UnixEpoch).Ticks * TimeSpan.NanosecondsPerTick;

    /// <summary>
    /// Per-function figures over all threads, by self time; cached once the profile is frozen. Before that,
    /// call it only from the owning session's thread.
    /// </summary>
    public IReadOnlyList<FunctionStats> FunctionStatistics()
    {
        if (!IsFrozen) return FunctionStats.Compute(_threads.Select(thread => thread.Root));
        return _functionStats ??= FunctionStats.Compute(_threads.Select(thread => thread.Root));
    }

    internal void AddThread(ThreadProfile thread) => _threads.Add(thread);

    /// <summary>
    /// A frozen copy of everything recorded so far (the session adds the open frames' time to its trees). Costs
    /// one pass over the call trees and the exception groups.
    /// </summary>
    internal ProcessProfile CopyAsCheckpoint(DateTimeOffset takenAt)
    {
        var copy = new ProcessProfile(Identity, Clock, ConnectedAt, Exceptions.CopyFrozen(), Recording)
        {
            Windows = Windows.Copy(),
            CheckpointTakenAt = takenAt,
            GoodbyeReason = GoodbyeReason,
            GoodbyeDetail = GoodbyeDetail,
            ShimStats = ShimStats,
            EventsReceived = EventsReceived,
            ImplicitExits = ImplicitExits,
            UnmatchedExits = UnmatchedExits,
            ClampedTimestamps = ClampedTimestamps,
            DepthLimitedPushes = DepthLimitedPushes,
            CallTreeNodes = CallTreeNodes,
            TruncatedPushes = TruncatedPushes,
            Peer = Peer,
            FirstTimestampNs = FirstTimestampNs,
            LastTimestampNs = LastTimestampNs,
        };
        copy.Startup = Startup;
        copy._firstInvocations.AddRange(_firstInvocations);
        copy._unmatchedCallTrees.AddRange(_unmatchedCallTrees);
        copy._functions.AddRange(_functions);
        foreach (var thread in _threads) copy._threads.Add(thread.Copy());
        return copy;
    }

    internal void AddFunction(FunctionInfo function) => _functions.Add(function);

    /// <summary>A frozen profile of part of this process's life, built from its timeline's buckets.</summary>
    internal ProcessProfile ForSpan(ProfileSpan span, IEnumerable<ThreadProfile> threads, IEnumerable<FunctionInfo> functions,
        ProcessExceptions exceptions, long events, long nodes, long coveredNs, DateTimeOffset takenAt)
    {
        var copy = new ProcessProfile(Identity, Clock, ConnectedAt, exceptions, Recording)
        {
            CheckpointTakenAt = takenAt,
            Span = span,
            GoodbyeReason = GoodbyeReason,
            GoodbyeDetail = GoodbyeDetail,
            ShimStats = ShimStats,
            EventsReceived = events,
            CallTreeNodes = nodes,
            Peer = Peer,
            FirstTimestampNs = span.StartUnixNs - Clock.UnixNs + Clock.MonotonicNs,
            LastTimestampNs = span.EndUnixNs - Clock.UnixNs + Clock.MonotonicNs,
        };
        copy._functions.AddRange(functions);
        copy._threads.AddRange(threads);
        if (Recording.IsSampled)
        {
            copy.Windows.CoveredNs = coveredNs;
            SampleScaling.Apply(copy, span.EndUnixNs - span.StartUnixNs);
        }
        return copy;
    }
}

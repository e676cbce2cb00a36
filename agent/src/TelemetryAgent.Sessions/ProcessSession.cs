using System.Collections.Concurrent;
using System.Diagnostics.CodeAnalysis;
using System.IO.Pipelines;
using System.Runtime.CompilerServices;
using TelemetryAgent.Profiling;
using TelemetryAgent.Profiling.Startup;
using TelemetryAgent.Protocol;
using TelemetryAgent.Protocol.Messages;

namespace TelemetryAgent.Sessions;

/// <summary>
/// One connection's session: keeps the definition tables and per-thread stacks, pairs events as
/// proto/PROTOCOL.md "How the agent pairs events" says, and builds the process's <see cref="ProcessProfile"/>.
/// </summary>
/// <remarks>
/// Not thread-safe: one connection's read loop drives it. The parser calls it through <see cref="Handler"/>;
/// tests may call the <c>On*</c> methods directly. A method that finds a protocol violation throws
/// <see cref="ProtocolException"/> after applying everything before the bad item; the caller then ends the
/// connection with <see cref="Complete"/>. In steady state an event allocates nothing: only a new tree node
/// (first visit of a path) or a deeper stack than ever before does. <see cref="RequestCheckpoint"/> is the one
/// member other threads may call: the read loop takes the checkpoint after its next frame (the shim sends
/// STATS about once a second, so an idle process still gets there).
/// </remarks>
public sealed class ProcessSession
{
    private readonly ProfileStore? _store;
    private readonly SessionLimits _limits;
    private readonly TimeProvider _time;

    // Indexed by id; slot 0 is never used (ids start at 1). Grown on demand, never beyond the limits.
    private FunctionInfo?[] _functions = new FunctionInfo?[64];
    private ThreadState?[] _threads = new ThreadState?[8];

    private readonly IProcessObserver? _observer;

    private ProcessProfile? _profile;
    private Goodbye? _goodbye;
    private bool _hasEvents;
    private FunctionInfo? _truncated;
    private long _reservedBytes;
    private long _unusedBytes;
    private int _checkpointRequested;
    private readonly ConcurrentQueue<TaskCompletionSource<ProcessProfile>> _snapshotWaiters = new();
    private readonly ConcurrentQueue<TaskCompletionSource<IReadOnlyList<FunctionStats>>> _functionStatsWaiters = new();
    private LiveFunctionStats? _functionStats;
    private long _functionStatsBytes;
    private long _functionStatsAskedAt;
    private int _nodeIds;
    private volatile bool _completed;
    private ProcessTimeline? _timeline;
    private long _nextBucketAt;
    private SessionInput? _input;

    // The code the shim defined as the ready-on function, while its first invocations' call trees are still to be
    // followed (0: none, or once they all were), and how many of its outermost calls were.
    private uint _readyOnCodeId;
    private int _invocationsTraced;

    // Burst mode (PROTOCOL.md "Burst mode"): call events count only between WINDOW_START and WINDOW_END.
    private bool _burst;
    private bool _windowOpen;
    // Burst and exceptions mode (PROTOCOL.md "Invocation windows"): the events between INVOCATION_WINDOW_START and
    // INVOCATION_WINDOW_END build only the first invocations' trees, on roots of their own, outside the profile.
    private bool _callsOnlyInWindows;
    private bool _invocationWindowOpen;
    private int _invocationWindowNodes;
    private long _windowStart;
    private long? _firstWindowStart;

    public ProcessSession(ProfileStore? store = null, SessionLimits? limits = null, TimeProvider? time = null,
        IProcessObserver? observer = null)
    {
        _store = store;
        _observer = observer;
        _limits = limits ?? SessionLimits.Default;
        _time = time ?? TimeProvider.System;
        ArgumentOutOfRangeException.ThrowIfLessThan(_limits.MaxCodeId, 1, nameof(limits));
        ArgumentOutOfRangeException.ThrowIfLessThan(_limits.MaxThreadId, 1, nameof(limits));
        ArgumentOutOfRangeException.ThrowIfLessThan(_limits.MaxStackDepth, 1, nameof(limits));
    }

    /// <summary>The peer process as the kernel named it, recorded in the profile (and its pid checked against HELLO's).</summary>
    public PeerProcess? Peer { get; init; }

    /// <summary>Applied to exception messages and notes before they are kept.</summary>
    public Redactor Redactor { get; init; } = Redactor.Default;

    /// <summary>
    /// Shared by all sessions of an agent; when it is used up, the session ends with
    /// <see cref="ProtocolViolation.AggregateMemoryExhausted"/>. Null: unbounded (tests).
    /// </summary>
    public AggregateMemoryBudget? MemoryBudget { get; init; }

    /// <summary>What this session reserved from <see cref="MemoryBudget"/>; its owner releases it when the profile is let go.</summary>
    public long ReservedBytes => _reservedBytes;

    /// <summary>
    /// Keep the process's figures bucketed in time (<see cref="ProcessProfile.Timeline"/>) with these settings; null: no
    /// timeline (`run`, tests). Its memory is charged to <see cref="MemoryBudget"/> like the trees'.
    /// </summary>
    public TimelineSettings? Timeline { get; init; }

    /// <summary>Where the handler calls this process reports ended are counted (a Lambda extension waits on it); null: nowhere.</summary>
    public InvocationCounter? Invocations { get; init; }

    /// <summary>True once HELLO said the shim counts the handler's calls as they end (AWS Lambda).</summary>
    public bool CountsInvocations { get; private set; }

    /// <summary>The process's last reported count of ended handler calls (Stats.invocations_ended).</summary>
    public long InvocationsEnded => Volatile.Read(ref _invocationsEnded);

    private long _invocationsEnded;

    /// <summary>The profile being built; null until HELLO arrived.</summary>
    public ProcessProfile? Profile => _profile;

    public bool IsCompleted { get; private set; }

    /// <summary>The parser-facing adapter: a struct, so that <c>WireParser</c>'s generic calls are direct.</summary>
    public SessionWireHandler Handler => new(this);

    public void OnHello(Hello hello)
    {
        ArgumentNullException.ThrowIfNull(hello);
        EnsureRunning();
        if (_profile is not null) Fail(ProtocolViolation.DuplicateHello, "a second HELLO");
        var recording = hello.ToRecordingMode();
        _burst = recording.IsSampled;
        _callsOnlyInWindows = _burst || !recording.RecordsCalls;
        CountsInvocations = hello.CountsInvocations;
        if (CountsInvocations) Invocations?.AddCountingProcess();
        _profile = new ProcessProfile(
            hello.ToIdentity(),
            hello.ToClockMapping(),
            _time.GetUtcNow(),
            _limits.Exceptions,
            recording) { Peer = Peer };
        if (Timeline is { } settings)
        {
            _timeline = new ProcessTimeline(_profile.Clock, settings);
            _profile.Timeline = _timeline;
            _nextBucketAt = _time.GetTimestamp() + (long)(settings.BucketLength.TotalSeconds * _time.TimestampFrequency);
        }
        _store?.Register(_profile);
        _observer?.OnStarted(_profile);
    }

    /// <summary>
    /// Asks for a checkpoint (<see cref="IProcessObserver.OnCheckpoint"/>) after the next frame; thread-safe.
    /// Requests made before the checkpoint is taken count once.
    /// </summary>
    public void RequestCheckpoint() => Volatile.Write(ref _checkpointRequested, 1);

    /// <summary>
    /// A checkpoint for the observers, taken on the session's thread as soon as it can be (as a snapshot is); completes
    /// once the observers have had a checkpoint taken after this call, with that checkpoint, or with the completed
    /// profile when the connection ends first. Thread-safe.
    /// </summary>
    public Task<ProcessProfile> CheckpointNowAsync()
    {
        RequestCheckpoint();
        return RequestSnapshotAsync();
    }

    /// <summary>
    /// A checkpoint for the caller alone (observers do not hear of it), taken on the session's thread: at once when its
    /// read loop waits for the peer (<see cref="RunAsync"/>), else after the frame it is reading; thread-safe. When the connection ends first, the completed profile; a connection that ends before HELLO
    /// fails it with <see cref="InvalidOperationException"/>.
    /// </summary>
    public Task<ProcessProfile> RequestSnapshotAsync()
    {
        var waiter = new TaskCompletionSource<ProcessProfile>(TaskCreationOptions.RunContinuationsAsynchronously);
        _snapshotWaiters.Enqueue(waiter);
        if (_completed) AnswerSnapshotWaiters(_profile is { IsCompleted: true } completed ? completed : null);
        else Volatile.Read(ref _input)?.Wake();
        return waiter.Task;
    }

    /// <summary>
    /// The function statistics a checkpoint would give now (<see cref="ProcessProfile.FunctionStatistics"/>: open frames
    /// charged up to the process's latest event), without copying the trees: taken on the session's thread like a
    /// snapshot, at the cost of what changed since the previous request (<see cref="LiveFunctionStats"/>). The first
    /// request reads the whole trees once; when nobody asks for <see cref="FunctionStatisticsIdle"/>, the session stops
    /// keeping them. Once the connection ended, the completed profile's. Thread-safe.
    /// </summary>
    public Task<IReadOnlyList<FunctionStats>> RequestFunctionStatisticsAsync()
    {
        var waiter = new TaskCompletionSource<IReadOnlyList<FunctionStats>>(TaskCreationOptions.RunContinuationsAsynchronously);
        _functionStatsWaiters.Enqueue(waiter);
        if (_completed) AnswerFunctionStatsWaiters(_profile is { IsCompleted: true } completed ? completed.FunctionStatistics() : null);
        else Volatile.Read(ref _input)?.Wake();
        return waiter.Task;
    }

    /// <summary>How long the session keeps function statistics up to date after the latest request.</summary>
    public static readonly TimeSpan FunctionStatisticsIdle = TimeSpan.FromSeconds(30);

    /// <summary>After each frame: takes a requested checkpoint or snapshot, and closes the timeline's bucket when it is due.</summary>
    public void AfterFrame()
    {
        TakeRequestedCheckpoint();
        if (_functionStats is not null && _time.GetElapsedTime(_functionStatsAskedAt) > FunctionStatisticsIdle) StopFunctionStatistics();
        if (_timeline is not null && _time.GetTimestamp() >= _nextBucketAt && !IsCompleted && _profile is { } profile)
        {
            _nextBucketAt = _time.GetTimestamp() + (long)(_timeline.Settings.BucketLength.TotalSeconds * _time.TimestampFrequency);
            CloseBucket(profile, ShimNow(profile), chargeOpenFrames: true);
        }
    }

    /// <summary>Takes a requested checkpoint, if any, and answers snapshot requests with it.</summary>
    public void TakeRequestedCheckpoint()
    {
        if (IsCompleted || _profile is not { } profile) return;
        if (!_functionStatsWaiters.IsEmpty) AnswerFunctionStatsWaiters(TakeFunctionStatistics(profile));
        var forObservers = Volatile.Read(ref _checkpointRequested) != 0;
        if (!forObservers && _snapshotWaiters.IsEmpty) return;
        Volatile.Write(ref _checkpointRequested, 0);
        var checkpoint = TakeCheckpoint(profile);
        // Observers first: a caller of CheckpointNowAsync learns of it once they have it.
        if (forObservers) _observer?.OnCheckpoint(checkpoint);
        AnswerSnapshotWaiters(checkpoint);
    }

    private void AnswerFunctionStatsWaiters(IReadOnlyList<FunctionStats>? stats)
    {
        while (_functionStatsWaiters.TryDequeue(out var waiter))
        {
            if (stats is not null) waiter.TrySetResult(stats);
            else waiter.TrySetException(new InvalidOperationException("the connection ended before HELLO"));
        }
    }

    /// <summary>
    /// What <see cref="TakeCheckpoint"/> then <see cref="ProcessProfile.FunctionStatistics"/> would give, from the
    /// nodes that changed: the clocks move to the latest event as there, and the open frames' time so far is charged
    /// to their functions' totals in the answer only.
    /// </summary>
    private IReadOnlyList<FunctionStats> TakeFunctionStatistics(ProcessProfile profile)
    {
        _functionStatsAskedAt = _time.GetTimestamp();
        var at = profile.LastTimestampNs;
        var open = new List<OpenFrame>();
        foreach (var thread in _threads)
        {
            if (!HasProfiledFrames(thread)) continue;
            if (thread.LastTimestamp < at) AdvanceClock(thread, at);
            for (var depth = 0; depth < thread.Depth; depth++)
            {
                ref var frame = ref thread.Stack[depth];
                // Frames collapsed into one "[truncated]" node are one node, counted once (as in CloseTop).
                if (depth > 0 && ReferenceEquals(thread.Stack[depth - 1].Node, frame.Node)) continue;
                open.Add(new OpenFrame(frame.Node, thread.LastTimestamp - frame.EnteredAt));
            }
        }
        var stats = _functionStats ??= new LiveFunctionStats(profile.Threads);
        var answer = stats.Take(open, _burst ? SampleScale(profile, at) : 1.0);
        // Its tables grow with the trees: charged like them, and let go when the budget has no room.
        var grown = stats.HeldBytes - _functionStatsBytes;
        if (grown > 0 && !TryCharge(grown))
        {
            StopFunctionStatistics();
            return answer;
        }
        _functionStatsBytes += Math.Max(0, grown);
        return answer;
    }

    private void StopFunctionStatistics()
    {
        _functionStats = null;
        _unusedBytes += _functionStatsBytes;
        _functionStatsBytes = 0;
    }

    private void AnswerSnapshotWaiters(ProcessProfile? frozen)
    {
        while (_snapshotWaiters.TryDequeue(out var waiter))
        {
            if (frozen is not null) waiter.TrySetResult(frozen);
            else waiter.TrySetException(new InvalidOperationException("the connection ended before HELLO"));
        }
    }

    /// <summary>The agent's time now on the shim's clock (both clocks are the host's: the mapping holds).</summary>
    private long ShimNow(ProcessProfile profile)
    {
        var unixNow = (_time.GetUtcNow() - DateTimeOffset.UnixEpoch).Ticks * TimeSpan.NanosecondsPerTick;
        return Math.Max(profile.LastTimestampNs, profile.Clock.MonotonicNs + (unixNow - profile.Clock.UnixNs));
    }

    /// <summary>
    /// Closes the timeline's bucket at <paramref name="endNs"/>: open frames are charged up to there without touching
    /// the tree (a late event must not find a thread's clock ahead of it). What the timeline grew by is charged to the
    /// memory budget; when the budget has no room, its oldest buckets go instead.
    /// </summary>
    private void CloseBucket(ProcessProfile profile, long endNs, bool chargeOpenFrames)
    {
        var timeline = _timeline!;
        if (chargeOpenFrames)
        {
            foreach (var thread in _threads)
            {
                if (!HasProfiledFrames(thread)) continue;
                var clock = Math.Max(endNs, thread.LastTimestamp);
                for (var depth = 0; depth < thread.Depth; depth++)
                {
                    ref var frame = ref thread.Stack[depth];
                    if (depth > 0 && ReferenceEquals(thread.Stack[depth - 1].Node, frame.Node)) continue;
                    var self = depth == thread.Depth - 1 ? clock - thread.LastTimestamp : 0;
                    timeline.ChargeOpenFrame(frame.Node, self, clock - frame.EnteredAt);
                }
            }
        }
        var grown = timeline.Close(profile, endNs);
        if (grown <= 0)
        {
            _unusedBytes -= grown;
            return;
        }
        if (!TryCharge(grown)) timeline.Trim(grown);
    }

    /// <summary>
    /// Copies the profile with the frames still open charged up to the process's latest event: every thread's
    /// clock moves there (an idle thread's top frame was on its stack all along), in the copy the open frames'
    /// totals include their time so far. Nothing is counted twice: the live frames go on from there.
    /// </summary>
    private ProcessProfile TakeCheckpoint(ProcessProfile profile)
    {
        var at = profile.LastTimestampNs;
        foreach (var thread in _threads)
        {
            if (thread is { Depth: > 0 } && thread.LastTimestamp < at) AdvanceClock(thread, at);
        }
        var checkpoint = profile.CopyAsCheckpoint(_time.GetUtcNow());
        var copiedThreads = checkpoint.Threads.ToDictionary(thread => thread.Id);
        foreach (var thread in _threads)
        {
            if (!HasProfiledFrames(thread)) continue;
            var copy = copiedThreads[thread.Profile.Id];
            var node = copy.Root;
            for (var depth = 0; depth < thread.Depth; depth++)
            {
                ref var frame = ref thread.Stack[depth];
                // Frames collapsed into one "[truncated]" node are one node, counted once (as in CloseTop).
                if (depth > 0 && ReferenceEquals(thread.Stack[depth - 1].Node, frame.Node)) continue;
                node = node.GetOrAddChild(frame.Node.Function!);
                var open = Math.Max(0, thread.LastTimestamp - frame.EnteredAt);
                node.TotalNs += open;
                if (depth == 0) copy.Root.TotalNs += open;
            }
        }
        if (_burst) ScaleSampledTrees(checkpoint, at);
        return checkpoint;
    }

    public void OnDefinitions(Definitions definitions)
    {
        ArgumentNullException.ThrowIfNull(definitions);
        var profile = RequireProfile();
        foreach (var code in definitions.Codes) DefineCode(profile, code);
        foreach (var thread in definitions.Threads) DefineThread(profile, thread);
    }

    /// <summary>Applies whole 16-byte records (an EVENTS payload), in order.</summary>
    public void OnEvents(ReadOnlySpan<byte> packedRecords)
    {
        var profile = RequireProfile();
        if (packedRecords.Length % WireFormat.EventRecordSize != 0)
        {
            Fail(ProtocolViolation.MisalignedEvents,
                $"{packedRecords.Length} bytes of events is not a multiple of {WireFormat.EventRecordSize}");
        }

        var count = EventRecord.Count(packedRecords);
        for (var index = 0; index < count; index++)
        {
            var record = EventRecord.Read(packedRecords, index);
            Apply(profile, record.Timestamp, record.ThreadId, record.CodeId, record.Kind);
        }
    }

    public void OnStats(Stats stats)
    {
        ArgumentNullException.ThrowIfNull(stats);
        var profile = RequireProfile();
        profile.ShimStats = stats.ToShimStatistics();
        ApplyStartup(profile, stats);
        CountInvocations(stats);
    }

    // Cumulative on the wire; only what it adds goes to the agent's count (a smaller number is a shim's mistake, ignored).
    private void CountInvocations(Stats stats)
    {
        var reported = (long)Math.Min(stats.InvocationsEnded, long.MaxValue);
        var added = reported - _invocationsEnded;
        if (added <= 0) return;
        Volatile.Write(ref _invocationsEnded, reported);
        Invocations?.Add(added);
    }

    // The start-up phase and the first invocations come once each, in some STATS (PROTOCOL.md "Start-up").
    private void ApplyStartup(ProcessProfile profile, Stats stats)
    {
        try
        {
            if (stats.Startup is { } startup) profile.Startup = StartupTranslation.ToStartupPhase(startup);
            foreach (var invocation in stats.FirstInvocations)
            {
                if (profile.FirstInvocations.Count >= StartupTranslation.MaxFirstInvocations) break;
                profile.AddFirstInvocation(StartupTranslation.ToFirstInvocation(invocation));
            }
        }
        catch (InvalidDataException invalid)
        {
            Fail(ProtocolViolation.InvalidRecord, invalid.Message);
        }
    }

    /// <summary>
    /// Adds exception records and tallies to the process's groups, in order. Each record's thread and every code id
    /// it uses must be defined; a record is checked whole before it is added.
    /// </summary>
    public void OnExceptions(Exceptions exceptions)
    {
        ArgumentNullException.ThrowIfNull(exceptions);
        var profile = RequireProfile();
        var reader = new ExceptionReader(_limits.Exceptions, FunctionOf, Redactor);
        foreach (var record in exceptions.Records)
        {
            var threadId = record.ThreadId;
            if (threadId == 0) Fail(ProtocolViolation.InvalidRecord, "an exception record with thread id 0");
            if (threadId >= (uint)_threads.Length || _threads[threadId] is null)
            {
                Fail(ProtocolViolation.UndefinedId, $"an exception record on thread id {threadId}, which is not defined");
            }
            profile.Exceptions.Add(reader.Read(record));
        }
        foreach (var tally in exceptions.Tallies) profile.Exceptions.AddTally(reader.Read(tally));
    }

    public void OnGoodbye(Goodbye goodbye)
    {
        ArgumentNullException.ThrowIfNull(goodbye);
        var profile = RequireProfile();
        if (_goodbye is not null) Fail(ProtocolViolation.FrameAfterGoodbye, "a second GOODBYE");
        _goodbye = goodbye;
        profile.GoodbyeReason = goodbye.Reason.ToString();
        if (goodbye.Detail.Length > 0) profile.GoodbyeDetail = goodbye.Detail;
        if (goodbye.FinalStats is not null)
        {
            profile.ShimStats = goodbye.FinalStats.ToShimStatistics();
            ApplyStartup(profile, goodbye.FinalStats);
            CountInvocations(goodbye.FinalStats);
        }
    }

    /// <summary>
    /// Ends the session: closes the frames still open at the connection's last timestamp (GOODBYE's clock when
    /// it was given) without counting calls, records how the connection ended and publishes the profile, which
    /// never changes afterwards. Without HELLO there is no profile: the store only counts the connection.
    /// Calling it again does nothing.
    /// </summary>
    public void Complete(ConnectionEnd end)
    {
        if (IsCompleted) return;
        IsCompleted = true;
        var profile = _profile;
        if (profile is null)
        {
            _completed = true;
            AnswerSnapshotWaiters(null);
            AnswerFunctionStatsWaiters(null);
            _store?.RecordConnectionWithoutProfile(end.ToOutcome());
            return;
        }

        var endTimestamp = profile.LastTimestampNs;
        if (_goodbye is { EndMonotonicNs: > 0 } goodbye && goodbye.EndMonotonicNs > endTimestamp)
        {
            endTimestamp = goodbye.EndMonotonicNs;
        }

        if (_invocationWindowOpen) EndInvocationWindow(profile, endTimestamp);
        profile.FramesOpenAtEnd += CloseOpenFrames(endTimestamp);
        if (_hasEvents) profile.LastTimestampNs = endTimestamp;
        // The last bucket holds what the trees have before burst scaling: buckets are what the windows saw.
        if (_timeline is not null) CloseBucket(profile, endTimestamp, chargeOpenFrames: false);
        if (_burst) ScaleSampledTrees(profile, endTimestamp);
        profile.EndedAt = _time.GetUtcNow();
        profile.End = end.ToOutcome();
        _completed = true;
        _store?.Publish(profile);
        // Observers first, as for a checkpoint: whoever waited for one learns of the end once they have it.
        _observer?.OnCompleted(profile);
        AnswerSnapshotWaiters(profile);
        _functionStats = null;
        if (!_functionStatsWaiters.IsEmpty) AnswerFunctionStatsWaiters(profile.FunctionStatistics());
    }

    /// <summary>
    /// Reads one connection's stream to its end through the protocol's read loop, then completes the session
    /// with how it ended. Never throws for what the peer sends: the end says it. A failing socket's exception is
    /// the transport's: it propagates to the host, which completes the session with it.
    /// </summary>
    public async Task<ConnectionEnd> RunAsync(PipeReader input, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(input);
        var wakeable = new SessionInput(input, TakeRequestedCheckpoint);
        Volatile.Write(ref _input, wakeable);
        ConnectionEnd end;
        try
        {
            var result = await WireConnection.RunAsync(wakeable, Handler, cancellationToken, _limits.MaxFramePayload).ConfigureAwait(false);
            end = ConnectionEnd.FromStreamEnd(result.End);
        }
        catch (ProtocolException violation)
        {
            end = ConnectionEnd.ProtocolError(violation);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            end = ConnectionEnd.Cancelled;
        }
        Complete(end);
        return end;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Apply(ProcessProfile profile, ulong rawTimestamp, uint threadId, uint codeId, EventKind kind)
    {
        profile.EventsReceived++;
        if (kind is < EventKind.Start or > EventKind.InvocationWindowEnd) ThrowUnknownKind(kind);
        if (rawTimestamp > long.MaxValue) ThrowTimestampOutOfRange(rawTimestamp);
        if (kind >= EventKind.WindowStart)
        {
            // Window markers are process-wide.
            if ((threadId | codeId) != 0) ThrowMarkerWithIds(kind, threadId, codeId);
            if (kind >= EventKind.InvocationWindowStart) OnInvocationWindowMarker(profile, (long)rawTimestamp, kind);
            else OnWindowMarker(profile, (long)rawTimestamp, kind);
            return;
        }
        var threads = _threads;
        var functions = _functions;
        var thread = threadId < (uint)threads.Length ? threads[threadId] : null;
        if (thread is null) ThrowUndefinedThread(threadId);
        var function = codeId < (uint)functions.Length ? functions[codeId] : null;
        if (function is null) ThrowUndefinedCode(codeId);
        // Not to the profile's trees: outside any window, or inside an invocation's.
        if (_callsOnlyInWindows && !_windowOpen)
        {
            if (_invocationWindowOpen) ApplyInInvocationWindow(profile, thread, function, codeId, kind, (long)rawTimestamp);
            else profile.Windows.EventsOutsideWindows++;
            return;
        }

        var timestamp = (long)rawTimestamp;
        NoteTimestamp(profile, timestamp);

        thread.Profile.Events++;
        if (thread.Profile.Events == 1)
        {
            thread.Profile.FirstTimestampNs = timestamp;
            thread.LastTimestamp = timestamp;
        }
        else
        {
            timestamp = MoveClock(profile, thread, timestamp);
        }
        thread.Profile.LastTimestampNs = timestamp;
        PushOrPop(profile, thread, function, codeId, kind, timestamp);
    }

    /// <summary>
    /// Moves the thread's clock to <paramref name="timestamp"/>, the time since its previous event going to the frame on
    /// top; a timestamp before that event counts as equal to it. Returns the timestamp the event takes.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static long MoveClock(ProcessProfile profile, ThreadState thread, long timestamp)
    {
        if (timestamp < thread.LastTimestamp)
        {
            profile.ClampedTimestamps++;
            return thread.LastTimestamp;
        }
        AdvanceClock(thread, timestamp);
        return timestamp;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void PushOrPop(ProcessProfile profile, ThreadState thread, FunctionInfo function, uint codeId, EventKind kind, long timestamp)
    {
        switch (kind)
        {
            case EventKind.Start:
            case EventKind.Resume:
            case EventKind.Throw:
            case EventKind.Seed:
                Push(profile, thread, function, codeId, kind, timestamp);
                break;
            default:
                Pop(profile, thread, codeId, timestamp);
                break;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void NoteTimestamp(ProcessProfile profile, long timestamp)
    {
        if (!_hasEvents)
        {
            _hasEvents = true;
            profile.FirstTimestampNs = timestamp;
            profile.LastTimestampNs = timestamp;
        }
        else if (timestamp > profile.LastTimestampNs)
        {
            profile.LastTimestampNs = timestamp;
        }
    }

    /// <summary>WINDOW_START and WINDOW_END: only in a burst stream, strictly alternating.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void OnWindowMarker(ProcessProfile profile, long timestamp, EventKind kind)
    {
        if (!_burst)
        {
            Fail(ProtocolViolation.InvalidRecord,
                $"a {kind} record in a stream whose mode is \"{profile.Recording.Mode}\" (only burst streams have windows)");
        }
        if ((kind == EventKind.WindowStart) == _windowOpen)
        {
            Fail(ProtocolViolation.InvalidRecord,
                kind == EventKind.WindowStart ? "WINDOW_START inside an open window" : "WINDOW_END without an open window");
        }
        if (_invocationWindowOpen) Fail(ProtocolViolation.InvalidRecord, $"a {kind} record inside an invocation's window");

        NoteTimestamp(profile, timestamp);
        if (kind == EventKind.WindowStart)
        {
            _windowOpen = true;
            _windowStart = timestamp;
            _firstWindowStart ??= timestamp;
            profile.Windows.Count++;
            return;
        }

        // Every window's stacks are balanced: what is still open closes here, without counting calls.
        CloseOpenFrames(timestamp);
        _windowOpen = false;
        profile.Windows.CoveredNs += Math.Max(0, timestamp - _windowStart);
    }

    /// <summary>
    /// INVOCATION_WINDOW_START and INVOCATION_WINDOW_END: in burst and exceptions streams, never inside another
    /// window. An end without a start is skipped: the connection began inside the
    /// window (the shim reconnected), so the start went with the one before.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void OnInvocationWindowMarker(ProcessProfile profile, long timestamp, EventKind kind)
    {
        if (!_callsOnlyInWindows)
        {
            Fail(ProtocolViolation.InvalidRecord,
                $"a {kind} record in a stream whose mode is \"{profile.Recording.Mode}\" (it records every call)");
        }
        if (kind == EventKind.InvocationWindowStart)
        {
            if (_invocationWindowOpen || _windowOpen)
            {
                Fail(ProtocolViolation.InvalidRecord,
                    _windowOpen ? "INVOCATION_WINDOW_START inside a burst window" : "INVOCATION_WINDOW_START inside an open invocation window");
            }
            NoteTimestamp(profile, timestamp);
            _invocationWindowOpen = true;
            foreach (var thread in _threads)
            {
                if (thread is not null) thread.Root = CallNode.CreateRoot(InvocationWindowRootName);
            }
            return;
        }
        if (!_invocationWindowOpen) return;
        NoteTimestamp(profile, timestamp);
        EndInvocationWindow(profile, timestamp);
    }

    /// <summary>The invocation window's frames close (its invocation's tree goes to the profile), its own roots go.</summary>
    private void EndInvocationWindow(ProcessProfile profile, long timestamp)
    {
        CloseOpenFrames(timestamp);
        foreach (var thread in _threads)
        {
            if (thread is not null) thread.Root = thread.Profile.Root;
        }
        profile.CallTreeNodes -= _invocationWindowNodes;
        _unusedBytes += CallNodeCost * _invocationWindowNodes;
        _invocationWindowNodes = 0;
        _invocationWindowOpen = false;
    }

    private const string InvocationWindowRootName = "invocation window";

    /// <summary>
    /// An event inside an invocation's window: onto the thread's stack and the window's own roots, with the thread's
    /// clock, but none of the profile's counts.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ApplyInInvocationWindow(ProcessProfile profile, ThreadState thread, FunctionInfo function, uint codeId, EventKind kind, long timestamp)
    {
        NoteTimestamp(profile, timestamp);
        PushOrPop(profile, thread, function, codeId, kind, MoveClock(profile, thread, timestamp));
    }

    /// <summary>Closes every thread's open frames at <paramref name="timestamp"/> (or the thread's own later clock); returns how many.</summary>
    private long CloseOpenFrames(long timestamp)
    {
        long closed = 0;
        foreach (var thread in _threads)
        {
            if (thread is null || (thread.Depth == 0 && thread.FramesBeyondLimit == 0)) continue;
            var closeAt = Math.Max(timestamp, thread.LastTimestamp);
            AdvanceClock(thread, closeAt);
            closed += thread.Depth + thread.FramesBeyondLimit;
            thread.FramesBeyondLimit = 0;
            while (thread.Depth > 0) CloseTop(thread, closeAt);
            thread.Profile.LastTimestampNs = closeAt;
        }
        return closed;
    }

    /// <summary>
    /// Burst mode, on the completed profile or a checkpoint's copy: a window still open counts until
    /// <paramref name="endTimestamp"/>, then the trees are scaled to the span the windows stand for.
    /// </summary>
    private void ScaleSampledTrees(ProcessProfile profile, long endTimestamp)
    {
        if (_windowOpen) profile.Windows.CoveredNs += Math.Max(0, endTimestamp - _windowStart);
        if (SampledSince(profile) is not { } start) return;
        SampleScaling.Apply(profile, endTimestamp - start);
    }

    /// <summary>The scale <see cref="ScaleSampledTrees"/> would apply to a checkpoint taken at <paramref name="endTimestamp"/>.</summary>
    private double SampleScale(ProcessProfile profile, long endTimestamp)
    {
        if (SampledSince(profile) is not { } start) return 1.0;
        var covered = profile.Windows.CoveredNs + (_windowOpen ? Math.Max(0, endTimestamp - _windowStart) : 0);
        return SampleScaling.Scale(covered, endTimestamp - start);
    }

    /// <summary>Burst mode: where the span the windows stand for starts (the connection, or the first window if earlier); null before any window.</summary>
    private long? SampledSince(ProcessProfile profile)
    {
        if (_firstWindowStart is not { } start) return null;
        var connected = profile.Clock.MonotonicNs;
        return connected > 0 && connected < start ? connected : start;
    }

    /// <summary>Has the thread frames open in the profile's trees (not an invocation window's)?</summary>
    private bool HasProfiledFrames([NotNullWhen(true)] ThreadState? thread) => thread is { Depth: > 0 } && !_invocationWindowOpen;

    /// <summary>Gives the time since the thread's previous event to the frame on top (it was running).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AdvanceClock(ThreadState thread, long timestamp)
    {
        if (thread.Depth > 0) thread.Stack[thread.Depth - 1].Node.SelfNs += timestamp - thread.LastTimestamp;
        thread.LastTimestamp = timestamp;
    }

    private void Push(ProcessProfile profile, ThreadState thread, FunctionInfo function, uint codeId, EventKind kind, long timestamp)
    {
        var depth = thread.Depth;
        if (depth >= _limits.MaxStackDepth)
        {
            thread.FramesBeyondLimit++;
            profile.DepthLimitedPushes++;
            return;
        }

        var parent = depth == 0 ? thread.Root : thread.Stack[depth - 1].Node;
        var node = parent.FindChild(function) ?? NewNode(profile, parent, function);
        if (_functionStats is { } functionStats && !_invocationWindowOpen) functionStats.Touch(node);
        if (kind == EventKind.Start) node.Calls++;
        else if (kind != EventKind.Seed) node.Resumes++;

        if (depth == thread.Stack.Length)
        {
            Charge(StackFrameCost * Math.Min(thread.Stack.Length, _limits.MaxStackDepth - thread.Stack.Length));
            thread.Grow(_limits.MaxStackDepth);
        }
        ref var frame = ref thread.Stack[depth];
        frame.Node = node;
        frame.CodeId = codeId;
        frame.EnteredAt = timestamp;
        thread.Depth = depth + 1;
        // One compare with a field per call: the code id is in hand, the function's own fields may not be in the cache.
        if (codeId == _readyOnCodeId && kind == EventKind.Start && thread.Invocation is null) StartInvocation(profile, thread, node, function, depth, timestamp);
    }

    /// <summary>
    /// An outermost call of the ready-on function: one of its first invocations, whose exact call tree is kept
    /// (<see cref="InvocationCallTree"/>): in full mode any, in burst and exceptions mode one inside an invocation's
    /// window (a burst window would cut it).
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void StartInvocation(ProcessProfile profile, ThreadState thread, CallNode node, FunctionInfo function, int depth, long timestamp)
    {
        if (_callsOnlyInWindows && !_invocationWindowOpen) return;
        var planned = profile.Startup?.FirstInvocationsPlanned ?? StartupTranslation.MaxFirstInvocations;
        if (_invocationsTraced >= planned)
        {
            _readyOnCodeId = 0;  // every first invocation is followed: later calls no longer come here
            return;
        }
        // Not at a "[truncated]" node: the tree's bound was reached before the call.
        if (!ReferenceEquals(node.Function, function)) return;
        _invocationsTraced++;
        thread.Invocation = new OpenInvocation(this, profile, new InvocationCallTree(node, timestamp), depth);
    }

    /// <summary>The invocation open on a thread returned (or its stack was closed): its tree goes to the profile.</summary>
    private void EndInvocation(ProcessProfile profile, InvocationCallTree invocation)
    {
        var tree = invocation.Difference(out var nodes);
        // Charged like the process's own nodes; a tree that does not fit is left out, the rest goes on.
        if (TryCharge(CallNodeCost * nodes)) profile.AddInvocationCallTree(invocation.StartNs, tree);
    }

    /// <summary>
    /// A node for a path seen for the first time; once the process has <see cref="SessionLimits.MaxCallTreeNodes"/>,
    /// the caller's "[truncated]" child instead, where everything called below it stays.
    /// </summary>
    private CallNode NewNode(ProcessProfile profile, CallNode parent, FunctionInfo function)
    {
        if (profile.CallTreeNodes >= _limits.MaxCallTreeNodes)
        {
            profile.TruncatedPushes++;
            _truncated ??= FunctionInfo.Placeholder(TruncatedNodeName);
            if (ReferenceEquals(parent.Function, _truncated)) return parent;
            if (parent.FindChild(_truncated) is { } existing) return existing;
            function = _truncated;
        }
        Charge(CallNodeCost);
        profile.CallTreeNodes++;
        var node = parent.GetOrAddChild(function);
        node.Id = ++_nodeIds;
        if (_invocationWindowOpen) _invocationWindowNodes++;
        else _timeline?.Track(node);
        return node;
    }

    /// <summary>The function name of the node that holds calls beyond <see cref="SessionLimits.MaxCallTreeNodes"/>.</summary>
    public const string TruncatedNodeName = "[truncated]";

    // Estimates for the memory budget (64-bit): a node with its share of a child list and index, a definition
    // with its strings, a thread with its profile, root and first stack.
    private const long CallNodeCost = 160;
    private const long FunctionCost = 320;
    private const long ThreadCost = 1024;
    private const long StackFrameCost = 24;

    /// <summary>Takes <paramref name="bytes"/> from this session's reservation, reserving another chunk when needed.</summary>
    private void Charge(long bytes)
    {
        if (!TryCharge(bytes))
        {
            Fail(ProtocolViolation.AggregateMemoryExhausted,
                $"the agent's memory for aggregates ({MemoryBudget!.LimitBytes} bytes over all connections) is used up");
        }
    }

    private bool TryCharge(long bytes)
    {
        if (MemoryBudget is null) return true;
        if (_unusedBytes < bytes)
        {
            var chunk = Math.Max(bytes, AggregateMemoryBudget.ChunkBytes);
            if (!MemoryBudget.TryReserve(chunk)) return false;
            _reservedBytes += chunk;
            _unusedBytes += chunk;
        }
        _unusedBytes -= bytes;
        return true;
    }

    private static void Pop(ProcessProfile profile, ThreadState thread, uint codeId, long timestamp)
    {
        // Frames beyond the depth limit are not stored: an exit at that depth closes the innermost of them.
        if (thread.FramesBeyondLimit > 0)
        {
            thread.FramesBeyondLimit--;
            return;
        }

        var stack = thread.Stack;
        var index = thread.Depth - 1;
        while (index >= 0 && stack[index].CodeId != codeId) index--;
        if (index < 0)
        {
            profile.UnmatchedExits++;
            return;
        }

        // Frames above the one that exits lost their own exit event: close them here.
        profile.ImplicitExits += thread.Depth - 1 - index;
        while (thread.Depth > index) CloseTop(thread, timestamp);
    }

    private static void CloseTop(ThreadState thread, long timestamp)
    {
        var depth = thread.Depth - 1;
        ref var frame = ref thread.Stack[depth];
        var elapsed = timestamp - frame.EnteredAt;
        // Frames collapsed into one "[truncated]" node count its time once, like a recursive function's.
        if (depth == 0 || !ReferenceEquals(thread.Stack[depth - 1].Node, frame.Node)) frame.Node.TotalNs += elapsed;
        if (depth == 0) thread.Root.TotalNs += elapsed;
        thread.Depth = depth;
        if (thread.Invocation is { } invocation && invocation.Depth == depth) EndInvocation(thread, invocation);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void EndInvocation(ThreadState thread, OpenInvocation invocation)
    {
        thread.Invocation = null;
        invocation.End();
    }

    private void DefineCode(ProcessProfile profile, CodeDefinition code)
    {
        var id = code.Id;
        if (id == 0) Fail(ProtocolViolation.InvalidRecord, "code id 0 is never used");
        if (id > (uint)_limits.MaxCodeId)
        {
            Fail(ProtocolViolation.TooManyDefinitions, $"code id {id} is above this agent's limit of {_limits.MaxCodeId} definitions");
        }
        if (id < (uint)_functions.Length && _functions[id] is { } existing)
        {
            Fail(ProtocolViolation.DuplicateDefinition,
                $"code id {id} is defined twice ({existing.QualifiedName}, then {code.QualifiedName})");
        }

        Charge(FunctionCost + 2L * (code.QualifiedName.Length + code.FileName.Length + code.Module.Length));
        _functions = GrowToHold(_functions, id, _limits.MaxCodeId);
        var function = FunctionInfo.Create(
            code.QualifiedName,
            code.FileName,
            (int)Math.Min(code.FirstLine, int.MaxValue),
            code.Module,
            code.KindFlags,
            profile.Identity.WorkingDirectory);
        if (code.ReadyOn) _readyOnCodeId = id;
        _functions[id] = function;
        profile.AddFunction(function);
    }

    private void DefineThread(ProcessProfile profile, ThreadDefinition definition)
    {
        var id = definition.Id;
        if (id == 0) Fail(ProtocolViolation.InvalidRecord, "thread id 0 is never used");
        if (id > WireFormat.MaxThreadId)
        {
            Fail(ProtocolViolation.InvalidRecord, $"thread id {id} does not fit the records' 24 bits");
        }
        if (id > (uint)_limits.MaxThreadId)
        {
            Fail(ProtocolViolation.TooManyThreads, $"thread id {id} is above this agent's limit of {_limits.MaxThreadId} threads");
        }

        // Defining a known id again renames the thread (PROTOCOL.md: ThreadDefinition).
        var thread = id < (uint)_threads.Length ? _threads[id] : null;
        if (thread is null)
        {
            Charge(ThreadCost);
            profile.CallTreeNodes++; // its root
            _threads = GrowToHold(_threads, id, _limits.MaxThreadId);
            thread = new ThreadState(new ThreadProfile(id));
            if (_invocationWindowOpen) thread.Root = CallNode.CreateRoot(InvocationWindowRootName);
            _threads[id] = thread;
            profile.AddThread(thread.Profile);
            _timeline?.TrackThread(thread.Profile);
        }
        var threadProfile = thread.Profile;
        threadProfile.Ident = definition.Ident;
        threadProfile.NativeId = definition.NativeId;
        threadProfile.Name = definition.Name;
        threadProfile.IsMain = definition.IsMain;
    }

    private static T?[] GrowToHold<T>(T?[] table, uint id, int maxId) where T : class
    {
        if (id < (uint)table.Length) return table;
        // Doubling keeps growth amortized; the limit caps it, so a large id costs at most the limit's table.
        var length = (int)Math.Min(Math.Max((long)id + 1, (long)table.Length * 2), (long)maxId + 1);
        Array.Resize(ref table, length);
        return table;
    }

    private FunctionInfo? FunctionOf(uint codeId) => codeId < (uint)_functions.Length ? _functions[codeId] : null;

    private ProcessProfile RequireProfile()
    {
        EnsureRunning();
        return _profile ?? ThrowMissingHello();
    }

    private void EnsureRunning()
    {
        if (IsCompleted) throw new InvalidOperationException("The session is completed; it accepts nothing more.");
    }

    [DoesNotReturn]
    private static void Fail(ProtocolViolation violation, string message) => throw new ProtocolException(violation, message);

    [DoesNotReturn]
    private static ProcessProfile ThrowMissingHello()
        => throw new ProtocolException(ProtocolViolation.MissingHello, "data before HELLO");

    [DoesNotReturn, MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowUnknownKind(EventKind kind)
        => throw new ProtocolException(ProtocolViolation.InvalidRecord, $"unknown event kind {(byte)kind}");

    [DoesNotReturn, MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowMarkerWithIds(EventKind kind, uint threadId, uint codeId)
        => throw new ProtocolException(ProtocolViolation.InvalidRecord, $"a {kind} record with thread {threadId} and code {codeId} (both must be 0)");

    [DoesNotReturn, MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowTimestampOutOfRange(ulong timestamp)
        => throw new ProtocolException(ProtocolViolation.InvalidRecord, $"timestamp {timestamp} is out of range");

    [DoesNotReturn, MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowUndefinedThread(uint threadId)
        => throw new ProtocolException(threadId == 0 ? ProtocolViolation.InvalidRecord : ProtocolViolation.UndefinedId,
            threadId == 0 ? "an event with thread id 0" : $"an event on thread id {threadId}, which is not defined");

    [DoesNotReturn, MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowUndefinedCode(uint codeId)
        => throw new ProtocolException(codeId == 0 ? ProtocolViolation.InvalidRecord : ProtocolViolation.UndefinedId,
            codeId == 0 ? "an event with code id 0" : $"an event for code id {codeId}, which is not defined");

    private struct Frame
    {
        public CallNode Node;
        public long EnteredAt;
        public uint CodeId;
    }

    private sealed class OpenInvocation(ProcessSession session, ProcessProfile profile, InvocationCallTree tree, int depth)
    {
        /// <summary>The stack depth of the ready-on function's frame.</summary>
        public int Depth { get; } = depth;

        public void End() => session.EndInvocation(profile, tree);
    }

    private sealed class ThreadState(ThreadProfile profile)
    {
        public readonly ThreadProfile Profile = profile;
        /// <summary>Where the thread's outermost frames go: the profile's root, or an invocation window's own.</summary>
        public CallNode Root = profile.Root;
        public Frame[] Stack = new Frame[16];
        public int Depth;
        public long FramesBeyondLimit;
        public long LastTimestamp;
        /// <summary>The first invocation of the ready-on function running on this thread, if any.</summary>
        public OpenInvocation? Invocation;

        public void Grow(int maxDepth)
            => Array.Resize(ref Stack, (int)Math.Min((long)Stack.Length * 2, maxDepth));
    }
}

/// <summary>Hands what the parser decodes to a <see cref="ProcessSession"/> (see <see cref="IWireHandler"/>).</summary>
public readonly struct SessionWireHandler(ProcessSession session) : IWireHandler
{
    public void OnHello(Hello hello) => session.OnHello(hello);

    public void OnDefinitions(Definitions definitions)
    {
        session.OnDefinitions(definitions);
        session.AfterFrame();
    }

    public void OnEvents(ReadOnlySpan<byte> packedRecords)
    {
        session.OnEvents(packedRecords);
        session.AfterFrame();
    }

    public void OnStats(Stats stats)
    {
        session.OnStats(stats);
        session.AfterFrame();
    }

    public void OnGoodbye(Goodbye goodbye) => session.OnGoodbye(goodbye);

    public void OnExceptions(Exceptions exceptions)
    {
        session.OnExceptions(exceptions);
        session.AfterFrame();
    }
}

using System.Runtime.InteropServices;

namespace TelemetryAgent.Profiling;

/// <summary>How a process's timeline buckets its figures, and how much of them it keeps.</summary>
public sealed record TimelineSettings
{
    public static TimelineSettings Default { get; } = new();

    /// <summary>How often a bucket closes (by the agent's clock); the granularity of time-range answers.</summary>
    public TimeSpan BucketLength { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>How far back buckets are kept; older ones are dropped.</summary>
    public TimeSpan Window { get; init; } = TimeSpan.FromHours(1);

    /// <summary>Estimated bytes of one process's buckets; past it the oldest are dropped, whatever their age.</summary>
    public long MaxBytes { get; init; } = 16L << 20;
}

/// <summary>A span of a process's life in Unix nanoseconds, end exclusive.</summary>
public readonly record struct ProfileSpan(long StartUnixNs, long EndUnixNs)
{
    public DateTimeOffset Start => ClockMapping.FromUnixNs(StartUnixNs);
    public DateTimeOffset End => ClockMapping.FromUnixNs(EndUnixNs);
    public long DurationNs => Math.Max(0, EndUnixNs - StartUnixNs);
}

/// <summary>
/// One closed bucket: what a process added over one interval, per call-tree node (calls, resumes, self and total
/// time, open frames charged up to the bucket's end) and per exception group (counts by fate, notes and messages
/// first seen). Never changes once closed.
/// </summary>
public sealed class TimelineBucket
{
    internal TimelineBucket(ProfileSpan span, byte[] entries, int entryCount, IReadOnlyList<ExceptionSpan> exceptions,
        long events, long eventsDropped, long coveredNs)
    {
        Span = span;
        Entries = entries;
        EntryCount = entryCount;
        Exceptions = exceptions;
        Events = events;
        EventsDropped = eventsDropped;
        CoveredNs = coveredNs;
        Bytes = FixedBytes + entries.Length + exceptions.Sum(exception => exception.Bytes);
    }

    // The object, its span and counters, the entries array's header and the exceptions list.
    private const long FixedBytes = 160;

    public ProfileSpan Span { get; }

    /// <summary>Event records received in this interval.</summary>
    public long Events { get; }

    /// <summary>Events the shim reported dropped in this interval.</summary>
    public long EventsDropped { get; }

    /// <summary>Burst mode: time the windows covered in this interval (0 otherwise).</summary>
    public long CoveredNs { get; }

    /// <summary>Call-tree nodes whose figures changed in this interval.</summary>
    public int EntryCount { get; }

    /// <summary>Exception groups that changed in this interval.</summary>
    public IReadOnlyList<ExceptionSpan> Exceptions { get; }

    /// <summary>Estimated memory held by this bucket.</summary>
    public long Bytes { get; }

    /// <summary>
    /// Per node that changed: its timeline id (the difference from the previous entry's) and the four figures'
    /// differences, each a zigzag varint: compact, since most are small.
    /// </summary>
    internal byte[] Entries { get; }
}

/// <summary>What one exception group added over an interval.</summary>
/// <param name="Group">The live group (its identity: type, raise site, fingerprint).</param>
/// <param name="Fates">Exceptions counted in the interval, by fate.</param>
/// <param name="Detailed">Of those, the ones that came with detail (records).</param>
/// <param name="HandledInProgram">Handled records whose handler is the program's code.</param>
/// <param name="NewNotes">Notes first seen in the interval.</param>
/// <param name="NewSampleMessages">Messages first seen in the interval.</param>
/// <param name="Latest">The group's latest record at the end of the interval, when a record came in it.</param>
public sealed record ExceptionSpan(
    ExceptionAggregate Group,
    FateCounts Fates,
    long Detailed,
    long HandledInProgram,
    IReadOnlyList<string> NewNotes,
    IReadOnlyList<string> NewSampleMessages,
    ExceptionOccurrence? Latest)
{
    internal long Bytes => 200 + NewNotes.Sum(note => 40 + 2L * note.Length) + NewSampleMessages.Sum(text => 40 + 2L * text.Length);
}

/// <summary>
/// A process's figures bucketed in time, so that "the last 60 s" or "between t1 and t2" can be answered for its call
/// trees, functions and exceptions. The session that writes the profile closes a bucket every
/// <see cref="TimelineSettings.BucketLength"/> on its own thread: the difference of every node since the previous
/// close, the open frames charged up to the process's latest event (so a frame that runs for minutes shows in every
/// bucket it spans, not only the one it returns in). Nothing is done per event: the session tells the timeline of
/// each new node, and a close walks the nodes once.
/// </summary>
/// <remarks>
/// Written by one session's thread (<see cref="Track"/>, <see cref="ChargeOpenFrame"/>, <see cref="Close"/>); read by any
/// thread (<see cref="Buckets"/>, <see cref="Select"/>): closed buckets are immutable and published under a lock taken
/// once per close. Bounded by <see cref="TimelineSettings.Window"/> and <see cref="TimelineSettings.MaxBytes"/>.
/// </remarks>
public sealed class ProcessTimeline
{
    private const int FiguresPerNode = 4;
    // A node id (its array slot), the parallel baseline and open-frame slots.
    private const long BytesPerNode = 8 + FiguresPerNode * 8 + 16;

    private readonly TimelineSettings _settings;
    private readonly ClockMapping _clock;

    // The session's thread only.
    private CallNode?[] _nodes = new CallNode?[256];
    private long[] _baseline = new long[256 * FiguresPerNode];
    private long[] _openSelf = new long[256];
    private long[] _openTotal = new long[256];
    private readonly List<int> _openIds = [];
    private int _nodeCount;
    private readonly Dictionary<ExceptionAggregate, GroupBaseline> _groups = new(ReferenceEqualityComparer.Instance);
    private long _lastCloseNs;
    private long _eventsAtClose;
    private ulong _droppedAtClose;
    private long _coveredAtClose;
    private byte[] _scratch = new byte[4096];

    // Shared with readers, under _lock.
    private readonly Lock _lock = new();
    private TimelineBucket[] _buckets = [];
    private CallNode?[] _publishedNodes = [];
    private ThreadProfile[] _threads = [];
    private long _bucketBytes;
    private long _droppedBuckets;

    public ProcessTimeline(ClockMapping clock, TimelineSettings? settings = null)
    {
        _clock = clock;
        _settings = settings ?? TimelineSettings.Default;
        _lastCloseNs = clock.MonotonicNs;
    }

    public TimelineSettings Settings => _settings;

    /// <summary>Closed buckets, oldest first.</summary>
    public IReadOnlyList<TimelineBucket> Buckets
    {
        get { lock (_lock) return _buckets; }
    }

    /// <summary>Buckets dropped so far (older than the window, or beyond the byte bound).</summary>
    public long DroppedBuckets
    {
        get { lock (_lock) return _droppedBuckets; }
    }

    /// <summary>Estimated memory the timeline holds: its buckets and its per-node state.</summary>
    public long HeldBytes
    {
        get { lock (_lock) return _bucketBytes + _publishedNodes.Length * BytesPerNode; }
    }

    /// <summary>The span the kept buckets cover; null before the first close.</summary>
    public ProfileSpan? Covered
    {
        get
        {
            var buckets = Buckets;
            return buckets.Count == 0 ? null : new ProfileSpan(buckets[0].Span.StartUnixNs, buckets[^1].Span.EndUnixNs);
        }
    }

    /// <summary>
    /// Starts following a new call-tree node (the session calls it when it creates one, after numbering it: the
    /// timeline exists from HELLO on, so it follows every node, 1, 2, ... in order).
    /// </summary>
    internal void Track(CallNode node)
    {
        var id = node.Id;
        System.Diagnostics.Debug.Assert(id == _nodeCount + 1, "the session numbers its nodes in order");
        if (id >= _nodes.Length)
        {
            var length = Math.Max(_nodes.Length * 2, id + 1);
            Array.Resize(ref _nodes, length);
            Array.Resize(ref _baseline, length * FiguresPerNode);
            Array.Resize(ref _openSelf, length);
            Array.Resize(ref _openTotal, length);
        }
        _nodes[id] = node;
        _nodeCount = id;
    }

    /// <summary>Starts following a thread (its root is the top of its nodes' paths).</summary>
    internal void TrackThread(ThreadProfile thread)
    {
        lock (_lock) _threads = [.. _threads, thread];
    }

    /// <summary>
    /// Before <see cref="Close"/>: a frame of <paramref name="node"/> is open; up to the bucket's end it adds
    /// <paramref name="totalNs"/> to the node's total and, on top of its stack, <paramref name="selfNs"/> to its self time,
    /// which the tree gets only when the frame returns (or the next event comes). The next close sees them in the
    /// tree, or charges them again, and counts only the difference: buckets add up to the tree, whatever comes late.
    /// </summary>
    internal void ChargeOpenFrame(CallNode node, long selfNs, long totalNs)
    {
        var id = node.Id;
        if (id == 0) return;
        _openIds.Add(id);
        _openSelf[id] += Math.Max(0, selfNs);
        _openTotal[id] += Math.Max(0, totalNs);
    }

    /// <summary>
    /// Closes the bucket that ends at <paramref name="endNs"/> (the shim's clock): every node's figures since the
    /// previous close, open frames charged as <see cref="ChargeOpenFrame"/> said, and the exception groups that changed.
    /// Then drops what is beyond the window or the byte bound. Returns the change in <see cref="HeldBytes"/>.
    /// </summary>
    internal long Close(ProcessProfile profile, long endNs)
    {
        var heldBefore = HeldBytes;
        endNs = Math.Max(endNs, _lastCloseNs);
        var writer = new EntryWriter(_scratch);
        var entries = 0;
        var previousId = 0;
        for (var id = 1; id <= _nodeCount; id++)
        {
            var node = _nodes[id]!;
            var at = id * FiguresPerNode;
            var calls = node.Calls - _baseline[at];
            var resumes = node.Resumes - _baseline[at + 1];
            var self = node.SelfNs + _openSelf[id] - _baseline[at + 2];
            var total = node.TotalNs + _openTotal[id] - _baseline[at + 3];
            if ((calls | resumes | self | total) == 0) continue;
            writer.Write(id - previousId);
            writer.Write(calls);
            writer.Write(resumes);
            writer.Write(self);
            writer.Write(total);
            previousId = id;
            entries++;
            _baseline[at] += calls;
            _baseline[at + 1] += resumes;
            _baseline[at + 2] += self;
            _baseline[at + 3] += total;
        }
        foreach (var id in _openIds)
        {
            _openSelf[id] = 0;
            _openTotal[id] = 0;
        }
        _openIds.Clear();
        _scratch = writer.Buffer;

        var exceptions = CloseExceptions(profile.Exceptions);
        var dropped = profile.EventsDropped;
        var bucket = new TimelineBucket(
            new ProfileSpan(_clock.ToUnixNs(_lastCloseNs), _clock.ToUnixNs(endNs)),
            writer.ToArray(), entries, exceptions,
            profile.EventsReceived - _eventsAtClose,
            (long)Math.Min(dropped - Math.Min(dropped, _droppedAtClose), long.MaxValue),
            Math.Max(0, profile.Windows.CoveredNs - _coveredAtClose));
        _lastCloseNs = endNs;
        _eventsAtClose = profile.EventsReceived;
        _droppedAtClose = Math.Max(dropped, _droppedAtClose);
        _coveredAtClose = Math.Max(profile.Windows.CoveredNs, _coveredAtClose);

        lock (_lock)
        {
            var kept = new List<TimelineBucket>(_buckets.Length + 1);
            kept.AddRange(_buckets);
            kept.Add(bucket);
            var bytes = _bucketBytes + bucket.Bytes;
            var oldest = bucket.Span.EndUnixNs - (long)_settings.Window.TotalNanoseconds;
            var drop = 0;
            while (drop < kept.Count - 1 && (kept[drop].Span.EndUnixNs <= oldest || bytes > _settings.MaxBytes))
            {
                bytes -= kept[drop].Bytes;
                drop++;
            }
            _buckets = [.. kept.Skip(drop)];
            _bucketBytes = bytes;
            _droppedBuckets += drop;
            _publishedNodes = _nodes;
        }
        return HeldBytes - heldBefore;
    }

    /// <summary>Drops the oldest buckets until <paramref name="bytes"/> are freed (the newest stays); returns what was freed.</summary>
    internal long Trim(long bytes)
    {
        lock (_lock)
        {
            long freed = 0;
            var drop = 0;
            while (drop < _buckets.Length - 1 && freed < bytes) freed += _buckets[drop++].Bytes;
            _buckets = _buckets[drop..];
            _bucketBytes -= freed;
            _droppedBuckets += drop;
            return freed;
        }
    }

    private List<ExceptionSpan> CloseExceptions(ProcessExceptions exceptions)
    {
        var groups = exceptions.Groups;
        // A tally-only group taken over by another since the previous close: its counts so far were that bucket's,
        // so they move into the taker's baseline instead of being counted again.
        if (_groups.Count > 0)
        {
            var current = new HashSet<ExceptionAggregate>(groups, ReferenceEqualityComparer.Instance);
            foreach (var (group, baseline) in _groups.ToArray())
            {
                if (current.Contains(group) || group.AbsorbedInto is not { } taker) continue;
                _groups.Remove(group);
                ref var takerBaseline = ref CollectionsMarshal.GetValueRefOrAddDefault(_groups, taker, out var exists);
                if (!exists) takerBaseline = new GroupBaseline(new FateCounts(), 0, 0, 0, 0);
                takerBaseline.Fates.Add(baseline.Fates);
            }
        }

        var changed = new List<ExceptionSpan>();
        foreach (var group in groups)
        {
            ref var baseline = ref CollectionsMarshal.GetValueRefOrAddDefault(_groups, group, out var exists);
            if (!exists) baseline = new GroupBaseline(new FateCounts(), 0, 0, 0, 0);
            if (group.Fates.Total == baseline.Fates.Total && group.Notes.Count == baseline.Notes
                && group.SampleMessages.Count == baseline.Samples) continue;
            var fates = group.Fates.Since(baseline.Fates);
            var detailed = group.Detailed - baseline.Detailed;
            changed.Add(new ExceptionSpan(group, fates, detailed, group.HandledInProgram - baseline.HandledInProgram,
                [.. group.Notes.Skip(baseline.Notes)], [.. group.SampleMessages.Skip(baseline.Samples)],
                detailed > 0 ? group.Latest : null));
            baseline = new GroupBaseline(group.Fates.Copy(), group.Detailed, group.HandledInProgram, group.Notes.Count,
                group.SampleMessages.Count);
        }
        return changed;
    }

    /// <summary>
    /// The buckets that overlap [<paramref name="fromUnixNs"/>, <paramref name="toUnixNs"/>): answers come at bucket
    /// granularity, and say the span they really cover.
    /// </summary>
    public TimelineSelection Select(long fromUnixNs, long toUnixNs)
    {
        TimelineBucket[] buckets;
        CallNode?[] nodes;
        ThreadProfile[] threads;
        lock (_lock)
        {
            buckets = _buckets;
            nodes = _publishedNodes;
            threads = _threads;
        }
        var chosen = buckets.Where(bucket => bucket.Span.EndUnixNs > fromUnixNs && bucket.Span.StartUnixNs < toUnixNs).ToArray();
        return new TimelineSelection(chosen, nodes, threads);
    }

    private record struct GroupBaseline(FateCounts Fates, long Detailed, long HandledInProgram, int Notes, int Samples);

    /// <summary>Zigzag varints into a growing buffer.</summary>
    private struct EntryWriter(byte[] buffer)
    {
        private int _length;

        public byte[] Buffer { get; private set; } = buffer;

        public void Write(long value)
        {
            var zigzag = (ulong)((value << 1) ^ (value >> 63));
            if (_length + 10 > Buffer.Length)
            {
                var grown = Buffer;
                Array.Resize(ref grown, Buffer.Length * 2);
                Buffer = grown;
            }
            while (zigzag >= 0x80)
            {
                Buffer[_length++] = (byte)(zigzag | 0x80);
                zigzag >>= 7;
            }
            Buffer[_length++] = (byte)zigzag;
        }

        public readonly byte[] ToArray() => Buffer.AsSpan(0, _length).ToArray();
    }

    internal static long ReadVarint(byte[] buffer, ref int position)
    {
        ulong value = 0;
        var shift = 0;
        while (true)
        {
            var b = buffer[position++];
            value |= (ulong)(b & 0x7F) << shift;
            if (b < 0x80) break;
            shift += 7;
        }
        return (long)(value >> 1) ^ -(long)(value & 1);
    }
}

/// <summary>Buckets of one process's timeline chosen for a time range, and what they add up to.</summary>
public sealed class TimelineSelection
{
    private readonly CallNode?[] _nodes;
    private readonly ThreadProfile[] _threads;

    internal TimelineSelection(IReadOnlyList<TimelineBucket> buckets, CallNode?[] nodes, ThreadProfile[] threads)
    {
        Buckets = buckets;
        _nodes = nodes;
        _threads = threads;
    }

    public IReadOnlyList<TimelineBucket> Buckets { get; }

    /// <summary>The span the chosen buckets cover; null when none was chosen.</summary>
    public ProfileSpan? Span => Buckets.Count == 0 ? null : new ProfileSpan(Buckets[0].Span.StartUnixNs, Buckets[^1].Span.EndUnixNs);

    /// <summary>
    /// A frozen profile of <paramref name="process"/> holding only the chosen buckets' figures: call trees (open frames
    /// charged to the buckets they ran in), exceptions (counts in the span; notes and messages first seen in it) and
    /// events. Burst mode: scaled by the span over the time the windows covered in it. Null when no bucket was chosen.
    /// </summary>
    public ProcessProfile? ToProfile(ProcessProfile process, DateTimeOffset takenAt)
    {
        ArgumentNullException.ThrowIfNull(process);
        if (Span is not { } span) return null;

        // Indexed by the nodes' timeline ids: a range of a large tree touches most of them.
        var sums = new Figures[_nodes.Length];
        long events = 0, covered = 0;
        var highest = 0;
        foreach (var bucket in Buckets)
        {
            events += bucket.Events;
            covered += bucket.CoveredNs;
            var entries = bucket.Entries;
            var position = 0;
            var id = 0;
            for (var i = 0; i < bucket.EntryCount; i++)
            {
                id += (int)ProcessTimeline.ReadVarint(entries, ref position);
                ref var figures = ref sums[id];
                figures.Changed = true;
                figures.Calls += ProcessTimeline.ReadVarint(entries, ref position);
                figures.Resumes += ProcessTimeline.ReadVarint(entries, ref position);
                figures.SelfNs += ProcessTimeline.ReadVarint(entries, ref position);
                figures.TotalNs += ProcessTimeline.ReadVarint(entries, ref position);
                highest = Math.Max(highest, id);
            }
        }

        var threadByRoot = new Dictionary<CallNode, ThreadProfile>(ReferenceEqualityComparer.Instance);
        foreach (var thread in _threads) threadByRoot[thread.Root] = thread.EmptyCopy();
        var copies = new CallNode?[highest + 1];
        var functions = new HashSet<FunctionInfo>(ReferenceEqualityComparer.Instance);
        var path = new List<CallNode>();
        var copied = 0;
        for (var id = 1; id <= highest; id++)
        {
            ref var figures = ref sums[id];
            if (!figures.Changed) continue;
            var copy = CopyOf(_nodes[id]!);
            // A late event can make one bucket give back a little of what the previous one charged an open frame:
            // a span never shows less than nothing.
            copy.Calls += Math.Max(0, figures.Calls);
            copy.Resumes += Math.Max(0, figures.Resumes);
            copy.SelfNs += Math.Max(0, figures.SelfNs);
            copy.TotalNs += Math.Max(0, figures.TotalNs);
        }
        var threads = threadByRoot.Values.Where(thread => thread.Root.Children.Count > 0).OrderBy(thread => thread.Id).ToArray();
        foreach (var thread in threads) thread.Root.TotalNs = thread.Root.Children.Sum(child => child.TotalNs);

        var exceptions = ExceptionsOf(process.Exceptions.Limits);
        return process.ForSpan(span, threads, functions, exceptions, events, copied + threads.Length, covered, takenAt);

        // The copy of a tracked node, with its path created on first use (a node's ancestors are tracked too, or roots).
        CallNode CopyOf(CallNode node)
        {
            path.Clear();
            var top = node;
            while (top.Parent is { } parent && (top.Id >= copies.Length || copies[top.Id] is null))
            {
                path.Add(top);
                top = parent;
            }
            var target = top.Parent is null ? threadByRoot[top].Root : copies[top.Id]!;
            for (var i = path.Count - 1; i >= 0; i--)
            {
                var function = path[i].Function!;
                functions.Add(function);
                target = target.GetOrAddChild(function);
                if (path[i].Id < copies.Length) copies[path[i].Id] = target;
                copied++;
            }
            return target;
        }
    }

    /// <summary>The exception groups that changed in the chosen buckets, with what they added there.</summary>
    public IReadOnlyList<ExceptionAggregate> ExceptionGroups(ExceptionLimits limits) => [.. ExceptionsOf(limits).Groups];

    private ProcessExceptions ExceptionsOf(ExceptionLimits limits)
    {
        var byGroup = new Dictionary<ExceptionAggregate, List<ExceptionSpan>>(ReferenceEqualityComparer.Instance);
        foreach (var change in Buckets.SelectMany(bucket => bucket.Exceptions))
        {
            var group = change.Group;
            while (group.AbsorbedInto is { } taker) group = taker;
            if (!byGroup.TryGetValue(group, out var list)) byGroup[group] = list = [];
            list.Add(change);
        }
        var groups = byGroup.Select(entry =>
        {
            var fates = new FateCounts();
            foreach (var change in entry.Value) fates.Add(change.Fates);
            return entry.Key.ForSpan(fates, entry.Value.Sum(change => change.Detailed), entry.Value.Sum(change => change.HandledInProgram),
                entry.Value.SelectMany(change => change.NewNotes), entry.Value.SelectMany(change => change.NewSampleMessages),
                entry.Value.LastOrDefault(change => change.Latest is not null)?.Latest);
        });
        return ProcessExceptions.Of(limits, groups);
    }

    private struct Figures
    {
        public bool Changed;
        public long Calls;
        public long Resumes;
        public long SelfNs;
        public long TotalNs;
    }
}

using System.Runtime.CompilerServices;

namespace TelemetryAgent.Profiling;

/// <summary>A frame still open when function statistics are taken: its node and the time it has run so far.</summary>
internal readonly record struct OpenFrame(CallNode Node, long OpenNs);

/// <summary>
/// A running process's function statistics (what <see cref="FunctionStats.Compute"/> gives for a checkpoint of its
/// trees) kept up to date at the cost of what changed, not of the trees' size: `top` asks for them every second.
/// </summary>
/// <remarks>
/// A node's figures change only while one of its frames is on a stack: it was pushed since the previous take, or it
/// was open then. The session tells of every push (<see cref="Touch"/>: one comparison when the node is already
/// listed); a take reads those nodes and the ones open at the previous take, adds what each gained to its function,
/// and charges the frames open now their time so far without touching the tree. Whether a node's total counts for
/// its function (cProfile's rule: only the outermost frame of a function on a path) is fixed by its path, found once.
/// The session's thread only.
/// </remarks>
internal sealed class LiveFunctionStats
{
    private const int FiguresPerNode = 4;

    // Per node id: the figures already added to its function, the take it was last listed for, and its function's
    // slot + 1 (negative when an ancestor has the same function, so that its total does not count; 0 unknown yet).
    private long[] _baseline = new long[256 * FiguresPerNode];
    private int[] _listedIn = new int[256];
    private int[] _slotOf = new int[256];
    private int _take = 1;
    private readonly List<CallNode> _changed = [];
    private readonly List<CallNode> _openAtTake = [];

    // Per function: calls, resumes, self and total, in order of first appearance. Equal FunctionInfo values are one
    // function, as in FunctionStats.Compute.
    private readonly Dictionary<FunctionInfo, int> _slots = [];
    private FunctionInfo[] _functions = new FunctionInfo[64];
    private long[] _sums = new long[64 * FiguresPerNode];

    /// <summary>Starts from every node the threads have so far (once: later nodes come through <see cref="Touch"/>).</summary>
    public LiveFunctionStats(IEnumerable<ThreadProfile> threads)
    {
        var pending = new Stack<CallNode>();
        foreach (var thread in threads)
        {
            foreach (var child in thread.Root.Children) pending.Push(child);
            while (pending.TryPop(out var node))
            {
                Touch(node);
                foreach (var child in node.Children) pending.Push(child);
            }
        }
    }

    /// <summary>Estimated memory held (for the aggregate memory budget).</summary>
    public long HeldBytes => _listedIn.Length * (FiguresPerNode * 8L + 8) + (_changed.Capacity + _openAtTake.Capacity) * 8L
        + _functions.Length * (8L + FiguresPerNode * 8 + 40);

    /// <summary>A frame of <paramref name="node"/> was pushed: its figures may change before the next take.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Touch(CallNode node)
    {
        var id = node.Id;
        var listed = _listedIn;
        if ((uint)id < (uint)listed.Length && listed[id] == _take) return;
        List(node);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void List(CallNode node)
    {
        var id = node.Id;
        if (id <= 0) return; // not a session's node
        if (id >= _listedIn.Length)
        {
            var length = Math.Max(_listedIn.Length * 2, id + 1);
            Array.Resize(ref _listedIn, length);
            Array.Resize(ref _slotOf, length);
            Array.Resize(ref _baseline, length * FiguresPerNode);
        }
        _listedIn[id] = _take;
        _changed.Add(node);
    }

    /// <summary>
    /// Every function's figures now: the trees as they are, plus <paramref name="open"/> (the frames open now, each
    /// node once per stack) charged to the totals. Burst mode: times and counts multiplied by <paramref name="scale"/>,
    /// rounded per function (a checkpoint rounds per node). Largest self time first, as <see cref="FunctionStats.Compute"/>.
    /// </summary>
    public IReadOnlyList<FunctionStats> Take(IReadOnlyList<OpenFrame> open, double scale = 1.0)
    {
        foreach (var node in _openAtTake) Commit(node);
        foreach (var node in _changed) Commit(node);
        _openAtTake.Clear();
        _changed.Clear();
        _take++;

        var openTotals = new Dictionary<int, long>();
        foreach (var frame in open)
        {
            _openAtTake.Add(frame.Node);
            var slot = SlotOf(frame.Node);
            if (slot > 0) openTotals[slot - 1] = openTotals.GetValueOrDefault(slot - 1) + Math.Max(0, frame.OpenNs);
        }

        var result = new FunctionStats[_slots.Count];
        for (var slot = 0; slot < result.Length; slot++)
        {
            var at = slot * FiguresPerNode;
            result[slot] = new FunctionStats(_functions[slot],
                Scaled(_sums[at], scale), Scaled(_sums[at + 1], scale), Scaled(_sums[at + 2], scale),
                Scaled(_sums[at + 3] + openTotals.GetValueOrDefault(slot), scale));
        }
        Array.Sort(result, FunctionStats.BySelfTimeDescending);
        return result;
    }

    private static long Scaled(long value, double scale) => scale == 1.0 ? value : SampleScaling.Scaled(value, scale);

    /// <summary>Adds what <paramref name="node"/> gained since it was last read to its function.</summary>
    private void Commit(CallNode node)
    {
        var slot = SlotOf(node);
        var outermost = slot > 0;
        var function = (outermost ? slot : -slot) - 1;
        var at = node.Id * FiguresPerNode;
        var sums = function * FiguresPerNode;
        var calls = node.Calls - _baseline[at];
        var resumes = node.Resumes - _baseline[at + 1];
        var self = node.SelfNs - _baseline[at + 2];
        var total = node.TotalNs - _baseline[at + 3];
        _baseline[at] = node.Calls;
        _baseline[at + 1] = node.Resumes;
        _baseline[at + 2] = node.SelfNs;
        _baseline[at + 3] = node.TotalNs;
        _sums[sums] += calls;
        _sums[sums + 1] += resumes;
        _sums[sums + 2] += self;
        if (outermost) _sums[sums + 3] += total;
    }

    /// <summary>The node's function slot + 1, negative when an ancestor has the same function; found once per node.</summary>
    private int SlotOf(CallNode node)
    {
        ref var known = ref _slotOf[node.Id];
        if (known != 0) return known;
        var function = node.Function!;
        if (!_slots.TryGetValue(function, out var slot))
        {
            slot = _slots.Count;
            _slots.Add(function, slot);
            if (slot == _functions.Length)
            {
                Array.Resize(ref _functions, slot * 2);
                Array.Resize(ref _sums, slot * 2 * FiguresPerNode);
            }
            _functions[slot] = function;
        }
        var outermost = true;
        for (var above = node.Parent; above?.Function is { } caller; above = above.Parent)
        {
            if (caller.Equals(function))
            {
                outermost = false;
                break;
            }
        }
        known = outermost ? slot + 1 : -(slot + 1);
        return known;
    }
}

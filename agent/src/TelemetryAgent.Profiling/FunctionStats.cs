namespace TelemetryAgent.Profiling;

/// <summary>
/// One function's figures over whole call trees. <see cref="TotalNs"/> follows cProfile's rule: only the
/// outermost active frame of a function adds to it, so recursion is not counted twice.
/// </summary>
public sealed record FunctionStats(FunctionInfo Function, long Calls, long Resumes, long SelfNs, long TotalNs)
{
    /// <summary>
    /// Sums the nodes of the trees under <paramref name="roots"/> per function (equal <see cref="FunctionInfo"/>
    /// values are one function, so trees of different processes merge), largest self time first; ties are broken
    /// by total time, calls and label so that the order is deterministic.
    /// </summary>
    public static IReadOnlyList<FunctionStats> Compute(IEnumerable<CallNode> roots)
    {
        ArgumentNullException.ThrowIfNull(roots);
        var totals = new Dictionary<FunctionInfo, Accumulator>();
        // Frames of each function open on the current path: a node adds its total only when it is the outermost.
        var openOnPath = new Dictionary<FunctionInfo, int>();
        var pending = new Stack<(CallNode Node, bool Leaving)>();

        foreach (var root in roots)
        {
            pending.Push((root, false));
            while (pending.TryPop(out var item))
            {
                var node = item.Node;
                var function = node.Function;
                if (item.Leaving)
                {
                    if (function is not null) openOnPath[function]--;
                    continue;
                }
                if (function is not null)
                {
                    openOnPath.TryGetValue(function, out var open);
                    if (!totals.TryGetValue(function, out var accumulator))
                    {
                        accumulator = new Accumulator();
                        totals.Add(function, accumulator);
                    }
                    accumulator.Calls += node.Calls;
                    accumulator.Resumes += node.Resumes;
                    accumulator.SelfNs += node.SelfNs;
                    if (open == 0) accumulator.TotalNs += node.TotalNs;
                    openOnPath[function] = open + 1;
                }
                pending.Push((node, true));
                var children = node.Children;
                for (var i = children.Count - 1; i >= 0; i--) pending.Push((children[i], false));
            }
        }

        var result = new List<FunctionStats>(totals.Count);
        foreach (var (function, sum) in totals)
        {
            result.Add(new FunctionStats(function, sum.Calls, sum.Resumes, sum.SelfNs, sum.TotalNs));
        }
        result.Sort(BySelfTimeDescending);
        return result;
    }

    public static int BySelfTimeDescending(FunctionStats a, FunctionStats b)
    {
        var order = b.SelfNs.CompareTo(a.SelfNs);
        if (order == 0) order = b.TotalNs.CompareTo(a.TotalNs);
        if (order == 0) order = b.Calls.CompareTo(a.Calls);
        if (order == 0) order = string.CompareOrdinal(a.Function.Label, b.Function.Label);
        if (order == 0) order = string.CompareOrdinal(a.Function.FileName, b.Function.FileName);
        return order;
    }

    private sealed class Accumulator
    {
        public long Calls;
        public long Resumes;
        public long SelfNs;
        public long TotalNs;
    }
}

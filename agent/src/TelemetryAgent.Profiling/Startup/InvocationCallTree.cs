namespace TelemetryAgent.Profiling.Startup;

/// <summary>
/// The exact call tree of one invocation of the ready-on function: what the subtree of the node it was called at
/// gained from its call to its return. Taken from the process's own call tree, so nothing is done per event: the
/// session takes a baseline of the subtree when the invocation starts (empty for the first one: its node is new)
/// and the difference when it returns.
/// </summary>
public sealed class InvocationCallTree
{
    private readonly CallNode _top;
    private readonly Dictionary<CallNode, Figures> _baseline = new(ReferenceEqualityComparer.Instance);

    /// <summary>
    /// Starts following the invocation called at <paramref name="top"/> (its node, already counted for this call) at
    /// <paramref name="startNs"/> (the shim's clock).
    /// </summary>
    public InvocationCallTree(CallNode top, long startNs)
    {
        ArgumentNullException.ThrowIfNull(top);
        _top = top;
        StartNs = startNs;
        // Explicit stack: a recursive handler's subtree can be deep. The call being made is part of the invocation.
        var pending = new Stack<CallNode>();
        pending.Push(top);
        while (pending.TryPop(out var node))
        {
            var figures = new Figures(node.Calls, node.Resumes, node.SelfNs, node.TotalNs);
            if (ReferenceEquals(node, top)) figures = figures with { Calls = figures.Calls - 1 };
            _baseline[node] = figures;
            foreach (var child in node.Children) pending.Push(child);
        }
    }

    /// <summary>When the call was made (the shim's clock).</summary>
    public long StartNs { get; }

    /// <summary>The label of the trees' roots.</summary>
    public const string RootName = "invocation";

    /// <summary>
    /// What the subtree gained since the baseline, as a detached tree: a root whose one child is the ready-on
    /// function's node, with only the nodes whose figures changed. Call at the invocation's return.
    /// </summary>
    public CallNode Difference(out int nodes)
    {
        var root = CallNode.CreateRoot(RootName);
        nodes = 0;
        var pending = new Stack<(CallNode Source, CallNode Parent)>();
        pending.Push((_top, root));
        while (pending.TryPop(out var pair))
        {
            var source = pair.Source;
            var before = _baseline.GetValueOrDefault(source);
            var calls = source.Calls - before.Calls;
            var resumes = source.Resumes - before.Resumes;
            var self = source.SelfNs - before.SelfNs;
            var total = source.TotalNs - before.TotalNs;
            if ((calls | resumes | self | total) == 0) continue;
            var copy = pair.Parent.GetOrAddChild(source.Function!);
            copy.Calls = calls;
            copy.Resumes = resumes;
            copy.SelfNs = self;
            copy.TotalNs = total;
            nodes++;
            // Children in reverse, so that the copy keeps the order they were first seen in.
            for (var i = source.Children.Count - 1; i >= 0; i--) pending.Push((source.Children[i], copy));
        }
        root.TotalNs = root.Children.Sum(child => child.TotalNs);
        return root;
    }

    private readonly record struct Figures(long Calls, long Resumes, long SelfNs, long TotalNs);
}

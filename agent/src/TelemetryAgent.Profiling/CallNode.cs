namespace TelemetryAgent.Profiling;

/// <summary>
/// One node of a call tree: a function reached by one particular path from its root. A root stands for a
/// thread (or a process) and has no function. Times are nanoseconds.
/// </summary>
/// <remarks>
/// Not thread-safe: a tree is written by the one session that owns it, and read by exporters only after that
/// session completed.
/// </remarks>
public sealed class CallNode
{
    // Most nodes have a handful of children: a linear scan over them by reference beats hashing, and leaves
    // (the majority) allocate no collection at all. The index appears only for wide nodes.
    private const int IndexedFromChildCount = 8;

    private static readonly List<CallNode> NoChildren = [];

    private List<CallNode>? _children;
    private Dictionary<FunctionInfo, CallNode>? _childrenByFunction;

    private CallNode(string name, FunctionInfo? function, CallNode? parent)
    {
        Name = name;
        Function = function;
        Parent = parent;
        Depth = parent is null ? 0 : parent.Depth + 1;
    }

    public static CallNode CreateRoot(string name) => new(name, null, null);

    /// <summary>The frame label: the function's <see cref="FunctionInfo.Label"/>, or the root's name.</summary>
    public string Name { get; }
    public FunctionInfo? Function { get; }
    public CallNode? Parent { get; }

    /// <summary>Distance from the root (a root is at depth 0).</summary>
    public int Depth { get; }

    /// <summary>
    /// The node's number in the session that built it (1, 2, ... in order of creation), which indexes the session's
    /// per-node tables (<see cref="ProcessTimeline"/>, <see cref="LiveFunctionStats"/>); 0 for roots and copies.
    /// </summary>
    internal int Id { get; set; }

    /// <summary>Times the function was entered by a call (PY_START) at this path.</summary>
    public long Calls { get; internal set; }
    /// <summary>Times a generator or coroutine was resumed (PY_RESUME, PY_THROW) at this path.</summary>
    public long Resumes { get; internal set; }
    /// <summary>Time with this node on top of the stack.</summary>
    public long SelfNs { get; internal set; }
    /// <summary>Time with this node on the stack; for a root, the sum of its children's totals.</summary>
    public long TotalNs { get; internal set; }

    /// <summary>Children in the order they were first seen.</summary>
    public IReadOnlyList<CallNode> Children => _children ?? NoChildren;

    /// <summary>The child for <paramref name="function"/> (compared by reference), created on first use.</summary>
    public CallNode GetOrAddChild(FunctionInfo function)
        => FindChild(function) ?? AddChild(new CallNode(function.Label, function, this));

    /// <summary>The child for <paramref name="function"/> (compared by reference), or null.</summary>
    public CallNode? FindChild(FunctionInfo function)
    {
        var children = _children;
        if (children is null) return null;
        if (_childrenByFunction is not null) return _childrenByFunction.GetValueOrDefault(function);
        foreach (var candidate in children)
        {
            if (ReferenceEquals(candidate.Function, function)) return candidate;
        }
        return null;
    }

    /// <summary>
    /// A child with no function that groups what is below it (a process or a thread in a merged tree), found by
    /// name and created on first use.
    /// </summary>
    public CallNode GetOrAddGroup(string name)
    {
        if (_children is not null)
        {
            foreach (var candidate in _children)
            {
                if (candidate.Function is null && candidate.Name == name) return candidate;
            }
        }
        return AddChild(new CallNode(name, null, this));
    }

    /// <summary>
    /// Adds every node under <paramref name="source"/> into this node's subtree, summing counts and times;
    /// functions are mapped through <paramref name="canonical"/> so that equal functions from different trees
    /// share one node. The root totals are added as well.
    /// </summary>
    public void MergeFrom(CallNode source, Func<FunctionInfo, FunctionInfo> canonical)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(canonical);
        // Explicit stack: trees from deep recursion must not overflow the process stack.
        var pending = new Stack<(CallNode Source, CallNode Target)>();
        pending.Push((source, this));
        while (pending.TryPop(out var pair))
        {
            pair.Target.Calls += pair.Source.Calls;
            pair.Target.Resumes += pair.Source.Resumes;
            pair.Target.SelfNs += pair.Source.SelfNs;
            pair.Target.TotalNs += pair.Source.TotalNs;
            foreach (var child in pair.Source.Children)
            {
                var target = child.Function is null
                    ? pair.Target.GetOrAddGroup(child.Name)
                    : pair.Target.GetOrAddChild(canonical(child.Function));
                pending.Push((child, target));
            }
        }
    }

    private CallNode AddChild(CallNode child)
    {
        var children = _children ??= new List<CallNode>(2);
        children.Add(child);
        if (child.Function is not null)
        {
            if (_childrenByFunction is not null)
            {
                _childrenByFunction.Add(child.Function, child);
            }
            else if (children.Count >= IndexedFromChildCount)
            {
                _childrenByFunction = new Dictionary<FunctionInfo, CallNode>(ReferenceEqualityComparer.Instance);
                foreach (var existing in children)
                {
                    if (existing.Function is not null) _childrenByFunction.TryAdd(existing.Function, existing);
                }
            }
        }
        return child;
    }
}

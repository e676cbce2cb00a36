namespace TelemetryAgent.Aggregation;

/// <summary>
/// One node of a call tree: a function reached by one particular path from its root. A root stands for a
/// thread (or a process) and has no function. Times are nanoseconds.
/// </summary>
public sealed class CallNode
{
    private readonly Dictionary<FunctionInfo, CallNode> _childrenByFunction = new(ReferenceEqualityComparer.Instance);
    private readonly List<CallNode> _children = [];

    private CallNode(string name, FunctionInfo? function, CallNode? parent)
    {
        Name = name;
        Function = function;
        Parent = parent;
    }

    public static CallNode CreateRoot(string name) => new(name, null, null);

    /// <summary>The frame label: the function's <see cref="FunctionInfo.Label"/>, or the root's name.</summary>
    public string Name { get; }
    public FunctionInfo? Function { get; }
    public CallNode? Parent { get; }

    /// <summary>Times the function was entered by a call (PY_START) at this path.</summary>
    public long Calls { get; internal set; }
    /// <summary>Times a generator or coroutine was resumed (PY_RESUME, PY_THROW) at this path.</summary>
    public long Resumes { get; internal set; }
    /// <summary>Time with this node on top of the stack.</summary>
    public long SelfNs { get; internal set; }
    /// <summary>Time with this node on the stack; for a root, the sum of its children's totals.</summary>
    public long TotalNs { get; internal set; }

    /// <summary>Children in the order they were first seen.</summary>
    public IReadOnlyList<CallNode> Children => _children;

    public CallNode GetOrAddChild(FunctionInfo function)
    {
        if (_childrenByFunction.TryGetValue(function, out var child)) return child;
        child = new CallNode(function.Label, function, this);
        _childrenByFunction.Add(function, child);
        _children.Add(child);
        return child;
    }
}

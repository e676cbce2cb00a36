namespace TelemetryAgent.Profiling;

/// <summary>
/// Visits every node below a root, depth first, children in ordinal order of their names so that outputs do not
/// depend on the order in which paths were first seen. Iterative: deep recursion in the profiled program must
/// not overflow the agent's stack.
/// </summary>
public static class CallTreeWalk
{
    /// <summary>Calls <paramref name="visit"/> with each node below <paramref name="root"/> and its depth (1 for
    /// the root's children). The root itself is not visited.</summary>
    public static void Visit(CallNode root, Action<CallNode, int> visit)
    {
        var pending = new Stack<(CallNode Node, int Depth)>();
        PushChildren(pending, root, 1);
        while (pending.TryPop(out var item))
        {
            visit(item.Node, item.Depth);
            PushChildren(pending, item.Node, item.Depth + 1);
        }
    }

    private static void PushChildren(Stack<(CallNode, int)> pending, CallNode node, int depth)
    {
        var children = node.Children;
        if (children.Count == 0) return;
        var ordered = children.ToArray();
        Array.Sort(ordered, static (a, b) => string.CompareOrdinal(a.Name, b.Name));
        // Pushed last-first so that the first in order is visited first.
        for (var i = ordered.Length - 1; i >= 0; i--) pending.Push((ordered[i], depth));
    }
}

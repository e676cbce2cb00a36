using TelemetryAgent.Profiling.Formats;

namespace TelemetryAgent.Profiling.Startup;

/// <summary>
/// The start-up of each process as a tree the flame graph can show beside the call trees: under the root, one
/// <c>start-up of &lt;process&gt;</c> frame spanning process start to ready, with the interpreter's own start, the
/// import tree (<c>import json</c>, nested as imported; self time is the import's own) and the rest of the time up to
/// ready (the program's code outside imports). Where the first invocations have their call trees (full mode), one
/// <c>first invocations of &lt;process&gt;</c> frame beside it holds them, each as <c>invocation N</c> over its exact
/// call tree (frames by label, as the imports: the table of functions counts the call tree's calls once), the first
/// one marked cold.
/// </summary>
public static class StartupCallTree
{
    public const string InterpreterLabel = "interpreter start-up (before the shim)";
    public const string OtherLabel = "program code outside imports";
    public const string FramePrefix = "start-up of ";
    public const string InvocationsFramePrefix = "first invocations of ";

    /// <summary>
    /// True for a frame made by <see cref="AddTo"/> (a process's start-up or its first invocations, not its call tree);
    /// <paramref name="importTree"/> tells which: true for the start-up.
    /// </summary>
    public static bool IsStartupFrame(CallNode node, out bool importTree)
    {
        importTree = node is { Function: null, Depth: 1 } && node.Name.StartsWith(FramePrefix, StringComparison.Ordinal);
        return importTree || (node is { Function: null, Depth: 1 } && node.Name.StartsWith(InvocationsFramePrefix, StringComparison.Ordinal));
    }

    /// <summary>Adds a start-up frame under <paramref name="root"/> for every process that has a start-up; the root's
    /// total grows by theirs. Returns <paramref name="root"/>.</summary>
    public static CallNode AddTo(CallNode root, IReadOnlyList<ProcessProfile> processes)
    {
        ArgumentNullException.ThrowIfNull(root);
        ArgumentNullException.ThrowIfNull(processes);
        foreach (var process in processes)
        {
            if (process.Startup is not { } startup) continue;
            var phase = root.GetOrAddGroup(FramePrefix + ProfileLabels.Process(process));
            phase.TotalNs = startup.TotalNs;
            phase.Calls = 1;
            if (startup.InterpreterNs > 0) Leaf(phase, InterpreterLabel, startup.InterpreterNs);
            AddImports(phase, startup.Imports);
            if (startup.OtherNs > 0) Leaf(phase, OtherLabel, startup.OtherNs);
            root.TotalNs += phase.TotalNs;
            AddInvocations(root, process);
        }
        return root;
    }

    private static void AddInvocations(CallNode root, ProcessProfile process)
    {
        var traced = process.FirstInvocations.Where(invocation => invocation.CallTree is not null).OrderBy(invocation => invocation.Number).ToArray();
        if (traced.Length == 0) return;
        var frame = root.GetOrAddGroup(InvocationsFramePrefix + ProfileLabels.Process(process));
        foreach (var invocation in traced)
        {
            var node = frame.GetOrAddGroup(invocation.Number == 1 ? "invocation 1 (cold)" : $"invocation {invocation.Number}");
            node.Calls = 1;
            // Frames by label, not by function: the functions' own figures (the table of functions) stay the call
            // tree's, which already counts these calls.
            var pending = new Stack<(CallNode Source, CallNode Target)>();
            foreach (var child in invocation.CallTree!.Children) pending.Push((child, node));
            while (pending.TryPop(out var pair))
            {
                var copy = pair.Target.GetOrAddGroup(pair.Source.Name);
                copy.Calls += pair.Source.Calls;
                copy.Resumes += pair.Source.Resumes;
                copy.SelfNs += pair.Source.SelfNs;
                copy.TotalNs += pair.Source.TotalNs;
                for (var i = pair.Source.Children.Count - 1; i >= 0; i--) pending.Push((pair.Source.Children[i], copy));
            }
            node.TotalNs = invocation.CallTree.TotalNs;
            frame.TotalNs += node.TotalNs;
        }
        frame.Calls = traced.Length;
        root.TotalNs += frame.TotalNs;
    }

    /// <summary>The frame of an import: <c>import module</c>, marked when it failed.</summary>
    public static string ImportLabel(ImportRecord import)
    {
        ArgumentNullException.ThrowIfNull(import);
        return import.Failed ? $"import {import.Module} (failed)" : $"import {import.Module}";
    }

    private static void AddImports(CallNode phase, ImportTree tree)
    {
        var nodes = new CallNode[tree.Imports.Count];
        for (var index = 0; index < tree.Imports.Count; index++)
        {
            var import = tree.Imports[index];
            var parent = import.Parent >= 0 && import.Parent < index ? nodes[import.Parent] : phase;
            var node = parent.GetOrAddGroup(ImportLabel(import));
            node.Calls += 1;
            node.SelfNs += import.SelfNs;
            node.TotalNs += import.CumulativeNs;
            nodes[index] = node;
        }
    }

    private static void Leaf(CallNode parent, string label, long nanoseconds)
    {
        var node = parent.GetOrAddGroup(label);
        node.SelfNs += nanoseconds;
        node.TotalNs += nanoseconds;
    }
}

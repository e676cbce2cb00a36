using TelemetryAgent.Profiling.Formats;

namespace TelemetryAgent.Profiling;

/// <summary>The call trees of several processes as one tree, as the flame graph shows them.</summary>
public static class MergedCallTree
{
    /// <summary>
    /// One tree for all processes: root, then <c>&lt;service&gt; (pid N)</c>, then <c>thread &lt;name&gt;</c>, then
    /// the thread's frames. Equal functions of different processes share nodes; so do processes and threads with
    /// the same label. Group totals are the sums of their children's.
    /// </summary>
    /// <param name="byService">Label the process nodes with the service name alone, so that processes of one service
    /// share nodes (what a comparison of two processes needs).</param>
    public static CallNode Of(IReadOnlyList<ProcessProfile> processes, bool byService = false)
    {
        ArgumentNullException.ThrowIfNull(processes);
        var root = CallNode.CreateRoot("all");
        var canonical = new CanonicalFunctions();

        foreach (var process in processes)
        {
            var processNode = root.GetOrAddGroup(byService ? process.Identity.ServiceName : ProfileLabels.Process(process));
            foreach (var thread in process.Threads)
            {
                processNode.GetOrAddGroup(ProfileLabels.Thread(thread)).MergeFrom(thread.Root, canonical.Of);
            }
        }
        foreach (var processNode in root.Children)
        {
            processNode.TotalNs = processNode.Children.Sum(thread => thread.TotalNs);
        }
        root.TotalNs = root.Children.Sum(process => process.TotalNs);
        return root;
    }
}

using System.Globalization;
using System.Text;
using TelemetryAgent.Profiling;
using TelemetryAgent.Profiling.Formats;

namespace TelemetryAgent.Output;

/// <summary>What the number at the end of a folded line counts.</summary>
public enum FoldedWeight
{
    /// <summary>Self time in nanoseconds (profile.folded): what a flame graph of time needs.</summary>
    SelfNanoseconds,
    /// <summary>Calls at that exact path (calls.folded): deterministic, for exact comparisons.</summary>
    Calls,
}

/// <summary>
/// profile.folded and calls.folded: folded stacks (<c>process;thread;frame;...;frame weight</c>, one per line), the
/// format of flamegraph.pl, inferno and speedscope's importer. Lines are sorted ordinally so that two runs diff
/// cleanly; lines whose weight is 0 are left out, and equal stacks (two threads with one name) are summed.
/// </summary>
public sealed class FoldedStacksFile : IOutputFile
{
    public const string ProfileFolded = "profile.folded";
    public const string CallsFolded = "calls.folded";

    /// <summary>profile.folded: self time in nanoseconds.</summary>
    public static FoldedStacksFile SelfTime { get; } = new(ProfileFolded, FoldedWeight.SelfNanoseconds);

    /// <summary>calls.folded: calls.</summary>
    public static FoldedStacksFile Calls { get; } = new(CallsFolded, FoldedWeight.Calls);

    private FoldedStacksFile(string name, FoldedWeight weight)
    {
        Name = name;
        Weight = weight;
    }

    public string Name { get; }

    public FoldedWeight Weight { get; }

    public void Write(Stream output, OutputRun run) => TextOutput.Write(output, text => Write(text, run.Processes, Weight));

    public static void Write(TextWriter output, IReadOnlyList<ProcessProfile> profiles, FoldedWeight weight)
    {
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(profiles);
        var weights = new Dictionary<string, long>(StringComparer.Ordinal);
        var path = new StringBuilder();
        var prefixLengths = new List<int>();

        foreach (var profile in profiles)
        {
            foreach (var thread in profile.Threads)
            {
                path.Clear();
                path.Append(ProfileLabels.ForFoldedStack(ProfileLabels.Process(profile)))
                    .Append(';')
                    .Append(ProfileLabels.ForFoldedStack(ProfileLabels.Thread(thread)));
                prefixLengths.Clear();
                prefixLengths.Add(path.Length);

                CallTreeWalk.Visit(thread.Root, (node, depth) =>
                {
                    path.Length = prefixLengths[depth - 1];
                    path.Append(';').Append(ProfileLabels.ForFoldedStack(node.Name));
                    if (prefixLengths.Count > depth) prefixLengths[depth] = path.Length;
                    else prefixLengths.Add(path.Length);

                    var value = weight == FoldedWeight.Calls ? node.Calls : node.SelfNs;
                    if (value <= 0) return;
                    var stack = path.ToString();
                    weights.TryGetValue(stack, out var sum);
                    weights[stack] = sum + value;
                });
            }
        }

        var stacks = weights.Keys.ToArray();
        Array.Sort(stacks, StringComparer.Ordinal);
        foreach (var stack in stacks)
        {
            output.Write(stack);
            output.Write(' ');
            output.Write(weights[stack].ToString(CultureInfo.InvariantCulture));
            output.Write('\n');
        }
    }
}

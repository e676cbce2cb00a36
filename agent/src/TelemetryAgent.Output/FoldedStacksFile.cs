using System.Globalization;
using System.Runtime.CompilerServices;
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

    // Both files print the same stacks: they are folded once per run, also when both are written at once.
    private static readonly ConditionalWeakTable<OutputRun, Lazy<IReadOnlyList<FoldedStack>>> FoldedByRun = new();

    public void Write(Stream output, OutputRun run)
    {
        ArgumentNullException.ThrowIfNull(run);
        var stacks = FoldedByRun.GetValue(run, static run => new Lazy<IReadOnlyList<FoldedStack>>(() => Fold(run.Processes))).Value;
        TextOutput.Write(output, text => Write(text, stacks, Weight));
    }

    public static void Write(TextWriter output, IReadOnlyList<ProcessProfile> profiles, FoldedWeight weight)
        => Write(output, Fold(profiles), weight);

    /// <summary>Writes the lines of <paramref name="stacks"/> (from <see cref="Fold"/>) whose weight is above 0.</summary>
    public static void Write(TextWriter output, IReadOnlyList<FoldedStack> stacks, FoldedWeight weight)
    {
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(stacks);
        foreach (var stack in stacks)
        {
            var value = weight == FoldedWeight.Calls ? stack.Calls : stack.SelfNs;
            if (value <= 0) continue;
            output.Write(stack.Stack);
            output.Write(' ');
            output.Write(value.ToString(CultureInfo.InvariantCulture));
            output.Write('\n');
        }
    }

    /// <summary>
    /// Every distinct folded stack of <paramref name="profiles"/> with both weights (each the sum of the nodes' values
    /// above 0), sorted ordinally: what both files print, computed once per run.
    /// </summary>
    public static IReadOnlyList<FoldedStack> Fold(IReadOnlyList<ProcessProfile> profiles)
    {
        ArgumentNullException.ThrowIfNull(profiles);
        var weights = new Dictionary<string, (long SelfNs, long Calls)>(StringComparer.Ordinal);
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

                    var self = Math.Max(node.SelfNs, 0);
                    var calls = Math.Max(node.Calls, 0);
                    if (self == 0 && calls == 0) return;
                    var stack = path.ToString();
                    weights.TryGetValue(stack, out var sum);
                    weights[stack] = (sum.SelfNs + self, sum.Calls + calls);
                });
            }
        }

        var stacks = new FoldedStack[weights.Count];
        var i = 0;
        foreach (var (stack, (self, calls)) in weights) stacks[i++] = new FoldedStack(stack, self, calls);
        Array.Sort(stacks, static (a, b) => string.CompareOrdinal(a.Stack, b.Stack));
        return stacks;
    }
}

/// <summary>One line of the folded files before its weight is chosen: the stack and both of its weights.</summary>
public sealed record FoldedStack(string Stack, long SelfNs, long Calls);

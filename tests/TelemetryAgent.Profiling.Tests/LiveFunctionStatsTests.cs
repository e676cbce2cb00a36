using Microsoft.Extensions.Time.Testing;
using TelemetryAgent.Protocol;
using TelemetryAgent.Sessions;
using TelemetryAgent.Testing;

namespace TelemetryAgent.Profiling.Tests;

/// <summary>
/// `top`'s function statistics, kept from what changed, against the full computation: a checkpoint of the same
/// moment and <see cref="FunctionStats.Compute"/> over its copied trees.
/// </summary>
public sealed class LiveFunctionStatsTests
{
    /// <summary>Random programs: recursion, generators, several threads, lost and unmatched exits, two code objects
    /// that are one function (equal names, file and line), the depth and node limits.</summary>
    [Theory]
    [InlineData(1, 2048, 500_000)]
    [InlineData(2, 2048, 500_000)]
    [InlineData(3, 6, 500_000)]
    [InlineData(4, 2048, 40)]
    [InlineData(5, 5, 25)]
    public async Task Every_take_equals_the_function_statistics_of_a_checkpoint_of_the_same_moment(int seed, int maxDepth, int maxNodes)
    {
        var script = Program(new SessionLimits { MaxStackDepth = maxDepth, MaxCallTreeNodes = maxNodes });
        var random = new Random(seed);
        var stacks = new Dictionary<uint, List<uint>> { [1] = [], [2] = [], [3] = [] };
        long now = 1_000;
        var compared = 0;
        for (var round = 0; round < 60; round++)
        {
            // Some rounds change nothing, some a lot: a take after no event must still charge the open frames.
            var events = random.Next(4) == 0 ? 0 : random.Next(1, 400);
            for (var i = 0; i < events; i++) Step(script, stacks, random, ref now);
            if (random.Next(3) == 0) continue; // not every round is watched: changes pile up between takes

            var (live, full) = await BothAt(script.Session);
            Assert.Equal(Describe(full), Describe(live));
            compared++;
        }
        Assert.True(compared > 20, $"{compared} comparisons");

        // After the end: the completed profile's figures.
        var stats = script.Session.RequestFunctionStatisticsAsync();
        script.Session.Complete(ConnectionEnd.Cancelled);
        Assert.Equal(Describe(script.Profile.FunctionStatistics()), Describe(await stats.WaitAsync(TimeSpan.FromSeconds(10))));
    }

    [Fact]
    public async Task A_frame_open_across_takes_is_charged_its_time_so_far_each_time_and_once_when_it_returns()
    {
        var script = Program(SessionLimits.Default);
        script.Start(100, 1).Start(200, 2).Start(250, 1, thread: 2);
        var (live, full) = await BothAt(script.Session);
        Assert.Equal(Describe(full), Describe(live));
        Assert.Equal((2L, 150L), Figures(live, "f")); // on the stacks of both threads: 150 + 0 so far
        // f recursing through g: the outer f's total counts, the inner one's does not (cProfile's rule).
        script.Start(300, 1).Return(400, 1).Return(500, 2).Return(600, 1).Return(700, 1, thread: 2);
        (live, full) = await BothAt(script.Session);
        Assert.Equal(Describe(full), Describe(live));
        Assert.Equal((3L, 500L + 450L), Figures(live, "f"));
        Assert.Equal((1L, 300L), Figures(live, "g"));
    }

    [Fact]
    public async Task Without_a_question_for_30_s_the_session_stops_noting_and_the_next_question_reads_the_whole_tree_again()
    {
        var time = new FakeTimeProvider(SessionScript.AgentTimeAt(0));
        var script = new SessionScript(time: time).Thread(1, "MainThread", isMain: true).Code(1, "f").Code(2, "g");
        script.Start(100, 1).Start(200, 2).Return(300, 2);
        var (live, full) = await BothAt(script.Session);
        Assert.Equal(Describe(full), Describe(live));

        time.Advance(ProcessSession.FunctionStatisticsIdle + TimeSpan.FromSeconds(1));
        script.Start(400, 2).Return(500, 2);
        script.Session.AfterFrame(); // stops noting: these calls are found by reading the tree again
        script.Start(600, 2).Return(700, 2);
        (live, full) = await BothAt(script.Session);
        Assert.Equal(Describe(full), Describe(live));
        Assert.Equal((3L, 300L), Figures(live, "g"));
    }

    [Fact]
    public async Task Burst_mode_scales_each_function_like_the_checkpoint_within_rounding()
    {
        var script = Program(SessionLimits.Default, mode: "burst");
        var random = new Random(7);
        var stacks = new Dictionary<uint, List<uint>> { [1] = [], [2] = [], [3] = [] };
        long now = 1_000;
        for (var round = 0; round < 20; round++)
        {
            script.WindowStart(now += 10);
            for (var i = 0; i < 200; i++) Step(script, stacks, random, ref now);
            if (round % 2 == 0) script.WindowEnd(now += 10);
            foreach (var stack in stacks.Values) stack.Clear(); // a window's end closes every frame
            now += 5_000;
            var (live, full) = await BothAt(script.Session);
            var byFunction = full.ToDictionary(stat => stat.Function);
            Assert.Equal(byFunction.Count, live.Count);
            foreach (var stat in live)
            {
                var expected = byFunction[stat.Function];
                // The checkpoint rounds every node, a take every function: at most half a unit per node apart.
                var nodes = script.Profile.Threads.Sum(thread => Count(thread.Root, stat.Function));
                Assert.InRange(stat.Calls, expected.Calls - nodes, expected.Calls + nodes);
                Assert.InRange(stat.SelfNs, expected.SelfNs - nodes, expected.SelfNs + nodes);
                Assert.InRange(stat.TotalNs, expected.TotalNs - nodes, expected.TotalNs + nodes);
            }
            if (round % 2 == 1) script.WindowEnd(now += 10);
        }
    }

    private static SessionScript Program(SessionLimits limits, string mode = "full")
        => new SessionScript(limits: limits, mode: mode)
            .Thread(1, "MainThread", isMain: true).Thread(2, "worker").Thread(3, "idle")
            .Code(1, "f").Code(2, "g").Code(3, "gen", kindFlags: 1).Code(4, "h", file: "/srv/app/lib.py", line: 9)
            .Code(5, "h", file: "/srv/app/lib.py", line: 9); // another code object, the same function

    /// <summary>One event of a plausible program: a call, a return (now and then of a frame below the top, or of none).</summary>
    private static void Step(SessionScript script, Dictionary<uint, List<uint>> stacks, Random random, ref long now)
    {
        now += random.Next(0, 50);
        var thread = (uint)random.Next(1, 4);
        var stack = stacks[thread];
        var action = random.Next(10);
        if (stack.Count == 0 || action < 5)
        {
            var code = (uint)random.Next(1, 6);
            if (code == 3 && random.Next(2) == 0) script.Resume(now, code, thread);
            else if (random.Next(20) == 0) script.Seed(now, code, thread); // a frame that was running when recording began
            else script.Start(now, code, thread);
            stack.Add(code);
        }
        else if (action < 8)
        {
            var code = stack[^1];
            if (code == 3) script.Yield(now, code, thread);
            else script.Return(now, code, thread);
            stack.RemoveAt(stack.Count - 1);
        }
        else if (action < 9)
        {
            // An exit of a frame below the top: the frames above it lost theirs.
            var index = random.Next(stack.Count);
            script.Unwind(now, stack[index], thread);
            stack.RemoveRange(index, stack.Count - index);
        }
        else
        {
            script.Return(now, 5, thread); // code 5 may not be open: an unmatched exit
            var index = stack.LastIndexOf(5);
            if (index >= 0) stack.RemoveRange(index, stack.Count - index);
        }
    }

    /// <summary>Both answers for one moment: the function statistics first, then a checkpoint, in one take.</summary>
    private static async Task<(IReadOnlyList<FunctionStats> Live, IReadOnlyList<FunctionStats> Full)> BothAt(ProcessSession session)
    {
        var live = session.RequestFunctionStatisticsAsync();
        var snapshot = session.RequestSnapshotAsync();
        session.TakeRequestedCheckpoint();
        var timeout = TimeSpan.FromSeconds(10);
        return (await live.WaitAsync(timeout), (await snapshot.WaitAsync(timeout)).FunctionStatistics());
    }

    private static string[] Describe(IEnumerable<FunctionStats> stats)
        => [.. stats.Select(stat => $"{stat.Function.Label}: {stat.Calls} calls, {stat.Resumes} resumes, {stat.SelfNs} self, {stat.TotalNs} total")];

    private static (long Calls, long TotalNs) Figures(IEnumerable<FunctionStats> stats, string name)
    {
        var stat = stats.Single(stat => stat.Function.QualifiedName == name);
        return (stat.Calls, stat.TotalNs);
    }

    private static int Count(CallNode root, FunctionInfo function)
        => root.Children.Sum(child => (Equals(child.Function, function) ? 1 : 0) + Count(child, function));
}

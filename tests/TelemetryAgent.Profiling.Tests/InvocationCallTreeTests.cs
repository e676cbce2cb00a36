using TelemetryAgent.Profiling.Startup;
using TelemetryAgent.Protocol;
using TelemetryAgent.Protocol.Messages;
using TelemetryAgent.Sessions;
using TelemetryAgent.Testing;
using WireInvocation = TelemetryAgent.Protocol.Messages.FirstInvocation;
using WireStartup = TelemetryAgent.Protocol.Messages.Startup;

namespace TelemetryAgent.Profiling.Tests;

/// <summary>
/// The first invocations' exact call trees: the session follows the outermost calls of the function the shim defines
/// as the ready-on one and gives each tree to the first invocation the shim timed at that moment.
/// </summary>
public sealed class InvocationCallTreeTests
{
    private const uint Module = 1, Handler = 2, Connect = 3, Lookup = 4;

    private static SessionScript Script(string mode = "full", uint planned = 3)
    {
        var script = new SessionScript(mode: mode)
            .Thread(1, "MainThread", isMain: true).Thread(2, "worker")
            .Code(Module, "<module>").Code(Handler, "handle", readyOn: true).Code(Connect, "connect").Code(Lookup, "lookup");
        script.Session.OnStats(new Stats { Startup = new WireStartup { ShimStartNs = 10, ReadyNs = 1_000, FirstInvocationsPlanned = planned } });
        return script;
    }

    private static void Timed(SessionScript script, params (uint Number, long Start, long End)[] invocations)
    {
        var stats = new Stats();
        foreach (var (number, start, end) in invocations) stats.FirstInvocations.Add(new WireInvocation { Number = number, StartNs = start, EndNs = end });
        script.Session.OnStats(stats);
    }

    [Fact]
    public void A_tree_is_given_to_its_invocation_whether_the_invocation_or_the_tree_comes_first()
    {
        var script = Script();
        script.Start(500, Module)
            .Start(1_000, Handler).Start(1_100, Connect).Return(1_400, Connect).Start(1_400, Lookup).Return(1_500, Lookup).Return(2_000, Handler);
        Timed(script, (1, 1_000, 2_000));
        // The shim may send an invocation before the agent has read its last events.
        Timed(script, (2, 3_000, 3_500));
        script.Start(3_000, Handler).Start(3_100, Lookup).Return(3_200, Lookup).Return(3_500, Handler);

        var invocations = script.Profile.FirstInvocations;
        invocations[0].CallTree!.At("handle").Has(calls: 1, resumes: 0, selfNs: 600, totalNs: 1_000);
        invocations[0].CallTree!.At("handle", "connect").Has(calls: 1, resumes: 0, selfNs: 300, totalNs: 300);
        invocations[1].CallTree!.At("handle").Has(calls: 1, resumes: 0, selfNs: 400, totalNs: 500);
        invocations[1].CallTree!.At("handle", "lookup").Has(calls: 1, resumes: 0, selfNs: 100, totalNs: 100);
        // Only this invocation's share of a node the first one made too.
        Assert.Equal(["lookup"], invocations[1].CallTree!.At("handle").Children.Select(child => child.Function!.QualifiedName));
        // The process's own tree is untouched: both invocations are in it.
        script.Profile.Threads[0].Root.At("<module>", "handle").Has(calls: 2, resumes: 0, selfNs: 1_000, totalNs: 1_500);
    }

    [Fact]
    public void Recursion_and_a_raise_stay_inside_the_invocation_and_only_the_planned_ones_are_followed()
    {
        var script = Script(planned: 2);
        script.Start(500, Module)
            .Start(1_000, Handler).Start(1_100, Handler).Start(1_200, Lookup).Return(1_300, Lookup).Return(1_400, Handler).Return(1_600, Handler)
            // The second one raised: its frames unwind.
            .Start(2_000, Handler).Start(2_100, Connect).Unwind(2_200, Connect).Unwind(2_300, Handler)
            .Start(3_000, Handler).Return(3_100, Handler);
        Timed(script, (1, 1_000, 1_600), (2, 2_000, 2_300));

        var invocations = script.Profile.FirstInvocations;
        var first = invocations[0].CallTree!;
        first.At("handle").Has(calls: 1, resumes: 0, selfNs: 300, totalNs: 600);
        first.At("handle", "handle").Has(calls: 1, resumes: 0, selfNs: 200, totalNs: 300);
        first.At("handle", "handle", "lookup").Has(calls: 1, resumes: 0, selfNs: 100, totalNs: 100);
        invocations[1].CallTree!.At("handle", "connect").Has(calls: 1, resumes: 0, selfNs: 100, totalNs: 100);
        Assert.Equal(2, invocations.Count);
        var comparison = FirstInvocationComparison.Of(invocations)!;
        Assert.Equal(["lookup"], comparison.FunctionsOnlyInFirst!.Select(function => function.Function.QualifiedName));
    }

    [Fact]
    public void Concurrent_invocations_on_two_threads_are_told_apart_by_time_and_one_open_at_the_end_is_closed_there()
    {
        var script = Script();
        script.Start(1_000, Handler, thread: 1).Start(1_050, Handler, thread: 2).Start(1_100, Connect, thread: 2)
            .Return(1_300, Connect, thread: 2).Return(1_500, Handler, thread: 1).Return(1_600, Handler, thread: 2)
            .Start(5_000, Handler, thread: 1).Start(5_100, Lookup, thread: 1);
        // Numbered by the shim in the order it saw the calls; the last one is still running.
        Timed(script, (1, 1_049, 1_601), (2, 999, 1_501), (3, 5_000, 6_000));
        script.Goodbye(endMonotonicNs: 6_000);
        var profile = script.Complete();

        var invocations = profile.FirstInvocations;
        invocations.Single(invocation => invocation.Number == 1).CallTree!.At("handle", "connect").Has(calls: 1, resumes: 0, selfNs: 200, totalNs: 200);
        Assert.Empty(invocations.Single(invocation => invocation.Number == 2).CallTree!.At("handle").Children);
        var open = invocations.Single(invocation => invocation.Number == 3).CallTree;
        Assert.NotNull(open);
        open.At("handle", "lookup").Has(calls: 1, resumes: 0, selfNs: 900, totalNs: 900);
    }

    [Fact]
    public void In_burst_mode_an_invocation_window_gives_the_tree_and_its_events_stay_out_of_the_sampled_profile()
    {
        var script = Script(mode: "burst");
        script.WindowStart(100).Seed(100, Module).WindowEnd(200)
            // The invocation's window: seeded at its start, the handler's return comes with the window's end.
            .InvocationWindowStart(900).Seed(900, Module).Start(1_000, Handler).Start(1_100, Lookup).Return(1_200, Lookup)
            .InvocationWindowEnd(1_500)
            // A call of the handler inside a burst window is not followed: the window could have cut it.
            .WindowStart(2_000).Start(2_100, Handler).Return(2_200, Handler).WindowEnd(2_300);
        Timed(script, (1, 1_000, 1_490), (2, 2_100, 2_200));

        var invocations = script.Profile.FirstInvocations;
        invocations[0].CallTree!.At("handle").Has(calls: 1, resumes: 0, selfNs: 400, totalNs: 500);
        invocations[0].CallTree!.At("handle", "lookup").Has(calls: 1, resumes: 0, selfNs: 100, totalNs: 100);
        Assert.Null(invocations[1].CallTree);
        // The sampled profile has the burst windows only: their time, their nodes, their calls.
        var root = script.Profile.Threads[0].Root;
        Assert.Equal(["<module>", "handle"], root.Children.Select(child => child.Function!.QualifiedName));
        Assert.Empty(root.At("<module>").Children);
        root.At("handle").Has(calls: 1, resumes: 0, selfNs: 100, totalNs: 100);
        Assert.Equal((2L, 400L), (script.Profile.Windows.Count, script.Profile.Windows.CoveredNs));
        Assert.Equal(2 + 2, script.Profile.CallTreeNodes);  // two threads' roots, <module> and handle
    }

    [Fact]
    public void In_exceptions_mode_the_invocation_windows_give_the_trees_and_the_profile_gets_no_call()
    {
        var script = Script(mode: "exceptions", planned: 2);
        script.InvocationWindowStart(900).Seed(900, Module).Start(1_000, Handler).Start(1_100, Connect).Return(1_300, Connect)
            .Return(1_500, Handler).InvocationWindowEnd(1_550)
            .Start(1_600, Lookup)  // a callback that was running when the window closed
            .InvocationWindowStart(2_900).Seed(2_900, Module).Start(3_000, Handler).Start(3_100, Lookup).Return(3_150, Lookup)
            // Another thread that ran in the window: seeded, stays out of the trees.
            .Seed(2_900, Module, thread: 2).Start(3_160, Connect, thread: 2).Return(3_170, Connect, thread: 2)
            .Return(3_200, Handler).InvocationWindowEnd(3_250);
        Timed(script, (1, 1_000, 1_500), (2, 3_000, 3_200));

        var invocations = script.Profile.FirstInvocations;
        invocations[0].CallTree!.At("handle").Has(calls: 1, resumes: 0, selfNs: 300, totalNs: 500);
        invocations[0].CallTree!.At("handle", "connect").Has(calls: 1, resumes: 0, selfNs: 200, totalNs: 200);
        invocations[1].CallTree!.At("handle", "lookup").Has(calls: 1, resumes: 0, selfNs: 50, totalNs: 50);
        Assert.Equal(["connect"], FirstInvocationComparison.Of(invocations)!.FunctionsOnlyInFirst!.Select(function => function.Function.QualifiedName));
        Assert.All(script.Profile.Threads, thread => Assert.Empty(thread.Root.Children));
        Assert.Equal(0, script.Profile.Threads[0].Events);
        Assert.Equal(1, script.Profile.Windows.EventsOutsideWindows);
        Assert.Equal(2, script.Profile.CallTreeNodes);  // the two threads' roots
    }

    [Fact]
    public void A_connection_that_ends_inside_an_invocation_window_closes_the_invocation_there()
    {
        var script = Script(mode: "exceptions");
        script.InvocationWindowStart(900).Start(1_000, Handler).Start(1_100, Connect);
        Timed(script, (1, 1_000, 2_500));  // ended (by the shim's clock) after the agent heard the last of it
        var profile = script.Goodbye(endMonotonicNs: 2_000).Complete();

        var tree = Assert.Single(profile.FirstInvocations).CallTree!;
        tree.At("handle").Has(calls: 1, resumes: 0, selfNs: 100, totalNs: 1_000);
        tree.At("handle", "connect").Has(calls: 1, resumes: 0, selfNs: 900, totalNs: 900);
        Assert.Equal(0, profile.FramesOpenAtEnd);
        Assert.Equal(2, profile.CallTreeNodes);
    }

    [Fact]
    public void Invocation_window_markers_come_only_in_burst_and_exceptions_streams_and_never_inside_another_window()
    {
        static ProtocolViolation ViolationOf(Action action) => Assert.Throws<ProtocolException>(action).Violation;

        Assert.Equal(ProtocolViolation.InvalidRecord, ViolationOf(() => Script().InvocationWindowStart(10)));
        Assert.Equal(ProtocolViolation.InvalidRecord, ViolationOf(() => Script(mode: "exceptions").Event(10, 0, EventKind.InvocationWindowStart, thread: 1)));
        Assert.Equal(ProtocolViolation.InvalidRecord, ViolationOf(() => Script(mode: "exceptions").Event(10, Handler, EventKind.InvocationWindowEnd, thread: 0)));
        Assert.Equal(ProtocolViolation.InvalidRecord, ViolationOf(() => Script(mode: "exceptions").InvocationWindowStart(10).InvocationWindowStart(20)));
        Assert.Equal(ProtocolViolation.InvalidRecord, ViolationOf(() => Script(mode: "burst").WindowStart(10).InvocationWindowStart(20)));
        Assert.Equal(ProtocolViolation.InvalidRecord, ViolationOf(() => Script(mode: "burst").InvocationWindowStart(10).WindowStart(20)));
        Assert.Equal(ProtocolViolation.InvalidRecord, ViolationOf(() => Script(mode: "exceptions").WindowStart(10)));

        // An end without its start: the connection began inside the window (the shim reconnected). Skipped.
        var profile = Script(mode: "exceptions").Start(10, Handler).InvocationWindowEnd(20).Complete();
        Assert.Equal(1, profile.Windows.EventsOutsideWindows);
        Assert.Empty(profile.FirstInvocations);
    }

    [Fact]
    public void Without_a_tree_for_every_invocation_no_function_is_said_to_be_only_in_the_first()
    {
        var script = Script();
        script.Start(1_000, Handler).Start(1_100, Connect).Return(1_200, Connect).Return(1_500, Handler);
        // A second invocation the session never saw the calls of (the connection began after it).
        Timed(script, (1, 1_000, 1_500), (2, 90_000_000, 90_000_500));
        var comparison = FirstInvocationComparison.Of(script.Profile.FirstInvocations)!;
        Assert.Null(comparison.FunctionsOnlyInFirst);
        Assert.Equal(0, comparison.FunctionsOnlyInFirstSelfNs);
    }
}

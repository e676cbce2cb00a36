using TelemetryAgent.Profiling.Startup;
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
    public void Burst_mode_keeps_no_trees_since_its_windows_cut_them()
    {
        var script = Script(mode: "burst");
        script.WindowStart(900).Start(1_000, Handler).Start(1_100, Lookup).Return(1_200, Lookup).Return(1_500, Handler).WindowEnd(1_600);
        Timed(script, (1, 1_000, 1_500));
        Assert.Null(Assert.Single(script.Profile.FirstInvocations).CallTree);
        Assert.Null(FirstInvocationComparison.Of(script.Profile.FirstInvocations));
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

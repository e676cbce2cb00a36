using TelemetryAgent.Sessions;
using TelemetryAgent.Testing;

namespace TelemetryAgent.Profiling.Tests;

/// <summary>Scripted event sequences against exact trees and numbers (PROTOCOL.md "How the agent pairs events").</summary>
public sealed class SessionPairingTests
{
    private static SessionScript MainThread() => new SessionScript().Thread(1, "MainThread", isMain: true);

    [Fact]
    public void Nested_calls_give_exact_self_and_total_times()
    {
        var script = MainThread().Code(1, "main").Code(2, "work").Code(3, "helper")
            .Start(100, 1).Start(110, 2).Start(130, 3).Return(160, 3).Start(170, 3).Return(175, 3).Return(200, 2).Return(250, 1);
        var root = script.Complete().Threads[0].Root;

        root.At("main").Has(calls: 1, resumes: 0, selfNs: 60, totalNs: 150);
        root.At("main", "work").Has(calls: 1, resumes: 0, selfNs: 55, totalNs: 90);
        root.At("main", "work", "helper").Has(calls: 2, resumes: 0, selfNs: 35, totalNs: 35);
        Assert.Equal(150, root.TotalNs);
        root.AssertConsistent();
        Assert.Equal(8, script.Profile.EventsReceived);
        Assert.Equal((0L, 0L, 0L), (script.Profile.ImplicitExits, script.Profile.UnmatchedExits, script.Profile.FramesOpenAtEnd));
    }

    [Fact]
    public void Recursion_counts_every_call_and_does_not_double_count_total_time()
    {
        var script = MainThread().Code(1, "fib").Code(2, "leaf")
            .Start(0, 1).Start(10, 1).Start(20, 1).Return(30, 1).Return(40, 1).Start(50, 2).Return(60, 2).Return(100, 1);
        var profile = script.Complete();
        var root = profile.Threads[0].Root;

        root.At("fib").Has(1, 0, 60, 100);
        root.At("fib", "fib").Has(1, 0, 20, 30);
        root.At("fib", "fib", "fib").Has(1, 0, 10, 10);
        root.At("fib", "leaf").Has(1, 0, 10, 10);
        root.AssertConsistent();

        var fib = profile.FunctionStatistics().Single(stats => stats.Function.QualifiedName == "fib");
        Assert.Equal((3L, 0L, 90L, 100L), (fib.Calls, fib.Resumes, fib.SelfNs, fib.TotalNs));
        var leaf = profile.FunctionStatistics().Single(stats => stats.Function.QualifiedName == "leaf");
        Assert.Equal((1L, 10L, 10L), (leaf.Calls, leaf.SelfNs, leaf.TotalNs));
    }

    [Fact]
    public void Generator_starts_once_resumes_per_next_and_is_off_the_stack_while_suspended()
    {
        var script = MainThread().Code(1, "main").Code(2, "numbers", kindFlags: 1).Code(3, "consume")
            .Start(0, 1)
            .Start(10, 2).Yield(15, 2)          // first next(): START
            .Resume(20, 2).Yield(30, 2)         // second next() from main
            .Start(40, 3).Resume(45, 2).Yield(47, 2).Return(50, 3) // third next() from consume
            .Resume(60, 2).Return(65, 2)        // exhausted
            .Return(70, 1);
        var root = script.Complete().Threads[0].Root;

        root.At("main", "numbers").Has(calls: 1, resumes: 2, selfNs: 20, totalNs: 20);
        root.At("main", "consume", "numbers").Has(calls: 0, resumes: 1, selfNs: 2, totalNs: 2);
        root.At("main", "consume").Has(calls: 1, resumes: 0, selfNs: 8, totalNs: 10);
        // Suspended time (15-20, 30-40, 50-60) is main's own.
        root.At("main").Has(calls: 1, resumes: 0, selfNs: 40, totalNs: 70);
        root.AssertConsistent();
        Assert.True(root.At("main", "numbers").Function!.IsGeneratorOrCoroutine);
    }

    [Fact]
    public void Throw_into_a_generator_counts_a_resume_and_unwind_pops_it()
    {
        var script = MainThread().Code(1, "main").Code(2, "gen", kindFlags: 1)
            .Start(0, 1).Start(10, 2).Yield(20, 2).Throw(30, 2).Unwind(35, 2).Return(50, 1);
        var profile = script.Complete();

        profile.Threads[0].Root.At("main", "gen").Has(calls: 1, resumes: 1, selfNs: 15, totalNs: 15);
        profile.Threads[0].Root.At("main").Has(1, 0, 35, 50);
        Assert.Equal(0, profile.UnmatchedExits);
    }

    [Fact]
    public void Unwinding_through_several_frames_closes_each_at_its_unwind()
    {
        var script = MainThread().Code(1, "main").Code(2, "handler").Code(3, "parse")
            .Start(0, 1).Start(10, 2).Start(20, 3).Unwind(25, 3).Unwind(27, 2).Return(40, 1);
        var root = script.Complete().Threads[0].Root;

        root.At("main", "handler", "parse").Has(1, 0, 5, 5);
        root.At("main", "handler").Has(1, 0, 12, 17);
        root.At("main").Has(1, 0, 23, 40);
    }

    [Fact]
    public void Seeded_frames_are_pushed_without_counting_calls()
    {
        // The shim first saw this thread at a RETURN of helper, so it seeded the whole running stack.
        var script = MainThread().Code(1, "main").Code(2, "work").Code(3, "helper")
            .Seed(100, 1).Seed(100, 2).Seed(100, 3).Return(100, 3).Start(120, 3).Return(130, 3).Return(150, 2).Return(200, 1);
        var profile = script.Complete();
        var root = profile.Threads[0].Root;

        root.At("main").Has(calls: 0, resumes: 0, selfNs: 50, totalNs: 100);
        root.At("main", "work").Has(calls: 0, resumes: 0, selfNs: 40, totalNs: 50);
        root.At("main", "work", "helper").Has(calls: 1, resumes: 0, selfNs: 10, totalNs: 10);
        Assert.Equal(0, profile.UnmatchedExits);
    }

    [Fact]
    public void A_missing_exit_is_repaired_by_the_exit_of_a_frame_below()
    {
        var script = MainThread().Code(1, "main").Code(2, "gen", kindFlags: 1).Code(3, "inner")
            .Start(0, 1).Start(10, 2).Start(20, 3).Return(50, 1);
        var profile = script.Complete();
        var root = profile.Threads[0].Root;

        Assert.Equal(2, profile.ImplicitExits);
        root.At("main", "gen", "inner").Has(1, 0, 30, 30);
        root.At("main", "gen").Has(1, 0, 10, 40);
        root.At("main").Has(1, 0, 10, 50);
        Assert.Equal(0, profile.FramesOpenAtEnd);
    }

    [Fact]
    public void An_exit_of_a_frame_not_on_the_stack_is_ignored_and_counted()
    {
        var script = MainThread().Code(1, "main").Code(2, "elsewhere")
            .Return(5, 2)                       // before anything is on the stack
            .Start(10, 1).Return(15, 2).Return(30, 1);
        var profile = script.Complete();

        Assert.Equal(2, profile.UnmatchedExits);
        Assert.Equal(0, profile.ImplicitExits);
        profile.Threads[0].Root.At("main").Has(1, 0, 20, 20);
        Assert.Single(profile.Threads[0].Root.Children);
    }

    [Fact]
    public void A_timestamp_that_goes_backwards_is_taken_as_equal_to_the_previous_one()
    {
        var script = MainThread().Code(1, "main").Code(2, "f")
            .Start(100, 1).Start(90, 2).Return(95, 2).Return(200, 1);
        var profile = script.Complete();

        Assert.Equal(2, profile.ClampedTimestamps);
        profile.Threads[0].Root.At("main", "f").Has(1, 0, 0, 0);
        profile.Threads[0].Root.At("main").Has(1, 0, 100, 100);
    }

    [Fact]
    public void Frames_open_at_the_end_close_at_goodbyes_clock_without_counting_calls()
    {
        var script = MainThread().Code(1, "main").Code(2, "serve")
            .Start(0, 1).Start(10, 2).Goodbye(endMonotonicNs: 100);
        var profile = script.Complete();
        var root = profile.Threads[0].Root;

        root.At("main").Has(calls: 1, resumes: 0, selfNs: 10, totalNs: 100);
        root.At("main", "serve").Has(calls: 1, resumes: 0, selfNs: 90, totalNs: 90);
        Assert.Equal(2, profile.FramesOpenAtEnd);
        Assert.Equal(100, profile.DurationNs);
        Assert.Equal("Exit", profile.GoodbyeReason);
    }

    [Fact]
    public void Without_goodbye_open_frames_close_at_the_connections_last_timestamp()
    {
        var script = MainThread().Thread(2, "worker").Code(1, "main").Code(2, "loop")
            .Start(0, 1, thread: 1)
            .Start(50, 2, thread: 2).Return(300, 2, thread: 2);
        var profile = script.Complete(ConnectionEnd.EndOfStream);

        profile.Threads[0].Root.At("main").Has(calls: 1, resumes: 0, selfNs: 300, totalNs: 300);
        Assert.Equal(1, profile.FramesOpenAtEnd);
        Assert.Equal(ConnectionEndReason.EndOfStream, profile.End!.Value.Reason);
        Assert.Null(profile.GoodbyeReason);
    }

    [Fact]
    public void Threads_keep_their_own_stacks_and_clocks_when_events_interleave()
    {
        var script = MainThread().Thread(2, "worker").Code(1, "main").Code(2, "task").Code(3, "io")
            .Start(0, 1, thread: 1)
            .Start(5, 2, thread: 2)
            .Start(10, 3, thread: 1)
            .Start(12, 3, thread: 2)
            .Return(20, 3, thread: 1)
            .Return(40, 3, thread: 2)
            .Return(45, 2, thread: 2)
            .Return(60, 1, thread: 1);
        var profile = script.Complete();
        var main = script.ThreadNamed("MainThread").Root;
        var worker = script.ThreadNamed("worker").Root;

        main.At("main").Has(1, 0, 50, 60);
        main.At("main", "io").Has(1, 0, 10, 10);
        worker.At("task").Has(1, 0, 12, 40);
        worker.At("task", "io").Has(1, 0, 28, 28);
        Assert.Equal((4L, 4L), (script.ThreadNamed("MainThread").Events, script.ThreadNamed("worker").Events));
        // The same function on two threads is one function: 2 calls.
        var io = profile.FunctionStatistics().Single(stats => stats.Function.QualifiedName == "io");
        Assert.Equal((2L, 38L, 38L), (io.Calls, io.SelfNs, io.TotalNs));
    }

    [Fact]
    public void Defining_a_thread_id_again_renames_the_thread()
    {
        var script = new SessionScript().Thread(1, "Thread-1").Code(1, "run").Start(0, 1).Thread(1, "worker-7").Return(10, 1);
        var profile = script.Complete();

        var thread = Assert.Single(profile.Threads);
        Assert.Equal("worker-7", thread.Name);
        thread.Root.At("run").Has(1, 0, 10, 10);
    }

    [Fact]
    public void Pushes_beyond_the_depth_limit_are_counted_and_paired_but_not_stored()
    {
        var script = new SessionScript(limits: new SessionLimits { MaxStackDepth = 3 })
            .Thread(1, "MainThread").Code(1, "a").Code(2, "b").Code(3, "c").Code(4, "d").Code(5, "e")
            .Start(0, 1).Start(10, 2).Start(20, 3).Start(30, 4).Start(40, 5)
            .Return(50, 5).Return(60, 4).Return(70, 3).Return(80, 2).Return(90, 1);
        var profile = script.Complete();
        var root = profile.Threads[0].Root;

        Assert.Equal(2, profile.DepthLimitedPushes);
        var c = root.At("a", "b", "c");
        Assert.Empty(c.Children);
        c.Has(calls: 1, resumes: 0, selfNs: 50, totalNs: 50);   // the unstored frames' time is c's
        root.At("a", "b").Has(1, 0, 20, 70);
        root.At("a").Has(1, 0, 20, 90);
        Assert.Equal((0L, 0L), (profile.ImplicitExits, profile.UnmatchedExits));
    }

    [Fact]
    public void Deep_recursion_grows_the_stack_without_losing_pairs()
    {
        const int depth = 5_000;
        var script = MainThread().Code(1, "recurse");
        for (var i = 0; i < depth; i++) script.Start(i, 1);
        for (var i = 0; i < depth; i++) script.Return(depth + i, 1);
        var profile = script.Complete();

        var limit = SessionLimits.Default.MaxStackDepth;
        Assert.Equal(depth - limit, profile.DepthLimitedPushes);
        var stats = Assert.Single(profile.FunctionStatistics());
        Assert.Equal(limit, stats.Calls);
        Assert.Equal(2 * depth - 1, stats.TotalNs);
        Assert.Equal(2 * depth - 1, stats.SelfNs);
        profile.Threads[0].Root.AssertConsistent();
    }

    [Fact]
    public void A_thread_without_events_is_kept_with_an_empty_tree()
    {
        var profile = MainThread().Thread(2, "idle").Complete();
        Assert.Equal(["MainThread", "idle"], profile.Threads.Select(thread => thread.Name));
        Assert.All(profile.Threads, thread => Assert.Empty(thread.Root.Children));
        Assert.Equal(0, profile.DurationNs);
    }

    [Fact]
    public void Stats_are_cumulative_and_goodbyes_final_stats_win()
    {
        var script = MainThread().Stats(recorded: 10, dropped: 1).Stats(recorded: 20, dropped: 3);
        Assert.Equal(3UL, script.Profile.EventsDropped);
        script.Session.OnGoodbye(new Protocol.Messages.Goodbye
        {
            Reason = Protocol.Messages.Goodbye.Types.Reason.Detach,
            FinalStats = new Protocol.Messages.Stats { EventsRecorded = 30, EventsDropped = 4, CallbackErrors = 1 },
            Detail = "stopped by the program",
        });
        var profile = script.Complete();
        Assert.Equal((30UL, 4UL, 1UL), (profile.ShimStats.EventsRecorded, profile.EventsDropped, profile.ShimStats.CallbackErrors));
        Assert.Equal(("Detach", "stopped by the program"), (profile.GoodbyeReason, profile.GoodbyeDetail));
    }

    [Fact]
    public void Events_of_one_batch_decode_in_order()
    {
        var script = MainThread().Code(1, "main").Code(2, "work");
        var batch = new byte[4 * Protocol.WireFormat.EventRecordSize];
        Protocol.EventRecord[] records =
        [
            new(100, 1, 1, Protocol.EventKind.Start),
            new(110, 1, 2, Protocol.EventKind.Start),
            new(150, 1, 2, Protocol.EventKind.Return),
            new(170, 1, 1, Protocol.EventKind.Return),
        ];
        for (var i = 0; i < records.Length; i++) records[i].WriteTo(batch.AsSpan(i * 16));
        script.Session.OnEvents(batch);

        var root = script.Complete().Threads[0].Root;
        root.At("main").Has(1, 0, 30, 70);
        root.At("main", "work").Has(1, 0, 40, 40);
    }
}

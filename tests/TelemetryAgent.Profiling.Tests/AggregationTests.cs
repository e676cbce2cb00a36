using System.IO.Pipelines;
using TelemetryAgent.Protocol;
using TelemetryAgent.Protocol.Messages;
using TelemetryAgent.Sessions;
using TelemetryAgent.Testing;

namespace TelemetryAgent.Profiling.Tests;

/// <summary>Per-function statistics, tree merging, the store, and a session driven by real wire bytes.</summary>
public sealed class AggregationTests
{
    [Fact]
    public void Mutual_recursion_counts_only_the_outermost_frame_of_each_function()
    {
        // a -> b -> a -> b: each function's total is its outermost frame's.
        var profile = new SessionScript().Thread(1, "MainThread").Code(1, "a").Code(2, "b")
            .Start(0, 1).Start(10, 2).Start(20, 1).Start(30, 2).Return(40, 2).Return(50, 1).Return(60, 2).Return(70, 1)
            .Complete();
        var stats = profile.FunctionStatistics().ToDictionary(item => item.Function.QualifiedName);

        Assert.Equal((2L, 40L, 70L), (stats["a"].Calls, stats["a"].SelfNs, stats["a"].TotalNs));
        Assert.Equal((2L, 30L, 50L), (stats["b"].Calls, stats["b"].SelfNs, stats["b"].TotalNs));
        Assert.Equal(["a", "b"], profile.FunctionStatistics().Select(item => item.Function.QualifiedName));
    }

    [Fact]
    public void Function_statistics_merge_equal_functions_of_different_processes()
    {
        var first = new SessionScript(pid: 1).Thread(1, "MainThread").Code(1, "handle").Start(0, 1).Return(10, 1).Complete();
        var second = new SessionScript(pid: 2).Thread(1, "MainThread").Code(7, "handle").Start(0, 7).Return(5, 7).Start(6, 7).Return(7, 7).Complete();

        var merged = FunctionStats.Compute(new[] { first, second }.SelectMany(p => p.Threads).Select(t => t.Root));
        var handle = Assert.Single(merged);
        Assert.Equal((3L, 16L, 16L), (handle.Calls, handle.SelfNs, handle.TotalNs));
    }

    [Fact]
    public void Merging_a_tree_sums_nodes_of_equal_functions()
    {
        var profile = new SessionScript().Thread(1, "a").Thread(2, "b").Code(1, "main").Code(2, "work")
            .Start(0, 1, 1).Start(5, 2, 1).Return(10, 2, 1).Return(20, 1, 1)
            .Start(0, 1, 2).Start(1, 2, 2).Return(4, 2, 2).Return(5, 1, 2)
            .Complete();
        var merged = CallNode.CreateRoot("all");
        foreach (var thread in profile.Threads) merged.GetOrAddGroup("threads").MergeFrom(thread.Root, function => function);

        var group = Assert.Single(merged.Children);
        Assert.Null(group.Function);
        group.At("main").Has(calls: 2, resumes: 0, selfNs: 17, totalNs: 25);
        group.At("main", "work").Has(calls: 2, resumes: 0, selfNs: 8, totalNs: 8);
        Assert.Equal(25, group.TotalNs);
    }

    [Fact]
    public void Wide_nodes_find_children_through_their_index()
    {
        var root = CallNode.CreateRoot("root");
        var functions = Enumerable.Range(0, 40)
            .Select(i => FunctionInfo.Create($"f{i}", "/srv/app/x.py", i, "x", 0, "/srv/app")).ToArray();
        var first = functions.Select(root.GetOrAddChild).ToArray();
        var again = functions.Select(root.GetOrAddChild).ToArray();

        Assert.Equal(40, root.Children.Count);
        Assert.Equal(first, again);
        Assert.All(root.Children, child => Assert.Same(root, child.Parent));
        Assert.All(root.Children, child => Assert.Equal(1, child.Depth));
        // Equal but distinct instances are different children: the session interns one per code id.
        var twin = functions[0] with { };
        Assert.NotSame(root.GetOrAddChild(functions[0]), root.GetOrAddChild(twin));
    }

    [Fact]
    public void The_store_separates_running_from_completed_profiles()
    {
        var store = new ProfileStore();
        var running = new SessionScript(store, pid: 10);
        var done = new SessionScript(store, pid: 11);
        done.Complete();

        var snapshot = store.Snapshot();
        Assert.Equal([11L], snapshot.Completed.Select(profile => profile.Identity.Pid));
        Assert.Equal([10L], snapshot.Running.Select(identity => identity.Pid));

        running.Complete(ConnectionEnd.Cancelled);
        Assert.Equal(0, snapshot.Running.Count - 1);   // an earlier snapshot does not change
        Assert.Equal([11L, 10L], store.Snapshot().Completed.Select(profile => profile.Identity.Pid));
        Assert.Empty(store.Snapshot().Running);
    }

    [Fact]
    public void The_store_takes_concurrent_sessions()
    {
        var store = new ProfileStore();
        Parallel.For(0, 64, pid =>
        {
            var script = new SessionScript(store, pid: pid).Thread(1, "MainThread").Code(1, "main");
            script.Start(0, 1).Return(pid, 1);
            script.Complete();
            _ = store.Snapshot();
        });
        var completed = store.Snapshot().Completed;
        Assert.Equal(Enumerable.Range(0, 64).Select(pid => (long)pid), completed.Select(p => p.Identity.Pid).Order());
    }

    [Fact]
    public async Task A_session_reads_a_whole_stream_through_a_pipe()
    {
        var bytes = new WireStream().Preamble()
            .Hello(pid: 31)
            .Definitions(codes: [(1, "main"), (2, "work")], threads: [(1, "MainThread")])
            .Events(
                new EventRecord(1_000, 1, 1, EventKind.Start),
                new EventRecord(1_100, 1, 2, EventKind.Start),
                new EventRecord(1_400, 1, 2, EventKind.Return),
                new EventRecord(2_000, 1, 1, EventKind.Return))
            .Stats(new Stats { EventsRecorded = 4, EventsSent = 4 })
            .Goodbye(new Goodbye { Reason = Goodbye.Types.Reason.Exit, EndMonotonicNs = 2_100 })
            .ToArray();
        var store = new ProfileStore();
        var session = new ProcessSession(store);

        var end = await session.RunAsync(await FeedAsync(bytes, chunk: 7), Timeout());

        Assert.Equal(ConnectionEnd.Goodbye, end);
        var profile = Assert.Single(store.Snapshot().Completed);
        profile.Threads[0].Root.At("main").Has(1, 0, 700, 1_000);
        profile.Threads[0].Root.At("main", "work").Has(1, 0, 300, 300);
        Assert.Equal(4UL, profile.ShimStats.EventsRecorded);
        Assert.Equal(1_100, profile.DurationNs);
    }

    [Fact]
    public async Task A_protocol_violation_in_the_stream_ends_the_session_and_keeps_the_data()
    {
        var bytes = new WireStream().Preamble()
            .Hello(pid: 32)
            .Definitions(codes: [(1, "main")], threads: [(1, "MainThread")])
            .Events(new EventRecord(10, 1, 1, EventKind.Start), new EventRecord(20, 1, 1, EventKind.Return))
            .Events(new EventRecord(30, 1, 5, EventKind.Start))
            .ToArray();
        var session = new ProcessSession();

        var end = await session.RunAsync(await FeedAsync(bytes, chunk: 64), Timeout());

        Assert.Equal(ConnectionEndReason.ProtocolError, end.Reason);
        Assert.Equal(ProtocolViolation.UndefinedId, end.Violation);
        Assert.Equal(end.ToOutcome(), session.Profile!.End);
        session.Profile.Threads[0].Root.At("main").Has(1, 0, 10, 10);
    }

    [Fact]
    public async Task A_stream_that_stops_without_goodbye_is_recorded_as_such()
    {
        var bytes = new WireStream().Preamble().Hello(pid: 33).ToArray();
        var session = new ProcessSession();
        var end = await session.RunAsync(await FeedAsync(bytes, chunk: 3), Timeout());
        Assert.Equal(ConnectionEnd.EndOfStream, end);
        Assert.True(session.Profile!.IsCompleted);
    }

    [Fact]
    public void Steady_state_events_allocate_nothing()
    {
        var script = new SessionScript().Thread(1, "MainThread").Code(1, "main").Code(2, "work").Code(3, "gen", kindFlags: 1);
        const int rounds = 2_000;
        var batch = new byte[rounds * 6 * 16];
        long ts = 0;
        for (var i = 0; i < rounds; i++)
        {
            var offset = i * 6 * 16;
            new EventRecord((ulong)ts++, 1, 1, EventKind.Start).WriteTo(batch.AsSpan(offset));
            new EventRecord((ulong)ts++, 1, 2, EventKind.Start).WriteTo(batch.AsSpan(offset + 16));
            new EventRecord((ulong)ts++, 1, 3, EventKind.Resume).WriteTo(batch.AsSpan(offset + 32));
            new EventRecord((ulong)ts++, 1, 3, EventKind.Yield).WriteTo(batch.AsSpan(offset + 48));
            new EventRecord((ulong)ts++, 1, 2, EventKind.Return).WriteTo(batch.AsSpan(offset + 64));
            new EventRecord((ulong)ts++, 1, 1, EventKind.Return).WriteTo(batch.AsSpan(offset + 80));
        }
        var handler = script.Session.Handler;
        handler.OnEvents(batch.AsSpan(0, 6 * 16));   // first visit: the tree's nodes are created here
        for (var warmup = 0; warmup < 3; warmup++) handler.OnEvents(batch.AsSpan(6 * 16, 6 * 16 * 100));

        var before = GC.GetAllocatedBytesForCurrentThread();
        handler.OnEvents(batch);
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        Assert.Equal(0, allocated);
        Assert.Equal(rounds + 1 + 300, script.Profile.Threads[0].Root.At("main").Calls);
    }

    // Every wait has a limit: a hung read ends as Cancelled and fails the test instead of blocking the run.
    private static CancellationToken Timeout() => new CancellationTokenSource(TimeSpan.FromSeconds(10)).Token;

    private static async Task<PipeReader> FeedAsync(byte[] bytes, int chunk)
    {
        var pipe = new Pipe(new PipeOptions(pauseWriterThreshold: 0));
        for (var offset = 0; offset < bytes.Length; offset += chunk)
        {
            await pipe.Writer.WriteAsync(bytes.AsMemory(offset, Math.Min(chunk, bytes.Length - offset)));
        }
        await pipe.Writer.CompleteAsync();
        return pipe.Reader;
    }
}

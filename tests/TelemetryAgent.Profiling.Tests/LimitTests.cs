using System.IO.Pipelines;
using TelemetryAgent.Protocol;
using TelemetryAgent.Sessions;
using TelemetryAgent.Testing;

namespace TelemetryAgent.Profiling.Tests;

/// <summary>The agent's per-connection and shared limits: what each does when it is reached.</summary>
public sealed class LimitTests
{
    private static ProtocolViolation ViolationOf(Action action) => Assert.Throws<ProtocolException>(action).Violation;

    [Fact]
    public void Calls_on_new_paths_beyond_the_node_limit_go_to_one_truncated_node_per_caller()
    {
        // Thread root, main, a and b are the 4 nodes allowed.
        var script = new SessionScript(limits: new SessionLimits { MaxCallTreeNodes = 4 })
            .Thread(1, "MainThread", isMain: true)
            .Code(1, "main").Code(2, "a").Code(3, "b").Code(4, "c").Code(5, "d").Code(6, "e")
            .Start(0, 1)
            .Start(10, 2).Return(20, 2)
            .Start(30, 3)
            .Start(40, 4)                 // new path under b: [truncated]
            .Start(50, 5).Return(70, 5)   // below a truncated frame: stays in it
            .Return(80, 4)
            .Return(90, 3)
            .Start(100, 2).Return(105, 2) // an existing path is still counted normally
            .Start(110, 6).Return(120, 6) // another new path: main's own [truncated]
            .Return(130, 1);
        var profile = script.Complete();
        var root = profile.Threads[0].Root;

        Assert.Equal(3, profile.TruncatedPushes);
        Assert.Equal(6, profile.CallTreeNodes);
        root.At("main", "a").Has(calls: 2, resumes: 0, selfNs: 15, totalNs: 15);
        // c and d collapsed into one node: both calls, the time once.
        root.At("main", "b", ProcessSession.TruncatedNodeName).Has(calls: 2, resumes: 0, selfNs: 40, totalNs: 40);
        root.At("main", ProcessSession.TruncatedNodeName).Has(calls: 1, resumes: 0, selfNs: 10, totalNs: 10);
        Assert.Equal(ProcessSession.TruncatedNodeName, root.At("main", "b").Children.Single().Name);
        root.AssertConsistent();
    }

    [Fact]
    public void A_checkpoint_counts_frames_collapsed_into_a_truncated_node_once()
    {
        var observer = new CheckpointCollector();
        var script = new SessionScript(limits: new SessionLimits { MaxCallTreeNodes = 2 }, observer: observer)
            .Thread(1, "MainThread", isMain: true)
            .Code(1, "main").Code(2, "a").Code(3, "b")
            .Start(0, 1).Start(10, 2).Start(20, 3).Start(25, 2).Return(30, 2); // a, b, a: all in one [truncated]
        script.Session.RequestCheckpoint();
        script.Session.TakeRequestedCheckpoint();

        var root = Assert.Single(observer.Checkpoints).Threads[0].Root;
        var truncated = root.At("main", ProcessSession.TruncatedNodeName);
        Assert.Empty(truncated.Children);
        truncated.Has(calls: 3, resumes: 0, selfNs: 20, totalNs: 20); // open since 10, latest event at 30
        root.AssertConsistent();
    }

    private sealed class CheckpointCollector : IProcessObserver
    {
        public List<ProcessProfile> Checkpoints { get; } = [];
        public void OnStarted(ProcessProfile running) { }
        public void OnCheckpoint(ProcessProfile checkpoint) => Checkpoints.Add(checkpoint);
        public void OnCompleted(ProcessProfile completed) { }
    }

    [Fact]
    public void Definitions_and_threads_beyond_their_limits_end_the_connection_with_their_own_violation()
    {
        var script = new SessionScript(limits: new SessionLimits { MaxCodeId = 3, MaxThreadId = 2 });
        script.Code(3, "last").Thread(2, "last");
        Assert.Equal(ProtocolViolation.TooManyDefinitions, ViolationOf(() => script.Code(4, "over")));
        Assert.Equal(ProtocolViolation.TooManyThreads, ViolationOf(() => script.Thread(3, "over")));
    }

    [Fact]
    public void The_shared_memory_budget_ends_the_connection_that_needs_more_and_is_given_back()
    {
        var budget = new AggregateMemoryBudget(AggregateMemoryBudget.ChunkBytes * 2);
        var first = new SessionScript(budget: budget).Thread(1, "MainThread", isMain: true);
        var longName = new string('f', 10_000); // about 20 KB a definition
        uint id = 1;
        var violation = ViolationOf(() =>
        {
            for (; id < 1000; id++) first.Code(id, longName + id);
        });
        Assert.Equal(ProtocolViolation.AggregateMemoryExhausted, violation);
        Assert.InRange(id, 20u, 30u); // 512 KiB / 20 KB
        Assert.Equal(budget.LimitBytes, budget.ReservedBytes);

        // While the first holds the budget, a second connection gets nothing; once given back, it does.
        Assert.Equal(ProtocolViolation.AggregateMemoryExhausted,
            ViolationOf(() => new SessionScript(budget: budget).Thread(1, "MainThread")));
        budget.Release(first.Session.ReservedBytes);
        Assert.Equal(0, budget.ReservedBytes);
        var second = new SessionScript(budget: budget).Thread(1, "MainThread").Code(1, "main").Start(0, 1).Return(10, 1);
        Assert.Equal(1, second.Complete().Threads[0].Root.At("main").Calls);
    }

    [Fact]
    public async Task A_frame_above_the_configured_size_ends_the_connection_before_its_payload_is_read()
    {
        var stream = new WireStream().Preamble().Hello(7)
            .Definitions([(1, new string('x', 2000))], [(1, "MainThread")])
            .ToArray();
        var pipe = new Pipe();
        var session = new ProcessSession(limits: new SessionLimits { MaxFramePayload = 1024 });
        var run = session.RunAsync(pipe.Reader);
        // Only the header of the big frame (and a few bytes) arrive: the limit is decided from the header.
        var definitionsStart = new WireStream().Preamble().Hello(7).ToArray().Length;
        await pipe.Writer.WriteAsync(stream.AsMemory(0, definitionsStart + WireFormat.FrameHeaderSize + 10));
        var end = await run.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(ProtocolViolation.FrameTooLarge, end.Violation);
        Assert.Contains("the limit is 1024", end.Detail);
        Assert.NotNull(session.Profile);
        await pipe.Writer.CompleteAsync();
    }
}

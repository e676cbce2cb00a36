using TelemetryAgent.Sessions;
using TelemetryAgent.Testing;

namespace TelemetryAgent.Profiling.Tests;

public sealed class CheckpointTests
{
    private sealed class RecordingObserver : IProcessObserver
    {
        public List<string> Calls { get; } = [];
        public List<ProcessProfile> Checkpoints { get; } = [];

        public void OnStarted(ProcessProfile running) => Calls.Add($"started {running.Identity.Pid}");

        public void OnCheckpoint(ProcessProfile checkpoint)
        {
            Calls.Add("checkpoint");
            Checkpoints.Add(checkpoint);
        }

        public void OnCompleted(ProcessProfile completed) => Calls.Add($"completed {completed.End}");
    }

    private static CallNode Node(ProcessProfile profile, uint thread, params string[] path)
    {
        var node = profile.Threads.Single(t => t.Id == thread).Root;
        foreach (var name in path) node = node.Children.Single(child => child.Function!.QualifiedName == name);
        return node;
    }

    private static (long Calls, long SelfNs, long TotalNs) Figures(CallNode node) => (node.Calls, node.SelfNs, node.TotalNs);

    private static (SessionScript Script, RecordingObserver Observer) Running()
    {
        var observer = new RecordingObserver();
        var script = new SessionScript(observer: observer)
            .Thread(1, "MainThread", isMain: true).Thread(2, "worker")
            .Code(1, "f").Code(2, "g").Code(3, "h");
        // Thread 1: f calls g, which returns; f is still running. Thread 2: h started and has been idle since.
        script.Start(100, 1).Start(150, 3, thread: 2).Start(200, 2).Return(300, 2);
        return (script, observer);
    }

    [Fact]
    public void A_checkpoint_is_taken_only_when_requested_and_charges_open_frames_up_to_the_latest_event()
    {
        var (script, observer) = Running();
        script.Session.TakeRequestedCheckpoint();
        Assert.Empty(observer.Checkpoints);

        script.Session.RequestCheckpoint();
        script.Session.RequestCheckpoint(); // two requests before it is taken: one checkpoint
        script.Session.TakeRequestedCheckpoint();
        script.Session.TakeRequestedCheckpoint();

        var checkpoint = Assert.Single(observer.Checkpoints);
        Assert.True(checkpoint.IsCheckpoint && checkpoint.IsFrozen && !checkpoint.IsCompleted);
        Assert.Equal((1L, 100L, 200L), Figures(Node(checkpoint, 1, "f")));
        Assert.Equal((1L, 100L, 100L), Figures(Node(checkpoint, 1, "f", "g")));
        Assert.Equal(200, Node(checkpoint, 1).TotalNs);
        // The idle thread's open frame ran (or waited) until the process's latest event.
        Assert.Equal((1L, 150L, 150L), Figures(Node(checkpoint, 2, "h")));
        Assert.Equal("h", checkpoint.FunctionStatistics()[0].Function.QualifiedName);
    }

    [Fact]
    public async Task A_checkpoint_asked_for_now_completes_once_the_observers_have_it()
    {
        var (script, observer) = Running();
        var asked = script.Session.CheckpointNowAsync();
        Assert.False(asked.IsCompleted);
        script.Session.TakeRequestedCheckpoint();
        var checkpoint = await asked.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Same(Assert.Single(observer.Checkpoints), checkpoint);

        // When the connection ends first: the completed profile, after the observers heard of it.
        var late = script.Session.CheckpointNowAsync();
        script.Session.Complete(ConnectionEnd.Cancelled);
        var completed = await late.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.True(completed.IsCompleted);
        Assert.Equal("completed Cancelled", observer.Calls[^1]);
    }

    [Fact]
    public void The_live_profile_goes_on_without_counting_anything_twice_and_the_checkpoint_never_changes()
    {
        var (script, observer) = Running();
        script.Session.RequestCheckpoint();
        script.Session.TakeRequestedCheckpoint();
        script.Return(500, 1).Start(600, 2).Return(700, 2);
        script.Session.Complete(ConnectionEnd.Cancelled);

        var checkpoint = Assert.Single(observer.Checkpoints);
        Assert.Equal((1L, 100L, 200L), Figures(Node(checkpoint, 1, "f")));
        Assert.Equal((1L, 150L, 150L), Figures(Node(checkpoint, 2, "h")));
        Assert.DoesNotContain(checkpoint.Threads.Single(t => t.Id == 1).Root.Children, n => n.Function!.QualifiedName == "g");

        var final = script.Profile;
        Assert.Equal((1L, 300L, 400L), Figures(Node(final, 1, "f")));
        Assert.Equal((1L, 100L, 100L), Figures(Node(final, 1, "g")));
        Assert.Equal((1L, 550L, 550L), Figures(Node(final, 2, "h"))); // 150 -> 700, its thread closed at the end
        Assert.Equal(["started 4242", "checkpoint", $"completed {ConnectionEnd.Cancelled}"], observer.Calls);
    }

    [Fact]
    public void A_completed_session_takes_no_checkpoint()
    {
        var (script, observer) = Running();
        script.Session.Complete(ConnectionEnd.Cancelled);
        script.Session.RequestCheckpoint();
        script.Session.TakeRequestedCheckpoint();
        Assert.Empty(observer.Checkpoints);
    }
}

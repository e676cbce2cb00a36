using TelemetryAgent.Profiling.Formats;
using TelemetryAgent.Protocol;
using TelemetryAgent.Sessions;
using TelemetryAgent.Testing;

namespace TelemetryAgent.Profiling.Tests;

/// <summary>Burst mode's windows (PROTOCOL.md "Burst mode"): balanced stacks per window, events outside skipped, scaling, bad markers.</summary>
public sealed class BurstWindowTests
{
    // HELLO's clock is 1_000 (SessionScript): the windows stand for the span from there.
    private static SessionScript Burst() => new SessionScript(mode: "burst").Thread(1, "MainThread", isMain: true).Thread(2, "idle")
        .Code(1, "main").Code(2, "work").Code(3, "wait");

    private static SessionScript TwoWindows() => Burst()
        .WindowStart(1_000).Seed(1_000, 1).Start(1_200, 2).Return(1_500, 2).Seed(1_000, 3, thread: 2).WindowEnd(2_000)
        .Start(2_500, 2)                                            // a callback that was running at the window's end
        .WindowStart(11_000).Seed(11_000, 1).Seed(11_000, 2).Return(11_400, 2).WindowEnd(12_000);

    [Fact]
    public void Window_ends_close_every_frame_without_counting_calls_and_the_trees_are_scaled()
    {
        var profile = TwoWindows().Complete();

        // Exact in the windows: main self 200 + 500 + 600, work 300 + 400 (one call); scaled by 11_000 / 2_000.
        Assert.Equal((2L, 2_000L, 11_000L, 5.5), (profile.Windows.Count, profile.Windows.CoveredNs, profile.Windows.RepresentedNs, profile.Windows.Scale));
        var main = profile.Threads[0].Root;
        main.At("main").Has(calls: 0, resumes: 0, selfNs: 7_150, totalNs: 11_000);
        main.At("main", "work").Has(calls: 6, resumes: 0, selfNs: 3_850, totalNs: 3_850);
        Assert.Equal(11_000, main.TotalNs);
        main.AssertConsistent();
        // The idle thread was seeded once and closed at the window's end: its 1_000 ns stand for 5_500.
        profile.Threads[1].Root.At("wait").Has(calls: 0, resumes: 0, selfNs: 5_500, totalNs: 5_500);
        Assert.Equal((1L, 1L, 0L), (profile.Windows.EventsOutsideWindows, profile.Windows.CallsInWindows, profile.FramesOpenAtEnd));
        Assert.Equal((0L, 0L), (profile.ImplicitExits, profile.UnmatchedExits));
    }

    [Fact]
    public void A_stream_that_ends_inside_a_window_counts_it_until_its_end()
    {
        var profile = Burst().WindowStart(1_000).Seed(1_000, 1).Start(1_100, 2).Goodbye(endMonotonicNs: 1_500).Complete();

        Assert.Equal((1L, 500L, 500L, 1.0), (profile.Windows.Count, profile.Windows.CoveredNs, profile.Windows.RepresentedNs, profile.Windows.Scale));
        profile.Threads[0].Root.At("main", "work").Has(calls: 1, resumes: 0, selfNs: 400, totalNs: 400);
        Assert.Equal(2, profile.FramesOpenAtEnd);
    }

    [Fact]
    public void Every_output_says_the_trees_are_sampled()
    {
        var profile = TwoWindows().Complete();

        Assert.EndsWith("(pid 4242, sampled)", ProfileLabels.Process(profile));
        var note = Assert.Single(ProfileLabels.RecordingNotes(profile));
        Assert.Equal("burst mode: 2 windows covered 2.00 us of 11.0 us (18.18%); calls and times are estimates, scaled x5.5", note);
    }

    [Fact]
    public void A_checkpoint_of_a_burst_session_is_scaled_and_the_live_profile_is_not()
    {
        var checkpoints = new List<ProcessProfile>();
        var script = new SessionScript(mode: "burst", observer: new CheckpointCollector(checkpoints))
            .Thread(1, "MainThread", isMain: true).Code(1, "main").Code(2, "work")
            .WindowStart(1_000).Seed(1_000, 1).Start(1_200, 2).Return(1_500, 2).WindowEnd(2_000)
            .WindowStart(3_000).Seed(3_000, 1).Start(3_500, 2);
        script.Session.RequestCheckpoint();
        script.Session.TakeRequestedCheckpoint();

        // Covered: 1_000 + 500 (the open window up to the latest event); represented: 3_500 - 1_000.
        var checkpoint = Assert.Single(checkpoints);
        Assert.Equal((2L, 1_500L, 2_500L), (checkpoint.Windows.Count, checkpoint.Windows.CoveredNs, checkpoint.Windows.RepresentedNs));
        checkpoint.Threads[0].Root.At("main", "work").Has(calls: 3, resumes: 0, selfNs: 500, totalNs: 500);
        Assert.Equal((2L, 1_000L, 1.0), (script.Profile.Windows.Count, script.Profile.Windows.CoveredNs, script.Profile.Windows.Scale));
        script.Profile.Threads[0].Root.At("main", "work").Has(calls: 2, resumes: 0, selfNs: 300, totalNs: 300);
    }

    private sealed class CheckpointCollector(List<ProcessProfile> checkpoints) : IProcessObserver
    {
        public void OnStarted(ProcessProfile running) { }
        public void OnCheckpoint(ProcessProfile checkpoint) => checkpoints.Add(checkpoint);
        public void OnCompleted(ProcessProfile completed) { }
    }

    [Fact]
    public void Events_before_the_first_window_are_skipped()
    {
        var profile = Burst().Start(500, 1).Return(600, 1).Complete();

        Assert.Equal(2, profile.Windows.EventsOutsideWindows);
        Assert.Empty(profile.Threads[0].Root.Children);
        Assert.Equal(1.0, profile.Windows.Scale);
    }

    [Fact]
    public void Misplaced_window_markers_are_invalid_records()
    {
        static ProtocolViolation ViolationOf(Action action) => Assert.Throws<ProtocolException>(action).Violation;

        var full = new SessionScript().Thread(1, "MainThread");
        Assert.Equal(ProtocolViolation.InvalidRecord, ViolationOf(() => full.WindowStart(10)));
        Assert.Equal(ProtocolViolation.InvalidRecord, ViolationOf(() => Burst().WindowEnd(10)));
        Assert.Equal(ProtocolViolation.InvalidRecord, ViolationOf(() => Burst().WindowStart(10).WindowStart(20)));
        Assert.Equal(ProtocolViolation.InvalidRecord, ViolationOf(() => Burst().Event(10, 0, EventKind.WindowStart, thread: 1)));
        Assert.Equal(ProtocolViolation.InvalidRecord, ViolationOf(() => Burst().Event(10, 1, EventKind.WindowStart, thread: 0)));
    }

    [Fact]
    public void Exceptions_mode_and_filters_are_said_in_the_notes()
    {
        var exceptionsOnly = new SessionScript(mode: "exceptions").Complete();
        Assert.Equal(["exceptions mode: no calls recorded"], ProfileLabels.RecordingNotes(exceptionsOnly));
        Assert.False(exceptionsOnly.Recording.RecordsCalls);

        var filtered = new SessionScript(exclude: ["stdlib", "site-packages"]).Complete();
        Assert.EndsWith("(pid 4242, filtered)", ProfileLabels.Process(filtered));
        Assert.Equal(["filters: exclude stdlib, site-packages (left-out code's time is its nearest recorded caller's self time)"],
            ProfileLabels.RecordingNotes(filtered));
    }
}

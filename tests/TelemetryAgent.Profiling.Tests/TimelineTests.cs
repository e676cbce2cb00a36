using System.IO.Pipelines;
using Microsoft.Extensions.Time.Testing;
using TelemetryAgent.Protocol;
using TelemetryAgent.Protocol.Messages;
using TelemetryAgent.Sessions;
using TelemetryAgent.Testing;

namespace TelemetryAgent.Profiling.Tests;

/// <summary>
/// A process's timeline: buckets closed on the session's thread add up to its profile, node by node; a time range
/// holds only what ran in it, open frames charged to every bucket they span; exceptions by interval; the bounds.
/// </summary>
public sealed class TimelineTests
{
    private const long Second = 1_000_000_000;
    private static readonly TimelineSettings Settings = new() { BucketLength = TimeSpan.FromSeconds(10) };

    private readonly FakeTimeProvider _time = new(SessionScript.AgentTimeAt(0));

    private SessionScript Script(TimelineSettings? settings = null, string mode = "full")
        => new SessionScript(time: _time, timeline: settings ?? Settings, mode: mode)
            .Thread(1, "MainThread", isMain: true).Code(1, "main").Code(2, "f").Code(3, "g").Code(4, "h");

    /// <summary>Moves the agent's clock to the shim's <paramref name="monotonicNs"/> and ends a frame there.</summary>
    private void FrameAt(SessionScript script, long monotonicNs)
    {
        _time.SetUtcNow(SessionScript.AgentTimeAt(monotonicNs));
        script.Session.AfterFrame();
    }

    private static long Unix(long monotonicNs) => SessionScript.HelloUnixNs + monotonicNs - SessionScript.HelloMonotonicNs;

    /// <summary>main runs throughout; f is called 3 times in the first 10 s, g twice in the next 10 s, h once after.</summary>
    private SessionScript ThreePhases()
    {
        var script = Script();
        script.Start(1 * Second, 1);
        for (var i = 0; i < 3; i++) script.Start((2 + i) * Second, 2).Return((2 + i) * Second + Second / 2, 2);
        FrameAt(script, 11 * Second);
        for (var i = 0; i < 2; i++) script.Start((12 + i) * Second, 3).Return((12 + i) * Second + Second / 4, 3);
        FrameAt(script, 21 * Second);
        script.Start(22 * Second, 4).Return(23 * Second, 4);
        FrameAt(script, 31 * Second);
        return script;
    }

    [Fact]
    public void Buckets_add_up_to_the_completed_profile_node_by_node()
    {
        var script = ThreePhases();
        script.Return(32 * Second, 1);
        var completed = script.Complete();
        var timeline = completed.Timeline!;
        Assert.Equal(4, timeline.Buckets.Count);

        var whole = timeline.Select(long.MinValue, long.MaxValue).ToProfile(completed, _time.GetUtcNow())!;
        var live = completed.Threads[0].Root;
        var summed = whole.Threads.Single().Root;
        foreach (var path in new[] { new[] { "main" }, ["main", "f"], ["main", "g"], ["main", "h"] })
        {
            var expected = live.At(path);
            summed.At(path).Has(expected.Calls, expected.Resumes, expected.SelfNs, expected.TotalNs);
        }
        summed.AssertConsistent();
        Assert.Equal(completed.EventsReceived, whole.EventsReceived);
    }

    [Fact]
    public void A_range_holds_only_what_ran_in_it_and_an_open_frame_is_charged_to_every_bucket_it_spans()
    {
        var script = ThreePhases();
        var timeline = script.Profile.Timeline!;
        var second = timeline.Buckets[1];
        Assert.Equal(new ProfileSpan(Unix(11 * Second), Unix(21 * Second)), second.Span);

        var range = timeline.Select(Unix(12 * Second), Unix(20 * Second));
        Assert.Equal(second.Span, range.Span);
        var root = range.ToProfile(script.Profile, _time.GetUtcNow())!.Threads.Single().Root;
        // main was open all along: 10 s of it in this bucket, of which g ran 0.5 s.
        root.At("main").Has(0, 0, 10 * Second - Second / 2, 10 * Second);
        root.At("main", "g").Has(2, 0, Second / 2, Second / 2);
        Assert.Single(root.Children);
        Assert.Single(root.At("main").Children);

        // The first bucket: main started at 1 s and is charged up to the close at 11 s.
        var first = timeline.Select(Unix(0), Unix(Second)).ToProfile(script.Profile, _time.GetUtcNow())!.Threads.Single().Root;
        first.At("main").Has(1, 0, 10 * Second - 3 * (Second / 2), 10 * Second);
        first.At("main", "f").Has(3, 0, 3 * (Second / 2), 3 * (Second / 2));
    }

    [Fact]
    public void An_idle_process_is_charged_up_to_the_agents_time_so_the_last_minute_shows_where_it_waits()
    {
        var script = Script();
        script.Start(1 * Second, 1).Start(2 * Second, 2); // f blocks from 2 s on, nothing more arrives
        FrameAt(script, 11 * Second);
        FrameAt(script, 21 * Second);
        var timeline = script.Profile.Timeline!;
        var last = timeline.Select(Unix(11 * Second), Unix(21 * Second)).ToProfile(script.Profile, _time.GetUtcNow())!;
        last.Threads.Single().Root.At("main", "f").Has(0, 0, 10 * Second, 10 * Second);

        // When the frame returns late, the buckets still add up to the tree.
        script.Return(25 * Second, 2).Return(26 * Second, 1);
        var completed = script.Complete();
        var whole = timeline.Select(long.MinValue, long.MaxValue).ToProfile(completed, _time.GetUtcNow())!.Threads.Single().Root;
        whole.At("main", "f").Has(1, 0, 23 * Second, 23 * Second);
        whole.At("main").Has(1, 0, 2 * Second, 25 * Second);
    }

    [Fact]
    public void Exceptions_are_counted_in_the_bucket_they_arrive_in_with_the_notes_first_seen_there()
    {
        var script = Script();
        script.Start(1 * Second, 1);
        script.Raise(ExceptionRecords.Record("builtins.ValueError", "bad", [(1, 10)], raisedNs: 2 * Second, notes: ["first"]));
        FrameAt(script, 11 * Second);
        script.Raise(ExceptionRecords.Record("builtins.ValueError", "bad", [(1, 10)], raisedNs: 12 * Second, notes: ["first", "second"]));
        script.Raise(ExceptionRecords.Record("builtins.ValueError", "worse", [(1, 10)], raisedNs: 13 * Second,
            fate: ExceptionFate.FateEscapedThread));
        FrameAt(script, 21 * Second);

        var timeline = script.Profile.Timeline!;
        var group = Assert.Single(timeline.Select(Unix(11 * Second), Unix(21 * Second)).ExceptionGroups(ExceptionLimits.Default));
        Assert.Equal(2, group.Count);
        Assert.Equal(1, group.Fates.Handled);
        Assert.Equal(1, group.Fates.EscapedThread);
        Assert.Equal(["second"], group.Notes);
        Assert.Equal(["worse"], group.SampleMessages);
        Assert.Equal(13 * Second, group.Latest!.RaisedNs);

        var all = Assert.Single(timeline.Select(long.MinValue, long.MaxValue).ExceptionGroups(ExceptionLimits.Default));
        Assert.Equal(3, all.Count);
        Assert.Equal(["first", "second"], all.Notes);
    }

    [Fact]
    public void Tallies_taken_over_by_a_detailed_group_are_counted_once()
    {
        var script = Script();
        script.Start(1 * Second, 1);
        script.Tally("builtins.KeyError", 1, 10, ExceptionFate.FateHandled, 5);
        FrameAt(script, 11 * Second);
        script.Raise(ExceptionRecords.Record("builtins.KeyError", "k", [(1, 10)], raisedNs: 12 * Second));
        FrameAt(script, 21 * Second);
        var timeline = script.Profile.Timeline!;
        var all = Assert.Single(timeline.Select(long.MinValue, long.MaxValue).ExceptionGroups(ExceptionLimits.Default));
        Assert.Equal(6, all.Count);
        Assert.Equal(6, script.Profile.Exceptions.Count);
        Assert.Equal(1, Assert.Single(timeline.Select(Unix(11 * Second), Unix(21 * Second)).ExceptionGroups(ExceptionLimits.Default)).Count);
    }

    [Fact]
    public void Buckets_older_than_the_window_or_beyond_the_byte_bound_are_dropped_and_the_budget_follows()
    {
        var budget = new AggregateMemoryBudget(64L << 20);
        var script = new SessionScript(time: _time, budget: budget,
                timeline: Settings with { Window = TimeSpan.FromSeconds(30) })
            .Thread(1, "MainThread", isMain: true).Code(1, "main").Code(2, "f");
        script.Start(Second, 1);
        for (var bucket = 1; bucket <= 10; bucket++)
        {
            script.Start(bucket * 10 * Second, 2).Return(bucket * 10 * Second + 1, 2);
            FrameAt(script, (bucket * 10 + 1) * Second);
        }
        var timeline = script.Profile.Timeline!;
        Assert.Equal(3, timeline.Buckets.Count);
        Assert.Equal(7, timeline.DroppedBuckets);
        Assert.True(script.Session.ReservedBytes >= timeline.HeldBytes);

        var small = new SessionScript(time: _time, timeline: Settings with { MaxBytes = 1 })
            .Thread(1, "MainThread", isMain: true).Code(1, "main");
        small.Start(110 * Second, 1);
        FrameAt(small, 111 * Second);
        FrameAt(small, 121 * Second);
        Assert.Single(small.Profile.Timeline!.Buckets); // the newest always stays
    }

    [Fact]
    public void Burst_mode_ranges_are_scaled_by_the_time_their_windows_covered()
    {
        var script = Script(mode: "burst");
        script.WindowStart(1 * Second).Start(1 * Second, 2).Return(1 * Second + Second / 10, 2).WindowEnd(1 * Second + Second / 10);
        FrameAt(script, 11 * Second);
        var range = script.Profile.Timeline!.Select(long.MinValue, long.MaxValue).ToProfile(script.Profile, _time.GetUtcNow())!;
        // 0.1 s of windows stand for the bucket's 11 s (from HELLO to the close).
        Assert.Equal(110, range.Threads.Single().Root.At("f").Calls);
        Assert.True(range.Recording.IsSampled);
    }

    [Fact]
    public async Task A_snapshot_is_taken_on_the_sessions_thread_after_its_next_frame_and_observers_do_not_hear_of_it()
    {
        var script = Script();
        script.Start(Second, 1).Start(2 * Second, 2);
        var snapshot = script.Session.RequestSnapshotAsync();
        Assert.False(snapshot.IsCompleted);
        script.Session.AfterFrame();
        Assert.True(snapshot.IsCompletedSuccessfully);
        var taken = await snapshot;
        Assert.True(taken.IsCheckpoint);
        taken.Threads.Single().Root.At("main", "f").Has(1, 0, 0, 0);

        var late = script.Session.RequestSnapshotAsync();
        var completed = script.Complete();
        Assert.Same(completed, await late);
        Assert.Same(completed, await script.Session.RequestSnapshotAsync());
    }

    [Fact]
    public async Task A_snapshot_of_an_idle_connection_is_taken_while_its_read_loop_waits_and_the_loop_goes_on()
    {
        var pipe = new Pipe();
        var session = new ProcessSession(time: _time);
        var running = session.RunAsync(pipe.Reader);
        await pipe.Writer.WriteAsync(new WireStream().Preamble().Hello(4242).Definitions([(1, "main")], [(1, "MainThread")])
            .Events(new EventRecord((ulong)Second, 1, 1, EventKind.Start)).ToArray());
        await ServeUntil(() => session.Profile is { EventsReceived: 1 });

        // Nothing more arrives: the read loop is waiting, and the snapshot is taken there.
        var snapshot = await session.RequestSnapshotAsync().WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(1, snapshot.Threads.Single().Root.At("main").Calls);

        await pipe.Writer.WriteAsync(new WireStream().Events(new EventRecord((ulong)(2 * Second), 1, 1, EventKind.Return)).ToArray());
        await pipe.Writer.CompleteAsync();
        Assert.Equal(ConnectionEndReason.EndOfStream, (await running.WaitAsync(TimeSpan.FromSeconds(30))).Reason);
        session.Profile!.Threads.Single().Root.At("main").Has(1, 0, Second, Second);
    }

    private static async Task ServeUntil(Func<bool> condition)
    {
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, "timed out");
            await Task.Delay(10);
        }
    }
}

using TelemetryAgent.Protocol;
using TelemetryAgent.Protocol.Messages;
using TelemetryAgent.Sessions;
using TelemetryAgent.Testing;
using static TelemetryAgent.Testing.ExceptionRecords;

namespace TelemetryAgent.Profiling.Tests;

/// <summary>Exception records and tallies through a session: checks, fingerprints, counts, bounds.</summary>
public sealed class ExceptionAggregationTests
{
    private const uint Main = 1, Handle = 2, Parse = 3, JsonLoads = 4, Request = 5, FrozenDecode = 6, OtherHandler = 7;

    private static SessionScript Ready(SessionLimits? limits = null) => new SessionScript(limits: limits)
        .Thread(1, "MainThread", isMain: true)
        .Thread(2, "worker")
        .Code(Main, "main", "/srv/app/app.py", 1)
        .Code(Handle, "handle", "/srv/app/handlers.py", 10)
        .Code(Parse, "parse", "/srv/app/parser.py", 5)
        .Code(JsonLoads, "loads", "/usr/lib/python3.12/json/__init__.py", 299)
        .Code(Request, "Session.request", "/srv/app/.venv/lib/python3.12/site-packages/requests/sessions.py", 500)
        .Code(FrozenDecode, "decode", "<frozen codecs>", 1)
        .Code(OtherHandler, "other_handler", "/srv/app/handlers.py", 50);

    private static ProtocolViolation ViolationOf(Action action) => Assert.Throws<ProtocolException>(action).Violation;

    [Fact]
    public void Library_frames_do_not_split_a_group_but_program_frames_do()
    {
        var script = Ready()
            .Raise(Record("builtins.ValueError", "a", [(Main, 3), (Handle, 12), (JsonLoads, 340), (Parse, 7)]))
            .Raise(Record("builtins.ValueError", "b", [(Main, 3), (Handle, 12), (Request, 510), (FrozenDecode, 9), (Parse, 7)]))
            .Raise(Record("builtins.ValueError", "c", [(Main, 4), (Handle, 20), (Parse, 7)]))   // other lines, same functions
            .Raise(Record("builtins.ValueError", "d", [(Main, 3), (OtherHandler, 52), (Parse, 7)]))
            .Raise(Record("builtins.ValueError", "e", [(Main, 3), (Handle, 12), (Parse, 8)]))   // another raise line
            .Raise(Record("builtins.TypeError", "f", [(Main, 3), (Handle, 12), (Parse, 7)]));
        var groups = script.Profile.Exceptions.Groups;

        Assert.Equal(4, groups.Count);
        Assert.Equal([3, 1, 1, 1], groups.Select(group => group.Count));
        Assert.Equal(["a", "b", "c"], groups[0].SampleMessages);
        Assert.Equal(["main", "handle", "parse"], groups[0].ProgramFrames.Select(function => function.QualifiedName));
        Assert.Equal("parser.py:7", groups[0].RaiseSite?.Site);
        Assert.Equal(["main", "other_handler", "parse"], groups[1].ProgramFrames.Select(function => function.QualifiedName));
        Assert.Equal("parser.py:8", groups[2].RaiseSite?.Site);
        Assert.Equal("builtins.TypeError", groups[3].TypeName);
        Assert.Equal(groups.Count, groups.Select(group => group.Fingerprint).Distinct().Count());
        Assert.All(groups, group => Assert.Matches("^[0-9a-f]{16}$", group.Fingerprint));
    }

    [Fact]
    public void Recursion_depth_does_not_make_a_new_group()
    {
        var script = Ready()
            .Raise(Record("builtins.RecursionError", "deep", [(Main, 3), (Parse, 6), (Parse, 6), (Parse, 7)]))
            .Raise(Record("builtins.RecursionError", "deeper", [(Main, 3), (Parse, 6), (Parse, 6), (Parse, 6), (Parse, 6), (Parse, 7)]));
        var group = Assert.Single(script.Profile.Exceptions.Groups);
        Assert.Equal(2, group.Count);
        Assert.Equal(["main", "parse"], group.ProgramFrames.Select(function => function.QualifiedName));
    }

    [Fact]
    public void Fingerprints_are_the_same_in_another_process_with_other_code_ids()
    {
        var first = Ready().Raise(Record("app.Invalid", "x", [(Main, 3), (Parse, 7)]));
        var second = new SessionScript(pid: 5000)
            .Thread(9, "MainThread", isMain: true)
            .Code(40, "parse", "/srv/app/parser.py", 5)
            .Code(41, "main", "/srv/app/app.py", 1)
            .Raise(Record("app.Invalid", "y", [(41, 3), (40, 7)], thread: 9));
        Assert.Equal(first.Profile.Exceptions.Groups[0].Fingerprint, second.Profile.Exceptions.Groups[0].Fingerprint);
    }

    [Fact]
    public void Every_fate_is_counted_in_the_group_and_the_process()
    {
        ExceptionFate[] fates =
        [
            ExceptionFate.FateHandled, ExceptionFate.FateHandled, ExceptionFate.FateEscapedThread, ExceptionFate.FateEscapedProgram,
            ExceptionFate.FateUnraisable, ExceptionFate.FateAsyncioUnhandled, ExceptionFate.FateInFlight, ExceptionFate.FateUnspecified,
            (ExceptionFate)42,
        ];
        var script = Ready();
        foreach (var fate in fates) script.Raise(Record("builtins.OSError", "io", [(Main, 3)], fate));

        var group = Assert.Single(script.Profile.Exceptions.Groups);
        foreach (var counts in new[] { group.Fates, script.Profile.Exceptions.Fates })
        {
            Assert.Equal((2, 1, 1, 2, 1, 1, 1, 2), (counts.Handled, counts.EscapedThread, counts.EscapedProgram, counts.Escaped,
                counts.Unraisable, counts.AsyncioUnhandled, counts.InFlight, counts.Unknown));
            Assert.Equal(fates.Length, counts.Total);
        }
        Assert.Equal(fates.Length, group.Detailed);
    }

    [Fact]
    public void Notes_are_kept_distinct_and_bounded_with_a_count_of_those_left_out()
    {
        var script = Ready(new SessionLimits { Exceptions = new ExceptionLimits { MaxNotesPerGroup = 3 } })
            .Raise(Record("builtins.ValueError", "1", [(Main, 3)], notes: ["row 1", "file a.csv"]))
            .Raise(Record("builtins.ValueError", "2", [(Main, 3)], notes: ["row 1", "row 2"]))
            .Raise(Record("builtins.ValueError", "3", [(Main, 3)], notes: ["row 3", "row 1", "row 4"]));
        var detailWithOmitted = Record("builtins.ValueError", "4", [(Main, 3)], notes: ["row 2"]);
        detailWithOmitted.Detail.NotesOmitted = 5;
        script.Raise(detailWithOmitted);

        var group = Assert.Single(script.Profile.Exceptions.Groups);
        Assert.Equal(["row 1", "file a.csv", "row 2"], group.Notes);
        Assert.Equal(2 + 5, group.NotesOmitted);
    }

    [Fact]
    public void Ten_thousand_distinct_messages_and_notes_stay_bounded()
    {
        var script = Ready();
        for (var i = 0; i < 10_000; i++)
        {
            script.Raise(Record("builtins.KeyError", $"'user-{i}'", [(Main, 3), (Handle, 12)], raisedNs: 1_000 + i,
                handledAt: At(Main, 4 + (uint)(i % 20)), notes: [$"request {i}"]));
        }

        var group = Assert.Single(script.Profile.Exceptions.Groups);
        var limits = ExceptionLimits.Default;
        Assert.Equal(10_000, group.Count);
        Assert.Equal(["'user-0'", "'user-1'", "'user-2'", "'user-3'", "'user-4'"], group.SampleMessages);
        Assert.Equal(limits.MaxSampleMessages, group.SampleMessages.Count);
        Assert.Equal(limits.MaxNotesPerGroup, group.Notes.Count);
        Assert.Equal(10_000 - limits.MaxNotesPerGroup, group.NotesOmitted);
        Assert.Equal(limits.MaxHandledAtLocations, group.HandledAt.Count);
        Assert.Equal(10_000, group.HandledAt.Sum(handler => handler.Count) + group.HandledAtOmitted);
        Assert.Equal(500, group.HandledAt[0].Count);
        Assert.Equal("'user-9999'", group.Latest?.Detail?.Message);
        Assert.Equal((1_000, 10_999), (group.FirstRaisedNs, group.LastRaisedNs));
    }

    [Fact]
    public void Tallies_join_the_latest_group_of_their_type_and_raise_site()
    {
        var script = Ready()
            .Raise(Record("builtins.ValueError", "a", [(Main, 3), (Parse, 7)]))
            .Raise(Record("builtins.ValueError", "b", [(Main, 3), (Handle, 12), (Parse, 7)]))
            .Tally("builtins.ValueError", Parse, 7, ExceptionFate.FateHandled, 40)
            .Tally("builtins.ValueError", Parse, 7, ExceptionFate.FateEscapedThread, 2)
            .Tally("builtins.TypeError", Parse, 7, ExceptionFate.FateHandled, 5)     // no group of this type: its own
            .Tally("builtins.TypeError", Parse, 7, ExceptionFate.FateHandled, 6)
            .Tally("builtins.TypeError", Parse, 7, ExceptionFate.FateHandled, 0);    // nothing to count
        var groups = script.Profile.Exceptions.Groups;

        Assert.Equal(3, groups.Count);
        Assert.Equal((1, 0L), (groups[0].Count, groups[0].Tallied));
        Assert.Equal((43, 1L, 42L, 41L, 2L), (groups[1].Count, groups[1].Detailed, groups[1].Tallied, groups[1].Fates.Handled, groups[1].Fates.Escaped));
        Assert.Equal(ExceptionAggregateKind.TallyOnly, groups[2].Kind);
        Assert.Equal((11, 0L, "builtins.TypeError", "parser.py:7"), (groups[2].Count, groups[2].Detailed, groups[2].TypeName, groups[2].RaiseSite?.Site));
        Assert.Null(groups[2].Latest);
        Assert.Equal(1 + 43 + 11, script.Profile.Exceptions.Count);

        // A record of the tallied type and site arrives: its group takes over the tally-only one (the shim may send a
        // site's counted exceptions before its detailed ones), and later tallies join it.
        script.Raise(Record("builtins.TypeError", "t", [(Main, 3), (Parse, 7)]))
            .Tally("builtins.TypeError", Parse, 7, ExceptionFate.FateHandled, 100);
        groups = script.Profile.Exceptions.Groups;
        Assert.Equal(3, groups.Count);
        Assert.Equal((ExceptionAggregateKind.Fingerprint, "builtins.TypeError"), (groups[2].Kind, groups[2].TypeName));
        Assert.Equal((112, 1L, 111L, 112L), (groups[2].Count, groups[2].Detailed, groups[2].Tallied, groups[2].Fates.Handled));
        Assert.Equal(1 + 43 + 112, script.Profile.Exceptions.Count);
        Assert.Equal(script.Profile.Exceptions.Count, groups.Sum(group => group.Count));

        // A second record of that site through other program frames makes a group of its own, as always.
        script.Raise(Record("builtins.TypeError", "u", [(Main, 3), (Handle, 12), (Parse, 7)]));
        Assert.Equal(4, script.Profile.Exceptions.Groups.Count);
    }

    [Fact]
    public void Tally_counts_saturate_instead_of_wrapping()
    {
        var script = Ready()
            .Tally("builtins.ValueError", Parse, 7, ExceptionFate.FateHandled, ulong.MaxValue)
            .Tally("builtins.ValueError", Parse, 7, ExceptionFate.FateHandled, ulong.MaxValue)
            .Tally("builtins.ValueError", Parse, 7, ExceptionFate.FateInFlight, 1);
        var group = Assert.Single(script.Profile.Exceptions.Groups);
        Assert.Equal(long.MaxValue, group.Fates.Handled);
        Assert.Equal(long.MaxValue, group.Count);
        Assert.Equal(long.MaxValue, script.Profile.Exceptions.Count);
    }

    [Fact]
    public void Groups_beyond_the_limit_are_counted_in_one_other_group()
    {
        var script = Ready(new SessionLimits { Exceptions = new ExceptionLimits { MaxGroups = 2 } })
            .Raise(Record("app.A", "", [(Main, 1)], raisedNs: 10))
            .Raise(Record("app.B", "", [(Main, 1)], raisedNs: 20))
            .Raise(Record("app.C", "", [(Main, 1)], ExceptionFate.FateEscapedProgram, raisedNs: 30))
            .Raise(Record("app.D", "", [(Main, 1)], raisedNs: 40))
            .Raise(Record("app.A", "", [(Main, 1)], raisedNs: 50))
            .Tally("app.E", Main, 1, ExceptionFate.FateHandled, 7);
        var groups = script.Profile.Exceptions.Groups;

        Assert.Equal(["app.A", "app.B", ""], groups.Select(group => group.TypeName));
        var other = groups[2];
        Assert.Equal(ExceptionAggregateKind.Other, other.Kind);
        Assert.Equal((9, 1L, 2L, 7L), (other.Count, other.Fates.EscapedProgram, other.Detailed, other.Tallied));
        Assert.Equal((30, 40), (other.FirstRaisedNs, other.LastRaisedNs));
        Assert.Null(other.Latest);
        Assert.Empty(other.SampleMessages);
        Assert.Equal(2, groups[0].Count);
        Assert.Equal(12, script.Profile.Exceptions.Count);
    }

    [Fact]
    public void Undefined_or_zero_ids_anywhere_in_a_record_are_rejected_and_nothing_of_it_is_applied()
    {
        var script = Ready().Raise(Record("builtins.ValueError", "ok", [(Main, 3)]));

        ExceptionRecord[] bad =
        [
            Record("builtins.ValueError", "stack", [(Main, 3), (99, 1)]),
            Record("builtins.ValueError", "handled", [(Main, 3)], handledAt: At(99, 4)),
            Record("builtins.ValueError", "thread", [(Main, 3)], thread: 3),
            WithDetail(detail => detail.Traceback.Add(At(99, 1))),
            WithDetail(detail => detail.Cause = new ExceptionDetail { TypeName = "builtins.KeyError", Traceback = { At(99, 1) } }),
            WithDetail(detail => detail.Context = new ExceptionDetail { Members = { new ExceptionDetail { Traceback = { At(99, 1) } } } }),
        ];
        foreach (var record in bad)
        {
            Assert.Equal(ProtocolViolation.UndefinedId, ViolationOf(() => script.Raise(record)));
        }
        Assert.Equal(ProtocolViolation.UndefinedId,
            ViolationOf(() => script.Tally("builtins.ValueError", 99, 1, ExceptionFate.FateHandled, 1)));
        Assert.Equal(ProtocolViolation.InvalidRecord, ViolationOf(() => script.Raise(Record("builtins.ValueError", "zero", [(0, 3)]))));
        Assert.Equal(ProtocolViolation.InvalidRecord, ViolationOf(() => script.Raise(Record("builtins.ValueError", "zero", [(Main, 3)], thread: 0))));

        var group = Assert.Single(script.Profile.Exceptions.Groups);
        Assert.Equal(1, group.Count);
        Assert.Equal(1, script.Profile.Exceptions.Count);
        Assert.Equal(["ok"], group.SampleMessages);

        static ExceptionRecord WithDetail(Action<ExceptionDetail> change)
        {
            var record = Record("builtins.ValueError", "detail", [(Main, 3)]);
            change(record.Detail);
            return record;
        }
    }

    [Fact]
    public void Undefined_ids_beyond_the_kept_nesting_are_still_rejected()
    {
        var script = Ready(new SessionLimits { Exceptions = new ExceptionLimits { MaxNesting = 1 } });
        var record = Record("builtins.ValueError", "x", [(Main, 3)]);
        record.Detail.Cause = new ExceptionDetail { Cause = new ExceptionDetail { Cause = new ExceptionDetail { Traceback = { At(99, 1) } } } };
        Assert.Equal(ProtocolViolation.UndefinedId, ViolationOf(() => script.Raise(record)));
    }

    [Fact]
    public void Exceptions_before_hello_or_after_completion_are_refused()
    {
        var session = new ProcessSession();
        Assert.Equal(ProtocolViolation.MissingHello, ViolationOf(() => session.OnExceptions(new Exceptions())));
        var script = Ready();
        script.Complete();
        Assert.Throws<InvalidOperationException>(() => script.Session.OnExceptions(new Exceptions()));
    }

    [Fact]
    public void What_a_record_carries_is_kept_within_the_limits()
    {
        var limits = new ExceptionLimits { MaxNesting = 2, MaxFrames = 3, MaxTextLength = 12, MaxNotesPerException = 2, MaxExceptionsPerRecord = 4 };
        var script = Ready(new SessionLimits { Exceptions = limits });
        var record = Record("builtins.ValueError", "0123456789a🙂xyz", [(Main, 1), (Handle, 2), (Parse, 3), (Main, 4), (Parse, 5)],
            notes: ["n1", "n2", "n3", "🙂🙂🙂🙂🙂🙂"]);
        record.Detail.NotesOmitted = 4;
        var chain = record.Detail;
        for (var depth = 0; depth < 5; depth++)
        {
            chain.Cause = new ExceptionDetail { TypeName = $"builtins.E{depth}", Message = "m" };
            chain = chain.Cause;
        }
        record.Detail.Members.Add(Enumerable.Range(0, 6).Select(i => new ExceptionDetail { TypeName = "builtins.M", Message = $"{i}" }));
        script.Raise(record);

        var latest = Assert.Single(script.Profile.Exceptions.Groups).Latest!;
        var detail = latest.Detail!;
        // Cut at 12 UTF-16 units would split the emoji's surrogate pair: it is left out whole.
        Assert.Equal(("0123456789a", ExceptionMessageStatus.Truncated), (detail.Message, detail.MessageStatus));
        Assert.Equal(["n1", "n2"], detail.Notes);
        Assert.Equal(4 + 2, detail.NotesOmitted);
        Assert.Equal([3, 4, 5], latest.Stack.Select(frame => frame.Line));
        Assert.True(latest.StackTruncated);
        Assert.Equal((2, 3), (detail.TracebackFramesOmitted, detail.Traceback.Count));
        Assert.Equal("parser.py:5", latest.RaiseSite?.Site);
        // Itself and two causes use 3 of the 4 exceptions; one member fits, the others are counted.
        Assert.Equal("builtins.E1", detail.Cause!.Cause!.TypeName);
        Assert.Null(detail.Cause.Cause.Cause);
        Assert.True(detail.Cause.Cause.NestingTruncated);
        Assert.Equal((1, 5L), (detail.Members.Count, detail.MembersOmitted));
    }

    [Fact]
    public void A_record_without_detail_or_stack_still_counts()
    {
        var script = Ready().Raise(new ExceptionRecord { ThreadId = 2, Fate = ExceptionFate.FateInFlight });
        var group = Assert.Single(script.Profile.Exceptions.Groups);
        Assert.Equal(("", null, 1L), (group.TypeName, group.RaiseSite, group.Fates.InFlight));
        Assert.Null(group.Latest?.Detail);
    }

    [Fact]
    public void The_call_tree_stays_right_when_an_exception_unwinds_three_frames()
    {
        // main -> handle -> parse -> loads; loads raises, it unwinds loads, parse and handle; main handles it.
        var script = Ready()
            .Start(1_000, Main)
            .Start(1_100, Handle).Start(1_300, Parse).Start(1_600, JsonLoads)
            .Unwind(2_000, JsonLoads).Unwind(2_100, Parse).Unwind(2_400, Handle)
            .Raise(Record("builtins.ValueError", "bad json", [(Main, 3), (Handle, 12), (Parse, 7), (JsonLoads, 340)],
                raisedNs: 1_900, handledAt: At(Main, 5)))
            .Start(2_500, Handle).Return(2_700, Handle)
            .Return(3_000, Main);
        var profile = script.Complete();

        var root = script.ThreadNamed("MainThread").Root;
        root.At("main").Has(calls: 1, resumes: 0, selfNs: 500, totalNs: 2_000);
        root.At("main", "handle").Has(calls: 2, resumes: 0, selfNs: 700, totalNs: 1_500);
        root.At("main", "handle", "parse").Has(calls: 1, resumes: 0, selfNs: 400, totalNs: 800);
        root.At("main", "handle", "parse", "loads").Has(calls: 1, resumes: 0, selfNs: 400, totalNs: 400);
        root.AssertConsistent();
        Assert.Equal((0L, 0L, 0L), (profile.ImplicitExits, profile.UnmatchedExits, profile.FramesOpenAtEnd));
        var group = Assert.Single(profile.Exceptions.Groups);
        Assert.Equal("app.py:5", Assert.Single(group.HandledAt).Location.Site);
    }

    [Fact]
    public async Task Exceptions_arrive_through_the_read_loop()
    {
        var exceptions = new Exceptions();
        exceptions.Records.Add(Record("builtins.ValueError", "over the wire", [(1, 3), (2, 8)], raisedNs: 5_000));
        exceptions.Tallies.Add(new ExceptionTally { TypeName = "builtins.ValueError", RaisedAt = At(2, 8), Fate = ExceptionFate.FateHandled, Count = 9 });
        var stream = new WireStream().Preamble()
            .Hello(pid: 77)
            .Definitions([(1, "main"), (2, "parse")], [(1, "MainThread")])
            .Exceptions(exceptions)
            .Goodbye(new Goodbye { Reason = Goodbye.Types.Reason.Exit })
            .ToArray();
        var session = new ProcessSession();
        var end = await session.RunAsync(System.IO.Pipelines.PipeReader.Create(new System.Buffers.ReadOnlySequence<byte>(stream)));

        Assert.Equal(ConnectionEndReason.Goodbye, end.Reason);
        var group = Assert.Single(session.Profile!.Exceptions.Groups);
        Assert.Equal((10, 1L, 9L), (group.Count, group.Detailed, group.Tallied));
        Assert.Equal((5_000, 5_000), (group.FirstRaisedNs, group.LastRaisedNs));
        Assert.Equal(1_700_000_000_000_005_000, session.Profile.Clock.ToUnixNs(group.FirstRaisedNs));
    }
}

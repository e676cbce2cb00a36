using TelemetryAgent.Protocol;
using TelemetryAgent.Protocol.Messages;
using TelemetryAgent.Sessions;
using TelemetryAgent.Testing;

namespace TelemetryAgent.Profiling.Tests;

/// <summary>Every record and definition the session rejects, and that a rejection loses nothing before it.</summary>
public sealed class SessionValidationTests
{
    private static SessionScript Ready() => new SessionScript().Thread(1, "MainThread", isMain: true).Code(1, "main");

    private static ProtocolViolation ViolationOf(Action action) => Assert.Throws<ProtocolException>(action).Violation;

    [Theory]
    [InlineData(0)]
    [InlineData(10)]
    [InlineData(255)]
    public void An_unknown_event_kind_is_an_invalid_record(byte kind)
    {
        var script = Ready();
        Assert.Equal(ProtocolViolation.InvalidRecord, ViolationOf(() => script.Event(10, 1, (EventKind)kind)));
    }

    [Fact]
    public void Ids_zero_are_invalid_records()
    {
        var script = Ready();
        Assert.Equal(ProtocolViolation.InvalidRecord, ViolationOf(() => script.Start(10, 0)));
        Assert.Equal(ProtocolViolation.InvalidRecord, ViolationOf(() => script.Start(10, 1, thread: 0)));
        Assert.Equal(ProtocolViolation.InvalidRecord, ViolationOf(() => script.Code(0, "zero")));
        Assert.Equal(ProtocolViolation.InvalidRecord, ViolationOf(() => script.Thread(0, "zero")));
    }

    [Fact]
    public void Undefined_ids_are_rejected()
    {
        var script = Ready();
        Assert.Equal(ProtocolViolation.UndefinedId, ViolationOf(() => script.Start(10, 2)));
        Assert.Equal(ProtocolViolation.UndefinedId, ViolationOf(() => script.Start(10, 1, thread: 2)));
        Assert.Equal(ProtocolViolation.UndefinedId, ViolationOf(() => script.Start(10, 1_000_000)));
        Assert.Equal(ProtocolViolation.UndefinedId, ViolationOf(() => script.Start(10, 1, thread: (1 << 24) - 1)));
    }

    [Fact]
    public void A_code_id_defined_twice_is_rejected()
    {
        var script = Ready();
        var error = Assert.Throws<ProtocolException>(() => script.Code(1, "other"));
        Assert.Equal(ProtocolViolation.DuplicateDefinition, error.Violation);
        Assert.Contains("main", error.Message);
    }

    [Fact]
    public void Ids_above_the_limits_are_rejected()
    {
        var script = new SessionScript(limits: new SessionLimits { MaxCodeId = 100, MaxThreadId = 10 });
        script.Code(100, "last").Thread(10, "last");
        Assert.Equal(ProtocolViolation.TooManyDefinitions, ViolationOf(() => script.Code(101, "over")));
        Assert.Equal(ProtocolViolation.TooManyThreads, ViolationOf(() => script.Thread(11, "over")));
        Assert.Equal(ProtocolViolation.InvalidRecord, ViolationOf(() => new SessionScript().Thread(1u << 24, "wide")));
    }

    [Fact]
    public void A_timestamp_beyond_the_signed_range_is_an_invalid_record()
    {
        var script = Ready();
        var record = new byte[16];
        new EventRecord(ulong.MaxValue, 1, 1, EventKind.Start).WriteTo(record);
        Assert.Equal(ProtocolViolation.InvalidRecord, ViolationOf(() => script.Session.OnEvents(record)));
    }

    [Fact]
    public void Misaligned_events_are_rejected()
    {
        var script = Ready();
        Assert.Equal(ProtocolViolation.MisalignedEvents, ViolationOf(() => script.Session.OnEvents(new byte[17])));
    }

    [Fact]
    public void Data_before_hello_and_a_second_hello_are_rejected()
    {
        var session = new ProcessSession();
        Assert.Equal(ProtocolViolation.MissingHello, ViolationOf(() => session.OnDefinitions(new Definitions())));
        Assert.Equal(ProtocolViolation.MissingHello, ViolationOf(() => session.OnEvents(new byte[16])));
        Assert.Equal(ProtocolViolation.MissingHello, ViolationOf(() => session.OnStats(new Stats())));

        var script = Ready();
        Assert.Equal(ProtocolViolation.DuplicateHello, ViolationOf(() => script.Session.OnHello(new Hello())));
    }

    [Fact]
    public void A_bad_record_keeps_every_event_before_it()
    {
        var script = Ready().Code(2, "work");
        var batch = new byte[4 * 16];
        new EventRecord(0, 1, 1, EventKind.Start).WriteTo(batch);
        new EventRecord(10, 1, 2, EventKind.Start).WriteTo(batch.AsSpan(16));
        new EventRecord(30, 1, 2, EventKind.Return).WriteTo(batch.AsSpan(32));
        new EventRecord(40, 1, 9, EventKind.Start).WriteTo(batch.AsSpan(48));   // code 9 is not defined

        var error = Assert.Throws<ProtocolException>(() => script.Session.OnEvents(batch));
        script.Session.Complete(ConnectionEnd.ProtocolError(error));
        var profile = script.Profile;

        Assert.Equal(ConnectionEndReason.ProtocolError, profile.End!.Value.Reason);
        Assert.Equal(nameof(ProtocolViolation.UndefinedId), profile.End!.Value.Violation);
        profile.Threads[0].Root.At("main", "work").Has(1, 0, 20, 20);
        // main was open when the stream broke: it is closed at the last good timestamp.
        profile.Threads[0].Root.At("main").Has(1, 0, 10, 30);
        Assert.Equal(1, profile.FramesOpenAtEnd);
    }

    [Fact]
    public void A_completed_session_accepts_nothing_more_and_completes_once()
    {
        var store = new ProfileStore();
        var script = new SessionScript(store).Thread(1, "MainThread").Code(1, "main");
        script.Complete();
        script.Session.Complete(ConnectionEnd.Cancelled);

        Assert.Equal(ConnectionEndReason.Goodbye, script.Profile.End!.Value.Reason);
        Assert.Single(store.Snapshot().Completed);
        Assert.Throws<InvalidOperationException>(() => script.Start(1, 1));
    }

    [Fact]
    public void A_connection_without_hello_is_counted_by_the_store_without_a_profile()
    {
        var store = new ProfileStore();
        var session = new ProcessSession(store);
        session.Complete(ConnectionEnd.ProtocolError(ProtocolViolation.BadMagic, "not TAPY"));
        session.Complete(ConnectionEnd.EndOfStream);

        Assert.Null(session.Profile);
        var snapshot = store.Snapshot();
        Assert.Empty(snapshot.Completed);
        Assert.Equal(1, snapshot.ConnectionsWithoutProfile["BadMagic"]);
    }
}

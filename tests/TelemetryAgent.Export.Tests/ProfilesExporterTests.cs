using System.Diagnostics;
using TelemetryAgent.Profiling;
using TelemetryAgent.Export.Otlp;
using TelemetryAgent.Export.Profiles;
using TelemetryAgent.Export.Settings;
using TelemetryAgent.Testing;
using TelemetryAgent.OtlpReceiver;
using TelemetryAgent.Output;
using TelemetryAgent.Profiling.Formats;
using OtlpSignal = TelemetryAgent.Export.Settings.OtlpSignal;
using Receiver = TelemetryAgent.OtlpReceiver.OtlpReceiver;
using ReceivedSignal = TelemetryAgent.OtlpReceiver.OtlpSignal;

namespace TelemetryAgent.Export.Tests;

/// <summary><see cref="ProfilesExporter"/> against the real Kestrel OTLP receiver, over both transports.</summary>
public sealed class ProfilesExporterTests
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(30);

    private static OtlpEndpoint Endpoint(Receiver receiver, OtlpProtocol protocol, bool gzip = false, string? httpPath = null)
        => Endpoint(protocol == OtlpProtocol.Grpc ? receiver.GrpcEndpoint : receiver.HttpEndpoint, protocol, gzip, httpPath);

    private static OtlpEndpoint Endpoint(Uri baseUrl, OtlpProtocol protocol, bool gzip = false, string? httpPath = null)
        => new(OtlpSignal.Profiles,
            protocol == OtlpProtocol.Grpc ? baseUrl : new Uri(baseUrl, httpPath ?? Receiver.HttpProfilesPath),
            protocol, [new("x-tenant", "team-a")], TimeSpan.FromSeconds(5), gzip);

    private static string Folded(IReadOnlyList<ProcessProfile> profiles, FoldedWeight weight)
    {
        using var text = new StringWriter();
        FoldedStacksFile.Write(text, profiles, weight);
        return text.ToString();
    }

    private static void Complete(ProfilesExporter exporter, IEnumerable<ProcessProfile> profiles)
    {
        foreach (var profile in profiles)
        {
            exporter.OnStarted(profile);
            exporter.OnCompleted(profile);
        }
    }

    private static async Task ShutdownAsync(ProfilesExporter exporter, TimeSpan deadline)
    {
        using var timeout = new CancellationTokenSource(deadline);
        await exporter.ShutdownAsync(timeout.Token);
    }

    [Theory]
    [InlineData(OtlpProtocol.HttpProtobuf, false)]
    [InlineData(OtlpProtocol.HttpProtobuf, true)]
    [InlineData(OtlpProtocol.Grpc, false)]
    [InlineData(OtlpProtocol.Grpc, true)]
    public async Task Each_process_arrives_as_one_request_that_rebuilds_its_folded_stacks(OtlpProtocol protocol, bool gzip)
    {
        await using var receiver = await Receiver.StartAsync();
        var log = new StringWriter();
        var exporter = new ProfilesExporter(Endpoint(receiver, protocol, gzip), log);
        var profiles = SampleRun.Build().Profiles;

        Complete(exporter, profiles);
        await ShutdownAsync(exporter, Wait);

        var received = receiver.Profiles.Snapshot();
        Assert.Equal(2, received.Count);
        Assert.All(received, request =>
        {
            Assert.Equal(protocol == OtlpProtocol.Grpc ? OtlpTransport.Grpc : OtlpTransport.Http, request.Transport);
            Assert.Equal(gzip, request.Compressed);
            Assert.Equal("team-a", request.Headers["x-tenant"]);
            Assert.Equal(protocol == OtlpProtocol.Grpc ? "application/grpc" : "application/x-protobuf", request.Headers["content-type"]);
            ProfileFolding.AssertDictionaryRules(request.Message);
        });
        var messages = received.Select(request => request.Message).ToList();
        Assert.Equal(Folded(profiles, FoldedWeight.SelfNanoseconds), ProfileFolding.FromOtlp(messages, ProfileSampleTypes.WallType));
        Assert.Equal(Folded(profiles, FoldedWeight.Calls), ProfileFolding.FromOtlp(messages, ProfileSampleTypes.CallsType));
        Assert.Equal((2L, 4L, 0L, 0L, 0L), (exporter.Counters.RequestsSent, exporter.Counters.ProfilesSent, exporter.Counters.Retries,
            exporter.Counters.ProfilesDropped, exporter.Counters.ProfilesFailed));
        Assert.Equal("", log.ToString());
    }

    [Theory]
    [InlineData(OtlpProtocol.HttpProtobuf)]
    [InlineData(OtlpProtocol.Grpc)]
    public async Task Unavailable_answers_are_retried_after_the_servers_delay_and_nothing_is_lost(OtlpProtocol protocol)
    {
        await using var receiver = await Receiver.StartAsync(new OtlpReceiverOptions
        {
            InitialFailures = FailurePlan.FirstRequests(3, retryAfter: TimeSpan.FromSeconds(1)),
        });
        var log = new StringWriter();
        var exporter = new ProfilesExporter(Endpoint(receiver, protocol), log);
        var profiles = SampleRun.Build().Profiles;

        Complete(exporter, profiles);
        await ShutdownAsync(exporter, Wait);

        Assert.Equal(2, receiver.Profiles.Count);
        Assert.Equal(Folded(profiles, FoldedWeight.Calls),
            ProfileFolding.FromOtlp(receiver.Profiles.Select(request => request.Message), ProfileSampleTypes.CallsType));
        Assert.Equal((3L, 4L, 0L), (exporter.Counters.Retries, exporter.Counters.ProfilesSent, exporter.Counters.ProfilesDropped));
        // The server asked for 1 s (Retry-After, or RetryInfo over gRPC): each retry waited that long.
        var attempts = receiver.Attempts.Where(attempt => attempt.Signal == ReceivedSignal.Profiles).ToList();
        Assert.Equal(5, attempts.Count);
        for (var i = 1; i <= 3; i++) Assert.True(attempts[i].At - attempts[i - 1].At >= TimeSpan.FromSeconds(0.95), $"retry {i} came early");
        Assert.Single(log.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries), line => line.Contains("retrying"));
    }

    [Fact]
    public async Task A_collector_that_starts_late_receives_everything()
    {
        using var ports = Receiver.ReservePorts();
        var exporter = new ProfilesExporter(Endpoint(new Uri($"http://127.0.0.1:{ports.GrpcPort}"), OtlpProtocol.Grpc), new StringWriter());
        var profiles = SampleRun.Build().Profiles;

        Complete(exporter, profiles);
        // Up once the exporter has been refused and is retrying.
        var waited = Stopwatch.StartNew();
        while (exporter.Counters.Retries == 0 && waited.Elapsed < Wait) await Task.Delay(10);
        await using var receiver = await Receiver.StartAsync(ports);
        await ShutdownAsync(exporter, Wait);

        Assert.Equal(Folded(profiles, FoldedWeight.SelfNanoseconds),
            ProfileFolding.FromOtlp(receiver.Profiles.Select(request => request.Message), ProfileSampleTypes.WallType));
        Assert.True(exporter.Counters.Retries > 0);
        Assert.Equal(0, exporter.Counters.ProfilesDropped + exporter.Counters.ProfilesFailed);
    }

    [Fact]
    public async Task A_permanent_failure_is_not_retried_and_is_counted_and_logged_once()
    {
        await using var receiver = await Receiver.StartAsync();
        var log = new StringWriter();
        var exporter = new ProfilesExporter(Endpoint(receiver, OtlpProtocol.HttpProtobuf, httpPath: "/v1/nothing-here"), log);

        Complete(exporter, SampleRun.Build().Profiles);
        await ShutdownAsync(exporter, Wait);

        Assert.Equal((0L, 0L, 4L), (exporter.Counters.ProfilesSent, exporter.Counters.Retries, exporter.Counters.ProfilesFailed));
        var lines = log.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines, line => line.Contains("HTTP 404") && line.Contains("lost"));
        Assert.Contains(lines, line => line.Contains("4 failed"));
    }

    [Theory]
    [InlineData(OtlpProtocol.HttpProtobuf)]
    [InlineData(OtlpProtocol.Grpc)]
    public async Task Partial_success_is_counted_and_logged_once(OtlpProtocol protocol)
    {
        await using var receiver = await Receiver.StartAsync();
        receiver.PartialSuccess = new PartialSuccessReply(1, "profile too old", ReceivedSignal.Profiles);
        var log = new StringWriter();
        var exporter = new ProfilesExporter(Endpoint(receiver, protocol), log);

        Complete(exporter, SampleRun.Build().Profiles);
        await ShutdownAsync(exporter, Wait);

        Assert.Equal((4L, 2L), (exporter.Counters.ProfilesSent, exporter.Counters.ProfilesRejected));
        Assert.Single(log.ToString().Split('\n'), line => line.Contains("1 profiles rejected: profile too old"));
    }

    [Fact]
    public async Task Without_a_collector_shutdown_keeps_its_deadline_and_counts_what_was_dropped()
    {
        using var ports = Receiver.ReservePorts();
        var nobody = new Uri($"http://127.0.0.1:{ports.HttpPort}");
        var exporter = new ProfilesExporter(Endpoint(nobody, OtlpProtocol.HttpProtobuf), new StringWriter(),
            new ProfilesExporterOptions { MaxPendingProcesses = 1 });
        var profiles = Enumerable.Range(0, 3)
            .Select(i => new SessionScript(pid: 100 + i).Thread(1, "MainThread").Code(1, "f").Start(10, 1).Return(20, 1).Complete())
            .ToList();

        // The first is taken by the sender (which keeps retrying); of the next two, only one may wait.
        Complete(exporter, profiles.Take(1));
        var taken = Stopwatch.StartNew();
        while (exporter.Counters.Retries == 0 && taken.Elapsed < Wait) await Task.Delay(10);
        Complete(exporter, profiles.Skip(1));
        Assert.Equal(2, exporter.Counters.ProfilesDropped);

        var shutdown = Stopwatch.StartNew();
        await ShutdownAsync(exporter, TimeSpan.FromSeconds(1));
        Assert.True(shutdown.Elapsed < TimeSpan.FromSeconds(5), $"shutdown took {shutdown.Elapsed}");
        Assert.Equal((0L, 6L), (exporter.Counters.ProfilesSent, exporter.Counters.ProfilesDropped));
    }

    [Fact]
    public async Task A_full_queue_gives_up_a_running_processs_checkpoint_first_and_loses_nothing_of_it()
    {
        using var ports = Receiver.ReservePorts();
        var exporter = new ProfilesExporter(Endpoint(new Uri($"http://127.0.0.1:{ports.HttpPort}"), OtlpProtocol.HttpProtobuf),
            new StringWriter(), new ProfilesExporterOptions { MaxPendingProcesses = 1 });
        static ProcessProfile Ended(long pid) => new SessionScript(pid: pid).Thread(1, "MainThread").Code(1, "f").Start(10, 1).Return(20, 1).Complete();

        // While the sender retries the first process, a running one's checkpoint waits; an ended one takes its place.
        var first = Ended(100);
        Complete(exporter, [first]);
        var taken = Stopwatch.StartNew();
        while (exporter.Counters.Retries == 0 && taken.Elapsed < Wait) await Task.Delay(10);
        var running = new SessionScript(pid: 200, observer: exporter).Thread(1, "MainThread").Code(1, "g")
            .Start(10, 1).Return(20, 1).Start(30, 1);
        running.Session.RequestCheckpoint();
        running.Session.TakeRequestedCheckpoint();
        Complete(exporter, [Ended(300)]);
        Assert.Equal(0, exporter.Counters.ProfilesDropped);

        // Now only ended processes wait: the oldest of them is lost.
        var second = running.Return(50, 1).Complete();
        Assert.Equal(2, exporter.Counters.ProfilesDropped);

        await using var receiver = await Receiver.StartAsync(ports);
        await ShutdownAsync(exporter, Wait);
        Assert.Equal(Folded([first, second], FoldedWeight.SelfNanoseconds),
            ProfileFolding.FromOtlp(receiver.Profiles.Select(request => request.Message), ProfileSampleTypes.WallType));
        Assert.Equal(Folded([first, second], FoldedWeight.Calls),
            ProfileFolding.FromOtlp(receiver.Profiles.Select(request => request.Message), ProfileSampleTypes.CallsType));
    }

    private static ProcessProfile Ended(long pid)
        => new SessionScript(pid: pid).Thread(1, "MainThread").Code(1, "f").Start(10, 1).Return(20, 1).Complete();

    [Theory]
    [InlineData(OtlpProtocol.HttpProtobuf)]
    [InlineData(OtlpProtocol.Grpc)]
    public async Task Retries_back_off_exponentially_and_give_up_after_two_minutes_of_the_exporters_clock(OtlpProtocol protocol)
    {
        var clock = new WatchedClock();
        await using var receiver = await Receiver.StartAsync(new OtlpReceiverOptions { InitialFailures = FailurePlan.FirstRequests(int.MaxValue) });
        var log = new StringWriter();
        var exporter = new ProfilesExporter(Endpoint(receiver, protocol), log, new ProfilesExporterOptions { Time = clock });

        Complete(exporter, [Ended(100)]);
        var waits = new List<TimeSpan>();
        while (await clock.NextWaitAsync(Wait, done: () => exporter.Counters.ProfilesFailed > 0) is { } wait)
        {
            waits.Add(wait);
            clock.Advance(wait);
        }
        await ShutdownAsync(exporter, Wait);

        RetryAssert.BackedOffThenGaveUp(waits);
        Assert.Equal(waits.Count + 1, receiver.Attempts.Count(attempt => attempt.Signal == ReceivedSignal.Profiles));
        Assert.Empty(receiver.Profiles.Snapshot());
        Assert.Equal(((long)waits.Count, 0L, 2L, 0L), (exporter.Counters.Retries, exporter.Counters.ProfilesSent, exporter.Counters.ProfilesFailed,
            exporter.Counters.ProfilesDropped));
        var lines = log.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines, line => line.Contains("retrying"));
        Assert.Single(lines, line => line.Contains("gave up after 120 s of retries") && line.Contains("the profiles are lost"));
        Assert.Single(lines, line => line.Contains("2 failed"));
    }

    [Theory]
    [InlineData(OtlpProtocol.HttpProtobuf, 7, 7)]
    [InlineData(OtlpProtocol.Grpc, 7, 7)]
    // Longer than the policy allows: shortened to its 60 s.
    [InlineData(OtlpProtocol.HttpProtobuf, 90, 60)]
    [InlineData(OtlpProtocol.Grpc, 90, 60)]
    public async Task Each_retry_waits_what_the_server_asked_for_on_the_exporters_clock(OtlpProtocol protocol, int askedSeconds, int waitedSeconds)
    {
        var clock = new WatchedClock();
        await using var receiver = await Receiver.StartAsync(new OtlpReceiverOptions
        {
            InitialFailures = FailurePlan.FirstRequests(1, retryAfter: TimeSpan.FromSeconds(askedSeconds)),
        });
        var exporter = new ProfilesExporter(Endpoint(receiver, protocol), new StringWriter(), new ProfilesExporterOptions { Time = clock });
        var profile = Ended(100);

        Complete(exporter, [profile]);
        var wait = await clock.NextWaitAsync(Wait);
        Assert.Equal(TimeSpan.FromSeconds(waitedSeconds), wait);
        clock.Advance(wait!.Value);
        await ShutdownAsync(exporter, Wait);

        Assert.Single(receiver.Profiles.Snapshot());
        Assert.Equal(Folded([profile], FoldedWeight.Calls), ProfileFolding.FromOtlp(receiver.Profiles.Select(request => request.Message),
            ProfileSampleTypes.CallsType));
        Assert.Equal((1L, 2L, 0L), (exporter.Counters.Retries, exporter.Counters.ProfilesSent, exporter.Counters.ProfilesFailed));
    }

    [Fact]
    public async Task A_retry_after_date_is_read_against_the_exporters_clock()
    {
        // Years away from the real clock: read against that one, the date would mean no wait at all.
        var clock = new WatchedClock();
        await using var receiver = await Receiver.StartAsync(new OtlpReceiverOptions
        {
            Time = clock,
            InitialFailures = FailurePlan.FirstRequests(1, retryAfter: TimeSpan.FromSeconds(7)) with { RetryAfterAsDate = true },
        });
        var exporter = new ProfilesExporter(Endpoint(receiver, OtlpProtocol.HttpProtobuf), new StringWriter(),
            new ProfilesExporterOptions { Time = clock });

        Complete(exporter, [Ended(100)]);
        var wait = await clock.NextWaitAsync(Wait);
        Assert.Equal(TimeSpan.FromSeconds(7), wait);
        clock.Advance(wait!.Value);
        await ShutdownAsync(exporter, Wait);

        Assert.Single(receiver.Profiles.Snapshot());
        Assert.Equal((1L, 2L), (exporter.Counters.Retries, exporter.Counters.ProfilesSent));
    }

    [Fact]
    public async Task A_collector_back_before_the_two_minutes_receives_the_profile_exactly_once()
    {
        var clock = new WatchedClock();
        // Down for 100 s of the same clock, then up.
        await using var receiver = await Receiver.StartAsync(new OtlpReceiverOptions
        {
            Time = clock,
            InitialFailures = new FailurePlan(Until: clock.GetUtcNow() + TimeSpan.FromSeconds(100)),
        });
        var exporter = new ProfilesExporter(Endpoint(receiver, OtlpProtocol.HttpProtobuf), new StringWriter(),
            new ProfilesExporterOptions { Time = clock });
        var profile = Ended(100);

        Complete(exporter, [profile]);
        var waited = TimeSpan.Zero;
        while (await clock.NextWaitAsync(Wait, done: () => exporter.Counters.ProfilesSent > 0) is { } wait)
        {
            waited += wait;
            clock.Advance(wait);
        }
        await ShutdownAsync(exporter, Wait);

        Assert.InRange(waited, TimeSpan.FromSeconds(100), TimeSpan.FromSeconds(100) + RetryPolicy.Default.MaxBackoff);
        Assert.Single(receiver.Profiles.Snapshot());
        Assert.Equal(Folded([profile], FoldedWeight.SelfNanoseconds), ProfileFolding.FromOtlp(receiver.Profiles.Select(request => request.Message),
            ProfileSampleTypes.WallType));
        Assert.Equal((2L, 0L, 0L), (exporter.Counters.ProfilesSent, exporter.Counters.ProfilesFailed, exporter.Counters.ProfilesDropped));
    }
}

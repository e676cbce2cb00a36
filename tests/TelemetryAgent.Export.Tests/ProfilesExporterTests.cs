using System.Diagnostics;
using TelemetryAgent.Profiling;
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
}

using Google.Protobuf;
using OpenTelemetry.Proto.Collector.Profiles.V1Development;
using TelemetryAgent.Export.Otlp;
using TelemetryAgent.Export.Profiles;
using TelemetryAgent.Export.Settings;
using TelemetryAgent.OtlpReceiver;
using OtlpSignal = TelemetryAgent.Export.Settings.OtlpSignal;
using Receiver = TelemetryAgent.OtlpReceiver.OtlpReceiver;

namespace TelemetryAgent.Export.Tests;

/// <summary>How <see cref="OtlpClient"/> classifies the real receiver's answers, over both transports.</summary>
public sealed class OtlpClientTests
{
    private static OtlpClient Client(Receiver receiver, OtlpProtocol protocol, string grpcMethod = ProfilesExporter.GrpcMethod)
        => new(new OtlpEndpoint(OtlpSignal.Profiles,
                protocol == OtlpProtocol.Grpc ? receiver.GrpcEndpoint : new Uri(receiver.HttpEndpoint, Receiver.HttpProfilesPath),
                protocol, [], TimeSpan.FromSeconds(5), Gzip: false),
            grpcMethod);

    private static byte[] ValidRequest() => OtlpProfileEncoder.Encode([]).ToByteArray();

    [Theory]
    [InlineData(OtlpProtocol.HttpProtobuf, "HTTP 400: receiver turned the request away (injected InvalidArgument)")]
    [InlineData(OtlpProtocol.Grpc, "gRPC status 3 (INVALID_ARGUMENT): receiver turned the request away (injected InvalidArgument)")]
    public async Task A_rejected_request_fails_for_good_with_the_servers_message(OtlpProtocol protocol, string problem)
    {
        await using var receiver = await Receiver.StartAsync(new OtlpReceiverOptions
        {
            InitialFailures = FailurePlan.FirstRequests(1) with { Code = Grpc.Core.StatusCode.InvalidArgument },
        });
        using var client = Client(receiver, protocol);

        var result = await client.SendAsync(ValidRequest(), CancellationToken.None);

        Assert.Equal(SendOutcome.Failed, result.Outcome);
        Assert.StartsWith(problem, result.Problem);
    }

    [Fact]
    public async Task An_unknown_grpc_method_fails_for_good()
    {
        await using var receiver = await Receiver.StartAsync();
        using var client = Client(receiver, OtlpProtocol.Grpc, "/opentelemetry.proto.collector.profiles.v1.ProfilesService/Export");

        var result = await client.SendAsync(ValidRequest(), CancellationToken.None);

        Assert.Equal(SendOutcome.Failed, result.Outcome);
        Assert.StartsWith("gRPC status 12 (UNIMPLEMENTED)", result.Problem);
    }

    [Theory]
    [InlineData(OtlpProtocol.HttpProtobuf, "HTTP 503")]
    [InlineData(OtlpProtocol.Grpc, "gRPC status 14 (UNAVAILABLE)")]
    public async Task Unavailable_is_retryable_with_the_servers_delay(OtlpProtocol protocol, string problem)
    {
        await using var receiver = await Receiver.StartAsync(new OtlpReceiverOptions
        {
            InitialFailures = FailurePlan.FirstRequests(2, retryAfter: TimeSpan.FromSeconds(2)),
        });
        using var client = Client(receiver, protocol);

        var result = await client.SendAsync(ValidRequest(), CancellationToken.None);
        Assert.Equal((SendOutcome.Retryable, TimeSpan.FromSeconds(2)), (result.Outcome, result.RetryAfter));
        Assert.StartsWith(problem, result.Problem);

        receiver.Failures.Set(FailurePlan.FirstRequests(1));
        var withoutDelay = await client.SendAsync(ValidRequest(), CancellationToken.None);
        Assert.Equal((SendOutcome.Retryable, (TimeSpan?)null), (withoutDelay.Outcome, withoutDelay.RetryAfter));

        var accepted = await client.SendAsync(ValidRequest(), CancellationToken.None);
        Assert.Equal(SendOutcome.Success, accepted.Outcome);
    }

    [Theory]
    [InlineData(OtlpProtocol.HttpProtobuf)]
    [InlineData(OtlpProtocol.Grpc)]
    public async Task A_partial_success_is_a_success_whose_response_says_what_was_rejected(OtlpProtocol protocol)
    {
        await using var receiver = await Receiver.StartAsync();
        receiver.PartialSuccess = new PartialSuccessReply(3, "too many stacks");
        using var client = Client(receiver, protocol);

        var result = await client.SendAsync(ValidRequest(), CancellationToken.None);

        Assert.Equal(SendOutcome.Success, result.Outcome);
        var response = ExportProfilesServiceResponse.Parser.ParseFrom(result.Response);
        Assert.Equal((3L, "too many stacks"), (response.PartialSuccess.RejectedProfiles, response.PartialSuccess.ErrorMessage));
    }

    [Fact]
    public async Task Nobody_listening_is_retryable()
    {
        using var ports = Receiver.ReservePorts();
        var nobody = new Uri($"http://127.0.0.1:{ports.HttpPort}/v1development/profiles");
        using var client = new OtlpClient(
            new OtlpEndpoint(OtlpSignal.Profiles, nobody, OtlpProtocol.HttpProtobuf, [], TimeSpan.FromSeconds(5), false),
            ProfilesExporter.GrpcMethod);

        var result = await client.SendAsync(ValidRequest(), CancellationToken.None);

        Assert.Equal(SendOutcome.Retryable, result.Outcome);
        Assert.Contains("refused", result.Problem, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public void Backoff_doubles_with_jitter_up_to_its_ceiling_and_a_servers_delay_wins_up_to_its_cap()
    {
        var policy = RetryPolicy.Default;
        var random = new Random(1);
        for (var retry = 1; retry <= 8; retry++)
        {
            var ceiling = Math.Min(250 * Math.Pow(2, retry - 1), 5_000);
            for (var i = 0; i < 50; i++)
            {
                Assert.InRange(policy.Delay(retry, null, random).TotalMilliseconds, ceiling / 2, ceiling);
            }
        }
        Assert.Equal(TimeSpan.FromSeconds(7), policy.Delay(1, TimeSpan.FromSeconds(7), random));
        Assert.Equal(policy.MaxServerDelay, policy.Delay(1, TimeSpan.FromHours(1), random));
    }
}

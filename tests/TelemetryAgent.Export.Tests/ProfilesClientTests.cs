using Grpc.Core;
using TelemetryAgent.Export.Otlp;
using TelemetryAgent.Export.Profiles;
using TelemetryAgent.Export.Settings;
using TelemetryAgent.OtlpReceiver;
using OtlpSignal = TelemetryAgent.Export.Settings.OtlpSignal;
using Receiver = TelemetryAgent.OtlpReceiver.OtlpReceiver;

namespace TelemetryAgent.Export.Tests;

/// <summary>
/// How <see cref="ProfilesClient"/> classifies the real receiver's answers, over both transports: the retry rules of
/// the OTLP specification, one status at a time.
/// </summary>
public sealed class ProfilesClientTests
{
    private static ProfilesClient Client(Receiver receiver, OtlpProtocol protocol)
        => Client(protocol == OtlpProtocol.Grpc ? receiver.GrpcEndpoint : receiver.HttpEndpoint, protocol);

    private static ProfilesClient Client(Uri baseUrl, OtlpProtocol protocol)
        => new(new OtlpEndpoint(OtlpSignal.Profiles,
            protocol == OtlpProtocol.Grpc ? baseUrl : new Uri(baseUrl, Receiver.HttpProfilesPath),
            protocol, [], TimeSpan.FromSeconds(5), Gzip: false));

    private static OpenTelemetry.Proto.Collector.Profiles.V1Development.ExportProfilesServiceRequest ValidRequest() => OtlpProfileEncoder.Encode([]);

    private static Task<Receiver> AnsweringAsync(StatusCode code, TimeSpan? retryAfter = null)
        => Receiver.StartAsync(new OtlpReceiverOptions { InitialFailures = FailurePlan.FirstRequests(1, retryAfter) with { Code = code } });

    [Theory]
    [InlineData(OtlpProtocol.HttpProtobuf, "HTTP 400: receiver turned the request away (injected InvalidArgument)")]
    [InlineData(OtlpProtocol.Grpc, "gRPC status 3 (INVALID_ARGUMENT): receiver turned the request away (injected InvalidArgument)")]
    public async Task A_rejected_request_fails_for_good_with_the_servers_message(OtlpProtocol protocol, string problem)
    {
        await using var receiver = await AnsweringAsync(StatusCode.InvalidArgument);
        using var client = Client(receiver, protocol);

        var result = await client.SendAsync(ValidRequest(), CancellationToken.None);

        Assert.Equal(SendOutcome.Failed, result.Outcome);
        Assert.Equal(problem, result.Problem);
    }

    /// <summary>Every gRPC status but OK, without and with a RetryInfo of 3 s.</summary>
    public static TheoryData<StatusCode, bool> GrpcStatuses()
    {
        var data = new TheoryData<StatusCode, bool>();
        foreach (var code in Enum.GetValues<StatusCode>().Where(code => code != StatusCode.OK))
        {
            data.Add(code, false);
            data.Add(code, true);
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(GrpcStatuses))]
    public async Task Grpc_statuses_are_retried_as_the_otlp_specification_says(StatusCode code, bool withRetryInfo)
    {
        await using var receiver = await AnsweringAsync(code, withRetryInfo ? TimeSpan.FromSeconds(3) : null);
        using var client = Client(receiver, OtlpProtocol.Grpc);

        var result = await client.SendAsync(ValidRequest(), CancellationToken.None);

        // OTLP/gRPC: retryable are CANCELLED, DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE, UNAVAILABLE, DATA_LOSS, and
        // RESOURCE_EXHAUSTED when the server says when to come back (RetryInfo); every other status is final.
        var retryable = code is StatusCode.Cancelled or StatusCode.DeadlineExceeded or StatusCode.Aborted or StatusCode.OutOfRange
                            or StatusCode.Unavailable or StatusCode.DataLoss
                        || (code == StatusCode.ResourceExhausted && withRetryInfo);
        Assert.Equal(retryable ? SendOutcome.Retryable : SendOutcome.Failed, result.Outcome);
        Assert.StartsWith($"gRPC status {(int)code} (", result.Problem);
        Assert.Equal(withRetryInfo ? TimeSpan.FromSeconds(3) : null, result.RetryAfter);
    }

    [Theory]
    [InlineData(StatusCode.Unavailable, 503, true)]
    [InlineData(StatusCode.ResourceExhausted, 429, true)]
    [InlineData(StatusCode.DeadlineExceeded, 504, true)]
    [InlineData(StatusCode.InvalidArgument, 400, false)]
    [InlineData(StatusCode.Unauthenticated, 401, false)]
    [InlineData(StatusCode.PermissionDenied, 403, false)]
    [InlineData(StatusCode.Unimplemented, 404, false)]
    [InlineData(StatusCode.Internal, 500, false)]
    public async Task Http_statuses_are_retried_as_the_otlp_specification_says(StatusCode code, int httpStatus, bool retryable)
    {
        await using var receiver = await AnsweringAsync(code);
        using var client = Client(receiver, OtlpProtocol.HttpProtobuf);

        var result = await client.SendAsync(ValidRequest(), CancellationToken.None);

        // OTLP/HTTP: 429, 502, 503 and 504 are transient, every other error final.
        Assert.Equal(retryable ? SendOutcome.Retryable : SendOutcome.Failed, result.Outcome);
        Assert.StartsWith($"HTTP {httpStatus}: receiver turned the request away", result.Problem);
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
        Assert.Equal((3L, "too many stacks"), (result.Response!.PartialSuccess.RejectedProfiles, result.Response.PartialSuccess.ErrorMessage));
    }

    [Theory]
    [InlineData(OtlpProtocol.HttpProtobuf)]
    [InlineData(OtlpProtocol.Grpc)]
    public async Task Nobody_listening_is_retryable(OtlpProtocol protocol)
    {
        using var ports = Receiver.ReservePorts();
        using var client = Client(new Uri($"http://127.0.0.1:{(protocol == OtlpProtocol.Grpc ? ports.GrpcPort : ports.HttpPort)}"), protocol);

        var result = await client.SendAsync(ValidRequest(), CancellationToken.None);

        Assert.Equal(SendOutcome.Retryable, result.Outcome);
        Assert.Contains("refused", result.Problem, StringComparison.OrdinalIgnoreCase);
    }

    [Theory]
    [InlineData(OtlpProtocol.HttpProtobuf)]
    [InlineData(OtlpProtocol.Grpc)]
    public async Task A_connection_reset_mid_request_is_retryable_never_a_success(OtlpProtocol protocol)
    {
        await using var receiver = await Receiver.StartAsync(new OtlpReceiverOptions { InitialFailures = FailurePlan.ResetFirstRequests(1) });
        using var client = Client(receiver, protocol);

        var reset = await client.SendAsync(ValidRequest(), CancellationToken.None);
        var next = await client.SendAsync(ValidRequest(), CancellationToken.None);

        Assert.Equal(SendOutcome.Retryable, reset.Outcome);
        Assert.Equal(SendOutcome.Success, next.Outcome);
        Assert.Single(receiver.Profiles);
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

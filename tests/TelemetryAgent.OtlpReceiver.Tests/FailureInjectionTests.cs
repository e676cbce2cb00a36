using System.Diagnostics;
using System.Net;
using Google.Protobuf;
using Google.Rpc;
using Grpc.Core;
using Microsoft.Extensions.Time.Testing;
using OpenTelemetry.Exporter;
using OpenTelemetry.Proto.Collector.Logs.V1;
using OpenTelemetry.Proto.Collector.Metrics.V1;

namespace TelemetryAgent.OtlpReceiver.Tests;

/// <summary>
/// Injected failures (HTTP 503 + Retry-After, gRPC UNAVAILABLE + RetryInfo, other statuses, reset connections), the
/// SDK's retry getting through them, and a receiver that comes up late on ports chosen in advance.
/// </summary>
public sealed class FailureInjectionTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(20);
    private static readonly byte[] EmptyMetrics = new ExportMetricsServiceRequest().ToByteArray();

    [Theory]
    [InlineData(OtlpExportProtocol.HttpProtobuf)]
    [InlineData(OtlpExportProtocol.Grpc)]
    public async Task Sdk_retry_delivers_after_the_receiver_was_unavailable(OtlpExportProtocol protocol)
    {
        await using var receiver = await OtlpReceiver.StartAsync(new OtlpReceiverOptions
        {
            InitialFailures = FailurePlan.FirstRequests(1, retryAfter: TimeSpan.FromMilliseconds(200)),
        });
        using (var sdk = SdkPipeline.Create(receiver, protocol, retry: true))
        {
            sdk.Meter.CreateCounter<long>("python.calls").Add(5);
            sdk.FlushMetrics();
        }

        var delivered = (await receiver.Metrics.WaitForAsync(1, Timeout))[0];
        var metric = delivered.Message.ResourceMetrics[0].ScopeMetrics[0].Metrics.Single(m => m.Name == "python.calls");
        Assert.Equal(5, metric.Sum.DataPoints[0].AsInt);
        var attempts = receiver.Attempts;
        Assert.False(attempts[0].Accepted);
        Assert.Equal(protocol == OtlpExportProtocol.Grpc ? 14 : null, attempts[0].GrpcStatus);
        Assert.Equal(protocol == OtlpExportProtocol.Grpc ? 200 : 503, attempts[0].HttpStatus);
        Assert.True(attempts[1].Accepted);
        Assert.Equal(1, receiver.Failures.Rejected);
    }

    [Fact]
    public async Task Http_rejection_carries_retry_after_and_an_unavailable_status()
    {
        await using var receiver = await OtlpReceiver.StartAsync(new OtlpReceiverOptions
        {
            InitialFailures = FailurePlan.FirstRequests(2, retryAfter: TimeSpan.FromMilliseconds(1500)),
        });
        using var clients = new Clients(receiver);

        using var first = await clients.PostAsync(OtlpReceiver.HttpMetricsPath, EmptyMetrics);
        using var second = await clients.PostAsync(OtlpReceiver.HttpMetricsPath, EmptyMetrics);
        using var third = await clients.PostAsync(OtlpReceiver.HttpMetricsPath, EmptyMetrics);

        Assert.Equal(HttpStatusCode.ServiceUnavailable, first.StatusCode);
        Assert.Equal(TimeSpan.FromSeconds(2), first.Headers.RetryAfter?.Delta); // whole seconds, rounded up
        Assert.Equal((int)StatusCode.Unavailable, Google.Rpc.Status.Parser.ParseFrom(await first.Content.ReadAsByteArrayAsync()).Code);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, second.StatusCode);
        Assert.Equal(HttpStatusCode.OK, third.StatusCode);
        Assert.Single(receiver.Metrics);
    }

    [Fact]
    public async Task Http_retry_after_can_be_a_date_on_the_receivers_clock()
    {
        var time = new FakeTimeProvider(new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero));
        await using var receiver = await OtlpReceiver.StartAsync(new OtlpReceiverOptions
        {
            Time = time,
            InitialFailures = FailurePlan.FirstRequests(1, retryAfter: TimeSpan.FromMilliseconds(1500)) with { RetryAfterAsDate = true },
        });
        using var clients = new Clients(receiver);

        using var answer = await clients.PostAsync(OtlpReceiver.HttpMetricsPath, EmptyMetrics);

        Assert.Equal(HttpStatusCode.ServiceUnavailable, answer.StatusCode);
        Assert.Equal(time.GetUtcNow() + TimeSpan.FromSeconds(2), answer.Headers.RetryAfter?.Date); // whole seconds, rounded up
    }

    [Fact]
    public async Task Grpc_rejection_carries_retry_info_in_status_details()
    {
        await using var receiver = await OtlpReceiver.StartAsync(new OtlpReceiverOptions
        {
            InitialFailures = FailurePlan.FirstRequests(1, retryAfter: TimeSpan.FromMilliseconds(250)),
        });
        using var clients = new Clients(receiver);

        var rejected = await Assert.ThrowsAsync<RpcException>(async () => await clients.Metrics.ExportAsync(new(), Clients.Call()));
        await clients.Metrics.ExportAsync(new(), Clients.Call());

        Assert.Equal(StatusCode.Unavailable, rejected.StatusCode);
        var status = rejected.GetRpcStatus();
        Assert.NotNull(status);
        Assert.Equal((int)StatusCode.Unavailable, status.Code);
        Assert.Equal(TimeSpan.FromMilliseconds(250), status.GetDetail<RetryInfo>()?.RetryDelay.ToTimeSpan());
        Assert.Single(receiver.Metrics);
        Assert.Equal([14, 0], receiver.Attempts.Select(attempt => attempt.GrpcStatus));
    }

    [Theory]
    [InlineData(StatusCode.ResourceExhausted, HttpStatusCode.TooManyRequests)]
    [InlineData(StatusCode.InvalidArgument, HttpStatusCode.BadRequest)]
    public async Task A_plan_answers_with_the_status_it_names_on_both_transports(StatusCode code, HttpStatusCode httpStatus)
    {
        await using var receiver = await OtlpReceiver.StartAsync(new OtlpReceiverOptions
        {
            InitialFailures = FailurePlan.FirstRequests(2) with { Code = code },
        });
        using var clients = new Clients(receiver);

        using var http = await clients.PostAsync(OtlpReceiver.HttpLogsPath, new ExportLogsServiceRequest().ToByteArray());
        var grpc = await Assert.ThrowsAsync<RpcException>(async () => await clients.Logs.ExportAsync(new(), Clients.Call()));

        Assert.Equal(httpStatus, http.StatusCode);
        Assert.Equal((int)code, Google.Rpc.Status.Parser.ParseFrom(await http.Content.ReadAsByteArrayAsync()).Code);
        Assert.Equal(code, grpc.StatusCode);
        Assert.Null(grpc.GetRpcStatus()?.GetDetail<RetryInfo>());
        Assert.Empty(receiver.Logs);
    }

    [Fact]
    public async Task A_failure_window_rejects_until_it_ends_and_only_for_its_signal()
    {
        // The window's clock moves only when told: the requests land inside it, then after it, however slow the machine.
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var receiver = await OtlpReceiver.StartAsync(new OtlpReceiverOptions { Time = time });
        using var clients = new Clients(receiver);
        var logs = new ExportLogsServiceRequest().ToByteArray();
        var window = TimeSpan.FromSeconds(1.5);
        receiver.Failures.Set(new FailurePlan(Until: time.GetUtcNow() + window, Signal: OtlpSignal.Metrics));

        using var duringMetrics = await clients.PostAsync(OtlpReceiver.HttpMetricsPath, EmptyMetrics);
        var duringGrpcMetrics = await Assert.ThrowsAsync<RpcException>(async () => await clients.Metrics.ExportAsync(new(), Clients.Call()));
        using var duringLogs = await clients.PostAsync(OtlpReceiver.HttpLogsPath, logs);
        time.Advance(window);
        using var afterMetrics = await clients.PostAsync(OtlpReceiver.HttpMetricsPath, EmptyMetrics);

        Assert.Equal(HttpStatusCode.ServiceUnavailable, duringMetrics.StatusCode);
        Assert.Null(duringMetrics.Headers.RetryAfter);
        Assert.Equal(StatusCode.Unavailable, duringGrpcMetrics.StatusCode);
        Assert.Null(duringGrpcMetrics.GetRpcStatus()?.GetDetail<RetryInfo>());
        Assert.Equal(HttpStatusCode.OK, duringLogs.StatusCode);
        Assert.Equal(HttpStatusCode.OK, afterMetrics.StatusCode);
        Assert.Equal(2, receiver.Failures.Rejected);
    }

    [Fact]
    public async Task A_reset_plan_cuts_the_connection_mid_request_with_no_answer_on_both_transports()
    {
        await using var receiver = await OtlpReceiver.StartAsync(new OtlpReceiverOptions
        {
            InitialFailures = FailurePlan.ResetFirstRequests(2, OtlpSignal.Profiles),
        });
        using var clients = new Clients(receiver);
        var profiles = ProfilesFixture.CpuProfile();

        var http = await Assert.ThrowsAsync<HttpRequestException>(() => clients.PostAsync(OtlpReceiver.HttpProfilesPath, profiles.ToByteArray()));
        var grpc = await Assert.ThrowsAsync<RpcException>(async () => await clients.Profiles.ExportAsync(profiles, Clients.Call()));
        await clients.Profiles.ExportAsync(profiles, Clients.Call());

        // No HTTP status, no gRPC status: the client learns only that the connection went away.
        Assert.Null(http.StatusCode);
        Assert.Equal(StatusCode.Unavailable, grpc.StatusCode);
        Assert.IsType<HttpRequestException>(grpc.Status.DebugException);
        Assert.Single(receiver.Profiles);
        Assert.Equal(
            [(OtlpTransport.Http, false), (OtlpTransport.Grpc, false), (OtlpTransport.Grpc, true)],
            receiver.Attempts.Select(attempt => (attempt.Transport, attempt.Accepted)));
        Assert.Equal(2, receiver.Failures.Rejected);
    }

    [Fact]
    public async Task A_late_receiver_serves_the_ports_chosen_in_advance()
    {
        using var ports = OtlpReceiver.ReservePorts();
        using var http = new HttpClient();
        var url = new Uri($"http://127.0.0.1:{ports.HttpPort}{OtlpReceiver.HttpMetricsPath}");
        var content = new ByteArrayContent(EmptyMetrics);
        content.Headers.ContentType = new("application/x-protobuf");

        // Held, not listening: refused, as a collector that is down.
        var refused = await Assert.ThrowsAsync<HttpRequestException>(() => http.PostAsync(url, content));
        Assert.Equal(System.Net.Sockets.SocketError.ConnectionRefused, (refused.InnerException as System.Net.Sockets.SocketException)?.SocketErrorCode);
        await using var receiver = await OtlpReceiver.StartAsync(ports);

        Assert.Equal(ports.HttpPort, receiver.HttpEndpoint.Port);
        Assert.Equal(ports.GrpcPort, receiver.GrpcEndpoint.Port);
        using var response = await http.PostAsync(url, content);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
    }

    [Fact]
    public async Task Sdk_retry_reaches_a_receiver_that_starts_late()
    {
        using var ports = OtlpReceiver.ReservePorts();
        // The SDK exports before the receiver exists (refused); the receiver starts once an attempt has failed.
        using var sdk = SdkPipeline.Create(
            new Uri($"http://127.0.0.1:{ports.HttpPort}"), new Uri($"http://127.0.0.1:{ports.GrpcPort}"),
            OtlpExportProtocol.Grpc, retry: true);
        sdk.Meter.CreateCounter<long>("python.calls").Add(9);
        var flushing = Task.Run(sdk.FlushMetrics);
        var waited = Stopwatch.StartNew();
        while (sdk.FailedAttempts == 0)
        {
            Assert.True(waited.Elapsed < Timeout, "the SDK never tried to export");
            await Task.Delay(10);
        }
        await using var receiver = await OtlpReceiver.StartAsync(ports);
        await flushing;
        var delivered = (await receiver.Metrics.WaitForAsync(1, Timeout))[0];
        Assert.Equal(9, delivered.Message.ResourceMetrics[0].ScopeMetrics[0].Metrics.Single(m => m.Name == "python.calls").Sum.DataPoints[0].AsInt);
    }
}

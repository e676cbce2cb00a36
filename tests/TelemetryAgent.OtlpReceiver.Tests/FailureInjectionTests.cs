using System.Diagnostics;
using System.Net;
using Google.Protobuf;
using Microsoft.Extensions.Time.Testing;
using OpenTelemetry.Exporter;
using OpenTelemetry.Proto.Collector.Logs.V1;
using OpenTelemetry.Proto.Collector.Metrics.V1;

namespace TelemetryAgent.OtlpReceiver.Tests;

/// <summary>
/// Injected unavailability (HTTP 503 + Retry-After, gRPC UNAVAILABLE + RetryInfo), the SDK's retry getting
/// through it, and a receiver that comes up late on ports chosen in advance.
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
        using var client = new RawOtlpClient();

        using var first = await client.PostHttpAsync(receiver, OtlpReceiver.HttpMetricsPath, EmptyMetrics);
        using var second = await client.PostHttpAsync(receiver, OtlpReceiver.HttpMetricsPath, EmptyMetrics);
        using var third = await client.PostHttpAsync(receiver, OtlpReceiver.HttpMetricsPath, EmptyMetrics);

        Assert.Equal(HttpStatusCode.ServiceUnavailable, first.StatusCode);
        Assert.Equal(TimeSpan.FromSeconds(2), first.Headers.RetryAfter?.Delta); // whole seconds, rounded up
        Assert.Equal(14, RpcStatusReader.Decode(await first.Content.ReadAsByteArrayAsync()).Code);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, second.StatusCode);
        Assert.Equal(HttpStatusCode.OK, third.StatusCode);
        Assert.Single(receiver.Metrics);
    }

    [Fact]
    public async Task Grpc_rejection_carries_retry_info_in_status_details()
    {
        await using var receiver = await OtlpReceiver.StartAsync(new OtlpReceiverOptions
        {
            InitialFailures = FailurePlan.FirstRequests(1, retryAfter: TimeSpan.FromMilliseconds(250)),
        });
        using var client = new RawOtlpClient();

        var rejected = await client.CallGrpcAsync(receiver, OtlpReceiver.GrpcMetricsPath, EmptyMetrics);
        var accepted = await client.CallGrpcAsync(receiver, OtlpReceiver.GrpcMetricsPath, EmptyMetrics);

        Assert.Equal(14, rejected.GrpcStatus);
        Assert.Contains("unavailable", rejected.GrpcMessage);
        Assert.NotNull(rejected.StatusDetails);
        var details = RpcStatusReader.Decode(rejected.StatusDetails);
        Assert.Equal(14, details.Code);
        Assert.Equal(TimeSpan.FromMilliseconds(250), details.RetryDelay);
        Assert.Equal(0, accepted.GrpcStatus);
    }

    [Fact]
    public async Task A_failure_window_rejects_until_it_ends_and_only_for_its_signal()
    {
        // The window's clock moves only when told: the requests land inside it, then after it, however slow the machine.
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var receiver = await OtlpReceiver.StartAsync(new OtlpReceiverOptions { Time = time });
        using var client = new RawOtlpClient();
        var logs = new ExportLogsServiceRequest().ToByteArray();
        var window = TimeSpan.FromSeconds(1.5);
        receiver.Failures.Set(new FailurePlan(Until: time.GetUtcNow() + window, Signal: OtlpSignal.Metrics));

        using var duringMetrics = await client.PostHttpAsync(receiver, OtlpReceiver.HttpMetricsPath, EmptyMetrics);
        var duringGrpcMetrics = await client.CallGrpcAsync(receiver, OtlpReceiver.GrpcMetricsPath, EmptyMetrics);
        using var duringLogs = await client.PostHttpAsync(receiver, OtlpReceiver.HttpLogsPath, logs);
        time.Advance(window);
        using var afterMetrics = await client.PostHttpAsync(receiver, OtlpReceiver.HttpMetricsPath, EmptyMetrics);

        Assert.Equal(HttpStatusCode.ServiceUnavailable, duringMetrics.StatusCode);
        Assert.Null(duringMetrics.Headers.RetryAfter);
        Assert.Equal(14, duringGrpcMetrics.GrpcStatus);
        Assert.Null(duringGrpcMetrics.StatusDetails);
        Assert.Equal(HttpStatusCode.OK, duringLogs.StatusCode);
        Assert.Equal(HttpStatusCode.OK, afterMetrics.StatusCode);
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

using System.Net;
using Google.Protobuf;
using OpenTelemetry.Proto.Collector.Logs.V1;
using OpenTelemetry.Proto.Collector.Metrics.V1;
using OpenTelemetry.Proto.Common.V1;
using OpenTelemetry.Proto.Logs.V1;

namespace TelemetryAgent.OtlpReceiver.Tests;

/// <summary>The receiver's own contract: ports, thread-safe storage, waits with timeouts, options checks, shutdown.</summary>
public sealed class ReceiverApiTests
{
    [Fact]
    public async Task Endpoints_report_the_real_loopback_ports()
    {
        await using var receiver = await OtlpReceiver.StartAsync();

        Assert.Equal("127.0.0.1", receiver.HttpEndpoint.Host);
        Assert.Equal("127.0.0.1", receiver.GrpcEndpoint.Host);
        Assert.NotEqual(0, receiver.HttpEndpoint.Port);
        Assert.NotEqual(0, receiver.GrpcEndpoint.Port);
        Assert.NotEqual(receiver.HttpEndpoint.Port, receiver.GrpcEndpoint.Port);
    }

    [Fact]
    public async Task Concurrent_requests_on_both_transports_are_all_stored()
    {
        await using var receiver = await OtlpReceiver.StartAsync();
        using var clients = new Clients(receiver);
        const int PerTransport = 40;

        await Task.WhenAll(Enumerable.Range(0, PerTransport).SelectMany(i => new[]
        {
            PostAsync(() => clients.PostAsync(OtlpReceiver.HttpLogsPath, LogsRequest($"http-{i}").ToByteArray())),
            clients.Logs.ExportAsync(LogsRequest($"grpc-{i}"), Clients.Call(gzip: i % 2 == 0)).ResponseAsync,
        }));

        var stored = await receiver.Logs.WaitForAsync(2 * PerTransport, TimeSpan.FromSeconds(10));
        var bodies = stored.Select(r => r.Message.ResourceLogs[0].ScopeLogs[0].LogRecords[0].Body.StringValue).ToHashSet();
        Assert.Equal(2 * PerTransport, bodies.Count);
        Assert.Equal(PerTransport, stored.Count(r => r.Transport == OtlpTransport.Grpc));
        Assert.Equal(PerTransport / 2, stored.Count(r => r.Compressed));
        Assert.Equal(2 * PerTransport, receiver.Attempts.Count(a => a.Accepted));
    }

    [Fact]
    public async Task Waiting_by_predicate_returns_only_the_matching_requests()
    {
        await using var receiver = await OtlpReceiver.StartAsync();
        using var clients = new Clients(receiver);
        var wait = receiver.Logs.WaitForAsync(
            r => r.Message.ResourceLogs[0].ScopeLogs[0].LogRecords[0].Body.StringValue.StartsWith("keep", StringComparison.Ordinal),
            count: 2, TimeSpan.FromSeconds(10));

        foreach (var body in new[] { "keep-1", "drop", "keep-2" })
        {
            using var _ = await clients.PostAsync(OtlpReceiver.HttpLogsPath, LogsRequest(body).ToByteArray());
        }

        var matched = await wait;
        Assert.Equal(["keep-1", "keep-2"], matched.Select(r => r.Message.ResourceLogs[0].ScopeLogs[0].LogRecords[0].Body.StringValue));
        Assert.Equal(3, receiver.Logs.Count);
    }

    [Fact]
    public async Task A_wait_that_times_out_says_what_arrived()
    {
        await using var receiver = await OtlpReceiver.StartAsync();
        using var clients = new Clients(receiver);
        using var _ = await clients.PostAsync(OtlpReceiver.HttpMetricsPath, new ExportMetricsServiceRequest().ToByteArray());

        var error = await Assert.ThrowsAsync<TimeoutException>(() => receiver.Metrics.WaitForAsync(3, TimeSpan.FromMilliseconds(200)));
        Assert.Contains("3 matching Metrics request(s); 1 of 1 received matched", error.Message);
        await Assert.ThrowsAsync<TimeoutException>(() => receiver.WaitForAsync(OtlpSignal.Profiles, 1, TimeSpan.FromMilliseconds(50)));
        await receiver.WaitForAsync(OtlpSignal.Metrics, 1, TimeSpan.FromSeconds(1));
    }

    [Fact]
    public async Task A_cancelled_wait_is_a_cancellation_not_a_timeout()
    {
        await using var receiver = await OtlpReceiver.StartAsync();
        using var cancel = new CancellationTokenSource(TimeSpan.FromMilliseconds(50));

        await Assert.ThrowsAnyAsync<OperationCanceledException>(
            () => receiver.Metrics.WaitForAsync(1, TimeSpan.FromSeconds(30), cancel.Token));
    }

    [Fact]
    public async Task Invalid_options_are_all_reported_at_once()
    {
        var error = await Assert.ThrowsAsync<ArgumentException>(() => OtlpReceiver.StartAsync(
            new OtlpReceiverOptions { HttpPort = -1, GrpcPort = 70000, MaxRequestBytes = 0 }));

        Assert.Contains("HttpPort must be 0..65535 (was -1)", error.Message);
        Assert.Contains("GrpcPort must be 0..65535 (was 70000)", error.Message);
        Assert.Contains("MaxRequestBytes must be positive (was 0)", error.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => FailurePlan.FirstRequests(-1));
        Assert.Throws<ArgumentOutOfRangeException>(() => FailurePlan.For(TimeSpan.FromSeconds(1), retryAfter: TimeSpan.FromSeconds(-1)));
    }

    [Fact]
    public async Task Disposing_stops_listening_and_keeps_what_was_stored()
    {
        var receiver = await OtlpReceiver.StartAsync();
        using var clients = new Clients(receiver);
        using (var response = await clients.PostAsync(OtlpReceiver.HttpLogsPath, LogsRequest("kept").ToByteArray()))
        {
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }

        await receiver.DisposeAsync();
        await receiver.DisposeAsync();

        Assert.Single(receiver.Logs);
        await Assert.ThrowsAsync<HttpRequestException>(
            () => clients.PostAsync(OtlpReceiver.HttpLogsPath, LogsRequest("late").ToByteArray()));
    }

    private static ExportLogsServiceRequest LogsRequest(string body) => new()
    {
        ResourceLogs =
        {
            new ResourceLogs { ScopeLogs = { new ScopeLogs { LogRecords = { new LogRecord { Body = new AnyValue { StringValue = body } } } } } },
        },
    };

    private static async Task PostAsync(Func<Task<HttpResponseMessage>> post)
    {
        using var response = await post();
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
    }
}

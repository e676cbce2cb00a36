using System.Net;
using Google.Protobuf;
using Grpc.Core;
using OpenTelemetry.Proto.Collector.Logs.V1;
using OpenTelemetry.Proto.Collector.Metrics.V1;
using OpenTelemetry.Proto.Common.V1;
using OpenTelemetry.Proto.Logs.V1;

namespace TelemetryAgent.OtlpReceiver.Tests;

/// <summary>
/// Bad OTLP/HTTP requests get a precise error (HTTP status + google.rpc.Status body), bad gRPC calls the reference
/// server's status (it frames, decompresses and bounds the messages; the receiver sets its limit); either way nothing
/// is stored and the receiver goes on serving the next good request.
/// </summary>
public sealed class MalformedRequestTests : IAsyncLifetime
{
    // Field 1 (resource_metrics) declares 5 bytes but only 1 follows.
    private static readonly byte[] TruncatedProtobuf = [0x0A, 0x05, 0x01];
    private const int Limit = 64 * 1024;

    private OtlpReceiver _receiver = null!;
    private Clients _clients = null!;

    public async Task InitializeAsync()
    {
        _receiver = await OtlpReceiver.StartAsync(new OtlpReceiverOptions { MaxRequestBytes = Limit });
        _clients = new Clients(_receiver);
    }

    public async Task DisposeAsync()
    {
        _clients.Dispose();
        await _receiver.DisposeAsync();
    }

    private static Google.Rpc.Status StatusOf(HttpResponseMessage response) =>
        Google.Rpc.Status.Parser.ParseFrom(response.Content.ReadAsByteArrayAsync().GetAwaiter().GetResult());

    [Fact]
    public async Task Undecodable_http_body_is_400_with_an_invalid_argument_status()
    {
        using var response = await _clients.PostAsync(OtlpReceiver.HttpMetricsPath, TruncatedProtobuf);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var status = StatusOf(response);
        Assert.Equal((int)StatusCode.InvalidArgument, status.Code);
        Assert.Contains("not a valid ExportMetricsServiceRequest", status.Message);
        await AssertStillServesAndStoredNothingBadAsync();
    }

    [Fact]
    public async Task Gzip_that_inflates_past_the_limit_is_rejected_on_both_transports()
    {
        var bomb = new byte[1024 * 1024]; // 1 MiB of zeros gzips to about 1 KiB
        using var http = await _clients.PostAsync(OtlpReceiver.HttpMetricsPath, bomb, gzip: true);
        var large = new ExportLogsServiceRequest
        {
            ResourceLogs = { new ResourceLogs { ScopeLogs = { new ScopeLogs { LogRecords = { new LogRecord { Body = new AnyValue { StringValue = new string('x', 1024 * 1024) } } } } } } },
        };
        var grpc = await Assert.ThrowsAsync<RpcException>(async () => await _clients.Logs.ExportAsync(large, Clients.Call(gzip: true)));

        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, http.StatusCode);
        Assert.Equal(StatusCode.ResourceExhausted, grpc.StatusCode);
        await AssertStillServesAndStoredNothingBadAsync();
    }

    [Fact]
    public async Task Http_errors_name_the_problem()
    {
        var body = new ExportMetricsServiceRequest().ToByteArray();

        using var unknownPath = await _clients.PostAsync("/v1/spans", body);
        using var json = await _clients.PostAsync(OtlpReceiver.HttpMetricsPath, "{}"u8.ToArray(), contentType: "application/json");
        using var corruptGzip = await _clients.PostAsync(OtlpReceiver.HttpLogsPath, [0x1F, 0x8B, 0x08, 0x00], contentType: "application/x-protobuf");
        using var tooLarge = await _clients.PostAsync(OtlpReceiver.HttpMetricsPath, new byte[Limit + 1024]);
        using var httpClient = new HttpClient();
        using var get = await httpClient.GetAsync(new Uri(_receiver.HttpEndpoint, OtlpReceiver.HttpMetricsPath));

        Assert.Equal(HttpStatusCode.NotFound, unknownPath.StatusCode);
        Assert.Contains("/v1/metrics", StatusOf(unknownPath).Message);
        Assert.Equal(HttpStatusCode.UnsupportedMediaType, json.StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, corruptGzip.StatusCode); // not gzip-flagged: parsed as protobuf and rejected
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, tooLarge.StatusCode);
        Assert.Equal(HttpStatusCode.MethodNotAllowed, get.StatusCode);
        Assert.Equal("POST", get.Content.Headers.Allow.Single());
        await AssertStillServesAndStoredNothingBadAsync();
    }

    [Fact]
    public async Task Corrupt_gzip_http_body_is_400()
    {
        var content = new ByteArrayContent(Clients.Gzip(new byte[4096])[..^3]);
        content.Headers.ContentType = new("application/x-protobuf");
        content.Headers.ContentEncoding.Add("gzip");
        using var http = new HttpClient();

        using var response = await http.PostAsync(new Uri(_receiver.HttpEndpoint, OtlpReceiver.HttpMetricsPath), content);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Contains("gzip", StatusOf(response).Message);
        await AssertStillServesAndStoredNothingBadAsync();
    }

    [Fact]
    public async Task An_unknown_grpc_method_is_unimplemented_and_recorded()
    {
        var bytes = Marshallers.Create<byte[]>(static message => message, static data => data);
        var unknownService = new Method<byte[], byte[]>(MethodType.Unary, "opentelemetry.proto.collector.unknown.v1.UnknownService", "Export", bytes, bytes);

        var unknown = await Assert.ThrowsAsync<RpcException>(async () => await _clients.Invoker.AsyncUnaryCall(unknownService, null, Clients.Call(), []));

        Assert.Equal(StatusCode.Unimplemented, unknown.StatusCode);
        var attempt = Assert.Single(_receiver.Attempts);
        Assert.Equal(("/opentelemetry.proto.collector.unknown.v1.UnknownService/Export", (int?)12, (OtlpSignal?)null),
            (attempt.Path, attempt.GrpcStatus, attempt.Signal));
        await AssertStillServesAndStoredNothingBadAsync();
    }

    private async Task AssertStillServesAndStoredNothingBadAsync()
    {
        Assert.Equal(0, _receiver.Metrics.Count + _receiver.Logs.Count + _receiver.Profiles.Count);
        Assert.All(_receiver.Attempts, a => Assert.False(a.Accepted));

        var good = new ExportMetricsServiceRequest { ResourceMetrics = { new OpenTelemetry.Proto.Metrics.V1.ResourceMetrics() } };
        using var http = await _clients.PostAsync(OtlpReceiver.HttpMetricsPath, good.ToByteArray());
        await _clients.Metrics.ExportAsync(good, Clients.Call());

        Assert.Equal(HttpStatusCode.OK, http.StatusCode);
        var stored = await _receiver.Metrics.WaitForAsync(2, TimeSpan.FromSeconds(5));
        Assert.All(stored, r => Assert.Equal(good, r.Message));
    }
}

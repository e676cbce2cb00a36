using System.Net;
using Google.Protobuf;
using OpenTelemetry.Proto.Collector.Metrics.V1;

namespace TelemetryAgent.OtlpReceiver.Tests;

/// <summary>
/// Bad requests get a precise error (HTTP status + google.rpc.Status body, or grpc-status + grpc-message),
/// store nothing, and leave the receiver serving the next good request.
/// </summary>
public sealed class MalformedRequestTests : IAsyncLifetime
{
    // Field 1 (resource_metrics) declares 5 bytes but only 1 follows.
    private static readonly byte[] TruncatedProtobuf = [0x0A, 0x05, 0x01];

    private OtlpReceiver _receiver = null!;

    private static byte[] TruncatedGzipFrame()
    {
        var gzip = RawOtlpClient.Gzip(new byte[4096]);
        return RawOtlpClient.Frame(gzip[..^6], compressed: true);
    }
    private readonly RawOtlpClient _client = new();

    public async Task InitializeAsync() => _receiver = await OtlpReceiver.StartAsync(new OtlpReceiverOptions { MaxRequestBytes = 64 * 1024 });

    public async Task DisposeAsync()
    {
        _client.Dispose();
        await _receiver.DisposeAsync();
    }

    [Fact]
    public async Task Undecodable_http_body_is_400_with_an_invalid_argument_status()
    {
        using var response = await _client.PostHttpAsync(_receiver, OtlpReceiver.HttpMetricsPath, TruncatedProtobuf);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var status = RpcStatusReader.Decode(await response.Content.ReadAsByteArrayAsync());
        Assert.Equal(3, status.Code);
        Assert.Contains("not a valid ExportMetricsServiceRequest", status.Message);
        await AssertStillServesAndStoredNothingBadAsync();
    }

    [Fact]
    public async Task Undecodable_grpc_message_is_invalid_argument()
    {
        var reply = await _client.CallGrpcAsync(_receiver, OtlpReceiver.GrpcMetricsPath, TruncatedProtobuf);

        Assert.Equal(HttpStatusCode.OK, reply.HttpStatus);
        Assert.Equal(3, reply.GrpcStatus);
        Assert.Contains("not a valid ExportMetricsServiceRequest", reply.GrpcMessage);
        Assert.Null(reply.ResponseMessage);
        await AssertStillServesAndStoredNothingBadAsync();
    }

    public static TheoryData<string, byte[], string?, int, string> BadGrpcFrames => new()
    {
        { "shorter than the header", [0x00, 0x00, 0x00], null, 13, "inside the 5-byte gRPC message header" },
        { "declares more than it carries", [0x00, 0x00, 0x00, 0x00, 0x0A, 0x01, 0x02], null, 13, "2 of the 10 message bytes" },
        { "bad compressed flag", [0x07, 0x00, 0x00, 0x00, 0x00], null, 13, "invalid gRPC compressed flag 7" },
        { "compressed without encoding", [0x01, 0x00, 0x00, 0x00, 0x01, 0x00], null, 13, "grpc-encoding names no compression" },
        { "unsupported encoding", [0x01, 0x00, 0x00, 0x00, 0x01, 0x00], "snappy", 12, "grpc-encoding 'snappy' is not supported" },
        { "not gzip", [0x01, 0x00, 0x00, 0x00, 0x03, 0x1F, 0x8B, 0x00], "gzip", 13, "not a gzip stream" },
        { "truncated gzip", TruncatedGzipFrame(), "gzip", 13, "truncated or corrupt" },
        { "two messages", [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00], null, 12, "exactly one message" },
        { "over the size limit", [0x00, 0x00, 0x10, 0x00, 0x00], null, 8, "exceeds the 65536-byte limit" },
    };

    [Theory]
    [MemberData(nameof(BadGrpcFrames))]
    public async Task Bad_grpc_framing_gets_a_precise_status(string why, byte[] body, string? encoding, int expectedStatus, string expectedMessage)
    {
        var reply = await _client.CallGrpcRawAsync(_receiver, OtlpReceiver.GrpcMetricsPath, body, encoding);

        Assert.True(expectedStatus == reply.GrpcStatus, $"{why}: grpc-status {reply.GrpcStatus}, expected {expectedStatus}");
        Assert.Contains(expectedMessage, reply.GrpcMessage);
        await AssertStillServesAndStoredNothingBadAsync();
    }

    [Fact]
    public async Task Gzip_that_inflates_past_the_limit_is_rejected_on_both_transports()
    {
        var bomb = new byte[1024 * 1024]; // 1 MiB of zeros gzips to about 1 KiB
        var http = await _client.PostHttpAsync(_receiver, OtlpReceiver.HttpMetricsPath, bomb, gzip: true);
        var grpc = await _client.CallGrpcAsync(_receiver, OtlpReceiver.GrpcMetricsPath, bomb, gzip: true);

        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, http.StatusCode);
        Assert.Equal(8, grpc.GrpcStatus);
        Assert.Contains("decompressed", grpc.GrpcMessage);
        await AssertStillServesAndStoredNothingBadAsync();
    }

    [Fact]
    public async Task Http_errors_name_the_problem()
    {
        var body = new ExportMetricsServiceRequest().ToByteArray();

        using var unknownPath = await _client.PostHttpAsync(_receiver, "/v1/spans", body);
        using var json = await _client.PostHttpAsync(_receiver, OtlpReceiver.HttpMetricsPath, "{}"u8.ToArray(), contentType: "application/json");
        using var corruptGzip = await _client.PostHttpAsync(_receiver, OtlpReceiver.HttpLogsPath, [0x1F, 0x8B, 0x08, 0x00], contentType: "application/x-protobuf");
        using var tooLarge = await _client.PostHttpAsync(_receiver, OtlpReceiver.HttpMetricsPath, new byte[65 * 1024]);
        using var httpClient = new HttpClient();
        using var get = await httpClient.GetAsync(new Uri(_receiver.HttpEndpoint, OtlpReceiver.HttpMetricsPath));

        Assert.Equal(HttpStatusCode.NotFound, unknownPath.StatusCode);
        Assert.Contains("/v1/metrics", RpcStatusReader.Decode(await unknownPath.Content.ReadAsByteArrayAsync()).Message);
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
        var content = new ByteArrayContent(RawOtlpClient.Gzip(new byte[4096])[..^3]);
        content.Headers.ContentType = new("application/x-protobuf");
        content.Headers.ContentEncoding.Add("gzip");
        using var http = new HttpClient();

        using var response = await http.PostAsync(new Uri(_receiver.HttpEndpoint, OtlpReceiver.HttpMetricsPath), content);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Contains("gzip", RpcStatusReader.Decode(await response.Content.ReadAsByteArrayAsync()).Message);
        await AssertStillServesAndStoredNothingBadAsync();
    }

    [Fact]
    public async Task Grpc_errors_outside_the_message_name_the_problem()
    {
        var unknown = await _client.CallGrpcAsync(_receiver, "/opentelemetry.proto.collector.trace.v1.TraceService/Export", []);
        var notGrpc = await _client.CallGrpcRawAsync(_receiver, OtlpReceiver.GrpcMetricsPath, [], contentType: "application/x-protobuf");

        Assert.Equal(12, unknown.GrpcStatus);
        Assert.Contains("TraceService", unknown.GrpcMessage);
        Assert.Equal(HttpStatusCode.UnsupportedMediaType, notGrpc.HttpStatus);
        await AssertStillServesAndStoredNothingBadAsync();
    }

    private async Task AssertStillServesAndStoredNothingBadAsync()
    {
        Assert.Equal(0, _receiver.Metrics.Count + _receiver.Logs.Count + _receiver.Profiles.Count);
        Assert.All(_receiver.Attempts, a => Assert.False(a.Accepted));

        var good = new ExportMetricsServiceRequest { ResourceMetrics = { new OpenTelemetry.Proto.Metrics.V1.ResourceMetrics() } };
        using var http = await _client.PostHttpAsync(_receiver, OtlpReceiver.HttpMetricsPath, good.ToByteArray());
        var grpc = await _client.CallGrpcAsync(_receiver, OtlpReceiver.GrpcMetricsPath, good.ToByteArray());

        Assert.Equal(HttpStatusCode.OK, http.StatusCode);
        Assert.Equal(0, grpc.GrpcStatus);
        var stored = await _receiver.Metrics.WaitForAsync(2, TimeSpan.FromSeconds(5));
        Assert.All(stored, r => Assert.Equal(good, r.Message));
    }
}

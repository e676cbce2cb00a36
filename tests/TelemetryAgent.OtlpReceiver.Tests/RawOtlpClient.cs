using System.Buffers.Binary;
using System.IO.Compression;
using System.Net;
using System.Net.Http.Headers;

namespace TelemetryAgent.OtlpReceiver.Tests;

/// <summary>The answer to one hand-made gRPC call.</summary>
internal sealed record GrpcReply(HttpStatusCode HttpStatus, int? GrpcStatus, string? GrpcMessage, byte[]? ResponseMessage, byte[]? StatusDetails);

/// <summary>
/// Hand-made OTLP requests over HttpClient, independent of the receiver's code: OTLP/HTTP posts and
/// unary gRPC calls over h2c with the 5-byte message framing written here.
/// </summary>
internal sealed class RawOtlpClient : IDisposable
{
    private readonly HttpClient _http = new() { Timeout = TimeSpan.FromSeconds(20) };

    private readonly HttpClient _h2c = new() { Timeout = TimeSpan.FromSeconds(20) };

    public static byte[] Gzip(byte[] data)
    {
        using var output = new MemoryStream();
        using (var gzip = new GZipStream(output, CompressionLevel.Fastest, leaveOpen: true))
        {
            gzip.Write(data);
        }
        return output.ToArray();
    }

    /// <summary>A gRPC length-prefixed message: compressed flag, u32 big-endian length, bytes.</summary>
    public static byte[] Frame(byte[] message, bool compressed)
    {
        var frame = new byte[5 + message.Length];
        frame[0] = compressed ? (byte)1 : (byte)0;
        BinaryPrimitives.WriteUInt32BigEndian(frame.AsSpan(1), (uint)message.Length);
        message.CopyTo(frame, 5);
        return frame;
    }

    public async Task<HttpResponseMessage> PostHttpAsync(
        OtlpReceiver receiver, string path, byte[] body, bool gzip = false, string contentType = "application/x-protobuf")
    {
        var content = new ByteArrayContent(gzip ? Gzip(body) : body);
        content.Headers.ContentType = MediaTypeHeaderValue.Parse(contentType);
        if (gzip)
        {
            content.Headers.ContentEncoding.Add("gzip");
        }
        return await _http.PostAsync(new Uri(receiver.HttpEndpoint, path), content);
    }

    /// <summary>Sends <paramref name="message"/> framed (and gzipped when asked) as one unary call.</summary>
    public Task<GrpcReply> CallGrpcAsync(OtlpReceiver receiver, string path, byte[] message, bool gzip = false) =>
        CallGrpcRawAsync(receiver, path, Frame(gzip ? Gzip(message) : message, gzip), gzip ? "gzip" : null);

    /// <summary>Sends <paramref name="body"/> exactly as given, for malformed framing.</summary>
    public async Task<GrpcReply> CallGrpcRawAsync(
        OtlpReceiver receiver, string path, byte[] body, string? grpcEncoding = null, string contentType = "application/grpc")
    {
        // Cleartext HTTP/2 needs prior knowledge: the request must never fall back to HTTP/1.1.
        using var request = new HttpRequestMessage(HttpMethod.Post, new Uri(receiver.GrpcEndpoint, path))
        {
            Content = new ByteArrayContent(body),
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
        };
        request.Content.Headers.ContentType = MediaTypeHeaderValue.Parse(contentType);
        request.Headers.TryAddWithoutValidation("te", "trailers");
        if (grpcEncoding is not null)
        {
            request.Headers.TryAddWithoutValidation("grpc-encoding", grpcEncoding);
        }
        using var response = await _h2c.SendAsync(request);
        Assert.Equal(HttpVersion.Version20, response.Version);
        var responseBody = await response.Content.ReadAsByteArrayAsync();

        byte[]? responseMessage = null;
        if (responseBody.Length > 0)
        {
            Assert.True(responseBody.Length >= 5, "response frame shorter than its header");
            Assert.Equal(0, responseBody[0]);
            int length = (int)BinaryPrimitives.ReadUInt32BigEndian(responseBody.AsSpan(1));
            Assert.Equal(responseBody.Length - 5, length);
            responseMessage = responseBody[5..];
        }
        string? Header(string name) =>
            response.TrailingHeaders.TryGetValues(name, out var values) || response.Headers.TryGetValues(name, out values)
                ? values.Single()
                : null;
        var status = Header("grpc-status");
        var details = Header("grpc-status-details-bin");
        return new GrpcReply(
            response.StatusCode,
            status is null ? null : int.Parse(status, System.Globalization.CultureInfo.InvariantCulture),
            Header("grpc-message") is { } message ? Uri.UnescapeDataString(message) : null,
            responseMessage,
            details is null ? null : Convert.FromBase64String(details.PadRight(details.Length + (4 - details.Length % 4) % 4, '=')));
    }

    public void Dispose()
    {
        _http.Dispose();
        _h2c.Dispose();
    }
}

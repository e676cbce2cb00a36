using System.Buffers.Binary;
using System.Globalization;
using System.IO.Compression;
using System.Net;
using System.Net.Http.Headers;
using Google.Protobuf;
using TelemetryAgent.Export.Settings;

namespace TelemetryAgent.Export.Otlp;

/// <summary>How one attempt to send an OTLP request ended.</summary>
public enum SendOutcome
{
    /// <summary>Accepted (perhaps partially: see the response).</summary>
    Success,
    /// <summary>A transient failure the OTLP specification says to retry (after <see cref="SendResult.RetryAfter"/> when given).</summary>
    Retryable,
    /// <summary>Rejected for good (bad request, unknown method...): retrying cannot help.</summary>
    Failed,
}

/// <param name="Response">The decoded <c>Export*ServiceResponse</c> bytes on success (may be empty).</param>
/// <param name="Problem">What went wrong, for the log: a status and the server's message, or the transport error.</param>
public sealed record SendResult(SendOutcome Outcome, byte[] Response, string? Problem, TimeSpan? RetryAfter = null);

/// <summary>
/// Sends one OTLP export request over OTLP/HTTP (<c>POST</c>, <c>application/x-protobuf</c>) or OTLP/gRPC (a unary call
/// framed by hand over HTTP/2, cleartext for <c>http://</c>), per an <see cref="OtlpEndpoint"/>. Classifies every
/// outcome by the OTLP specification's retry rules; never throws for what the network or the server does.
/// </summary>
public sealed class OtlpClient : IDisposable
{
    private const string ProtobufMediaType = "application/x-protobuf";

    private readonly OtlpEndpoint _endpoint;
    private readonly Uri _url;
    private readonly HttpClient _client;

    /// <param name="grpcMethod">The gRPC method path, e.g. <c>/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export</c>.</param>
    public OtlpClient(OtlpEndpoint endpoint, string grpcMethod)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        _endpoint = endpoint;
        _url = endpoint.Protocol == OtlpProtocol.Grpc
            ? new Uri(endpoint.Url, grpcMethod)
            : endpoint.Url;
        _client = new HttpClient(new SocketsHttpHandler
        {
            AutomaticDecompression = DecompressionMethods.None,
            PooledConnectionIdleTimeout = TimeSpan.FromMinutes(1),
            ConnectTimeout = endpoint.Timeout,
        })
        {
            Timeout = Timeout.InfiniteTimeSpan, // per attempt, below
        };
    }

    public OtlpEndpoint Endpoint => _endpoint;

    public async Task<SendResult> SendAsync(byte[] message, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(message);
        using var attempt = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        attempt.CancelAfter(_endpoint.Timeout);
        try
        {
            return _endpoint.Protocol == OtlpProtocol.Grpc
                ? await SendGrpcAsync(message, attempt.Token).ConfigureAwait(false)
                : await SendHttpAsync(message, attempt.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return new SendResult(SendOutcome.Retryable, [], $"no answer within {_endpoint.Timeout.TotalSeconds:0.###} s");
        }
        catch (HttpRequestException error)
        {
            // Refused, reset, DNS: transient by nature (the collector restarting).
            return new SendResult(SendOutcome.Retryable, [], Describe(error));
        }
        catch (IOException error)
        {
            return new SendResult(SendOutcome.Retryable, [], error.Message);
        }
        catch (InvalidDataException error)
        {
            return new SendResult(SendOutcome.Failed, [], $"unreadable response: {error.Message}");
        }
        catch (Exception error) when (error is not OperationCanceledException)
        {
            // Whatever else the stack throws costs this request only, never the exporter.
            return new SendResult(SendOutcome.Failed, [], $"{error.GetType().Name}: {error.Message}");
        }
    }

    private async Task<SendResult> SendHttpAsync(byte[] message, CancellationToken cancellationToken)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, _url);
        var body = new ByteArrayContent(_endpoint.Gzip ? Gzip(message) : message);
        body.Headers.ContentType = new MediaTypeHeaderValue(ProtobufMediaType);
        if (_endpoint.Gzip) body.Headers.ContentEncoding.Add("gzip");
        request.Content = body;
        AddHeaders(request);

        using var response = await _client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken).ConfigureAwait(false);
        var content = await ReadBodyAsync(response, cancellationToken).ConfigureAwait(false);
        var status = (int)response.StatusCode;
        if (response.IsSuccessStatusCode) return new SendResult(SendOutcome.Success, content, null);

        var problem = $"HTTP {status}{ServerMessage(RpcStatusReader.Message(content))}";
        return status is 429 or 502 or 503 or 504
            ? new SendResult(SendOutcome.Retryable, [], problem, RetryAfter(response))
            : new SendResult(SendOutcome.Failed, [], problem);
    }

    private async Task<SendResult> SendGrpcAsync(byte[] message, CancellationToken cancellationToken)
    {
        var payload = _endpoint.Gzip ? Gzip(message) : message;
        var frame = new byte[5 + payload.Length];
        frame[0] = _endpoint.Gzip ? (byte)1 : (byte)0;
        BinaryPrimitives.WriteUInt32BigEndian(frame.AsSpan(1), (uint)payload.Length);
        payload.CopyTo(frame, 5);

        using var request = new HttpRequestMessage(HttpMethod.Post, _url)
        {
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
        };
        var body = new ByteArrayContent(frame);
        body.Headers.ContentType = new MediaTypeHeaderValue("application/grpc");
        request.Content = body;
        request.Headers.TryAddWithoutValidation("te", "trailers");
        request.Headers.TryAddWithoutValidation("grpc-accept-encoding", "gzip");
        if (_endpoint.Gzip) request.Headers.TryAddWithoutValidation("grpc-encoding", "gzip");
        request.Headers.TryAddWithoutValidation("grpc-timeout",
            ((long)_endpoint.Timeout.TotalMilliseconds).ToString(CultureInfo.InvariantCulture) + "m");
        AddHeaders(request);

        using var response = await _client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken).ConfigureAwait(false);
        var content = await ReadBodyAsync(response, cancellationToken).ConfigureAwait(false);
        if (response.StatusCode != HttpStatusCode.OK)
        {
            // Not a gRPC answer (a proxy's): the gRPC HTTP mapping makes 429, 502, 503 and 504 UNAVAILABLE.
            var status = (int)response.StatusCode;
            var problem = $"HTTP {status} from a gRPC endpoint";
            return status is 429 or 502 or 503 or 504
                ? new SendResult(SendOutcome.Retryable, [], problem, RetryAfter(response))
                : new SendResult(SendOutcome.Failed, [], problem);
        }

        // A trailers-only answer carries the status in the headers.
        var grpcStatus = Header(response.TrailingHeaders, "grpc-status") ?? Header(response.Headers, "grpc-status");
        if (grpcStatus is null || !int.TryParse(grpcStatus, NumberStyles.None, CultureInfo.InvariantCulture, out var code))
        {
            return new SendResult(SendOutcome.Retryable, [], "gRPC answer without grpc-status (connection cut?)");
        }
        if (code == 0) return new SendResult(SendOutcome.Success, UnframeResponse(content, response), null);

        var grpcMessage = Header(response.TrailingHeaders, "grpc-message") ?? Header(response.Headers, "grpc-message");
        var details = Header(response.TrailingHeaders, "grpc-status-details-bin") ?? Header(response.Headers, "grpc-status-details-bin");
        var retryDelay = details is null ? null : RpcStatusReader.RetryDelay(DecodeBase64(details));
        var text = $"gRPC status {code} ({GrpcCodeName(code)}){ServerMessage(grpcMessage is null ? null : Uri.UnescapeDataString(grpcMessage))}";
        // OTLP/gRPC: these are transient; RESOURCE_EXHAUSTED only when the server says when to come back.
        var retryable = code is 1 or 4 or 10 or 11 or 14 or 15 || (code == 8 && retryDelay is not null);
        return new SendResult(retryable ? SendOutcome.Retryable : SendOutcome.Failed, [], text, retryDelay);
    }

    public void Dispose() => _client.Dispose();

    private void AddHeaders(HttpRequestMessage request)
    {
        foreach (var (name, value) in _endpoint.Headers)
        {
            // gRPC metadata keys are lowercase; HTTP does not care.
            request.Headers.TryAddWithoutValidation(_endpoint.Protocol == OtlpProtocol.Grpc ? name.ToLowerInvariant() : name, value);
        }
    }

    /// <summary>An answer is small: a misbehaving server must not fill memory, compressed or not.</summary>
    private const int ResponseLimit = 4 << 20;

    /// <summary>The response body, at most <see cref="ResponseLimit"/> bytes.</summary>
    private static async Task<byte[]> ReadBodyAsync(HttpResponseMessage response, CancellationToken cancellationToken)
    {
        await using var stream = await response.Content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false);
        using var buffer = new MemoryStream();
        var chunk = new byte[16 * 1024];
        int read;
        while ((read = await stream.ReadAsync(chunk, cancellationToken).ConfigureAwait(false)) > 0)
        {
            if (buffer.Length + read > ResponseLimit) throw new InvalidDataException($"response larger than {ResponseLimit} bytes");
            buffer.Write(chunk, 0, read);
        }
        var bytes = buffer.ToArray();
        // OTLP/HTTP servers may gzip their answer.
        return response.Content.Headers.ContentEncoding.Contains("gzip") ? Gunzip(bytes) : bytes;
    }

    /// <summary>The message of a gRPC response frame (empty when there is none).</summary>
    private static byte[] UnframeResponse(byte[] content, HttpResponseMessage response)
    {
        if (content.Length < 5) return [];
        var length = BinaryPrimitives.ReadUInt32BigEndian(content.AsSpan(1));
        if (length > content.Length - 5) throw new InvalidDataException("truncated gRPC response frame");
        var message = content.AsSpan(5, (int)length).ToArray();
        return content[0] == 1 && Header(response.Headers, "grpc-encoding") == "gzip" ? Gunzip(message) : message;
    }

    private static TimeSpan? RetryAfter(HttpResponseMessage response)
    {
        var retryAfter = response.Headers.RetryAfter;
        if (retryAfter?.Delta is { } delta) return delta;
        if (retryAfter?.Date is { } date) return date - DateTimeOffset.UtcNow is var wait && wait > TimeSpan.Zero ? wait : TimeSpan.Zero;
        return null;
    }

    private static string? Header(HttpHeaders headers, string name)
        => headers.TryGetValues(name, out var values) ? values.FirstOrDefault() : null;

    private static string ServerMessage(string? message) => string.IsNullOrEmpty(message) ? "" : $": {message}";

    private static string Describe(HttpRequestException error)
        => error.InnerException is { } inner ? $"{error.Message} ({inner.Message})" : error.Message;

    private static byte[] DecodeBase64(string value)
    {
        // grpc-status-details-bin is base64 that may lack its padding.
        var padded = value.Trim() + new string('=', (4 - value.Trim().Length % 4) % 4);
        try
        {
            return Convert.FromBase64String(padded);
        }
        catch (FormatException)
        {
            return [];
        }
    }

    private static string GrpcCodeName(int code) => code switch
    {
        1 => "CANCELLED", 2 => "UNKNOWN", 3 => "INVALID_ARGUMENT", 4 => "DEADLINE_EXCEEDED", 5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS", 7 => "PERMISSION_DENIED", 8 => "RESOURCE_EXHAUSTED", 9 => "FAILED_PRECONDITION",
        10 => "ABORTED", 11 => "OUT_OF_RANGE", 12 => "UNIMPLEMENTED", 13 => "INTERNAL", 14 => "UNAVAILABLE",
        15 => "DATA_LOSS", 16 => "UNAUTHENTICATED", _ => "?",
    };

    private static byte[] Gzip(byte[] data)
    {
        using var buffer = new MemoryStream();
        using (var gzip = new GZipStream(buffer, CompressionLevel.Fastest, leaveOpen: true)) gzip.Write(data);
        return buffer.ToArray();
    }

    private static byte[] Gunzip(byte[] data)
    {
        using var input = new GZipStream(new MemoryStream(data), CompressionMode.Decompress);
        using var output = new MemoryStream();
        var chunk = new byte[16 * 1024];
        int read;
        while ((read = input.Read(chunk)) > 0)
        {
            if (output.Length + read > ResponseLimit) throw new InvalidDataException($"decompressed response larger than {ResponseLimit} bytes");
            output.Write(chunk, 0, read);
        }
        return output.ToArray();
    }
}

/// <summary>
/// Reads the two things a client needs from a <c>google.rpc.Status</c> (message = 2, details = 3 as <c>Any</c>): the
/// message, and the delay of a <c>google.rpc.RetryInfo</c> detail (retry_delay = 1, a <c>Duration</c>). Malformed
/// bytes give nulls.
/// </summary>
internal static class RpcStatusReader
{
    private const string RetryInfoTypeUrl = "type.googleapis.com/google.rpc.RetryInfo";

    public static string? Message(byte[] status)
    {
        try
        {
            var input = new CodedInputStream(status);
            uint tag;
            while ((tag = input.ReadTag()) != 0)
            {
                if (tag == WireTag(2, WireFormat.WireType.LengthDelimited)) return input.ReadString();
                input.SkipLastField();
            }
        }
        catch (InvalidProtocolBufferException)
        {
        }
        return null;
    }

    public static TimeSpan? RetryDelay(byte[] status)
    {
        try
        {
            var input = new CodedInputStream(status);
            uint tag;
            while ((tag = input.ReadTag()) != 0)
            {
                if (tag != WireTag(3, WireFormat.WireType.LengthDelimited))
                {
                    input.SkipLastField();
                    continue;
                }
                var any = new Google.Protobuf.WellKnownTypes.Any();
                input.ReadMessage(any);
                if (any.TypeUrl != RetryInfoTypeUrl) continue;
                var retryInfo = new CodedInputStream(any.Value.ToByteArray());
                uint field;
                while ((field = retryInfo.ReadTag()) != 0)
                {
                    if (field != WireTag(1, WireFormat.WireType.LengthDelimited))
                    {
                        retryInfo.SkipLastField();
                        continue;
                    }
                    var duration = new Google.Protobuf.WellKnownTypes.Duration();
                    retryInfo.ReadMessage(duration);
                    var delay = duration.ToTimeSpan();
                    return delay < TimeSpan.Zero ? TimeSpan.Zero : delay;
                }
            }
        }
        catch (Exception error) when (error is InvalidProtocolBufferException or InvalidOperationException or ArgumentException)
        {
        }
        return null;
    }

    private static uint WireTag(int field, WireFormat.WireType type) => WireFormat.MakeTag(field, type);
}

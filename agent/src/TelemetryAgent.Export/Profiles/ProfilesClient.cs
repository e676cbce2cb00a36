using System.IO.Compression;
using System.Net;
using System.Net.Http.Headers;
using Google.Protobuf;
using Google.Rpc;
using Grpc.Core;
using Grpc.Net.Client;
using OpenTelemetry.Proto.Collector.Profiles.V1Development;
using TelemetryAgent.Export.Settings;

namespace TelemetryAgent.Export.Profiles;

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

/// <param name="Response">The server's answer on success (it may report a partial success).</param>
/// <param name="Problem">What went wrong, for the log: a status and the server's message, or the transport error.</param>
public sealed record SendResult(SendOutcome Outcome, ExportProfilesServiceResponse? Response, string? Problem, TimeSpan? RetryAfter = null);

/// <summary>
/// Sends one OTLP profiles export request over OTLP/HTTP (<c>POST</c>, <c>application/x-protobuf</c>) or OTLP/gRPC (the
/// generated <c>ProfilesService</c> client on Grpc.Net.Client), per an <see cref="OtlpEndpoint"/>. Classifies every
/// outcome by the OTLP specification's retry rules; never throws for what the network or the server does.
/// </summary>
public sealed class ProfilesClient : IDisposable
{
    private const string ProtobufMediaType = "application/x-protobuf";

    /// <summary>An answer is small: a misbehaving server must not fill memory, compressed or not.</summary>
    private const int ResponseLimit = 4 << 20;

    private readonly OtlpEndpoint _endpoint;
    private readonly TimeProvider _time;
    private readonly HttpClient? _http;
    private readonly GrpcChannel? _channel;
    private readonly ProfilesService.ProfilesServiceClient? _grpc;

    /// <param name="time">The clock that a server's <c>Retry-After</c> date is read against (default: the system's).</param>
    public ProfilesClient(OtlpEndpoint endpoint, TimeProvider? time = null)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        _endpoint = endpoint;
        _time = time ?? TimeProvider.System;
        var handler = endpoint.CreateHandler();
        handler.AutomaticDecompression = DecompressionMethods.None;
        handler.PooledConnectionIdleTimeout = TimeSpan.FromMinutes(1);
        handler.ConnectTimeout = endpoint.Timeout;
        if (endpoint.Protocol == OtlpProtocol.Grpc)
        {
            _channel = GrpcChannel.ForAddress(endpoint.Url, new GrpcChannelOptions
            {
                HttpHandler = handler,
                MaxReceiveMessageSize = ResponseLimit,
                // Our retries follow the OTLP specification (ProfilesExporter); the channel makes none of its own.
                MaxRetryAttempts = 0,
            });
            _grpc = new ProfilesService.ProfilesServiceClient(_channel);
        }
        else
        {
            _http = new HttpClient(handler) { Timeout = Timeout.InfiniteTimeSpan }; // per attempt, below
        }
    }

    public OtlpEndpoint Endpoint => _endpoint;

    public async Task<SendResult> SendAsync(ExportProfilesServiceRequest request, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        using var attempt = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        attempt.CancelAfter(_endpoint.Timeout);
        try
        {
            return _grpc is not null
                ? await SendGrpcAsync(_grpc, request, cancellationToken).ConfigureAwait(false)
                : await SendHttpAsync(_http!, request, attempt.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return new SendResult(SendOutcome.Retryable, null, $"no answer within {_endpoint.Timeout.TotalSeconds:0.###} s");
        }
        catch (HttpRequestException error)
        {
            // Refused, reset, DNS: transient by nature (the collector restarting).
            return new SendResult(SendOutcome.Retryable, null, Describe(error));
        }
        catch (IOException error)
        {
            return new SendResult(SendOutcome.Retryable, null, error.Message);
        }
        catch (Exception error) when (error is InvalidDataException or InvalidProtocolBufferException)
        {
            return new SendResult(SendOutcome.Failed, null, $"unreadable response: {error.Message}");
        }
        catch (Exception error) when (error is not OperationCanceledException)
        {
            // Whatever else the stack throws costs this request only, never the exporter.
            return new SendResult(SendOutcome.Failed, null, $"{error.GetType().Name}: {error.Message}");
        }
    }

    private async Task<SendResult> SendHttpAsync(HttpClient client, ExportProfilesServiceRequest message, CancellationToken cancellationToken)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, _endpoint.Url);
        var bytes = message.ToByteArray();
        var body = new ByteArrayContent(_endpoint.Gzip ? Gzip(bytes) : bytes);
        body.Headers.ContentType = new MediaTypeHeaderValue(ProtobufMediaType);
        if (_endpoint.Gzip) body.Headers.ContentEncoding.Add("gzip");
        request.Content = body;
        foreach (var (name, value) in _endpoint.Headers) request.Headers.TryAddWithoutValidation(name, value);

        using var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken).ConfigureAwait(false);
        var content = await ReadBodyAsync(response, cancellationToken).ConfigureAwait(false);
        var status = (int)response.StatusCode;
        if (response.IsSuccessStatusCode) return new SendResult(SendOutcome.Success, ExportProfilesServiceResponse.Parser.ParseFrom(content), null);

        var problem = $"HTTP {status}{ServerMessage(StatusMessage(content))}";
        // OTLP/HTTP: only these are transient.
        return status is 429 or 502 or 503 or 504
            ? new SendResult(SendOutcome.Retryable, null, problem, RetryAfter(response, _time.GetUtcNow()))
            : new SendResult(SendOutcome.Failed, null, problem);
    }

    private async Task<SendResult> SendGrpcAsync(ProfilesService.ProfilesServiceClient client, ExportProfilesServiceRequest request,
        CancellationToken cancellationToken)
    {
        var headers = new Metadata();
        // gRPC metadata keys are lowercase.
        foreach (var (name, value) in _endpoint.Headers) headers.Add(name.ToLowerInvariant(), value);
        if (_endpoint.Gzip) headers.Add("grpc-internal-encoding-request", "gzip"); // Grpc.Net.Client compresses the message
        try
        {
            var response = await client.ExportAsync(request, new CallOptions(headers, DateTime.UtcNow + _endpoint.Timeout, cancellationToken))
                .ConfigureAwait(false);
            return new SendResult(SendOutcome.Success, response, null);
        }
        catch (RpcException) when (cancellationToken.IsCancellationRequested)
        {
            throw new OperationCanceledException(cancellationToken);
        }
        catch (RpcException error)
        {
            var retryDelay = error.GetRpcStatus()?.GetDetail<RetryInfo>()?.RetryDelay?.ToTimeSpan() is { } delay
                ? (delay < TimeSpan.Zero ? TimeSpan.Zero : delay)
                : (TimeSpan?)null;
            var code = error.StatusCode;
            // No answer at all (refused, reset) is UNAVAILABLE with the transport's error attached.
            var cause = error.Status.DebugException is { } debug ? $" ({Innermost(debug).Message})" : "";
            var problem = $"gRPC status {(int)code} ({CodeName(code)}){ServerMessage(error.Status.Detail)}{cause}";
            // OTLP/gRPC: these are transient; RESOURCE_EXHAUSTED only when the server says when to come back.
            var retryable = code is StatusCode.Cancelled or StatusCode.DeadlineExceeded or StatusCode.Aborted or StatusCode.OutOfRange
                                or StatusCode.Unavailable or StatusCode.DataLoss
                            || (code == StatusCode.ResourceExhausted && retryDelay is not null);
            return new SendResult(retryable ? SendOutcome.Retryable : SendOutcome.Failed, null, problem, retryDelay);
        }
    }

    public void Dispose()
    {
        _http?.Dispose();
        _channel?.Dispose();
    }

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

    /// <summary>The message of an OTLP/HTTP error body, a <c>google.rpc.Status</c>; null when it is not one.</summary>
    private static string? StatusMessage(byte[] body)
    {
        try
        {
            return Google.Rpc.Status.Parser.ParseFrom(body).Message;
        }
        catch (InvalidProtocolBufferException)
        {
            return null;
        }
    }

    /// <summary>The server's delay: <c>Retry-After</c> in seconds, or its date less <paramref name="now"/>.</summary>
    private static TimeSpan? RetryAfter(HttpResponseMessage response, DateTimeOffset now)
    {
        var retryAfter = response.Headers.RetryAfter;
        if (retryAfter?.Delta is { } delta) return delta;
        if (retryAfter?.Date is { } date) return date - now is var wait && wait > TimeSpan.Zero ? wait : TimeSpan.Zero;
        return null;
    }

    private static string ServerMessage(string? message) => string.IsNullOrEmpty(message) ? "" : $": {message}";

    private static Exception Innermost(Exception error) => error.InnerException is { } inner ? Innermost(inner) : error;

    private static string Describe(HttpRequestException error)
        => error.InnerException is { } inner ? $"{error.Message} ({inner.Message})" : error.Message;

    /// <summary>The specification's name of a status code: <c>RESOURCE_EXHAUSTED</c> for <c>ResourceExhausted</c>.</summary>
    private static string CodeName(StatusCode code)
        => string.Concat(code.ToString().Select((c, i) => i > 0 && char.IsUpper(c) ? $"_{c}" : c.ToString())).ToUpperInvariant();

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

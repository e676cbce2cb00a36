using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;

namespace TelemetryAgent.OtlpReceiver.Internal;

/// <summary>
/// Around every request of the gRPC port: counts the bytes of its body (for <see cref="ReceivedRequest{T}.WireBytes"/>)
/// and records how the gRPC server answered it, whoever decided the answer: our services, or the server itself (an
/// unknown method, a message it could not read or that is too large).
/// </summary>
internal static class GrpcAnswers
{
    public static async Task RecordAsync(HttpContext context, RequestDelegate next, ReceiverState state, Action<ReceiverAttempt> record)
    {
        var body = new CountingStream(context.Request.Body);
        context.Request.Body = body;
        context.Items[ReceiverState.WireBytesItem] = (Func<long>)(() => body.BytesRead);
        await next(context);

        var path = context.Request.Path.Value ?? "";
        var route = state.All.FirstOrDefault(candidate => candidate.GrpcPath == path);
        // A trailers-only answer (an error decided before any message) carries its status in the headers.
        var trailers = context.Features.Get<IHttpResponseTrailersFeature>()?.Trailers;
        string? Value(string name) =>
            trailers is not null && trailers.TryGetValue(name, out var trailer) ? trailer.ToString()
            : context.Response.Headers.TryGetValue(name, out var header) ? header.ToString()
            : null;
        int? grpcStatus = int.TryParse(Value("grpc-status"), out var code) ? code : null;
        var message = Value("grpc-message") is { } encoded ? Uri.UnescapeDataString(encoded) : null;
        var error = grpcStatus switch
        {
            0 => null,
            null => $"HTTP {context.Response.StatusCode} without a gRPC status",
            _ => $"grpc-status {grpcStatus}: {message}",
        };
        record(new ReceiverAttempt(route?.Signal, OtlpTransport.Grpc, path, context.Response.StatusCode, grpcStatus, error, state.Time.GetUtcNow()));
    }

    private sealed class CountingStream(Stream inner) : Stream
    {
        private long _read;

        public long BytesRead => Interlocked.Read(ref _read);
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override int Read(byte[] buffer, int offset, int count) => Count(inner.Read(buffer, offset, count));

        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
            Count(await inner.ReadAsync(buffer, cancellationToken).ConfigureAwait(false));

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        private int Count(int read)
        {
            Interlocked.Add(ref _read, read);
            return read;
        }

        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}

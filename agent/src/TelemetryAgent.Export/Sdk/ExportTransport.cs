using System.Collections.Concurrent;
using TelemetryAgent.Export.Settings;

namespace TelemetryAgent.Export.Sdk;

/// <summary>
/// The HTTP transport every SDK instance of the agent sends through: one connection pool per signal, shared by all
/// Python processes' exporters (a process does not cost a connection of its own), counting each request, retries
/// included, and each failure by signal and reason: an HTTP status, a gRPC status, or the exception's type when no
/// answer came. Those counts are the agent's "export requests" and "export failures".
/// </summary>
internal sealed class ExportTransport : IDisposable
{
    private readonly ConcurrentDictionary<OtlpSignal, long> _requests = new();
    private readonly ConcurrentDictionary<(OtlpSignal Signal, string Reason), long> _failures = new();
    private readonly ConcurrentDictionary<OtlpSignal, HttpMessageHandler> _handlers = new();

    public IReadOnlyDictionary<OtlpSignal, long> Requests => _requests;

    public IReadOnlyDictionary<(OtlpSignal Signal, string Reason), long> Failures => _failures;

    /// <summary>A client for one exporter: its own headers and timeout over the signal's shared pool.</summary>
    public HttpClient CreateClient(OtlpEndpoint endpoint)
    {
        var handler = _handlers.GetOrAdd(endpoint.Signal, signal => new CountingHandler(this, signal)
        {
            // Connections are renewed now and then so that a collector behind a load balancer gets its share.
            InnerHandler = new SocketsHttpHandler { PooledConnectionLifetime = TimeSpan.FromMinutes(5) },
        });
        var client = new HttpClient(handler, disposeHandler: false) { Timeout = endpoint.Timeout };
        if (endpoint.Protocol == OtlpProtocol.Grpc)
        {
            // gRPC is HTTP/2 only; over http:// that means h2c with prior knowledge.
            client.DefaultRequestVersion = System.Net.HttpVersion.Version20;
            client.DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact;
        }
        // Header values as OtlpSettings resolved them: nothing is encoded a second time.
        foreach (var (name, value) in endpoint.Headers) client.DefaultRequestHeaders.TryAddWithoutValidation(name, value);
        return client;
    }

    /// <summary>Call only when no exporter sends any more.</summary>
    public void Dispose()
    {
        foreach (var handler in _handlers.Values) handler.Dispose();
    }

    private void CountRequest(OtlpSignal signal) => _requests.AddOrUpdate(signal, 1, static (_, n) => n + 1);

    private void CountFailure(OtlpSignal signal, string reason) => _failures.AddOrUpdate((signal, reason), 1, static (_, n) => n + 1);

    /// <summary>Counts each request and its failure; never changes what the exporter sees.</summary>
    private sealed class CountingHandler(ExportTransport transport, OtlpSignal signal) : DelegatingHandler
    {
        protected override HttpResponseMessage Send(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            transport.CountRequest(signal);
            try
            {
                return Observe(base.Send(request, cancellationToken));
            }
            catch (Exception e)
            {
                transport.CountFailure(signal, e.GetType().Name);
                throw;
            }
        }

        protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            transport.CountRequest(signal);
            try
            {
                return Observe(await base.SendAsync(request, cancellationToken).ConfigureAwait(false));
            }
            catch (Exception e)
            {
                transport.CountFailure(signal, e.GetType().Name);
                throw;
            }
        }

        private HttpResponseMessage Observe(HttpResponseMessage response)
        {
            if (!response.IsSuccessStatusCode)
            {
                transport.CountFailure(signal, ((int)response.StatusCode).ToString(System.Globalization.CultureInfo.InvariantCulture));
            }
            // A gRPC error answered at once carries its status in the headers ("trailers-only") ...
            else if (GrpcStatus(response.Headers) is { } status)
            {
                if (status != "0") transport.CountFailure(signal, $"grpc-status {status}");
            }
            // ... otherwise in the trailers, which exist once the exporter has read the body.
            else if (response.Version.Major >= 2 && response.Content is { } content)
            {
                var watched = new StreamContent(new TrailerWatchingStream(content.ReadAsStream(), response, status =>
                {
                    if (status != "0") transport.CountFailure(signal, $"grpc-status {status}");
                }));
                foreach (var header in content.Headers) watched.Headers.TryAddWithoutValidation(header.Key, header.Value);
                response.Content = watched;
            }
            return response;
        }
    }

    private static string? GrpcStatus(System.Net.Http.Headers.HttpHeaders headers)
        => headers.TryGetValues("grpc-status", out var values) ? values.FirstOrDefault() : null;

    /// <summary>Passes a gRPC response body through; at its end, hands the <c>grpc-status</c> trailer on once.</summary>
    private sealed class TrailerWatchingStream(Stream inner, HttpResponseMessage response, Action<string> onStatus) : Stream
    {
        private int _reported;

        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override int Read(byte[] buffer, int offset, int count) => Observe(inner.Read(buffer, offset, count));

        public override int Read(Span<byte> buffer) => Observe(inner.Read(buffer));

        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
            => Observe(await inner.ReadAsync(buffer, cancellationToken).ConfigureAwait(false));

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken)
            => ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        private int Observe(int read)
        {
            if (read == 0 && Interlocked.Exchange(ref _reported, 1) == 0 && GrpcStatus(response.TrailingHeaders) is { } status)
            {
                onStatus(status);
            }
            return read;
        }

        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        protected override void Dispose(bool disposing)
        {
            if (disposing) inner.Dispose();
            base.Dispose(disposing);
        }
    }
}

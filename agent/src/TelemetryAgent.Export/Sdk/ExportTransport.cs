using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using TelemetryAgent.Export.Settings;

namespace TelemetryAgent.Export.Sdk;

/// <summary>
/// The HTTP transport every SDK instance of the agent sends through: one connection pool per signal, shared by all
/// Python processes' exporters (a process does not cost a connection of its own), counting each request, retries
/// included, and each failure by signal and reason: an HTTP status, a gRPC status, or the exception's type when no
/// answer came. Those counts are the agent's "export requests" and "export failures".
/// </summary>
/// <remarks>
/// A gRPC request that gets no answer (a connection refused, reset mid-request or cut while the answer was read) is
/// answered here with <c>UNAVAILABLE</c>, as a gRPC client library answers it: the SDK's own gRPC client (1.21.0)
/// retries only a refused or reset connection reported by the socket itself, and gave up at once on a connection
/// reset under HTTP/2, losing the export.
/// </remarks>
internal sealed class ExportTransport : IDisposable
{
    private readonly ConcurrentDictionary<OtlpSignal, long> _requests = new();
    private readonly ConcurrentDictionary<(OtlpSignal Signal, string Reason), long> _failures = new();
    private readonly ConcurrentDictionary<OtlpSignal, HttpMessageHandler> _pools = new();

    public IReadOnlyDictionary<OtlpSignal, long> Requests => _requests;

    public IReadOnlyDictionary<(OtlpSignal Signal, string Reason), long> Failures => _failures;

    /// <summary>
    /// A client for one exporter: its own headers and timeout over the signal's shared pool; what became of its
    /// requests goes to <paramref name="delivery"/> too.
    /// </summary>
    public HttpClient CreateClient(OtlpEndpoint endpoint, DeliveryTracker? delivery = null)
    {
        var pool = _pools.GetOrAdd(endpoint.Signal, _ =>
        {
            var handler = endpoint.CreateHandler();
            // Connections are renewed now and then so that a collector behind a load balancer gets its share.
            handler.PooledConnectionLifetime = TimeSpan.FromMinutes(5);
            return handler;
        });
        var handler = new ObservingHandler(this, endpoint, delivery) { InnerHandler = pool };
        // The pool outlives the client: the transport disposes it.
        var client = new HttpClient(handler, disposeHandler: false) { Timeout = endpoint.Timeout };
        if (endpoint.Protocol == OtlpProtocol.Grpc)
        {
            // gRPC is HTTP/2 only; over http:// that means h2c with prior knowledge.
            client.DefaultRequestVersion = HttpVersion.Version20;
            client.DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact;
        }
        // Header values as OtlpSettings resolved them: nothing is encoded a second time.
        foreach (var (name, value) in endpoint.Headers) client.DefaultRequestHeaders.TryAddWithoutValidation(name, value);
        return client;
    }

    /// <summary>Call only when no exporter sends any more.</summary>
    public void Dispose()
    {
        foreach (var pool in _pools.Values) pool.Dispose();
    }

    private void CountRequest(OtlpSignal signal) => _requests.AddOrUpdate(signal, 1, static (_, n) => n + 1);

    private void CountFailure(OtlpSignal signal, string reason) => _failures.AddOrUpdate((signal, reason), 1, static (_, n) => n + 1);

    /// <summary>
    /// Counts each request and its failure and tells the exporter's <see cref="DeliveryTracker"/>; a gRPC request that got
    /// no answer becomes an <c>UNAVAILABLE</c> answer. Never changes an answer that came.
    /// </summary>
    private sealed class ObservingHandler(ExportTransport transport, OtlpEndpoint endpoint, DeliveryTracker? delivery) : DelegatingHandler
    {
        private readonly OtlpSignal _signal = endpoint.Signal;
        private readonly bool _grpc = endpoint.Protocol == OtlpProtocol.Grpc;

        // The SDK sends OTLP/HTTP synchronously where it can; gRPC (HTTP/2) always asynchronously.
        protected override HttpResponseMessage Send(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            transport.CountRequest(_signal);
            try
            {
                return Observe(base.Send(request, cancellationToken));
            }
            catch (Exception error)
            {
                Failed(error.GetType().Name);
                throw;
            }
        }

        protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            transport.CountRequest(_signal);
            HttpResponseMessage? response = null;
            try
            {
                response = await base.SendAsync(request, cancellationToken).ConfigureAwait(false);
                // A gRPC status comes in the trailers, which exist once the body is read: read it here, where a connection
                // cut meanwhile is still this request's failure.
                if (_grpc) await response.Content.LoadIntoBufferAsync(cancellationToken).ConfigureAwait(false);
                return Observe(response);
            }
            catch (Exception error) when (_grpc && error is HttpRequestException or IOException && !cancellationToken.IsCancellationRequested)
            {
                response?.Dispose();
                Failed(error.GetType().Name);
                return Unavailable(request, error);
            }
            catch (Exception error)
            {
                response?.Dispose();
                Failed(error.GetType().Name);
                throw;
            }
        }

        private HttpResponseMessage Observe(HttpResponseMessage response)
        {
            var failure = !response.IsSuccessStatusCode ? ((int)response.StatusCode).ToString(CultureInfo.InvariantCulture)
                // A gRPC error answered at once carries its status in the headers ("trailers-only"), any other in the trailers.
                : _grpc && (GrpcStatus(response.TrailingHeaders) ?? GrpcStatus(response.Headers)) is { } status && status != "0" ? $"grpc-status {status}"
                : null;
            if (failure is null)
            {
                delivery?.Record(_signal, accepted: true);
            }
            else
            {
                Failed(failure);
            }
            return response;
        }

        private void Failed(string reason)
        {
            transport.CountFailure(_signal, reason);
            delivery?.Record(_signal, accepted: false);
        }

        /// <summary>What the gRPC specification makes of a call that got no answer: status UNAVAILABLE (14), trailers-only.</summary>
        private static HttpResponseMessage Unavailable(HttpRequestMessage request, Exception error)
        {
            var response = new HttpResponseMessage(HttpStatusCode.OK)
            {
                RequestMessage = request,
                Version = HttpVersion.Version20,
                Content = new ByteArrayContent([]),
            };
            response.Content.Headers.ContentType = new MediaTypeHeaderValue("application/grpc");
            response.Headers.TryAddWithoutValidation("grpc-status", "14");
            var message = error.InnerException is { } inner ? $"{error.Message} ({inner.Message})" : error.Message;
            response.Headers.TryAddWithoutValidation("grpc-message", Uri.EscapeDataString(message));
            return response;
        }

        private static string? GrpcStatus(HttpHeaders headers)
            => headers.TryGetValues("grpc-status", out var values) ? values.FirstOrDefault() : null;
    }
}

/// <summary>
/// What became of the export requests of one SDK instance: per signal, whether its latest request since
/// <see cref="Reset"/> was accepted. The SDK's exporters retry a request until it is accepted or they give up, so the
/// latest attempt after a flush says whether that flush's data was delivered; the SDK's own answer does not (its
/// shutdown reports success when the export it made on the way failed, and so does a flush of logs).
/// </summary>
internal sealed class DeliveryTracker
{
    // Per signal: 0 nothing sent since reset, 1 the latest request accepted, 2 the latest one failed.
    private readonly int[] _latest = new int[Enum.GetValues<OtlpSignal>().Length];

    public void Reset(OtlpSignal signal) => Volatile.Write(ref _latest[(int)signal], 0);

    /// <summary>Null when nothing was sent since <see cref="Reset"/>, else whether the latest request was accepted.</summary>
    public bool? Delivered(OtlpSignal signal) => Volatile.Read(ref _latest[(int)signal]) switch
    {
        0 => null,
        1 => true,
        _ => false,
    };

    internal void Record(OtlpSignal signal, bool accepted) => Volatile.Write(ref _latest[(int)signal], accepted ? 1 : 2);
}

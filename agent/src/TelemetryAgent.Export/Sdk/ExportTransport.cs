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
            // A gRPC error answered at once carries its status in the headers ("trailers-only"); later ones are not seen here.
            else if (response.Headers.TryGetValues("grpc-status", out var status) && status.FirstOrDefault() is { } code && code != "0")
            {
                transport.CountFailure(signal, $"grpc-status {code}");
            }
            return response;
        }
    }
}

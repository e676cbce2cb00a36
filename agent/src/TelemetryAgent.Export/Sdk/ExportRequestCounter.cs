using System.Collections.Concurrent;
using System.Net;
using TelemetryAgent.Export.Settings;

namespace TelemetryAgent.Export.Sdk;

/// <summary>
/// Counts the OTLP requests the SDK's exporters make, retries included, and those that failed by signal and reason
/// (an HTTP status, a gRPC status, or the exception's type when no answer came): the agent's "export failures".
/// </summary>
public sealed class ExportRequestCounter
{
    private readonly ConcurrentDictionary<OtlpSignal, long> _requests = new();
    private readonly ConcurrentDictionary<(OtlpSignal Signal, string Reason), long> _failures = new();

    public void CountRequest(OtlpSignal signal) => _requests.AddOrUpdate(signal, 1, static (_, n) => n + 1);

    public void CountFailure(OtlpSignal signal, string reason) => _failures.AddOrUpdate((signal, reason), 1, static (_, n) => n + 1);

    public IReadOnlyDictionary<OtlpSignal, long> Requests => _requests;

    public IReadOnlyDictionary<(OtlpSignal Signal, string Reason), long> Failures => _failures;

    public long FailureCount => _failures.Values.Sum();
}

/// <summary>Counts each request and its failure; never changes what the exporter sees.</summary>
internal sealed class CountingHandler(ExportRequestCounter counter, OtlpSignal signal) : DelegatingHandler
{
    protected override HttpResponseMessage Send(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        counter.CountRequest(signal);
        try
        {
            return Observe(base.Send(request, cancellationToken));
        }
        catch (Exception e)
        {
            counter.CountFailure(signal, e.GetType().Name);
            throw;
        }
    }

    protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        counter.CountRequest(signal);
        try
        {
            return Observe(await base.SendAsync(request, cancellationToken).ConfigureAwait(false));
        }
        catch (Exception e)
        {
            counter.CountFailure(signal, e.GetType().Name);
            throw;
        }
    }

    private HttpResponseMessage Observe(HttpResponseMessage response)
    {
        if (!response.IsSuccessStatusCode)
        {
            counter.CountFailure(signal, ((int)response.StatusCode).ToString(System.Globalization.CultureInfo.InvariantCulture));
        }
        // A gRPC error answered at once carries its status in the headers ("trailers-only"); later ones are not seen here.
        else if (response.Headers.TryGetValues("grpc-status", out var status) && status.FirstOrDefault() is { } code && code != "0")
        {
            counter.CountFailure(signal, $"grpc-status {code}");
        }
        return response;
    }
}

using System.Diagnostics.Metrics;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using OpenTelemetry;
using OpenTelemetry.Exporter;
using OpenTelemetry.Logs;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;

namespace TelemetryAgent.OtlpReceiver.Tests;

/// <summary>
/// The real OpenTelemetry .NET SDK exporting metrics and logs to a receiver: the independent OTLP
/// implementation our protos and receiver must agree with. Configuration goes through a private
/// IConfiguration (never process environment variables) so tests stay independent.
/// </summary>
internal sealed class SdkPipeline : IDisposable
{
    public const string ServiceName = "otlp-receiver-tests";
    private const string MeterNamePrefix = "TelemetryAgent.OtlpReceiver.Tests.";

    private readonly OpenTelemetrySdk _sdk;
    private readonly FailureCounter _failures;

    private SdkPipeline(OpenTelemetrySdk sdk, Meter meter, FailureCounter failures)
    {
        _sdk = sdk;
        Meter = meter;
        _failures = failures;
    }

    /// <summary>Requests that got no answer (refused, reset) or a failing status, retries included.</summary>
    public int FailedAttempts => _failures.Count;

    public Meter Meter { get; }

    public ILoggerFactory LoggerFactory => _sdk.GetLoggerFactory();

    public static SdkPipeline Create(OtlpReceiver receiver, OtlpExportProtocol protocol, bool gzip = false, bool retry = false) =>
        Create(receiver.HttpEndpoint, receiver.GrpcEndpoint, protocol, gzip, retry);

    /// <param name="httpEndpoint">OTLP/HTTP base address.</param>
    /// <param name="grpcEndpoint">OTLP/gRPC address.</param>
    /// <param name="protocol">gRPC or HTTP/protobuf.</param>
    /// <param name="gzip">Ask the exporter to gzip its requests.</param>
    /// <param name="retry">Enable the exporter's in-memory retry of transient failures.</param>
    public static SdkPipeline Create(Uri httpEndpoint, Uri grpcEndpoint, OtlpExportProtocol protocol, bool gzip = false, bool retry = false)
    {
        var settings = new Dictionary<string, string?>();
        if (gzip)
        {
            settings["OTEL_EXPORTER_OTLP_COMPRESSION"] = "gzip";
        }
        if (retry)
        {
            settings["OTEL_DOTNET_EXPERIMENTAL_OTLP_RETRY"] = "in_memory";
        }
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(settings).Build();
        var failures = new FailureCounter();

        void Configure(OtlpExporterOptions options, string httpPath)
        {
            options.Protocol = protocol;
            // A programmatic endpoint is used as-is: OTLP/HTTP needs the full signal path.
            options.Endpoint = protocol == OtlpExportProtocol.Grpc
                ? grpcEndpoint
                : new Uri(httpEndpoint, httpPath);
            options.TimeoutMilliseconds = 10_000;
            options.HttpClientFactory = () =>
            {
                var client = new HttpClient(new FailureCounter.Handler(failures) { InnerHandler = new SocketsHttpHandler() })
                {
                    Timeout = TimeSpan.FromSeconds(10),
                };
                if (protocol == OtlpExportProtocol.Grpc)
                {
                    // gRPC over http:// is h2c with prior knowledge, as the SDK's own client would do it.
                    client.DefaultRequestVersion = System.Net.HttpVersion.Version20;
                    client.DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact;
                }
                return client;
            };
        }

        // A MeterProvider listens to every Meter of the names it was given, process-wide: a shared name
        // would let a test class running in parallel put its instruments into this pipeline's exports.
        var meter = new Meter(MeterNamePrefix + Guid.NewGuid().ToString("N"), "1.2.3");
        var sdk = OpenTelemetrySdk.Create(builder =>
        {
            builder.Services.AddSingleton<IConfiguration>(configuration);
            builder
                .ConfigureResource(resource => resource
                    .AddService(ServiceName, serviceInstanceId: "1")
                    .AddAttributes([new KeyValuePair<string, object>("deployment.environment.name", "test")]))
                .WithMetrics(metrics => metrics
                    .AddMeter(meter.Name)
                    .AddOtlpExporter((exporter, reader) =>
                    {
                        Configure(exporter, OtlpReceiver.HttpMetricsPath);
                        // Tests flush explicitly; the periodic export must not interleave.
                        reader.PeriodicExportingMetricReaderOptions.ExportIntervalMilliseconds = 3_600_000;
                    }))
                .WithLogging(logging => logging.AddOtlpExporter(exporter => Configure(exporter, OtlpReceiver.HttpLogsPath)));
        });
        return new SdkPipeline(sdk, meter, failures);
    }

    public void FlushMetrics() => Assert.True(_sdk.MeterProvider.ForceFlush(15_000), "metric export did not complete");

    public void FlushLogs() => Assert.True(_sdk.LoggerProvider.ForceFlush(15_000), "log export did not complete");

    public void Dispose()
    {
        Meter.Dispose();
        _sdk.Dispose();
    }

    private sealed class FailureCounter
    {
        private int _count;

        public int Count => Volatile.Read(ref _count);

        public sealed class Handler(FailureCounter counter) : DelegatingHandler
        {
            protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
            {
                try
                {
                    var response = await base.SendAsync(request, cancellationToken).ConfigureAwait(false);
                    if (!response.IsSuccessStatusCode) Interlocked.Increment(ref counter._count);
                    return response;
                }
                catch
                {
                    Interlocked.Increment(ref counter._count);
                    throw;
                }
            }
        }
    }
}

using System.Diagnostics.Metrics;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using OpenTelemetry;
using OpenTelemetry.Exporter;
using OpenTelemetry.Logs;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using TelemetryAgent.Export.Settings;

namespace TelemetryAgent.Export.Sdk;

/// <summary>
/// Builds OpenTelemetry SDK instances for the agent: metrics of one <see cref="Meter"/> and logs, under one resource,
/// sent by the SDK's OTLP exporters configured only from <see cref="OtlpSettings"/>.
/// </summary>
/// <remarks>
/// The SDK reads its settings through <c>IConfiguration</c>, which by default is the agent's own environment. Each
/// instance gets a private configuration instead holding only the retry keys, so the endpoints, headers and resource
/// come from what <see cref="OtlpSettings"/> resolved (and the command line), never from a second reading of
/// <c>OTEL_*</c> variables, and the agent's <c>OTEL_RESOURCE_ATTRIBUTES</c> never leak into a Python process's resource.
/// </remarks>
internal static class OtlpSdk
{
    /// <param name="meter">The only meter this instance collects; meters of the same name in other instances are dropped.</param>
    /// <param name="metricExportInterval">How often metrics are exported on their own; null: only when flushed or shut down.</param>
    /// <param name="cardinalityLimit">
    /// The most series an instrument may have (the SDK preallocates that many points, 2000 by default: most of an
    /// instance's memory); null keeps the SDK's default.
    /// </param>
    /// <param name="delivery">Told what became of each request of this instance (the SDK's own answers do not say).</param>
    public static OpenTelemetrySdk Create(
        OtlpSettings settings, IEnumerable<KeyValuePair<string, object>> resource, Meter meter, TimeSpan? metricExportInterval,
        ExportTransport transport, Func<Instrument, int>? cardinalityLimit = null, DeliveryTracker? delivery = null)
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(settings.Retry.SdkConfiguration()).Build();
        // A year stands for "never": the reader needs a finite interval.
        var interval = (int)Math.Clamp((metricExportInterval ?? TimeSpan.FromDays(365)).TotalMilliseconds, 100, int.MaxValue);
        var temporality = settings.Temporality switch
        {
            MetricsTemporality.Delta => MetricReaderTemporalityPreference.Delta,
            MetricsTemporality.LowMemory => MetricReaderTemporalityPreference.LowMemory,
            _ => MetricReaderTemporalityPreference.Cumulative,
        };
        return OpenTelemetrySdk.Create(builder =>
        {
            builder.Services.AddSingleton<IConfiguration>(configuration);
            builder.ConfigureResource(resourceBuilder => resourceBuilder.Clear().AddTelemetrySdk().AddAttributes(resource));
            // A signal switched off (OTEL_METRICS_EXPORTER / OTEL_LOGS_EXPORTER=none) gets no provider: nothing is collected.
            if (settings.IsOn(OtlpSignal.Metrics)) builder
                .WithMetrics(metrics => metrics
                    .AddMeter(meter.Name)
                    // One meter name serves every instance: keep this instance's instruments only.
                    .AddView(instrument => !ReferenceEquals(instrument.Meter, meter) ? MetricStreamConfiguration.Drop
                        : cardinalityLimit is null ? null
                        : new MetricStreamConfiguration { CardinalityLimit = cardinalityLimit(instrument) })
                    .AddOtlpExporter((exporter, reader) =>
                    {
                        Configure(exporter, settings.For(OtlpSignal.Metrics), transport, delivery);
                        reader.TemporalityPreference = temporality;
                        reader.PeriodicExportingMetricReaderOptions.ExportIntervalMilliseconds = interval;
                    }));
            if (settings.IsOn(OtlpSignal.Logs)) builder
                .WithLogging(logging => logging.AddOtlpExporter((exporter, processor) =>
                {
                    Configure(exporter, settings.For(OtlpSignal.Logs), transport, delivery);
                    // Records go out when the instance is flushed or shut down, in one request (at most one record per
                    // exception group, 501 groups, are written per export): what a flush sent is what it delivered.
                    processor.BatchExportProcessorOptions.ScheduledDelayMilliseconds = interval;
                    processor.BatchExportProcessorOptions.MaxExportBatchSize = 1024;
                    processor.BatchExportProcessorOptions.MaxQueueSize = 2048;
                }));
        });
    }

    internal static void Configure(OtlpExporterOptions options, OtlpEndpoint endpoint, ExportTransport transport, DeliveryTracker? delivery)
    {
        options.Protocol = endpoint.Protocol == OtlpProtocol.Grpc ? OtlpExportProtocol.Grpc : OtlpExportProtocol.HttpProtobuf;
        // Set in code, the endpoint is used as given: OtlpSettings already appended /v1/metrics or /v1/logs for HTTP.
        options.Endpoint = endpoint.Url;
        options.TimeoutMilliseconds = (int)Math.Min(int.MaxValue, endpoint.Timeout.TotalMilliseconds);
        options.Compression = endpoint.Gzip ? OtlpExportCompression.GZip : OtlpExportCompression.None;
        // Used for gRPC as well in 1.21.0 (the end-to-end tests count gRPC requests through it).
        options.HttpClientFactory = () => transport.CreateClient(endpoint, delivery);
    }
}

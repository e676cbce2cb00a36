using Microsoft.Extensions.Logging;
using OpenTelemetry.Exporter;
using OpenTelemetry.Proto.Common.V1;
using OpenTelemetry.Proto.Logs.V1;
using OpenTelemetry.Proto.Metrics.V1;

namespace TelemetryAgent.OtlpReceiver.Tests;

/// <summary>
/// The OpenTelemetry .NET SDK's own OTLP exporter sends to our receiver over both transports, and what
/// our generated classes decode must be exactly what was recorded: proof that our .proto files and the
/// receiver agree with an independent OTLP implementation.
/// </summary>
public sealed class SdkInteropTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(20);

    public static TheoryData<OtlpExportProtocol, bool> Transports => new()
    {
        { OtlpExportProtocol.Grpc, false },
        { OtlpExportProtocol.HttpProtobuf, false },
        { OtlpExportProtocol.Grpc, true },
        { OtlpExportProtocol.HttpProtobuf, true },
    };

    [Theory]
    [MemberData(nameof(Transports))]
    public async Task Metrics_from_the_sdk_decode_to_the_recorded_values(OtlpExportProtocol protocol, bool gzip)
    {
        await using var receiver = await OtlpReceiver.StartAsync();
        string meterName;
        using (var sdk = SdkPipeline.Create(receiver, protocol, gzip))
        {
            meterName = sdk.Meter.Name;
            var calls = sdk.Meter.CreateCounter<long>("python.calls", unit: "{call}", description: "calls observed");
            calls.Add(40, new KeyValuePair<string, object?>("function", "main"));
            calls.Add(2, new KeyValuePair<string, object?>("function", "main"));
            calls.Add(7, new KeyValuePair<string, object?>("function", "helper"));
            var latency = sdk.Meter.CreateHistogram<double>("python.call.duration", unit: "s");
            foreach (var seconds in new[] { 0.5, 1.5, 3.0 })
            {
                latency.Record(seconds);
            }
            sdk.Meter.CreateObservableGauge("python.threads", () => 3);
            sdk.FlushMetrics();
        }

        // ForceFlush sends the first request; shutting the SDK down sends the cumulative state once more.
        var request = (await receiver.Metrics.WaitForAsync(1, Timeout))[0];
        Assert.Equal(ExpectedTransport(protocol), request.Transport);
        Assert.Equal(gzip, request.Compressed);

        var resourceMetrics = Assert.Single(request.Message.ResourceMetrics);
        var resource = Attributes(resourceMetrics.Resource.Attributes);
        Assert.Equal(SdkPipeline.ServiceName, resource["service.name"].StringValue);
        Assert.Equal("test", resource["deployment.environment.name"].StringValue);
        Assert.Equal("opentelemetry", resource["telemetry.sdk.name"].StringValue);

        var scope = Assert.Single(resourceMetrics.ScopeMetrics);
        Assert.Equal(meterName, scope.Scope.Name);
        Assert.Equal("1.2.3", scope.Scope.Version);
        var metrics = scope.Metrics.ToDictionary(m => m.Name);

        var callsMetric = metrics["python.calls"];
        Assert.Equal(Metric.DataOneofCase.Sum, callsMetric.DataCase);
        Assert.Equal("{call}", callsMetric.Unit);
        Assert.Equal("calls observed", callsMetric.Description);
        Assert.True(callsMetric.Sum.IsMonotonic);
        Assert.Equal(AggregationTemporality.Cumulative, callsMetric.Sum.AggregationTemporality);
        var perFunction = callsMetric.Sum.DataPoints.ToDictionary(p => Attributes(p.Attributes)["function"].StringValue, p => p.AsInt);
        Assert.Equal(new Dictionary<string, long> { ["main"] = 42, ["helper"] = 7 }, perFunction);
        Assert.All(callsMetric.Sum.DataPoints, p => Assert.True(p.TimeUnixNano >= p.StartTimeUnixNano && p.StartTimeUnixNano > 0));

        var latencyMetric = metrics["python.call.duration"];
        var point = Assert.Single(latencyMetric.Histogram.DataPoints);
        Assert.Equal(3UL, point.Count);
        Assert.Equal(5.0, point.Sum, 9);
        Assert.Equal(0.5, point.Min, 9);
        Assert.Equal(3.0, point.Max, 9);
        Assert.Equal(point.ExplicitBounds.Count + 1, point.BucketCounts.Count);
        Assert.Equal(3UL, point.BucketCounts.Aggregate(0UL, (sum, n) => sum + n));

        var threads = metrics["python.threads"];
        Assert.Equal(Metric.DataOneofCase.Gauge, threads.DataCase);
        Assert.Equal(3, Assert.Single(threads.Gauge.DataPoints).AsInt);
    }

    [Theory]
    [MemberData(nameof(Transports))]
    public async Task Logs_from_the_sdk_decode_to_the_recorded_records(OtlpExportProtocol protocol, bool gzip)
    {
        await using var receiver = await OtlpReceiver.StartAsync();
        using (var sdk = SdkPipeline.Create(receiver, protocol, gzip))
        {
            var logger = sdk.LoggerFactory.CreateLogger("TelemetryAgent.Session");
            logger.LogWarning("Session {SessionId} lost {Dropped} events", "pid-4242", 17);
            logger.LogError("Shim disconnected");
            sdk.FlushLogs();
        }

        var request = Assert.Single(await receiver.Logs.WaitForAsync(1, Timeout));
        Assert.Equal(ExpectedTransport(protocol), request.Transport);
        Assert.Equal(gzip, request.Compressed);
        var resourceLogs = Assert.Single(request.Message.ResourceLogs);
        Assert.Equal(SdkPipeline.ServiceName, Attributes(resourceLogs.Resource.Attributes)["service.name"].StringValue);

        var records = resourceLogs.ScopeLogs.SelectMany(s => s.LogRecords).ToList();
        Assert.Equal(2, records.Count);
        Assert.All(resourceLogs.ScopeLogs, s => Assert.Equal("TelemetryAgent.Session", s.Scope.Name));

        var warning = records.Single(r => r.SeverityNumber == SeverityNumber.Warn);
        Assert.Equal("Warning", warning.SeverityText);
        Assert.Equal("Session {SessionId} lost {Dropped} events", warning.Body.StringValue);
        var attributes = Attributes(warning.Attributes);
        Assert.Equal("pid-4242", attributes["SessionId"].StringValue);
        Assert.Equal(17, attributes["Dropped"].IntValue);
        Assert.True(warning.TimeUnixNano > 0);

        var error = records.Single(r => r.SeverityNumber == SeverityNumber.Error);
        Assert.Equal("Shim disconnected", error.Body.StringValue);
    }

    private static OtlpTransport ExpectedTransport(OtlpExportProtocol protocol) =>
        protocol == OtlpExportProtocol.Grpc ? OtlpTransport.Grpc : OtlpTransport.Http;

    internal static Dictionary<string, AnyValue> Attributes(IEnumerable<KeyValue> attributes) =>
        attributes.ToDictionary(a => a.Key, a => a.Value);
}

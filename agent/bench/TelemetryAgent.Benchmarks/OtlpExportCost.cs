using System.Buffers;
using System.Diagnostics;
using TelemetryAgent.Export;
using TelemetryAgent.Export.Python;
using TelemetryAgent.Export.Otlp;
using TelemetryAgent.Export.Sdk;
using TelemetryAgent.Export.Settings;
using TelemetryAgent.OtlpReceiver;
using TelemetryAgent.Profiling;
using TelemetryAgent.Protocol;
using TelemetryAgent.Sessions;
using TelemetryAgent.Testing;

namespace TelemetryAgent.Benchmarks;

/// <summary>
/// What OTLP export costs per Python process, against the tests' real OTLP receiver on loopback, for each protocol:
/// creating one SDK instance (time and managed memory that stays alive while the process runs), and the round trip
/// from a process's completion to its metrics being accepted by the receiver (SDK shutdown included). Each synthetic
/// process has 300 functions (so 50 series of their own plus the other series) and 4 threads.
/// </summary>
public static class OtlpExportCost
{
    private const int Instances = 100;
    private const int RoundTrips = 20;

    public static async Task<int> RunAsync()
    {
        await using var receiver = await OtlpReceiver.OtlpReceiver.StartAsync();
        var stream = Segments.OfSize(SyntheticStream.Create(100_000), 64 * 1024);
        Console.WriteLine($"{"protocol",-14} {"SDK create ms",14} {"KiB/instance",13} {"threads/instance",17} {"round trip ms (median, max)",28} {"series",7} {"bytes/export",13}");
        foreach (var protocol in new[] { "grpc", "http/protobuf" })
        {
            var endpoint = protocol == "grpc" ? receiver.GrpcEndpoint : receiver.HttpEndpoint;
            var settings = OtlpSettings.Resolve(new Dictionary<string, string?>(), endpoint.ToString(), protocol);
            var (createMs, kibPerInstance, threadsPerInstance) = MeasureInstances(settings);
            var (median, max, series, bytes) = await MeasureRoundTripsAsync(settings, receiver, stream);
            Console.WriteLine($"{protocol,-14} {createMs,14:F2} {kibPerInstance,13:F0} {threadsPerInstance,17:F1} {$"{median:F1}, {max:F1}",28} {series,7} {bytes,13}");
        }
        return 0;
    }

    /// <summary>Creates <see cref="Instances"/> live SDK instances as the exporter does at HELLO.</summary>
    private static (double CreateMs, double KiBPerInstance, double ThreadsPerInstance) MeasureInstances(OtlpSettings settings)
    {
        using var transport = new ExportTransport();
        var resource = ProcessResource.Attributes(new ProcessIdentity(4242, 1, ["service.py"], "/usr/bin/python3.12", "CPython",
            "3.12.1", "host", "service", "", "1", "/srv", 0));
        // One instance first: the first pays for loading and JIT, which a long-running agent pays once.
        Dispose([Create(settings, resource, transport)]);

        var before = GC.GetTotalMemory(forceFullCollection: true);
        var threadsBefore = Process.GetCurrentProcess().Threads.Count;
        var watch = Stopwatch.StartNew();
        var live = new List<(ProcessMetrics, OpenTelemetry.OpenTelemetrySdk)>(Instances);
        for (var i = 0; i < Instances; i++) live.Add(Create(settings, resource, transport));
        var elapsed = watch.Elapsed;
        var after = GC.GetTotalMemory(forceFullCollection: true);
        var threads = Process.GetCurrentProcess().Threads.Count - threadsBefore;
        Dispose(live);
        return (elapsed.TotalMilliseconds / Instances, (after - before) / 1024.0 / Instances, (double)threads / Instances);
    }

    private static (ProcessMetrics, OpenTelemetry.OpenTelemetrySdk) Create(
        OtlpSettings settings, IReadOnlyList<KeyValuePair<string, object>> resource, ExportTransport transport)
    {
        var metrics = new ProcessMetrics();
        return (metrics, OtlpSdk.Create(settings, resource, metrics.Meter, metricExportInterval: null, transport, ProcessMetrics.CardinalityLimit));
    }

    private static void Dispose(List<(ProcessMetrics Metrics, OpenTelemetry.OpenTelemetrySdk Sdk)> instances)
    {
        foreach (var (metrics, sdk) in instances)
        {
            sdk.Dispose();
            metrics.Dispose();
        }
    }

    /// <summary>Sessions fed a whole synthetic connection through the real exporter; each completion timed to arrival.</summary>
    private static async Task<(double MedianMs, double MaxMs, int Series, int Bytes)> MeasureRoundTripsAsync(
        OtlpSettings settings, OtlpReceiver.OtlpReceiver receiver, ReadOnlySequence<byte> stream)
    {
        var exporter = new MetricsAndLogsExporter(new ExportContext(settings, TextWriter.Null, CheckpointInterval: null, () => AgentStatisticsSnapshot.Empty), new ExportCounters());
        var times = new List<double>();
        var series = 0;
        var bytes = 0;
        for (var i = 0; i <= RoundTrips; i++)
        {
            var session = new ProcessSession(observer: exporter);
            var handler = session.Handler;
            var state = new WireStreamState();
            var reader = new SequenceReader<byte>(stream);
            WireParser.TryReadPreamble(ref reader, ref state);
            while (WireParser.TryReadFrame(ref reader, ref state, ref handler))
            {
            }
            state.ReleaseScratch();
            var arrived = receiver.Metrics.Count;
            var watch = Stopwatch.StartNew();
            session.Complete(ConnectionEnd.Goodbye);
            var request = (await receiver.Metrics.WaitForAsync(arrived + 1, TimeSpan.FromSeconds(30)))[arrived];
            if (i == 0) continue; // the first pays for JIT and the first connection
            times.Add(watch.Elapsed.TotalMilliseconds);
            series = request.Message.ResourceMetrics.Sum(r => r.ScopeMetrics.Sum(s => s.Metrics.Sum(m => m.Sum?.DataPoints.Count ?? 0)));
            bytes = request.WireBytes;
        }
        await exporter.ShutdownAsync(new CancellationTokenSource(TimeSpan.FromSeconds(10)).Token);
        times.Sort();
        return (times[times.Count / 2], times[^1], series, bytes);
    }
}

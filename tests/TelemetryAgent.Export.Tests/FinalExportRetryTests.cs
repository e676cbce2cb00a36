using Grpc.Core;
using TelemetryAgent.Export.Otlp;
using TelemetryAgent.Export.Settings;
using TelemetryAgent.OtlpReceiver;
using TelemetryAgent.Profiling;
using TelemetryAgent.Testing;
using Receiver = TelemetryAgent.OtlpReceiver.OtlpReceiver;

namespace TelemetryAgent.Export.Tests;

/// <summary>
/// The final metrics export of a process (<see cref="MetricsAndLogsExporter"/>), retried through fresh SDK instances,
/// against the real OTLP receiver, on a watched fake clock: two minutes of retries take no real time.
/// </summary>
public sealed class FinalExportRetryTests
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(30);
    private const long Pid = 100;

    private static ProcessProfile Ended()
        => new SessionScript(pid: Pid).Thread(1, "MainThread").Code(1, "f").Start(10, 1).Return(20, 1).Complete();

    private static MetricsAndLogsExporter Exporter(Receiver receiver, TextWriter log, TimeProvider clock)
    {
        var settings = OtlpSettings.Resolve(new Dictionary<string, string?>(), endpointOption: receiver.HttpEndpoint.ToString(),
            protocolOption: "http/protobuf");
        return new MetricsAndLogsExporter(
            new ExportContext(settings, log, CheckpointInterval: null, () => AgentStatisticsSnapshot.Empty) { Time = clock }, new ExportCounters());
    }

    /// <summary>The metrics requests the receiver accepted from the process (not the agent's own).</summary>
    private static int ProcessMetricsReceived(Receiver receiver)
        => receiver.Metrics.Snapshot().Count(request => request.Message.ResourceMetrics.Any(resource =>
            resource.Resource.Attributes.Any(attribute => attribute.Key == "process.pid" && attribute.Value.IntValue == Pid)));

    private static string Text(StringWriter log)
    {
        lock (log) return log.ToString();
    }

    [Fact]
    public async Task A_failing_final_export_backs_off_and_is_given_up_after_two_minutes_counted_and_reported_once()
    {
        var clock = new WatchedClock();
        // Rejected for good, so that each attempt ends at once (the SDK does not retry it itself): the agent's loop does.
        await using var receiver = await Receiver.StartAsync(new OtlpReceiverOptions
        {
            InitialFailures = FailurePlan.FirstRequests(int.MaxValue, signal: TelemetryAgent.OtlpReceiver.OtlpSignal.Metrics) with
            {
                Code = StatusCode.InvalidArgument,
            },
        });
        var log = new StringWriter();
        var exporter = Exporter(receiver, log, clock);

        var profile = Ended();
        exporter.OnStarted(profile);
        exporter.OnCompleted(profile);
        var waits = new List<TimeSpan>();
        while (await clock.NextWaitAsync(Wait, done: () => Text(log).Contains("they are lost")) is { } wait)
        {
            waits.Add(wait);
            clock.Advance(wait);
        }
        var attempts = receiver.Attempts.Count(attempt => attempt.Signal == TelemetryAgent.OtlpReceiver.OtlpSignal.Metrics);
        using (var deadline = new CancellationTokenSource(Wait)) await exporter.ShutdownAsync(deadline.Token);

        RetryAssert.BackedOffThenGaveUp(waits);
        // One request per SDK instance: the first and one per retry.
        Assert.Equal(waits.Count + 1, attempts);
        Assert.Equal(0, ProcessMetricsReceived(receiver));
        var lost = Text(log).Split('\n').Where(line => line.Contains("they are lost")).ToList();
        Assert.Equal(
            $"telemetry-agent: OTLP export: the final metrics of pid {Pid} ({profile.Identity.ServiceName}) could not be sent to " +
            $"{new Uri(receiver.HttpEndpoint, Receiver.HttpMetricsPath)} (every retry failed): they are lost; later failures of this kind " +
            "are counted in telemetry_agent.export.lost, not logged.", Assert.Single(lost));
    }

    [Fact]
    public async Task A_collector_back_before_the_two_minutes_receives_the_final_metrics_exactly_once()
    {
        var clock = new WatchedClock();
        // Down for 100 s of the same clock, then up.
        await using var receiver = await Receiver.StartAsync(new OtlpReceiverOptions
        {
            Time = clock,
            InitialFailures = new FailurePlan(Until: clock.GetUtcNow() + TimeSpan.FromSeconds(100), Signal: TelemetryAgent.OtlpReceiver.OtlpSignal.Metrics)
            {
                Code = StatusCode.InvalidArgument,
            },
        });
        var log = new StringWriter();
        var exporter = Exporter(receiver, log, clock);

        var profile = Ended();
        exporter.OnStarted(profile);
        exporter.OnCompleted(profile);
        var waited = TimeSpan.Zero;
        while (await clock.NextWaitAsync(Wait, done: () => ProcessMetricsReceived(receiver) > 0) is { } wait)
        {
            waited += wait;
            clock.Advance(wait);
        }
        using (var deadline = new CancellationTokenSource(Wait)) await exporter.ShutdownAsync(deadline.Token);

        Assert.InRange(waited, TimeSpan.FromSeconds(100), TimeSpan.FromSeconds(100) + RetryPolicy.Default.MaxBackoff);
        Assert.Equal(1, ProcessMetricsReceived(receiver));
        Assert.DoesNotContain("they are lost", Text(log));
    }
}

using TelemetryAgent.Profiling;
using TelemetryAgent.Export.Settings;

namespace TelemetryAgent.Export.Tests;

public sealed class ExportPipelineTests
{
    [Fact]
    public async Task Without_an_endpoint_there_is_no_exporter_and_nothing_to_send()
    {
        var pipeline = ExportPipeline.Create(new ExportContext(OtlpSettings.Disabled, TextWriter.Null, CheckpointInterval: null, () => AgentStatisticsSnapshot.Empty));
        Assert.True(pipeline.IsEmpty);
        Assert.Empty(pipeline.Observers);
        await pipeline.ShutdownAsync(TimeSpan.FromSeconds(1));
    }

    [Fact]
    public async Task With_an_endpoint_metrics_and_logs_are_exported_and_shutdown_returns_without_processes()
    {
        var settings = OtlpSettings.Resolve(new Dictionary<string, string?>(), endpointOption: "http://127.0.0.1:9", protocolOption: "grpc");
        var log = new StringWriter();
        var pipeline = ExportPipeline.Create(new ExportContext(settings, log, CheckpointInterval: null, () => AgentStatisticsSnapshot.Empty));
        Assert.Contains(pipeline.Observers, observer => observer is MetricsAndLogsExporter);
        // Nobody listens on port 9: the agent's own metrics cannot go out, which is said once, never thrown.
        await pipeline.ShutdownAsync(TimeSpan.FromSeconds(1));
        Assert.DoesNotContain("Exception", log.ToString());
    }
}

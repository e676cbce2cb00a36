using TelemetryAgent.Export.Settings;
using TelemetryAgent.Profiling;

namespace TelemetryAgent.Export;

/// <summary>An exporter: hears about processes like any observer and sends what it has left when the agent stops.</summary>
/// <remarks>Never throws and never blocks a session: work goes to the exporter's own queue or thread.</remarks>
public interface IExporter : IProcessObserver
{
    /// <summary>Sends what is pending (the processes that completed last included), giving up at the deadline.</summary>
    Task ShutdownAsync(CancellationToken deadline);

    /// <summary>
    /// Completes once everything handed to it so far (checkpoints, completed processes) has been sent or given up on,
    /// or at the deadline; the exporter goes on working either way. Never throws.
    /// </summary>
    Task FlushAsync(CancellationToken deadline);
}

/// <summary>What the agent's exporters need besides the OTLP endpoints.</summary>
/// <param name="Log">Where exporters report, once per problem, what they could not send.</param>
/// <param name="CheckpointInterval">How often running processes are exported (serve); null: only when they end (run).</param>
/// <param name="Statistics">Reads the agent's connection counters, for its own telemetry.</param>
public sealed record ExportContext(OtlpSettings Settings, TextWriter Log, TimeSpan? CheckpointInterval, Func<AgentStatisticsSnapshot> Statistics)
{
    /// <summary>The clock of the exporters' retries: their backoff waits and give-up deadlines, and Retry-After dates.</summary>
    public TimeProvider Time { get; init; } = TimeProvider.System;
}

/// <summary>
/// The OTLP exporters of one agent (none when export is off). The host hands <see cref="Observers"/> to every
/// session; <see cref="ShutdownAsync"/> flushes them all within one deadline.
/// </summary>
public sealed class ExportPipeline
{
    private readonly IReadOnlyList<IExporter> _exporters;
    // Shared by the SDK-based exporters, so that the agent's own metrics count every signal's requests and failures.
    private readonly Sdk.ExportTransport? _transport;

    private ExportPipeline(IReadOnlyList<IExporter> exporters, Sdk.ExportTransport? transport)
    {
        _exporters = exporters;
        _transport = transport;
    }

    public static ExportPipeline Create(ExportContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var settings = context.Settings;
        if (!settings.Enabled) return new ExportPipeline([], transport: null);
        var profiles = settings.IsOn(OtlpSignal.Profiles)
            ? new Profiles.ProfilesExporter(settings.For(OtlpSignal.Profiles), context.Log, new Profiles.ProfilesExporterOptions { Time = context.Time })
            : null;
        var exporters = new List<IExporter>();
        var transport = new Sdk.ExportTransport();
        var problems = new ExportProblems(context.Log, settings);
        if (settings.IsOn(OtlpSignal.Metrics) || settings.IsOn(OtlpSignal.Logs))
            exporters.Add(new MetricsAndLogsExporter(context, profiles?.Counters ?? new Otlp.ExportCounters(), transport, problems));
        if (profiles is not null) exporters.Add(profiles);
        if (settings.IsOn(OtlpSignal.Traces)) exporters.Add(new Startup.StartupTracesExporter(settings, transport, problems));
        return new ExportPipeline(exporters, transport);
    }

    public IReadOnlyList<IProcessObserver> Observers => _exporters;

    public bool IsEmpty => _exporters.Count == 0;

    /// <summary>
    /// Waits until every exporter has sent (or given up on) what it was handed so far, or the deadline passed; true when
    /// all of them were done in time. Exporting goes on afterwards (a Lambda extension, between invocations).
    /// </summary>
    public async Task<bool> FlushAsync(TimeSpan deadline)
    {
        using var timeout = new CancellationTokenSource(deadline);
        await Task.WhenAll(_exporters.Select(exporter => exporter.FlushAsync(timeout.Token))).ConfigureAwait(false);
        return !timeout.IsCancellationRequested;
    }

    /// <summary>Flushes every exporter in parallel; returns when all are done or the deadline passed.</summary>
    public async Task ShutdownAsync(TimeSpan deadline)
    {
        using var timeout = new CancellationTokenSource(deadline);
        await Task.WhenAll(_exporters.Select(exporter => exporter.ShutdownAsync(timeout.Token))).ConfigureAwait(false);
        // Exports still retrying past the deadline keep the connections they use.
        if (!timeout.IsCancellationRequested) _transport?.Dispose();
    }
}

using System.Collections.Concurrent;
using TelemetryAgent.Aggregation;
using TelemetryAgent.Export.Agent;
using TelemetryAgent.Export.Python;
using TelemetryAgent.Export.Sdk;

namespace TelemetryAgent.Export;

/// <summary>
/// Metrics and exception logs over OTLP through the OpenTelemetry SDK: one SDK instance per Python process
/// (<see cref="ProcessExport"/>), plus the agent's own metrics under its own resource.
/// </summary>
public sealed class MetricsAndLogsExporter : IExporter
{
    private readonly ConcurrentDictionary<ProcessIdentity, ProcessExport> _processes = new(ReferenceEqualityComparer.Instance);
    private readonly ConcurrentBag<Task> _finishing = [];
    private readonly ObservedAgentTelemetry _observed = new();
    private readonly ExportRequestCounter _requests = new();
    private readonly ExportContext _context;
    private readonly ExportProblems _problems;
    private readonly AgentSelfTelemetry _self;
    private int _shutDown;

    public MetricsAndLogsExporter(ExportContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        _context = context;
        _problems = new ExportProblems(context.Log);
        _self = new AgentSelfTelemetry(context.Settings, context.AgentTelemetry ?? _observed, _requests, context.CheckpointInterval);
    }

    /// <summary>Requests sent and failed so far (the agent's telemetry reports them).</summary>
    public ExportRequestCounter Requests => _requests;

    public void OnStarted(ProcessProfile running)
    {
        _observed.OnStarted(running);
        _processes[running.Identity] = new ProcessExport(running.Identity, _context.Settings, _requests, _problems);
    }

    public void OnCheckpoint(ProcessProfile checkpoint)
    {
        _observed.OnCheckpoint(checkpoint);
        if (_processes.TryGetValue(checkpoint.Identity, out var export)) export.Submit(checkpoint);
    }

    public void OnCompleted(ProcessProfile completed)
    {
        _observed.OnCompleted(completed);
        if (!_processes.TryRemove(completed.Identity, out var export)) return;
        export.Submit(completed);
        _finishing.Add(export.Finished);
    }

    /// <summary>Waits for every completed process's export, then sends the agent's own metrics one last time.</summary>
    public async Task ShutdownAsync(CancellationToken deadline)
    {
        if (Interlocked.Exchange(ref _shutDown, 1) != 0) return;
        try
        {
            await Task.WhenAll(_finishing).WaitAsync(deadline).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            _problems.Report("deadline", "the agent stopped before every process's metrics and logs were sent");
        }
        await Task.Run(() =>
        {
            _self.Shutdown(TimeSpan.FromSeconds(5));
            _self.Dispose();
        }, CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(6), CancellationToken.None).ConfigureAwait(false);
    }
}

using System.Collections.Concurrent;
using TelemetryAgent.Profiling;
using TelemetryAgent.Export.Agent;
using TelemetryAgent.Export.Python;
using TelemetryAgent.Export.Sdk;

namespace TelemetryAgent.Export;

/// <summary>
/// Metrics and exception logs over OTLP through the OpenTelemetry SDK: one SDK instance per Python process
/// (<see cref="ProcessExport"/>), plus the agent's own metrics under its own resource. All of them send through one
/// <see cref="ExportTransport"/>.
/// </summary>
public sealed class MetricsAndLogsExporter : IExporter
{
    // How long the agent's own metrics may take to go out at shutdown, after the processes' exports.
    private static readonly TimeSpan SelfShutdownTimeout = TimeSpan.FromSeconds(5);

    private readonly ConcurrentDictionary<ProcessIdentity, ProcessExport> _processes = new(ReferenceEqualityComparer.Instance);
    // Exports of completed processes still under way; each leaves when done (serve runs for months).
    private readonly ConcurrentDictionary<Task, ProcessIdentity> _finishing = new(); // final exports still under way
    private readonly ExportTransport _transport;
    private readonly bool _ownsTransport;
    private readonly ExportContext _context;
    private readonly ExportProblems _problems;
    private readonly AgentSelfTelemetry _self;
    // Cancelled when the shutdown deadline passes: final exports still retrying give up.
    private readonly CancellationTokenSource _giveUp = new();
    private int _shutDown;

    /// <param name="profileCounters">The profiles exporter's counters, reported with the agent's own metrics.</param>
    public MetricsAndLogsExporter(ExportContext context, Otlp.ExportCounters profileCounters)
        : this(context, profileCounters, new ExportTransport(), problems: null, ownsTransport: true)
    {
    }

    /// <summary>An exporter that sends through the pipeline's <paramref name="transport"/> (its owner disposes it).</summary>
    internal MetricsAndLogsExporter(ExportContext context, Otlp.ExportCounters profileCounters, ExportTransport transport, ExportProblems problems)
        : this(context, profileCounters, transport, problems, ownsTransport: false)
    {
    }

    private MetricsAndLogsExporter(ExportContext context, Otlp.ExportCounters profileCounters, ExportTransport transport, ExportProblems? problems,
        bool ownsTransport)
    {
        ArgumentNullException.ThrowIfNull(context);
        _context = context;
        _transport = transport;
        _ownsTransport = ownsTransport;
        _problems = problems ?? new ExportProblems(context.Log, context.Settings);
        _self = new AgentSelfTelemetry(context.Settings, context.Statistics, _transport, profileCounters, _problems, context.CheckpointInterval);
    }

    public void OnStarted(ProcessProfile running)
    {
        _processes[running.Identity] = new ProcessExport(running.Identity, _context.Settings, _transport, _problems, _context.Time, _giveUp.Token);
    }

    public void OnCheckpoint(ProcessProfile checkpoint)
    {
        if (_processes.TryGetValue(checkpoint.Identity, out var export)) export.Submit(checkpoint);
    }

    public void OnCompleted(ProcessProfile completed)
    {
        if (!_processes.TryRemove(completed.Identity, out var export)) return;
        export.Submit(completed);
        var finished = export.Finished;
        _finishing.TryAdd(finished, completed.Identity);
        finished.ContinueWith(task => _finishing.TryRemove(task, out _), CancellationToken.None,
            TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }

    public Task FlushAsync(CancellationToken deadline) =>
        Exporting.WaitQuietlyAsync(_processes.Values.Select(export => export.Idle).Concat(_finishing.Keys), deadline);

    /// <summary>
    /// Waits for every completed process's export until the deadline, then sends the agent's own metrics one last
    /// time (up to 5 s more). Never throws.
    /// </summary>
    public async Task ShutdownAsync(CancellationToken deadline)
    {
        if (Interlocked.Exchange(ref _shutDown, 1) != 0) return;
        var allSent = true;
        using var stopRetrying = deadline.Register(_giveUp.Cancel);
        try
        {
            await Task.WhenAll(_finishing.Keys).WaitAsync(deadline).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // Those that finished since the deadline are sent.
            var unsent = _finishing.Values.OrderBy(process => process.Pid).Select(process => $"pid {process.Pid} ({process.ServiceName})").ToList();
            if (unsent.Count > 0)
            {
                allSent = false;
                _problems.Report("deadline", $"the agent stopped before the final export of {string.Join(", ", unsent)} finished; " +
                                             "what it had not sent by then is lost");
            }
        }
        var self = Task.Run(() =>
        {
            var delivered = _self.Shutdown(SelfShutdownTimeout);
            _self.Dispose();
            return delivered;
        }, CancellationToken.None);
        if (await Task.WhenAny(self, Task.Delay(SelfShutdownTimeout + TimeSpan.FromSeconds(1), CancellationToken.None)).ConfigureAwait(false) != self
            || !self.Result)
        {
            allSent = false;
            _problems.Report("self", "the agent's own metrics could not be sent before it stopped");
        }
        // Exports still retrying keep the connections they use.
        if (allSent && _ownsTransport) _transport.Dispose();
    }
}

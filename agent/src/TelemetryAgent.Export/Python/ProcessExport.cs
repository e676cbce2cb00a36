using Microsoft.Extensions.Logging;
using OpenTelemetry;
using OpenTelemetry.Logs;
using OpenTelemetry.Metrics;
using TelemetryAgent.Profiling;
using TelemetryAgent.Export.Otlp;
using TelemetryAgent.Export.Sdk;
using TelemetryAgent.Export.Settings;

namespace TelemetryAgent.Export.Python;

/// <summary>
/// The OTLP export of one Python process: its own OpenTelemetry SDK instance (created when the process says HELLO,
/// under the process's resource), its metrics and exception logs; each checkpoint is exported when it arrives and
/// the completed profile last, after which the SDK is shut down and disposed.
/// </summary>
/// <remarks>
/// Work runs on the thread pool, one step after another (the SDK's flushes block while its exporters retry), so the
/// session that reports a checkpoint never waits. A checkpoint overtaken by a newer one before its turn is skipped:
/// everything is cumulative, so the newer one carries it. The final export is the process's last word: when the
/// SDK's own retries give up on it (a collector down longer than they last), it is tried again through a fresh SDK
/// instance, with backoff, until it is delivered, <see cref="RetryPolicy.GiveUpAfter"/> has passed, or the agent's
/// shutdown deadline says stop (in-memory retry only: disk retry keeps it on disk, and <c>none</c> means none).
/// </remarks>
internal sealed class ProcessExport
{
    private readonly ProcessIdentity _identity;
    private readonly OtlpSettings _settings;
    private readonly ExportTransport _transport;
    private readonly ExportProblems _problems;
    private readonly TimeSpan _flushTimeout;
    private readonly Lock _gate = new();
    private Task _tail;
    private ProcessProfile? _newest;
    private bool _completed;
    private OpenTelemetrySdk? _sdk;
    private ProcessMetrics? _metrics;
    private ExceptionLogs? _logs;

    private readonly CancellationToken _giveUp;

    /// <param name="giveUp">Cancelled when the agent stops waiting for exports: a final export still failing is given up.</param>
    public ProcessExport(ProcessIdentity identity, OtlpSettings settings, ExportTransport transport, ExportProblems problems,
        CancellationToken giveUp)
    {
        _giveUp = giveUp;
        _identity = identity;
        _settings = settings;
        _transport = transport;
        _problems = problems;
        // Room for the in-memory retries, which last up to the exporter's timeout.
        _flushTimeout = Max(settings.For(OtlpSignal.Metrics).Timeout, settings.For(OtlpSignal.Logs).Timeout) + TimeSpan.FromSeconds(2);
        _tail = Task.Run(Start);
    }

    /// <summary>Completes when the completed profile was exported and the SDK disposed (or that failed).</summary>
    public Task Finished { get; private set; } = Task.CompletedTask;

    /// <summary>Queues a checkpoint, or the completed profile (the last one taken).</summary>
    public void Submit(ProcessProfile frozen)
    {
        lock (_gate)
        {
            if (_completed) return;
            _completed = frozen.IsCompleted;
            _newest = frozen;
            _tail = _tail.ContinueWith(_ => Export(frozen), TaskScheduler.Default);
            if (_completed) Finished = _tail;
        }
    }

    private void Start()
    {
        try
        {
            (_sdk, _metrics, _logs) = CreateSdk(confirmedLogs: null);
        }
        catch (Exception e)
        {
            _problems.Report("sdk", $"cannot start the OpenTelemetry SDK for pid {_identity.Pid}: {e.Message}");
        }
    }

    private (OpenTelemetrySdk Sdk, ProcessMetrics Metrics, ExceptionLogs Logs) CreateSdk(ExceptionLogs? confirmedLogs)
    {
        var metrics = new ProcessMetrics();
        var sdk = OtlpSdk.Create(_settings, ProcessResource.Attributes(_identity), metrics.Meter, metricExportInterval: null, _transport,
            ProcessMetrics.CardinalityLimit);
        var logger = sdk.GetLoggerFactory().CreateLogger(PythonTelemetryNames.Scope);
        return (sdk, metrics, confirmedLogs is null ? new ExceptionLogs(logger) : confirmedLogs.WithLogger(logger));
    }

    private void Export(ProcessProfile frozen)
    {
        if (_sdk is null || _metrics is null || _logs is null) return;
        var final = frozen.IsCompleted;
        lock (_gate)
        {
            if (!final && !ReferenceEquals(_newest, frozen)) return;
        }
        try
        {
            if (final)
            {
                ExportFinal(frozen);
                return;
            }
            var timeout = (int)_flushTimeout.TotalMilliseconds;
            _metrics.Update(frozen);
            var confirmed = _logs.Snapshot();
            var logged = _logs.Log(frozen);
            var logsSent = logged == 0 || _sdk.LoggerProvider.ForceFlush(timeout);
            // Records that did not go out are logged again at the next export (their counts are in the next interval).
            if (!logsSent) _logs = confirmed;
            ReportUnsent(_sdk.MeterProvider.ForceFlush(timeout), logsSent);
        }
        catch (Exception e)
        {
            _problems.Report("export", $"exporting pid {_identity.Pid} failed: {e.Message}");
        }
    }

    /// <summary>Exports the completed profile and shuts the SDK down; on failure, again through fresh SDK instances.</summary>
    private void ExportFinal(ProcessProfile completed)
    {
        var timeout = (int)_flushTimeout.TotalMilliseconds;
        var started = DateTimeOffset.UtcNow;
        var random = new Random();
        bool metricsPending = true, logsPending = true;
        for (var attempt = 1; ; attempt++)
        {
            var (sdk, metrics, logs) = (_sdk!, _metrics!, _logs!);
            var confirmed = logs.Snapshot();
            if (metricsPending) metrics.Update(completed);
            var logged = logsPending ? logs.Log(completed) : 0;
            // Shutting down collects and exports once more: no flush before it.
            if (metricsPending) metricsPending = !sdk.MeterProvider.Shutdown(timeout);
            if (logsPending) logsPending = !sdk.LoggerProvider.Shutdown(timeout) && logged > 0;
            sdk.Dispose();
            metrics.Dispose();
            // Disk retry keeps what failed on disk; `none` means lost by choice.
            if ((!metricsPending && !logsPending) || _settings.Retry.Mode != OtlpRetryMode.InMemory) break;

            var delay = RetryPolicy.Default.Delay(attempt, serverDelay: null, random);
            if (_giveUp.IsCancellationRequested || DateTimeOffset.UtcNow + delay - started > RetryPolicy.Default.GiveUpAfter)
            {
                break;
            }
            if (_giveUp.WaitHandle.WaitOne(delay)) break;
            (_sdk, _metrics, _logs) = CreateSdk(confirmed);
        }
        ReportUnsent(!metricsPending, !logsPending);
    }

    private void ReportUnsent(bool metricsSent, bool logsSent)
    {
        if (!metricsSent) _problems.Report("metrics", $"metrics could not be sent to {_settings.For(OtlpSignal.Metrics).Url} (first: pid {_identity.Pid})");
        if (!logsSent) _problems.Report("logs", $"exception logs could not be sent to {_settings.For(OtlpSignal.Logs).Url} (first: pid {_identity.Pid})");
    }

    private static TimeSpan Max(TimeSpan a, TimeSpan b) => a > b ? a : b;
}

/// <summary>Says each kind of export problem once in the agent's log, with how to see the rest (the agent's metrics).</summary>
internal sealed class ExportProblems(TextWriter log)
{
    private readonly HashSet<string> _reported = [];

    public void Report(string kind, string message)
    {
        lock (_reported)
        {
            if (!_reported.Add(kind)) return;
        }
        lock (log) log.WriteLine($"telemetry-agent: OTLP export: {message}; later failures of this kind are counted in telemetry_agent.export.failures, not logged.");
    }
}

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
    // Shared by this process's SDK instances, one after another: what became of their requests.
    private readonly DeliveryTracker _delivery = new();

    private readonly TimeProvider _time;
    private readonly CancellationToken _giveUp;

    /// <param name="time">The clock of the final export's retries: its backoff waits and its give-up deadline.</param>
    /// <param name="giveUp">Cancelled when the agent stops waiting for exports: a final export still failing is given up.</param>
    public ProcessExport(ProcessIdentity identity, OtlpSettings settings, ExportTransport transport, ExportProblems problems,
        TimeProvider time, CancellationToken giveUp)
    {
        _time = time;
        _giveUp = giveUp;
        _identity = identity;
        _settings = settings;
        _transport = transport;
        _problems = problems;
        // Room for the in-memory retries, which last up to the exporter's timeout.
        _flushTimeout = new[] { OtlpSignal.Metrics, OtlpSignal.Logs }.Where(settings.IsOn).Select(signal => settings.For(signal).Timeout)
            .Append(TimeSpan.Zero).Max() + TimeSpan.FromSeconds(2);
        _tail = Task.Run(Start);
    }

    /// <summary>Completes when the completed profile was exported and the SDK disposed (or that failed).</summary>
    public Task Finished { get; private set; } = Task.CompletedTask;

    /// <summary>Completes when every export queued so far has run.</summary>
    public Task Idle
    {
        get
        {
            lock (_gate) return _tail;
        }
    }

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
            ProcessMetrics.CardinalityLimit, _delivery);
        var logger = sdk.GetLoggerFactory().CreateLogger(PythonTelemetryNames.Scope);
        return (sdk, metrics, confirmedLogs is null ? new ExceptionLogs(logger) : confirmedLogs.WithLogger(logger));
    }

    private void Export(ProcessProfile frozen)
    {
        if (_sdk is null || _metrics is null || _logs is null)
        {
            // No SDK instance (it could not start, said once): what this process had to send is lost.
            if (frozen.IsCompleted) _problems.Lost(_identity, [OtlpSignal.Metrics, OtlpSignal.Logs], "no OpenTelemetry SDK instance");
            return;
        }
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
            _delivery.Reset(OtlpSignal.Metrics);
            _delivery.Reset(OtlpSignal.Logs);
            _metrics.Update(frozen);
            var confirmed = _logs.Snapshot();
            var logged = _logs.Log(frozen);
            var logsSent = logged == 0 || Sent(OtlpSignal.Logs, _sdk.LoggerProvider.ForceFlush(timeout));
            // Records that did not go out are logged again at the next export (their counts are in the next interval);
            // cumulative metrics need nothing: the next export carries their totals.
            if (!logsSent && _settings.Retry.Mode != OtlpRetryMode.Disk) _logs = confirmed;
            var metricsSent = Sent(OtlpSignal.Metrics, _sdk.MeterProvider.ForceFlush(timeout));
            if (!metricsSent) _problems.Report("metrics", $"metrics could not be sent to {Url(OtlpSignal.Metrics)} (first: pid {_identity.Pid}); the next export carries them");
            if (!logsSent) _problems.Report("logs", $"exception logs could not be sent to {Url(OtlpSignal.Logs)} (first: pid {_identity.Pid}); the next export carries them");
        }
        catch (Exception e)
        {
            _problems.Report("export", $"exporting pid {_identity.Pid} failed: {e.Message}");
        }
    }

    /// <summary>
    /// Whether a flush or shutdown of <paramref name="signal"/> delivered what it sent: it finished in time and its
    /// latest request was accepted (or it sent none).
    /// </summary>
    private bool Sent(OtlpSignal signal, bool finished) => finished && _delivery.Delivered(signal) != false;

    /// <summary>Exports the completed profile and shuts the SDK down; on failure, again through fresh SDK instances.</summary>
    private void ExportFinal(ProcessProfile completed)
    {
        var timeout = (int)_flushTimeout.TotalMilliseconds;
        var started = _time.GetUtcNow();
        var random = new Random();
        bool metricsPending = _settings.IsOn(OtlpSignal.Metrics), logsPending = _settings.IsOn(OtlpSignal.Logs);
        for (var attempt = 1; ; attempt++)
        {
            var (sdk, metrics, logs) = (_sdk!, _metrics!, _logs!);
            _delivery.Reset(OtlpSignal.Metrics);
            _delivery.Reset(OtlpSignal.Logs);
            var confirmed = logs.Snapshot();
            if (metricsPending) metrics.Update(completed);
            var logged = logsPending ? logs.Log(completed) : 0;
            // Shutting down collects and exports once more: no flush before it. Its answer does not say whether that
            // export was delivered (only whether it finished): the delivery tracker does.
            if (metricsPending) metricsPending = !Sent(OtlpSignal.Metrics, sdk.MeterProvider.Shutdown(timeout));
            if (logsPending) logsPending = logged > 0 && !Sent(OtlpSignal.Logs, sdk.LoggerProvider.Shutdown(timeout));
            sdk.Dispose();
            metrics.Dispose();
            // A fresh instance would send delta metrics since the process began, counting again what earlier exports
            // delivered: with delta temporality the SDK's own retries are all they get.
            if (_settings.Temporality == MetricsTemporality.Delta && metricsPending)
            {
                _problems.Lost(_identity, [OtlpSignal.Metrics], "delta temporality: not sent again through a fresh SDK instance");
                metricsPending = false;
            }
            // Disk retry keeps what failed on disk; `none` means no retry.
            if ((!metricsPending && !logsPending) || _settings.Retry.Mode != OtlpRetryMode.InMemory) break;

            var delay = RetryPolicy.Default.Delay(attempt, serverDelay: null, random);
            if (_giveUp.IsCancellationRequested || _time.GetUtcNow() + delay - started > RetryPolicy.Default.GiveUpAfter)
            {
                break;
            }
            if (!Wait(delay)) break;
            (_sdk, _metrics, _logs) = CreateSdk(confirmed);
        }
        var unsent = new List<OtlpSignal>(2);
        if (metricsPending) unsent.Add(OtlpSignal.Metrics);
        if (logsPending) unsent.Add(OtlpSignal.Logs);
        if (unsent.Count == 0) return;
        if (_settings.Retry.Mode == OtlpRetryMode.Disk)
        {
            _problems.Report("disk", $"the final export of pid {_identity.Pid} could not be sent; it is kept in {_settings.Retry.Directory} and resent from there");
        }
        else
        {
            _problems.Lost(_identity, unsent, _settings.Retry.Mode == OtlpRetryMode.None ? "retry is off" : "every retry failed");
        }
    }

    private Uri Url(OtlpSignal signal) => _settings.For(signal).Url;

    /// <summary>Blocks this export's turn for <paramref name="delay"/> on its clock; false when the agent gave up first.</summary>
    private bool Wait(TimeSpan delay)
    {
        try
        {
            Task.Delay(delay, _time, _giveUp).GetAwaiter().GetResult();
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }
}

using Microsoft.Extensions.Logging;
using OpenTelemetry;
using OpenTelemetry.Logs;
using OpenTelemetry.Metrics;
using TelemetryAgent.Aggregation;
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
/// everything is cumulative, so the newer one carries it.
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

    public ProcessExport(ProcessIdentity identity, OtlpSettings settings, ExportTransport transport, ExportProblems problems)
    {
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
            _metrics = new ProcessMetrics();
            _sdk = OtlpSdk.Create(_settings, ProcessResource.Attributes(_identity), _metrics.Meter, metricExportInterval: null, _transport,
                ProcessMetrics.CardinalityLimit);
            _logs = new ExceptionLogs(_sdk.GetLoggerFactory().CreateLogger(PythonTelemetryNames.Scope));
        }
        catch (Exception e)
        {
            _problems.Report("sdk", $"cannot start the OpenTelemetry SDK for pid {_identity.Pid}: {e.Message}");
        }
    }

    private void Export(ProcessProfile frozen)
    {
        if (_sdk is null || _metrics is null || _logs is null) return;
        var final = frozen.IsCompleted;
        lock (_gate)
        {
            if (!final && !ReferenceEquals(_newest, frozen)) return;
        }
        var timeout = (int)_flushTimeout.TotalMilliseconds;
        try
        {
            _metrics.Update(frozen);
            var logged = _logs.Log(frozen);
            if (final)
            {
                // Shutting down collects and exports once more, with the completed profile: no flush before it.
                var metricsSent = _sdk.MeterProvider.Shutdown(timeout);
                var logsSent = _sdk.LoggerProvider.Shutdown(timeout);
                ReportUnsent(metricsSent, logsSent);
                _sdk.Dispose();
                _metrics.Dispose();
                return;
            }
            ReportUnsent(_sdk.MeterProvider.ForceFlush(timeout), logged == 0 || _sdk.LoggerProvider.ForceFlush(timeout));
        }
        catch (Exception e)
        {
            _problems.Report("export", $"exporting pid {_identity.Pid} failed: {e.Message}");
        }
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

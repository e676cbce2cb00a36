using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using OpenTelemetry;
using OpenTelemetry.Exporter;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;
using TelemetryAgent.Export.Sdk;
using TelemetryAgent.Export.Settings;
using TelemetryAgent.Profiling;
using TelemetryAgent.Profiling.Startup;

namespace TelemetryAgent.Export.Startup;

/// <summary>
/// The start-up of every Python process as an OTLP trace, through the OpenTelemetry SDK's tracing (spans made with
/// explicit start and end times), with a start-up duration histogram and import metrics beside it; proto/OTLP.md lists
/// every name. One trace per process start: the root span from the process's start to ready, the interpreter's own
/// start, one span per import of at least <see cref="ImportSpanThreshold"/> nested as imported (smaller ones are summed
/// into their parent's attributes), and one span per first invocation (<c>faas.coldstart</c> true on the first).
/// </summary>
/// <remarks>
/// Each process gets its own SDK instance under its resource (<see cref="ProcessResource"/>), created when its start-up
/// first arrives and disposed after its completed profile; spans are sent as soon as the session has them (the start-up
/// at ready, each invocation when it returned), on the thread pool, one process's exports after another.
/// </remarks>
public sealed class StartupTracesExporter : IExporter
{
    public const string ScopeName = "telemetry-agent.startup";
    public static readonly TimeSpan ImportSpanThreshold = TimeSpan.FromMilliseconds(1);

    private readonly ConcurrentDictionary<ProcessIdentity, ProcessTrace> _processes = new(ReferenceEqualityComparer.Instance);
    private readonly ConcurrentDictionary<Task, byte> _finishing = new();
    private readonly ExportTransport _transport;
    private readonly ExportProblems _problems;
    private readonly OtlpSettings _settings;
    private readonly long _thresholdNs;

    /// <param name="transport">The pipeline's, shared with the other exporters (its owner disposes it).</param>
    /// <param name="problems">Where what could not be sent is said, once per kind, and counted.</param>
    internal StartupTracesExporter(OtlpSettings settings, ExportTransport transport, ExportProblems problems, TimeSpan? importSpanThreshold = null)
    {
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentNullException.ThrowIfNull(transport);
        ArgumentNullException.ThrowIfNull(problems);
        _settings = settings;
        _transport = transport;
        _problems = problems;
        _thresholdNs = (long)((importSpanThreshold ?? ImportSpanThreshold).TotalMilliseconds * 1_000_000);
    }

    public void OnStarted(ProcessProfile running)
    {
    }

    public void OnCheckpoint(ProcessProfile checkpoint) => Submit(checkpoint, completed: false);

    public void OnCompleted(ProcessProfile completed) => Submit(completed, completed: true);

    private void Submit(ProcessProfile profile, bool completed)
    {
        try
        {
            ProcessTrace? trace;
            if (completed) _processes.TryRemove(profile.Identity, out trace);
            else _processes.TryGetValue(profile.Identity, out trace);
            if (trace is null)
            {
                if (profile.Startup is null) return;
                trace = new ProcessTrace(this, profile.Identity);
                if (!completed) trace = _processes.GetOrAdd(profile.Identity, trace);
            }
            var done = trace.Submit(profile, completed);
            if (!completed) return;
            _finishing.TryAdd(done, 0);
            done.ContinueWith(task => _finishing.TryRemove(task, out _), CancellationToken.None,
                TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        }
        catch (Exception error)
        {
            Report(error);
        }
    }

    public Task FlushAsync(CancellationToken deadline) =>
        Exporting.WaitQuietlyAsync(_processes.Values.Select(trace => trace.Idle).Concat(_finishing.Keys), deadline);

    public async Task ShutdownAsync(CancellationToken deadline)
    {
        try
        {
            await Task.WhenAll(_finishing.Keys).WaitAsync(deadline).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            _problems.Report("startup deadline", "the agent stopped before every start-up trace was sent");
        }
    }

    private void Report(Exception error) =>
        _problems.Report("startup", $"a start-up trace could not be exported ({error.GetType().Name}: {error.Message})");

    /// <summary>One process's trace: its SDK instance, the root span's context, what was sent.</summary>
    private sealed class ProcessTrace(StartupTracesExporter owner, ProcessIdentity identity)
    {
        private readonly Lock _gate = new();
        private readonly HashSet<int> _invocationsSent = [];
        // What became of this instance's latest requests (the SDK's flush answers say only whether they finished).
        private readonly DeliveryTracker _delivery = new();
        private Task _tail = Task.CompletedTask;
        private OpenTelemetrySdk? _sdk;
        private ActivitySource? _source;
        private Meter? _meter;
        private ActivityContext _root;
        private bool _startupSent;
        private bool _done;

        /// <summary>Completes when every export queued so far has run.</summary>
        public Task Idle
        {
            get
            {
                lock (_gate) return _tail;
            }
        }

        public Task Submit(ProcessProfile profile, bool completed)
        {
            lock (_gate)
            {
                _tail = _tail.ContinueWith(_ => Export(profile, completed), CancellationToken.None,
                    TaskContinuationOptions.None, TaskScheduler.Default);
                return _tail;
            }
        }

        private void Export(ProcessProfile profile, bool completed)
        {
            if (_done) return;
            try
            {
                var sent = false;
                if (profile.Startup is { } startup)
                {
                    if (!_startupSent)
                    {
                        EnsureSdk();
                        _root = SendStartup(profile, startup);
                        _startupSent = true;
                        sent = true;
                    }
                    foreach (var invocation in profile.FirstInvocations)
                    {
                        if (!_invocationsSent.Add(invocation.Number)) continue;
                        SendInvocation(profile, startup, invocation);
                        sent = true;
                    }
                }
                if (sent && _sdk is not null)
                {
                    if (!_sdk.TracerProvider.ForceFlush(Timeout())) ReportUnsent(OtlpSignal.Traces);
                    if (owner._settings.IsOn(OtlpSignal.Metrics) && !_sdk.MeterProvider.ForceFlush(Timeout())) ReportUnsent(OtlpSignal.Metrics);
                    ReportFailedDelivery();
                }
                // Everything this process will ever send is out: its SDK instance need not wait for the process's end.
                if (_startupSent && profile.Startup is { } phase && _invocationsSent.Count >= phase.FirstInvocationsPlanned) completed = true;
            }
            catch (Exception error)
            {
                owner.Report(error);
            }
            finally
            {
                if (completed) Dispose();
            }
        }

        private int Timeout() => (int)Math.Min(int.MaxValue, owner._settings.For(OtlpSignal.Traces).Timeout.TotalMilliseconds + 2000);

        private void EnsureSdk()
        {
            if (_sdk is not null) return;
            var source = new ActivitySource(ScopeName, typeof(StartupTracesExporter).Assembly.GetName().Version?.ToString());
            var meter = new Meter(ScopeName);
            var settings = owner._settings;
            var configuration = new ConfigurationBuilder().AddInMemoryCollection(settings.Retry.SdkConfiguration()).Build();
            var traceOptions = new OtlpExporterOptions();
            OtlpSdk.Configure(traceOptions, settings.For(OtlpSignal.Traces), owner._transport, _delivery);
            _sdk = OpenTelemetrySdk.Create(builder =>
            {
                builder.Services.AddSingleton<IConfiguration>(configuration);
                builder
                    .ConfigureResource(resource => resource.Clear().AddTelemetrySdk().AddAttributes(ProcessResource.Attributes(identity)))
                    .WithTracing(tracing => tracing
                        .AddSource(ScopeName)
                        .SetSampler(new AlwaysOnSampler())
                        // Every process's source has the same name: this instance keeps its own spans only.
                        .AddProcessor(new OwnSpansOnly(source, new OtlpTraceExporter(traceOptions))));
                // OTEL_METRICS_EXPORTER=none: the spans only.
                if (settings.IsOn(OtlpSignal.Metrics)) builder
                    .WithMetrics(metrics => metrics
                        .AddMeter(ScopeName)
                        .AddView(instrument => ReferenceEquals(instrument.Meter, meter) ? null : MetricStreamConfiguration.Drop)
                        .AddOtlpExporter((exporter, reader) =>
                        {
                            OtlpSdk.Configure(exporter, settings.For(OtlpSignal.Metrics), owner._transport, _delivery);
                            reader.TemporalityPreference = MetricReaderTemporalityPreference.Cumulative;
                            reader.PeriodicExportingMetricReaderOptions.ExportIntervalMilliseconds = int.MaxValue;
                        }));
            });
            _source = source;
            _meter = meter;
        }

        private ActivityContext SendStartup(ProcessProfile profile, StartupPhase startup)
        {
            var clock = profile.Clock;
            var source = _source!;
            var rule = StartupPhase.RuleName(startup.Rule);
            var root = Start(source, "startup", default, clock, startup.BeginNs,
            [
                new("python.startup.ready_rule", rule),
                new("python.startup.ready_target", startup.ReadyTarget),
                new("python.startup.process_start_known", startup.ProcessStartKnown),
                new("python.startup.process_start_resolution_ns", startup.ProcessStartResolutionNs),
                new("python.startup.interpreter_cpu_ns", startup.InterpreterCpuNs),
                new("python.startup.imports.count", (long)startup.Imports.Imports.Count),
                new("python.startup.imports.duration_ns", startup.Imports.TotalNs),
            ]);
            if (root is null) return default;
            if (startup.ProcessStartKnown)
            {
                End(Start(source, "interpreter start-up", root.Context, clock, startup.ProcessStartNs, []), clock, startup.ShimStartNs);
            }
            SendImports(source, root, clock, startup.Imports);
            var context = root.Context;
            End(root, clock, startup.ReadyNs);

            var attributes = new KeyValuePair<string, object?>[] { new("python.startup.ready_rule", rule) };
            _meter!.CreateHistogram<double>("python.startup.duration", "s", "Process start (or the shim's start) to ready.")
                .Record(startup.TotalNs / 1e9, attributes);
            var importDuration = _meter.CreateHistogram<double>("python.startup.import.duration", "s",
                "Self time of each import of the start-up (find, load and exec, without nested imports).");
            foreach (var import in startup.Imports.Imports) importDuration.Record(import.SelfNs / 1e9);
            _meter.CreateCounter<long>("python.startup.imports", "{module}", "Modules imported during the start-up.")
                .Add(startup.Imports.Imports.Count);
            return context;
        }

        private void SendInvocation(ProcessProfile profile, StartupPhase startup, FirstInvocation invocation)
        {
            var span = Start(_source!, $"invocation {invocation.Number}", _root, profile.Clock, invocation.StartNs,
            [
                new("faas.coldstart", invocation.Number == 1),
                new("python.invocation.number", (long)invocation.Number),
                new("python.invocation.function", startup.ReadyTarget),
                new("python.invocation.imports.duration_ns", invocation.Imports.TotalNs),
            ]);
            if (span is null) return;
            if (invocation.Trigger.Length > 0) span.SetTag("faas.trigger", invocation.Trigger);
            if (invocation.Raised) span.SetStatus(ActivityStatusCode.Error, "the invocation raised");
            SendImports(_source!, span, profile.Clock, invocation.Imports);
            End(span, profile.Clock, invocation.EndNs);
        }

        // Imports of at least the threshold become spans under their parent import's span (a parent lasts at least as
        // long as its child, so it has one too). Smaller ones are counted into the attributes of their parent's span
        // (count and time); what is imported inside a small import is in its time already.
        private void SendImports(ActivitySource source, Activity parent, ClockMapping clock, ImportTree tree)
        {
            var threshold = owner._thresholdNs;
            var spans = new Activity?[tree.Imports.Count];
            var small = new Dictionary<int, (long Count, long Ns)>();
            for (var index = 0; index < tree.Imports.Count; index++)
            {
                var import = tree.Imports[index];
                var parentIndex = import.Parent >= 0 && import.Parent < index ? import.Parent : -1;
                if (parentIndex >= 0 && spans[parentIndex] is null) continue; // inside a small import
                if (import.CumulativeNs < threshold)
                {
                    var (count, ns) = small.GetValueOrDefault(parentIndex);
                    small[parentIndex] = (count + 1, ns + import.CumulativeNs);
                    continue;
                }
                var activity = Start(source, $"import {import.Module}", (parentIndex >= 0 ? spans[parentIndex]! : parent).Context, clock,
                    import.StartNs,
                [
                    new("python.import.module", import.Module),
                    new("python.import.self_ns", import.SelfNs),
                    new("python.import.find_ns", import.FindNs),
                    new("python.import.load_ns", import.LoadNs),
                    new("python.import.exec_ns", import.ExecNs),
                ]);
                if (activity is null) continue;
                if (import.Failed) activity.SetStatus(ActivityStatusCode.Error, "the import raised");
                spans[index] = activity;
            }
            // Children end before their parents, each after its small imports are counted.
            for (var index = tree.Imports.Count - 1; index >= 0; index--)
            {
                if (spans[index] is not { } activity) continue;
                SetSmall(activity, small, index);
                End(activity, clock, tree.Imports[index].EndNs);
            }
            SetSmall(parent, small, -1);
        }

        private static void SetSmall(Activity activity, Dictionary<int, (long Count, long Ns)> small, int index)
        {
            if (!small.TryGetValue(index, out var summed)) return;
            activity.SetTag("python.import.small.count", summed.Count);
            activity.SetTag("python.import.small.duration_ns", summed.Ns);
        }

        private static Activity? Start(ActivitySource source, string name, ActivityContext parent, ClockMapping clock, long startNs,
            IEnumerable<KeyValuePair<string, object?>> tags, ActivityKind kind = ActivityKind.Internal)
        {
            var previous = Activity.Current;
            Activity.Current = null; // the parent is always given: never the ambient activity of this thread
            var activity = source.StartActivity(kind, parent, tags, startTime: WallTime(clock, startNs), name: name);
            Activity.Current = previous;
            return activity;
        }

        private static void End(Activity? activity, ClockMapping clock, long endNs)
        {
            if (activity is null) return;
            activity.SetEndTime(WallTime(clock, endNs).UtcDateTime);
            var previous = Activity.Current;
            activity.Stop();
            Activity.Current = previous == activity ? null : previous;
        }

        private static DateTimeOffset WallTime(ClockMapping clock, long monotonicNs)
            => DateTimeOffset.UnixEpoch.AddTicks(clock.ToUnixNs(monotonicNs) / TimeSpan.NanosecondsPerTick);

        private void Dispose()
        {
            _done = true;
            _sdk?.Dispose();  // shutting down sends what is left; a retry may still have been under way
            if (_sdk is not null) ReportFailedDelivery();
            _source?.Dispose();
            _meter?.Dispose();
            _sdk = null;
        }

        /// <summary>
        /// Says (once per kind, for all processes) that a signal's latest request was turned away, after its own retries:
        /// a flush's answer says only whether it finished in time.
        /// </summary>
        private void ReportFailedDelivery()
        {
            if (_delivery.Delivered(OtlpSignal.Traces) == false) ReportUnsent(OtlpSignal.Traces);
            if (_delivery.Delivered(OtlpSignal.Metrics) == false) ReportUnsent(OtlpSignal.Metrics);
        }

        private void ReportUnsent(OtlpSignal signal)
        {
            var what = signal == OtlpSignal.Traces ? "trace" : "metrics";
            owner._problems.Report($"startup {what}",
                $"the start-up {what} of pid {identity.Pid} ({identity.ServiceName}) could not be sent to {owner._settings.For(signal).Url}");
        }
    }

    /// <summary>Batches and exports the spans of one <see cref="ActivitySource"/> instance only (a subclass, so that the
    /// provider hands its resource to the exporter as to any export processor).</summary>
    private sealed class OwnSpansOnly(ActivitySource source, BaseExporter<Activity> exporter) : BatchActivityExportProcessor(exporter)
    {
        public override void OnEnd(Activity data)
        {
            if (ReferenceEquals(data.Source, source)) base.OnEnd(data);
        }
    }
}

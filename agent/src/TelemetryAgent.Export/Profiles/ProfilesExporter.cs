using OpenTelemetry.Proto.Collector.Profiles.V1Development;
using TelemetryAgent.Profiling;
using TelemetryAgent.Export.Otlp;
using TelemetryAgent.Export.Settings;

namespace TelemetryAgent.Export.Profiles;

/// <summary>Settings of a <see cref="ProfilesExporter"/> besides its endpoint.</summary>
public sealed record ProfilesExporterOptions
{
    /// <summary>
    /// Processes with a profile waiting to be sent. Beyond it, the oldest waiting checkpoint of a running process is
    /// dropped (its next interval covers it: nothing is lost), else the oldest ended process's profile (lost, counted).
    /// </summary>
    public int MaxPendingProcesses { get; init; } = 256;
    public RetryPolicy Retry { get; init; } = RetryPolicy.Default;
    /// <summary>The clock of the retries: their backoff waits, give-up deadline and the server's Retry-After dates.</summary>
    public TimeProvider Time { get; init; } = TimeProvider.System;
}

/// <summary>
/// Sends every process's profile over OTLP (<see cref="OtlpProfileEncoder"/>): at each checkpoint what the process
/// did since the previous one, and at its end the rest, so that a process's profiles add up to its totals.
/// </summary>
/// <remarks>
/// Observer calls only park the latest cumulative profile of the process and return: one background loop encodes
/// and sends, one request per process interval, retrying transient failures (<see cref="RetryPolicy"/>). While a
/// request waits, newer checkpoints of a process replace its older waiting one: the next interval simply covers
/// more time, nothing is lost and memory stays at one profile per waiting process. The waiting processes are
/// bounded (<see cref="ProfilesExporterOptions.MaxPendingProcesses"/>). Never throws; each distinct problem is logged
/// once.
/// </remarks>
public sealed class ProfilesExporter : IExporter
{
    /// <summary>Profiles per process interval: wall time and calls.</summary>
    private const int ProfilesPerInterval = 2;
    private const int MaxDistinctProblemsLogged = 32;

    private readonly ProfilesClient _client;
    private readonly TextWriter _log;
    private readonly ProfilesExporterOptions _options;
    private readonly Lock _gate = new();
    private readonly Dictionary<ProcessIdentity, ProcessState> _processes = new(ReferenceEqualityComparer.Instance);
    private readonly LinkedList<ProcessState> _waiting = new();
    private readonly SemaphoreSlim _work = new(0);
    private readonly CancellationTokenSource _stop = new();
    private readonly HashSet<string> _problemsLogged = new(StringComparer.Ordinal);
    private readonly Task _loop;
    private bool _closing;
    // Under the lock: the loop is encoding or sending a profile; and who waits until it has nothing left (FlushAsync).
    private bool _busy;
    private readonly List<TaskCompletionSource> _idleWaiters = [];

    public ProfilesExporter(OtlpEndpoint endpoint, TextWriter log, ProfilesExporterOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        ArgumentNullException.ThrowIfNull(log);
        _log = log;
        _options = options ?? new ProfilesExporterOptions();
        _client = new ProfilesClient(endpoint, _options.Time);
        _loop = Task.Run(RunAsync);
    }

    public ExportCounters Counters { get; } = new();

    public void OnStarted(ProcessProfile running)
    {
        lock (_gate) StateOf(running);
    }

    public void OnCheckpoint(ProcessProfile checkpoint) => Offer(checkpoint);

    public void OnCompleted(ProcessProfile completed) => Offer(completed);

    public Task FlushAsync(CancellationToken deadline)
    {
        TaskCompletionSource idle;
        lock (_gate)
        {
            if ((!_busy && _waiting.Count == 0) || _loop.IsCompleted) return Task.CompletedTask;
            idle = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _idleWaiters.Add(idle);
        }
        return Exporting.WaitQuietlyAsync([idle.Task, _loop], deadline, any: true);
    }

    /// <summary>Under the lock: the loop has nothing left to send; those waiting for that hear it.</summary>
    private void BecameIdle()
    {
        _busy = false;
        foreach (var waiter in _idleWaiters) waiter.TrySetResult();
        _idleWaiters.Clear();
    }

    public async Task ShutdownAsync(CancellationToken deadline)
    {
        lock (_gate) _closing = true;
        _work.Release();
        using (deadline.Register(static stop => ((CancellationTokenSource)stop!).Cancel(), _stop))
        {
            await _loop.ConfigureAwait(false);
        }
        _client.Dispose();
        if (Counters.ProfilesDropped + Counters.ProfilesFailed + Counters.ProfilesRejected > 0)
        {
            Log($"profiles export to {_client.Endpoint.Url}: {Counters}");
        }
    }

    /// <summary>Parks the latest cumulative profile of a process for the loop; the previous one waiting is superseded.</summary>
    private void Offer(ProcessProfile profile)
    {
        ArgumentNullException.ThrowIfNull(profile);
        if (_loop.IsCompleted)
        {
            // After shutdown nothing will send it.
            Counters.Dropped(ProfilesPerInterval);
            return;
        }
        lock (_gate)
        {
            var state = StateOf(profile);
            state.Waiting = profile;
            if (state.Node is null)
            {
                state.Node = _waiting.AddLast(state);
                if (_waiting.Count > _options.MaxPendingProcesses) MakeRoom();
            }
        }
        _work.Release();
    }

    private ProcessState StateOf(ProcessProfile profile)
    {
        if (!_processes.TryGetValue(profile.Identity, out var state))
        {
            state = new ProcessState();
            _processes.Add(profile.Identity, state);
        }
        return state;
    }

    /// <summary>
    /// Under the lock: drops the oldest waiting checkpoint (the process's next interval will cover it), or when every
    /// waiting profile is a completed one, the oldest of them.
    /// </summary>
    private void MakeRoom()
    {
        for (var node = _waiting.First; node is not null; node = node.Next)
        {
            if (node.Value.Waiting is { IsCompleted: false })
            {
                _waiting.Remove(node);
                node.Value.Node = null;
                node.Value.Waiting = null;
                return;
            }
        }
        Drop(_waiting.First!.Value);
    }

    /// <summary>Under the lock: gives up a process's waiting profile (counted); a completed process is forgotten.</summary>
    private void Drop(ProcessState state)
    {
        if (state.Waiting is not { } waiting) return;
        _waiting.Remove(state.Node!);
        state.Node = null;
        state.Waiting = null;
        Counters.Dropped(ProfilesPerInterval);
        if (waiting.IsCompleted) _processes.Remove(waiting.Identity);
    }

    private async Task RunAsync()
    {
        try
        {
            while (true)
            {
                ProcessState? state = null;
                ProcessProfile? profile = null;
                lock (_gate)
                {
                    if (_waiting.First is { } first)
                    {
                        _busy = true;
                        state = first.Value;
                        profile = state.Waiting!;
                        _waiting.RemoveFirst();
                        state.Node = null;
                        state.Waiting = null;
                        if (profile.IsCompleted) _processes.Remove(profile.Identity);
                    }
                    else
                    {
                        BecameIdle();
                        if (_closing) return;
                    }
                }
                if (state is null)
                {
                    await _work.WaitAsync(_stop.Token).ConfigureAwait(false);
                    continue;
                }
                ExportProfilesServiceRequest? request;
                try
                {
                    request = Encode(state, profile!);
                }
                catch (Exception error)
                {
                    // A bug of ours costs this interval of this process only.
                    Counters.Failed(ProfilesPerInterval);
                    LogOnce($"could not encode a profile ({error.GetType().Name}: {error.Message})", "");
                    continue;
                }
                if (request is not null) await SendAsync(request).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (_stop.IsCancellationRequested)
        {
            // The shutdown deadline passed: what still waits is dropped below.
        }
        catch (Exception error)
        {
            // Not expected (sending reports failures as results): export stops, the rest of the agent goes on.
            Log($"profiles export stopped: {error.GetType().Name}: {error.Message}");
        }
        lock (_gate)
        {
            while (_waiting.First is { } first) Drop(first.Value);
            BecameIdle();
        }
    }

    /// <summary>The request for what <paramref name="profile"/> adds to the process's previous interval; null when nothing.</summary>
    private static ExportProfilesServiceRequest? Encode(ProcessState state, ProcessProfile profile)
    {
        var samples = state.Deltas.Next(profile);
        // An idle interval sends nothing; the next profile covers it, so the intervals sent stay contiguous.
        if (samples.Count == 0) return null;
        var start = state.IntervalEndUnixNs ?? profile.FirstEventUnixNs;
        var end = Math.Max(start, profile.LastEventUnixNs);
        state.IntervalEndUnixNs = end;
        return OtlpProfileEncoder.Encode([new ProfileInterval(profile, samples, start, end)]);
    }

    private async Task SendAsync(ExportProfilesServiceRequest request)
    {
        var time = _options.Time;
        var started = time.GetUtcNow();
        for (var retry = 1; ; retry++)
        {
            SendResult result;
            try
            {
                result = await _client.SendAsync(request, _stop.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (_stop.IsCancellationRequested)
            {
                Counters.Dropped(ProfilesPerInterval);
                throw;
            }

            switch (result.Outcome)
            {
                case SendOutcome.Success:
                    Counters.Sent(ProfilesPerInterval, request.CalculateSize());
                    CheckPartialSuccess(result.Response!);
                    return;
                case SendOutcome.Failed:
                    Counters.Failed(ProfilesPerInterval);
                    LogOnce(result.Problem ?? "failed", "; the profiles are lost");
                    return;
            }

            var delay = _options.Retry.Delay(retry, result.RetryAfter, Random.Shared);
            if (time.GetUtcNow() + delay - started > _options.Retry.GiveUpAfter)
            {
                Counters.Failed(ProfilesPerInterval);
                // Said on its own: the problem itself was logged already, when its first retry began.
                LogOnce($"gave up after {_options.Retry.GiveUpAfter.TotalSeconds:0} s of retries", $" ({result.Problem ?? "failed"}); the profiles are lost");
                return;
            }
            LogOnce(result.Problem ?? "failed", "; retrying");
            Counters.Retried();
            try
            {
                await Task.Delay(delay, time, _stop.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                Counters.Dropped(ProfilesPerInterval);
                throw;
            }
        }
    }

    private void CheckPartialSuccess(ExportProfilesServiceResponse answer)
    {
        if (answer.PartialSuccess is not { } partial || (partial.RejectedProfiles == 0 && partial.ErrorMessage.Length == 0)) return;
        Counters.Rejected(partial.RejectedProfiles);
        LogOnce("partial success", $": {partial.RejectedProfiles} profiles rejected: {partial.ErrorMessage}");
    }

    /// <summary>Logs a problem the first time it happens (by <paramref name="problem"/>, not by its details).</summary>
    private void LogOnce(string problem, string details)
    {
        lock (_problemsLogged)
        {
            if (_problemsLogged.Count >= MaxDistinctProblemsLogged || !_problemsLogged.Add(problem)) return;
        }
        Log($"profiles export to {_client.Endpoint.Url}: {problem}{details}");
    }

    private void Log(string line)
    {
        lock (_log) _log.WriteLine($"telemetry-agent: {line}");
    }

    private sealed class ProcessState
    {
        /// <summary>The latest cumulative profile not sent yet (under the exporter's lock).</summary>
        public ProcessProfile? Waiting;
        public LinkedListNode<ProcessState>? Node;
        /// <summary>The loop's alone: what was sent before, and where the last interval ended.</summary>
        public readonly StackDeltas Deltas = new();
        public long? IntervalEndUnixNs;
    }
}

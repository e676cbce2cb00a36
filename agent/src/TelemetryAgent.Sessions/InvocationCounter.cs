namespace TelemetryAgent.Sessions;

/// <summary>
/// How many calls of an AWS Lambda handler have ended, over every session of an agent (each shim that counts them
/// says so in its HELLO and reports its cumulative count in STATS), and a wait for more. A session adds to it after
/// the frames before that STATS are applied, so once the count is reached the process's data up to those ends is in
/// its profile.
/// </summary>
public sealed class InvocationCounter
{
    private long _ended, _countingProcesses;
    private TaskCompletionSource _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Handler calls ended so far, in all processes.</summary>
    public long Ended => Volatile.Read(ref _ended);

    /// <summary>Processes whose HELLO said they count their handler's calls, since the agent started (ended ones too).</summary>
    public long CountingProcesses => Volatile.Read(ref _countingProcesses);

    internal void Add(long ended)
    {
        if (ended <= 0) return;
        Interlocked.Add(ref _ended, ended);
        Changed();
    }

    internal void AddCountingProcess()
    {
        Interlocked.Increment(ref _countingProcesses);
        Changed();
    }

    private void Changed() =>
        Interlocked.Exchange(ref _changed, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();

    /// <summary>Completes when <see cref="Ended"/> reaches <paramref name="ended"/>, or when <paramref name="cancel"/> fires (then throws).</summary>
    public Task WaitForAsync(long ended, CancellationToken cancel) => WaitUntilAsync(() => Ended >= ended, cancel);

    /// <summary>Completes once a process that counts its handler's calls has said so, or when <paramref name="cancel"/> fires (then throws).</summary>
    public Task WaitForCountingProcessAsync(CancellationToken cancel) => WaitUntilAsync(() => CountingProcesses > 0, cancel);

    private async Task WaitUntilAsync(Func<bool> reached, CancellationToken cancel)
    {
        while (true)
        {
            // The signal is read before the count: a change in between has already raised the count.
            var changed = Volatile.Read(ref _changed).Task;
            if (reached()) return;
            await changed.WaitAsync(cancel).ConfigureAwait(false);
        }
    }
}

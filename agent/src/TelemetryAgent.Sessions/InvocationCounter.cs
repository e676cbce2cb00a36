namespace TelemetryAgent.Sessions;

/// <summary>
/// How many calls of an AWS Lambda handler have ended, over every session of an agent (each shim that counts them
/// says so in its HELLO and reports its cumulative count in STATS), and a wait for more. A session adds to it after
/// the frames before that STATS are applied, so once the count is reached the process's data up to those ends is in
/// its profile.
/// </summary>
public sealed class InvocationCounter
{
    private long _ended;
    private TaskCompletionSource _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Handler calls ended so far, in all processes.</summary>
    public long Ended => Volatile.Read(ref _ended);

    internal void Add(long ended)
    {
        if (ended <= 0) return;
        Interlocked.Add(ref _ended, ended);
        Interlocked.Exchange(ref _changed, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();
    }

    /// <summary>Completes when <see cref="Ended"/> reaches <paramref name="ended"/>, or when <paramref name="cancel"/> fires (then throws).</summary>
    public async Task WaitForAsync(long ended, CancellationToken cancel)
    {
        while (true)
        {
            // The signal is read before the count: an Add in between has already raised the count.
            var changed = Volatile.Read(ref _changed).Task;
            if (Ended >= ended) return;
            await changed.WaitAsync(cancel).ConfigureAwait(false);
        }
    }
}

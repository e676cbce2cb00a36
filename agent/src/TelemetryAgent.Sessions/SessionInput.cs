using System.IO.Pipelines;

namespace TelemetryAgent.Sessions;

/// <summary>
/// A connection's input as its session reads it: the same bytes, plus a way to run the session's own work while the
/// read loop waits for the peer. A snapshot asked for while a process is idle is then taken at once, on the read loop
/// (the session's one thread), instead of after the next frame, which an idle shim sends only about once a second.
/// </summary>
internal sealed class SessionInput(PipeReader inner, Action whileWaiting) : PipeReader
{
    private TaskCompletionSource _wake = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Runs <c>whileWaiting</c> on the read loop: now if it waits for the peer, else when it next does. Thread-safe.</summary>
    public void Wake() => Volatile.Read(ref _wake).TrySetResult();

    public override async ValueTask<ReadResult> ReadAsync(CancellationToken cancellationToken = default)
    {
        var pending = inner.ReadAsync(cancellationToken);
        if (pending.IsCompleted) return pending.Result;
        var read = pending.AsTask();
        while (true)
        {
            var wake = Volatile.Read(ref _wake).Task;
            if (await Task.WhenAny(read, wake).ConfigureAwait(false) == read) return await read.ConfigureAwait(false);
            // Re-armed before the work, so that a request made during it wakes the loop again.
            Interlocked.Exchange(ref _wake, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
            whileWaiting();
        }
    }

    public override bool TryRead(out ReadResult result) => inner.TryRead(out result);

    public override void AdvanceTo(SequencePosition consumed) => inner.AdvanceTo(consumed);

    public override void AdvanceTo(SequencePosition consumed, SequencePosition examined) => inner.AdvanceTo(consumed, examined);

    public override void CancelPendingRead() => inner.CancelPendingRead();

    public override void Complete(Exception? exception = null) => inner.Complete(exception);
}

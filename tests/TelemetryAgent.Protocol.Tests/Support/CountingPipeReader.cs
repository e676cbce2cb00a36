using System.IO.Pipelines;

namespace TelemetryAgent.Protocol.Tests.Support;

/// <summary>Wraps a reader to check the read loop's contract: exactly one AdvanceTo after every read.</summary>
public sealed class CountingPipeReader(PipeReader inner) : PipeReader
{
    private bool _readOutstanding;

    public int Reads { get; private set; }

    public int Advances { get; private set; }

    public int AdvancesWithoutRead { get; private set; }

    public override async ValueTask<ReadResult> ReadAsync(CancellationToken cancellationToken = default)
    {
        ReadResult result = await inner.ReadAsync(cancellationToken);
        BeginRead();
        return result;
    }

    public override bool TryRead(out ReadResult result)
    {
        bool read = inner.TryRead(out result);
        if (read)
        {
            BeginRead();
        }

        return read;
    }

    public override void AdvanceTo(SequencePosition consumed) => AdvanceTo(consumed, consumed);

    public override void AdvanceTo(SequencePosition consumed, SequencePosition examined)
    {
        Advances++;
        if (!_readOutstanding)
        {
            AdvancesWithoutRead++;
        }

        _readOutstanding = false;
        inner.AdvanceTo(consumed, examined);
    }

    public override void CancelPendingRead() => inner.CancelPendingRead();

    public override void Complete(Exception? exception = null) => inner.Complete(exception);

    private void BeginRead()
    {
        Reads++;
        _readOutstanding = true;
    }
}

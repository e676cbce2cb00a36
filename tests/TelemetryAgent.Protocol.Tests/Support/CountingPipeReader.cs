using System.Buffers;
using System.IO.Pipelines;

namespace TelemetryAgent.Protocol.Tests.Support;

/// <summary>
/// Wraps a reader to check the read loop's contract (exactly one AdvanceTo after every read) and to let a test wait
/// for what the loop has done: how far it examined the stream, and whether it waits for more.
/// </summary>
public sealed class CountingPipeReader(PipeReader inner) : PipeReader
{
    private bool _readOutstanding;
    private ReadOnlySequence<byte> _buffer;
    private long _bufferStart;
    private long _examined;
    private int _waiting;

    public int Reads { get; private set; }

    public int Advances { get; private set; }

    public int AdvancesWithoutRead { get; private set; }

    /// <summary>Bytes of the stream the loop has examined so far.</summary>
    public long Examined => Interlocked.Read(ref _examined);

    /// <summary>A read is under way and has no data yet.</summary>
    public bool Waiting => Volatile.Read(ref _waiting) == 1;

    public override async ValueTask<ReadResult> ReadAsync(CancellationToken cancellationToken = default)
    {
        Volatile.Write(ref _waiting, 1);
        ReadResult result;
        try
        {
            result = await inner.ReadAsync(cancellationToken);
        }
        finally
        {
            Volatile.Write(ref _waiting, 0);
        }

        BeginRead(result);
        return result;
    }

    public override bool TryRead(out ReadResult result)
    {
        bool read = inner.TryRead(out result);
        if (read)
        {
            BeginRead(result);
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
        else
        {
            Interlocked.Exchange(ref _examined, _bufferStart + _buffer.Slice(_buffer.Start, examined).Length);
            _bufferStart += _buffer.Slice(_buffer.Start, consumed).Length;
        }

        _readOutstanding = false;
        inner.AdvanceTo(consumed, examined);
    }

    public override void CancelPendingRead() => inner.CancelPendingRead();

    public override void Complete(Exception? exception = null) => inner.Complete(exception);

    private void BeginRead(ReadResult result)
    {
        Reads++;
        _buffer = result.Buffer;
        _readOutstanding = true;
    }
}

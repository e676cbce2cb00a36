using System.Buffers;
using System.IO.Pipelines;

namespace TelemetryAgent.Protocol;

/// <summary>How a connection's stream ended without breaking the protocol.</summary>
public enum WireStreamEnd
{
    /// <summary>GOODBYE, then the peer closed the stream.</summary>
    Goodbye,

    /// <summary>The stream ended on a frame boundary without GOODBYE: the process died or was killed.</summary>
    EndOfStream,

    /// <summary>The caller cancelled the read (token or <see cref="PipeReader.CancelPendingRead"/>).</summary>
    Cancelled,
}

/// <summary>What one connection delivered. <see cref="Bytes"/> counts consumed bytes, preamble included.</summary>
public readonly record struct WireConnectionResult(WireStreamEnd End, long Frames, long Events, long Bytes);

/// <summary>
/// The read loop of one connection: feeds a <see cref="PipeReader"/> through <see cref="WireParser"/> into a
/// handler until the stream ends. A protocol violation (including one the handler raises) is thrown as
/// <see cref="ProtocolException"/>; the caller owns <paramref name="input"/> and completes it.
/// </summary>
public static class WireConnection
{
    /// <remarks>
    /// A frame is consumed only whole, so the loop never needs more than <paramref name="maxFramePayload"/> plus a
    /// header buffered; a larger declared length is rejected from its header, before its payload arrives.
    /// After GOODBYE the loop keeps reading until the peer closes, so any trailing byte is reported as
    /// <see cref="ProtocolViolation.FrameAfterGoodbye"/>.
    /// </remarks>
    public static async Task<WireConnectionResult> RunAsync<THandler>(
        PipeReader input, THandler handler, CancellationToken cancellationToken = default,
        int maxFramePayload = WireFormat.MaxFramePayload)
        where THandler : IWireHandler
    {
        ArgumentNullException.ThrowIfNull(input);
        var state = new WireStreamState { MaxFramePayload = maxFramePayload };
        long bytes = 0;
        try
        {
            while (true)
            {
                ReadResult read;
                try
                {
                    read = await input.ReadAsync(cancellationToken).ConfigureAwait(false);
                }
                catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
                {
                    return new WireConnectionResult(WireStreamEnd.Cancelled, state.FramesRead, state.EventsRead, bytes);
                }

                ReadOnlySequence<byte> buffer = read.Buffer;
                SequencePosition consumed = buffer.Start;
                try
                {
                    if (read.IsCanceled)
                    {
                        return new WireConnectionResult(WireStreamEnd.Cancelled, state.FramesRead, state.EventsRead, bytes);
                    }

                    consumed = ParseAvailable(buffer, ref state, ref handler, ref bytes);
                    if (read.IsCompleted)
                    {
                        // Decided only after parsing: the final read may still hold whole frames.
                        WireStreamEnd end = EndOfStream(state.Phase, buffer.Slice(consumed).Length, bytes);
                        return new WireConnectionResult(end, state.FramesRead, state.EventsRead, bytes);
                    }
                }
                finally
                {
                    // Every complete frame was consumed, so what is left is an incomplete frame: mark the
                    // whole buffer examined so the next read waits for new bytes instead of spinning.
                    input.AdvanceTo(consumed, buffer.End);
                }
            }
        }
        finally
        {
            state.ReleaseScratch();
        }
    }

    private static SequencePosition ParseAvailable<THandler>(
        in ReadOnlySequence<byte> buffer, ref WireStreamState state, ref THandler handler, ref long bytes)
        where THandler : IWireHandler
    {
        var reader = new SequenceReader<byte>(buffer);
        if (state.Phase != WireStreamPhase.AwaitingPreamble || WireParser.TryReadPreamble(ref reader, ref state))
        {
            while (WireParser.TryReadFrame(ref reader, ref state, ref handler))
            {
            }
        }

        bytes += reader.Consumed;
        return reader.Position;
    }

    private static WireStreamEnd EndOfStream(WireStreamPhase phase, long unconsumed, long consumed)
    {
        if (unconsumed != 0)
        {
            string unit = phase == WireStreamPhase.AwaitingPreamble ? "the preamble" : "a frame";
            ProtocolException.Throw(ProtocolViolation.TruncatedStream,
                $"the stream ended inside {unit}: {unconsumed} bytes after offset {consumed}");
        }

        switch (phase)
        {
            case WireStreamPhase.AwaitingPreamble:
                ProtocolException.Throw(ProtocolViolation.TruncatedStream, "the stream ended before the preamble");
                break;
            case WireStreamPhase.AwaitingHello:
                ProtocolException.Throw(ProtocolViolation.TruncatedStream, "the stream ended before HELLO");
                break;
        }

        return phase == WireStreamPhase.Closed ? WireStreamEnd.Goodbye : WireStreamEnd.EndOfStream;
    }
}

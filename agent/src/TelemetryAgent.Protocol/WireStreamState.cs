using System.Buffers;

namespace TelemetryAgent.Protocol;

/// <summary>Where a connection's stream is in the protocol.</summary>
public enum WireStreamPhase : byte
{
    /// <summary>Nothing valid read yet; the 8-byte preamble comes next.</summary>
    AwaitingPreamble,

    /// <summary>The preamble was valid; HELLO must be the next frame.</summary>
    AwaitingHello,

    /// <summary>HELLO was read; any frame but HELLO may follow.</summary>
    Open,

    /// <summary>GOODBYE was read; nothing may follow.</summary>
    Closed,
}

/// <summary>
/// The little that <see cref="WireParser"/> must remember between frames of one connection. Keep one per
/// connection, pass it by <c>ref</c>, and call <see cref="ReleaseScratch"/> when the connection ends.
/// Do not copy it: copies would share the pooled scratch buffer.
/// </summary>
public struct WireStreamState
{
    private byte[]? _scratch;
    private int _maxFramePayload;

    /// <summary>
    /// The largest payload a frame may declare (the agent's frame size limit); a larger one is
    /// <see cref="ProtocolViolation.FrameTooLarge"/>. Default: <see cref="WireFormat.MaxFramePayload"/>.
    /// </summary>
    public int MaxFramePayload
    {
        readonly get => _maxFramePayload == 0 ? WireFormat.MaxFramePayload : _maxFramePayload;
        init
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(value, 1);
            _maxFramePayload = value;
        }
    }

    public WireStreamPhase Phase { readonly get; internal set; }

    /// <summary>Complete frames read, all types.</summary>
    public long FramesRead { readonly get; internal set; }

    /// <summary>Event records handed to the handler.</summary>
    public long EventsRead { readonly get; internal set; }

    /// <summary>
    /// A buffer of at least <paramref name="length"/> bytes for an EVENTS payload that spans segments.
    /// Grows only to the largest frame seen, so steady state reuses it without allocating.
    /// </summary>
    internal Span<byte> Scratch(int length)
    {
        if (_scratch is null || _scratch.Length < length)
        {
            byte[]? previous = _scratch;
            _scratch = ArrayPool<byte>.Shared.Rent(Math.Max(length, 16 * 1024));
            if (previous is not null)
            {
                ArrayPool<byte>.Shared.Return(previous);
            }
        }

        return _scratch.AsSpan(0, length);
    }

    /// <summary>Returns the scratch buffer to the pool. The state stays usable.</summary>
    public void ReleaseScratch()
    {
        byte[]? scratch = _scratch;
        _scratch = null;
        if (scratch is not null)
        {
            ArrayPool<byte>.Shared.Return(scratch);
        }
    }
}

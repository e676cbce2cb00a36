using System.Buffers;
using System.Buffers.Binary;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using Google.Protobuf;
using TelemetryAgent.Protocol.Messages;

namespace TelemetryAgent.Protocol;

/// <summary>
/// Parses the wire stream (proto/PROTOCOL.md) from a <see cref="SequenceReader{T}"/>. Holds no state of
/// its own: what must be remembered between frames lives in the caller's <see cref="WireStreamState"/>.
/// Each <c>TryRead</c> method either consumes one whole unit and returns true, or returns false ("need more
/// data") leaving the reader where it was. Bad input throws <see cref="ProtocolException"/> as soon as the
/// bytes that prove it are present: a header's type and length are checked before any payload is awaited.
/// </summary>
public static class WireParser
{
    // Frame types are dense from 1: a type above this one is unknown.
    private const FrameType LastFrameType = FrameType.Exceptions;

    /// <summary>Reads and checks the 8-byte preamble.</summary>
    public static bool TryReadPreamble(ref SequenceReader<byte> reader, ref WireStreamState state)
    {
        if (state.Phase != WireStreamPhase.AwaitingPreamble)
        {
            ThrowWrongPhase(state.Phase);
        }

        Span<byte> preamble = stackalloc byte[WireFormat.PreambleSize];
        if (!reader.TryCopyTo(preamble))
        {
            // Reject a foreign client (an HTTP probe, another tool) from its first bytes instead of waiting.
            int available = (int)Math.Min(reader.Remaining, sizeof(uint));
            Span<byte> magicPrefix = preamble.Slice(0, available);
            reader.TryCopyTo(magicPrefix);
            Span<byte> expected = stackalloc byte[sizeof(uint)];
            BinaryPrimitives.WriteUInt32LittleEndian(expected, WireFormat.Magic);
            if (!magicPrefix.SequenceEqual(expected.Slice(0, available)))
            {
                ThrowBadMagic(magicPrefix);
            }

            return false;
        }

        if (BinaryPrimitives.ReadUInt32LittleEndian(preamble) != WireFormat.Magic)
        {
            ThrowBadMagic(preamble.Slice(0, sizeof(uint)));
        }

        ushort version = BinaryPrimitives.ReadUInt16LittleEndian(preamble.Slice(4));
        if (version != WireFormat.Version)
        {
            ProtocolException.Throw(ProtocolViolation.UnsupportedVersion,
                $"the stream speaks protocol version {version}; this agent speaks version {WireFormat.Version}");
        }

        ushort flags = BinaryPrimitives.ReadUInt16LittleEndian(preamble.Slice(6));
        if (flags != 0)
        {
            ProtocolException.Throw(ProtocolViolation.UnsupportedFlags,
                $"preamble flags 0x{flags:X4}; version {WireFormat.Version} defines none");
        }

        reader.Advance(WireFormat.PreambleSize);
        state.Phase = WireStreamPhase.AwaitingHello;
        return true;
    }

    /// <summary>
    /// Reads one frame and hands its content to <paramref name="handler"/>. EVENTS payloads are passed
    /// without copying when they lie in one segment, else through the state's reused scratch buffer.
    /// </summary>
    public static bool TryReadFrame<THandler>(ref SequenceReader<byte> reader, ref WireStreamState state, ref THandler handler)
        where THandler : IWireHandler
    {
        WireStreamPhase phase = state.Phase;
        if (phase == WireStreamPhase.AwaitingPreamble)
        {
            ThrowWrongPhase(phase);
        }

        byte type;
        uint length;
        ReadOnlySpan<byte> unread = reader.UnreadSpan;
        if (unread.Length >= WireFormat.FrameHeaderSize)
        {
            type = unread[0];
            length = BinaryPrimitives.ReadUInt32LittleEndian(unread.Slice(1));
            CheckFrameType(type, phase);
        }
        else if (!TryReadHeaderSlow(ref reader, phase, out type, out length))
        {
            return false;
        }

        CheckFrameLength((FrameType)type, length, (uint)state.MaxFramePayload);
        if (reader.Remaining - WireFormat.FrameHeaderSize < length)
        {
            return false;
        }

        reader.Advance(WireFormat.FrameHeaderSize);
        int payloadLength = (int)length;
        if (type == (byte)FrameType.Events)
        {
            unread = reader.UnreadSpan;
            if (unread.Length >= payloadLength)
            {
                handler.OnEvents(unread.Slice(0, payloadLength));
            }
            else
            {
                Span<byte> scratch = state.Scratch(payloadLength);
                reader.TryCopyTo(scratch);
                handler.OnEvents(scratch);
            }

            state.EventsRead += payloadLength / WireFormat.EventRecordSize;
        }
        else
        {
            // Only this frame's bytes are handed to the decoder: it can never read past the frame.
            ReadOnlySequence<byte> payload = reader.Sequence.Slice(reader.Position, payloadLength);
            state.Phase = DispatchMessage((FrameType)type, payload, phase, ref handler);
        }

        reader.Advance(payloadLength);
        state.FramesRead++;
        return true;
    }

    /// <summary>The header straddles segments or is incomplete: check what is there, then read it.</summary>
    private static bool TryReadHeaderSlow(ref SequenceReader<byte> reader, WireStreamPhase phase, out byte type, out uint length)
    {
        length = 0;
        if (!reader.TryPeek(out type))
        {
            return false;
        }

        // The type alone can already break the protocol (after GOODBYE any byte does).
        CheckFrameType(type, phase);
        Span<byte> header = stackalloc byte[WireFormat.FrameHeaderSize];
        if (!reader.TryCopyTo(header))
        {
            return false;
        }

        length = BinaryPrimitives.ReadUInt32LittleEndian(header.Slice(1));
        return true;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void CheckFrameType(byte type, WireStreamPhase phase)
    {
        if (phase == WireStreamPhase.Open)
        {
            if (type - 1u >= (uint)LastFrameType || type == (byte)FrameType.Hello)
            {
                ThrowBadFrameType(type, phase);
            }
        }
        else if (type != (byte)FrameType.Hello || phase != WireStreamPhase.AwaitingHello)
        {
            ThrowBadFrameType(type, phase);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void CheckFrameLength(FrameType type, uint length, uint maxPayload)
    {
        if (length > maxPayload)
        {
            ThrowFrameTooLarge(type, length, maxPayload);
        }

        if (type == FrameType.Events)
        {
            if (length == 0 || length % WireFormat.EventRecordSize != 0)
            {
                ThrowBadEventsLength(length);
            }
        }
        else if (type == FrameType.Hello && length == 0)
        {
            ProtocolException.Throw(ProtocolViolation.EmptyFrame, "HELLO has an empty payload");
        }
    }

    private static WireStreamPhase DispatchMessage<THandler>(FrameType type, in ReadOnlySequence<byte> payload, WireStreamPhase phase, ref THandler handler)
        where THandler : IWireHandler
    {
        switch (type)
        {
            case FrameType.Hello:
                Hello hello = Decode(Hello.Parser, payload);
                if (hello.ProtocolVersion != WireFormat.Version)
                {
                    ProtocolException.Throw(ProtocolViolation.UnsupportedVersion,
                        $"HELLO says protocol version {hello.ProtocolVersion}, the preamble said {WireFormat.Version}");
                }

                handler.OnHello(hello);
                return WireStreamPhase.Open;
            case FrameType.Definitions:
                handler.OnDefinitions(Decode(Definitions.Parser, payload));
                return phase;
            case FrameType.Stats:
                handler.OnStats(Decode(Stats.Parser, payload));
                return phase;
            case FrameType.Exceptions:
                // Ids inside are checked by the session, which holds the definitions.
                handler.OnExceptions(Decode(Exceptions.Parser, payload));
                return phase;
            default:
                handler.OnGoodbye(Decode(Goodbye.Parser, payload));
                return WireStreamPhase.Closed;
        }
    }

    private static T Decode<T>(MessageParser<T> parser, in ReadOnlySequence<byte> payload)
        where T : IMessage<T>
    {
        try
        {
            return parser.ParseFrom(payload);
        }
        catch (InvalidProtocolBufferException exception)
        {
            throw new ProtocolException(ProtocolViolation.MalformedMessage,
                $"a {typeof(T).Name} message of {payload.Length} bytes does not decode: {exception.Message}", exception);
        }
    }

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowBadMagic(ReadOnlySpan<byte> received) =>
        ProtocolException.Throw(ProtocolViolation.BadMagic,
            $"the stream starts with {Convert.ToHexString(received)}, not the preamble magic 54415059 (\"TAPY\")");

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowBadFrameType(byte type, WireStreamPhase phase)
    {
        string name = Enum.IsDefined((FrameType)type) ? ((FrameType)type).ToString().ToUpperInvariant() : $"type {type}";
        if (phase == WireStreamPhase.Closed)
        {
            ProtocolException.Throw(ProtocolViolation.FrameAfterGoodbye, $"data after GOODBYE (first byte: {name})");
        }

        if (!Enum.IsDefined((FrameType)type))
        {
            ProtocolException.Throw(ProtocolViolation.UnknownFrameType, $"frame type {type} is not defined in version {WireFormat.Version}");
        }

        if (phase == WireStreamPhase.AwaitingHello)
        {
            ProtocolException.Throw(ProtocolViolation.MissingHello, $"the first frame is {name}, not HELLO");
        }

        ProtocolException.Throw(ProtocolViolation.DuplicateHello, "a second HELLO frame");
    }

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowFrameTooLarge(FrameType type, uint length, uint maxPayload) =>
        ProtocolException.Throw(ProtocolViolation.FrameTooLarge,
            $"a {type.ToString().ToUpperInvariant()} frame declares {length} payload bytes; the limit is {maxPayload}");

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowBadEventsLength(uint length)
    {
        if (length == 0)
        {
            ProtocolException.Throw(ProtocolViolation.EmptyFrame, "EVENTS has an empty payload");
        }

        ProtocolException.Throw(ProtocolViolation.MisalignedEvents,
            $"EVENTS payload of {length} bytes is not a multiple of {WireFormat.EventRecordSize}");
    }

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowWrongPhase(WireStreamPhase phase) =>
        throw new InvalidOperationException(phase == WireStreamPhase.AwaitingPreamble
            ? "Read the preamble before the first frame."
            : $"The preamble was already read (stream phase {phase}).");
}

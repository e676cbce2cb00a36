using System.Buffers;
using System.Buffers.Binary;
using Google.Protobuf;

namespace TelemetryAgent.Protocol;

/// <summary>
/// Writes the wire format (proto/PROTOCOL.md). The agent only reads streams; this is the C# writer for tests,
/// benchmarks and tools that need to produce one.
/// </summary>
public static class WireEncoder
{
    public static void WritePreamble(IBufferWriter<byte> output, ushort version = WireFormat.Version, ushort flags = 0)
    {
        Span<byte> preamble = output.GetSpan(WireFormat.PreambleSize);
        BinaryPrimitives.WriteUInt32LittleEndian(preamble, WireFormat.Magic);
        BinaryPrimitives.WriteUInt16LittleEndian(preamble.Slice(4), version);
        BinaryPrimitives.WriteUInt16LittleEndian(preamble.Slice(6), flags);
        output.Advance(WireFormat.PreambleSize);
    }

    /// <summary>A frame with any type byte and payload, unchecked (tests write invalid frames with it).</summary>
    public static void WriteFrame(IBufferWriter<byte> output, byte type, ReadOnlySpan<byte> payload)
    {
        WriteHeader(output, type, (uint)payload.Length);
        output.Write(payload);
    }

    public static void WriteMessage(IBufferWriter<byte> output, FrameType type, IMessage message)
    {
        ArgumentNullException.ThrowIfNull(message);
        int size = message.CalculateSize();
        CheckPayloadSize(size);
        WriteHeader(output, (byte)type, (uint)size);
        message.WriteTo(output);
    }

    public static void WriteEvents(IBufferWriter<byte> output, ReadOnlySpan<EventRecord> records)
    {
        if (records.IsEmpty)
        {
            throw new ArgumentException("An EVENTS frame carries at least one record.", nameof(records));
        }

        int size = records.Length * WireFormat.EventRecordSize;
        CheckPayloadSize(size);
        WriteHeader(output, (byte)FrameType.Events, (uint)size);
        foreach (EventRecord record in records)
        {
            record.WriteTo(output.GetSpan(WireFormat.EventRecordSize));
            output.Advance(WireFormat.EventRecordSize);
        }
    }

    private static void WriteHeader(IBufferWriter<byte> output, byte type, uint length)
    {
        Span<byte> header = output.GetSpan(WireFormat.FrameHeaderSize);
        header[0] = type;
        BinaryPrimitives.WriteUInt32LittleEndian(header.Slice(1), length);
        output.Advance(WireFormat.FrameHeaderSize);
    }

    private static void CheckPayloadSize(int size)
    {
        if (size > WireFormat.MaxFramePayload)
        {
            throw new ArgumentException($"A payload of {size} bytes exceeds the frame limit of {WireFormat.MaxFramePayload}; split it.");
        }
    }
}

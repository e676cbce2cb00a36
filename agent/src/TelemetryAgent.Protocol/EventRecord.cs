using System.Buffers.Binary;
using System.Runtime.CompilerServices;

namespace TelemetryAgent.Protocol;

/// <summary>
/// One packed 16-byte call event (proto/PROTOCOL.md "Packed event records"): a u64 timestamp, then
/// <c>word = thread_id &lt;&lt; 40 | code_id &lt;&lt; 8 | kind</c>. Decoding does not validate kinds or ids:
/// the session does, because only it knows the definitions.
/// </summary>
public readonly record struct EventRecord(ulong Timestamp, uint ThreadId, uint CodeId, EventKind Kind)
{
    /// <summary>How many records a validated EVENTS payload holds.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Count(ReadOnlySpan<byte> packedRecords) => packedRecords.Length / WireFormat.EventRecordSize;

    /// <summary>Decodes record <paramref name="index"/> of an EVENTS payload.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static EventRecord Read(ReadOnlySpan<byte> packedRecords, int index)
    {
        ReadOnlySpan<byte> record = packedRecords.Slice(index * WireFormat.EventRecordSize, WireFormat.EventRecordSize);
        ulong timestamp = BinaryPrimitives.ReadUInt64LittleEndian(record);
        ulong word = BinaryPrimitives.ReadUInt64LittleEndian(record.Slice(sizeof(ulong)));
        return new EventRecord(timestamp, (uint)(word >> 40), (uint)(word >> 8), (EventKind)(byte)word);
    }

    /// <summary>The record's second u64, as the shim builds it.</summary>
    public static ulong PackWord(uint threadId, uint codeId, EventKind kind)
    {
        if (threadId > WireFormat.MaxThreadId)
        {
            throw new ArgumentOutOfRangeException(nameof(threadId), threadId, "A thread id has 24 bits.");
        }

        return (ulong)threadId << 40 | (ulong)codeId << 8 | (byte)kind;
    }

    /// <summary>Encodes this record into the first 16 bytes of <paramref name="destination"/>.</summary>
    public void WriteTo(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(destination, Timestamp);
        BinaryPrimitives.WriteUInt64LittleEndian(destination.Slice(sizeof(ulong)), PackWord(ThreadId, CodeId, Kind));
    }
}

namespace TelemetryAgent.Protocol.Tests;

public sealed class EventRecordTests
{
    [Fact]
    public void Spec_example_encodes_to_the_documented_bytes()
    {
        var record = new EventRecord(1_000_000, ThreadId: 1, CodeId: 5, EventKind.Return);
        var bytes = new byte[16];
        record.WriteTo(bytes);
        Assert.Equal("40420F00000000000405000000010000", Convert.ToHexString(bytes));
        Assert.Equal(1UL << 40 | 5UL << 8 | 4, EventRecord.PackWord(1, 5, EventKind.Return));
    }

    [Theory]
    [InlineData(0UL, 1u, 1u, (byte)1)]
    [InlineData(ulong.MaxValue, WireFormat.MaxThreadId, uint.MaxValue, (byte)7)]
    [InlineData(123456789012345UL, 0x00AB_CDEFu, 0x8000_0001u, (byte)255)]
    public void Fields_round_trip_at_every_bit_position(ulong timestamp, uint thread, uint code, byte kind)
    {
        var records = new byte[48];
        var record = new EventRecord(timestamp, thread, code, (EventKind)kind);
        record.WriteTo(records.AsSpan(32));
        Assert.Equal(3, EventRecord.Count(records));
        Assert.Equal(record, EventRecord.Read(records, 2));
        Assert.Equal(new EventRecord(0, 0, 0, 0), EventRecord.Read(records, 0));
    }

    [Fact]
    public void A_thread_id_wider_than_24_bits_cannot_be_encoded() =>
        Assert.Throws<ArgumentOutOfRangeException>(() => EventRecord.PackWord(WireFormat.MaxThreadId + 1, 1, EventKind.Start));
}

using System.Buffers;
using TelemetryAgent.Protocol.Messages;
using TelemetryAgent.Protocol.Tests.Support;
using TelemetryAgent.Testing;

namespace TelemetryAgent.Protocol.Tests;

public sealed class WireParserTests
{
    private static readonly byte[] ValidPreamble = [0x54, 0x41, 0x50, 0x59, 0x01, 0x00, 0x00, 0x00];

    [Fact]
    public void Preamble_is_read_in_every_split_and_every_prefix_needs_more_data()
    {
        foreach (int[] cuts in Segments.Splits(ValidPreamble.Length))
        {
            Parse.Outcome outcome = Parse.All(ValidPreamble, cuts);
            Assert.Equal(WireFormat.PreambleSize, outcome.Consumed);
            Assert.Equal(WireStreamPhase.AwaitingHello, outcome.Phase);
        }

        for (int length = 0; length < ValidPreamble.Length; length++)
        {
            foreach (int[] cuts in Segments.Splits(length))
            {
                Parse.Outcome outcome = Parse.All(ValidPreamble.AsSpan(0, length).ToArray(), cuts);
                Assert.Equal(0, outcome.Consumed);
                Assert.Equal(WireStreamPhase.AwaitingPreamble, outcome.Phase);
            }
        }
    }

    [Fact]
    public void Typical_stream_parses_identically_in_every_split_and_every_prefix()
    {
        byte[] stream = TestMessages.TypicalStream();
        Parse.AssertEverySplitAndPrefix(stream);
        Parse.Outcome outcome = Parse.All(stream, []);
        Assert.Equal(WireStreamPhase.Closed, outcome.Phase);
        Assert.Equal(6, outcome.FramesRead);
        Assert.Equal(4, outcome.EventsRead);
    }

    [Fact]
    public void Exceptions_frames_parse_identically_in_every_split_and_every_prefix()
    {
        byte[] stream = WireStream.WithHello()
            .Message(FrameType.Definitions, TestMessages.Definitions())
            .Message(FrameType.Exceptions, TestMessages.Exceptions())
            .Message(FrameType.Exceptions, new Exceptions())
            .Message(FrameType.Goodbye, new Goodbye { Reason = Goodbye.Types.Reason.Exit })
            .ToArray();
        Parse.AssertEverySplitAndPrefix(stream);

        Parse.Outcome outcome = Parse.All(stream, []);
        Assert.Equal(WireStreamPhase.Closed, outcome.Phase);
        Assert.Equal(
            [FrameText.Message(FrameType.Exceptions, TestMessages.Exceptions()), FrameText.Message(FrameType.Exceptions, new Exceptions())],
            outcome.Frames.Skip(2).Take(2));
        Assert.Contains("\"fate\": \"FATE_HANDLED\"", outcome.Frames[2]);
        Assert.Contains("\"count\": \"18446744073709551615\"", outcome.Frames[2]);
    }

    [Fact]
    public void Spec_example_record_is_decoded_in_every_split()
    {
        // proto/PROTOCOL.md: thread 1, code 5, RETURN at t = 1 000 000 ns.
        byte[] stream = WireStream.WithHello()
            .Frame((byte)FrameType.Events, Convert.FromHexString("40420F000000000004050000000100 00".Replace(" ", "")))
            .ToArray();
        Parse.AssertEverySplitAndPrefix(stream);
        Assert.Equal("EVENTS 1000000/1/5/4", Parse.All(stream, []).Frames[^1]);
    }

    [Fact]
    public void Events_in_one_segment_reach_the_handler_without_copying()
    {
        byte[] stream = WireStream.WithHello()
            .Events(new EventRecord(1, 1, 1, EventKind.Start), new EventRecord(2, 1, 1, EventKind.Return))
            .ToArray();
        var probe = new MemoryProbe(stream);
        ParseWith(new ReadOnlySequence<byte>(stream), ref probe);
        Assert.Equal([true], probe.SawSourceMemory);

        // Split inside the payload: the handler gets a copy with the same bytes.
        probe = new MemoryProbe(stream);
        ParseWith(Segments.Create(stream, [stream.Length - 10]), ref probe);
        Assert.Equal([false], probe.SawSourceMemory);
        Assert.Equal(2, probe.Records);
    }

    [Fact]
    public void Events_frames_allocate_nothing_in_steady_state_even_when_split_across_segments()
    {
        var records = new EventRecord[4096];
        for (int i = 0; i < records.Length; i++)
        {
            records[i] = new EventRecord((ulong)i, 1, (uint)i % 7 + 1, i % 2 == 0 ? EventKind.Start : EventKind.Return);
        }

        WireStream oneFrame = WireStream.WithHello().Events(records);
        WireStream manyFrames = WireStream.WithHello();
        for (int i = 0; i < 40; i++)
        {
            manyFrames.Events(records);
        }

        ReadOnlySequence<byte> small = InFourKibSegments(oneFrame.ToArray());
        ReadOnlySequence<byte> large = InFourKibSegments(manyFrames.ToArray());
        for (int warmup = 0; warmup < 3; warmup++)
        {
            AllocatedBytes(small);
            AllocatedBytes(large);
        }

        // The least of a few measurements: a tier-up of the JIT can allocate on this thread once, in any of them;
        // an allocation per frame shows in every one.
        long perExtraFrame = long.MaxValue;
        for (int attempt = 0; attempt < 5; attempt++)
        {
            perExtraFrame = Math.Min(perExtraFrame, (AllocatedBytes(large) - AllocatedBytes(small)) / 39);
        }

        Assert.Equal(0, perExtraFrame);
    }

    [Fact]
    public void A_struct_handler_keeps_its_state_across_frames()
    {
        byte[] stream = TestMessages.TypicalStream();
        var handler = new CountingHandler();
        ParseWith(new ReadOnlySequence<byte>(stream), ref handler);
        Assert.Equal(4, handler.Messages);
        Assert.Equal(4, handler.Events);
        Assert.Equal(1_000_000UL + 1_000_500 + 1_002_000 + 1_003_000, handler.TimestampSum);
    }

    [Fact]
    public void Empty_messages_are_accepted_where_proto3_defaults_encode_to_nothing()
    {
        byte[] stream = WireStream.WithHello()
            .Frame((byte)FrameType.Definitions, [])
            .Frame((byte)FrameType.Stats, [])
            .Frame((byte)FrameType.Goodbye, [])
            .ToArray();
        Parse.AssertEverySplitAndPrefix(stream);
        Assert.Equal(WireStreamPhase.Closed, Parse.All(stream, []).Phase);
    }

    [Fact]
    public void A_frame_of_exactly_the_maximum_payload_is_accepted()
    {
        var records = new EventRecord[WireFormat.MaxFramePayload / WireFormat.EventRecordSize];
        records.AsSpan().Fill(new EventRecord(5, 1, 1, EventKind.Start));
        byte[] stream = WireStream.WithHello().Events(records).ToArray();
        foreach (int[] cuts in new[] { Array.Empty<int>(), [stream.Length / 2], [100, 4096, 70000, stream.Length - 1] })
        {
            Parse.Outcome outcome = Parse.All(stream, cuts);
            Assert.Equal(stream.Length, outcome.Consumed);
            Assert.Equal(records.Length, outcome.EventsRead);
        }

        // Declared but not yet arrived: the header alone is fine, the parser waits.
        byte[] headerOnly = stream.AsSpan(0, stream.Length - WireFormat.MaxFramePayload).ToArray();
        Assert.Equal(headerOnly.Length - WireFormat.FrameHeaderSize, Parse.All(headerOnly, []).Consumed);
    }

    [Fact]
    public void Reading_a_frame_before_the_preamble_is_a_caller_error()
    {
        var state = new WireStreamState();
        var handler = new RecordingHandler();
        Assert.Throws<InvalidOperationException>(() =>
        {
            var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(TestMessages.TypicalStream()));
            WireParser.TryReadFrame(ref reader, ref state, ref handler);
        });
    }

    [Fact]
    public void An_exception_from_the_handler_propagates_unchanged()
    {
        byte[] stream = TestMessages.TypicalStream();
        var handler = new ThrowingHandler();
        var error = Assert.Throws<ProtocolException>(() => ParseWith(new ReadOnlySequence<byte>(stream), ref handler));
        Assert.Equal(ProtocolViolation.UndefinedId, error.Violation);
    }

    private static ReadOnlySequence<byte> InFourKibSegments(byte[] stream)
    {
        var cuts = new List<int>();
        for (int cut = 4096; cut < stream.Length; cut += 4096)
        {
            cuts.Add(cut);
        }

        return Segments.Create(stream, cuts);
    }

    private static long AllocatedBytes(ReadOnlySequence<byte> input)
    {
        var handler = new CountingHandler();
        long before = GC.GetAllocatedBytesForCurrentThread();
        ParseWith(input, ref handler);
        return GC.GetAllocatedBytesForCurrentThread() - before;
    }

    private static void ParseWith<THandler>(ReadOnlySequence<byte> input, ref THandler handler)
        where THandler : IWireHandler
    {
        var state = new WireStreamState();
        var reader = new SequenceReader<byte>(input);
        Assert.True(WireParser.TryReadPreamble(ref reader, ref state));
        while (WireParser.TryReadFrame(ref reader, ref state, ref handler))
        {
        }

        state.ReleaseScratch();
        Assert.True(reader.End);
    }

    private sealed class MemoryProbe(byte[] source) : IWireHandler
    {
        public List<bool> SawSourceMemory { get; } = [];

        public int Records { get; private set; }

        public void OnEvents(ReadOnlySpan<byte> packedRecords)
        {
            SawSourceMemory.Add(packedRecords.Overlaps(source));
            Records += EventRecord.Count(packedRecords);
            Assert.Equal(EventKind.Return, EventRecord.Read(packedRecords, 1).Kind);
        }

        public void OnHello(Hello hello)
        {
        }

        public void OnDefinitions(Definitions definitions)
        {
        }

        public void OnStats(Stats stats)
        {
        }

        public void OnGoodbye(Goodbye goodbye)
        {
        }

        public void OnExceptions(Exceptions exceptions)
        {
        }
    }

    private struct ThrowingHandler : IWireHandler
    {
        public void OnEvents(ReadOnlySpan<byte> packedRecords) =>
            throw new ProtocolException(ProtocolViolation.UndefinedId, "code 1 is not defined");

        public void OnHello(Hello hello)
        {
        }

        public void OnDefinitions(Definitions definitions)
        {
        }

        public void OnStats(Stats stats)
        {
        }

        public void OnGoodbye(Goodbye goodbye)
        {
        }

        public void OnExceptions(Exceptions exceptions)
        {
        }
    }
}

using System.Buffers.Binary;
using System.Text;
using TelemetryAgent.Protocol.Messages;
using TelemetryAgent.Protocol.Tests.Support;
using TelemetryAgent.Testing;

namespace TelemetryAgent.Protocol.Tests;

/// <summary>
/// One test per violation the parser raises. Each bad stream ends with the bytes that prove the violation,
/// so passing also shows it is detected without waiting for anything more (no payload after a bad header).
/// </summary>
public sealed class ViolationTests
{
    [Theory]
    [InlineData("GET / HTTP/1.1\r\n")]
    [InlineData("G")]
    [InlineData("TAX")]
    [InlineData("TAPX\u0001\0\0\0")]
    public void Foreign_bytes_are_BadMagic_from_the_first_wrong_byte(string start) =>
        AssertViolation(Encoding.ASCII.GetBytes(start), ProtocolViolation.BadMagic);

    [Fact]
    public void Other_protocol_versions_are_UnsupportedVersion() =>
        AssertViolation(new WireStream().Preamble(version: 2).ToArray(), ProtocolViolation.UnsupportedVersion);

    [Fact]
    public void Hello_claiming_another_version_is_UnsupportedVersion()
    {
        Hello hello = TestMessages.Hello();
        hello.ProtocolVersion = 2;
        AssertViolation(new WireStream().Preamble().Message(FrameType.Hello, hello).ToArray(), ProtocolViolation.UnsupportedVersion);
    }

    [Fact]
    public void Nonzero_flags_are_UnsupportedFlags() =>
        AssertViolation(new WireStream().Preamble(flags: 0x8000).ToArray(), ProtocolViolation.UnsupportedFlags);

    [Theory]
    [InlineData(0)]
    [InlineData(7)]
    [InlineData(255)]
    public void Undefined_frame_types_are_UnknownFrameType_from_the_type_byte_alone(byte type) =>
        AssertViolation(WireStream.WithHello().Raw([type]).ToArray(), ProtocolViolation.UnknownFrameType);

    [Theory]
    [InlineData(FrameType.Events, WireFormat.MaxFramePayload + 16)]
    [InlineData(FrameType.Definitions, WireFormat.MaxFramePayload + 1)]
    [InlineData(FrameType.Stats, uint.MaxValue)]
    public void Lengths_above_the_limit_are_FrameTooLarge_before_any_payload(FrameType type, uint length) =>
        AssertViolation(WireStream.WithHello().Raw(Header(type, length)).ToArray(), ProtocolViolation.FrameTooLarge);

    [Fact]
    public void A_first_frame_declaring_too_much_is_FrameTooLarge() =>
        AssertViolation(new WireStream().Preamble().Raw(Header(FrameType.Hello, 1u << 31)).ToArray(), ProtocolViolation.FrameTooLarge);

    [Theory]
    [InlineData(8u)]
    [InlineData(17u)]
    [InlineData(WireFormat.MaxFramePayload - 1u)]
    public void Events_lengths_off_the_record_size_are_MisalignedEvents(uint length) =>
        AssertViolation(WireStream.WithHello().Raw(Header(FrameType.Events, length)).ToArray(), ProtocolViolation.MisalignedEvents);

    [Fact]
    public void An_empty_events_frame_is_EmptyFrame() =>
        AssertViolation(WireStream.WithHello().Raw(Header(FrameType.Events, 0)).ToArray(), ProtocolViolation.EmptyFrame);

    [Fact]
    public void An_empty_hello_is_EmptyFrame() =>
        AssertViolation(new WireStream().Preamble().Raw(Header(FrameType.Hello, 0)).ToArray(), ProtocolViolation.EmptyFrame);

    [Theory]
    [InlineData(FrameType.Definitions)]
    [InlineData(FrameType.Events)]
    [InlineData(FrameType.Stats)]
    [InlineData(FrameType.Goodbye)]
    [InlineData(FrameType.Exceptions)]
    public void Any_first_frame_but_hello_is_MissingHello(FrameType type) =>
        AssertViolation(new WireStream().Preamble().Raw([(byte)type]).ToArray(), ProtocolViolation.MissingHello);

    [Fact]
    public void A_second_hello_is_DuplicateHello() =>
        AssertViolation(WireStream.WithHello().Raw([(byte)FrameType.Hello]).ToArray(), ProtocolViolation.DuplicateHello);

    [Theory]
    [InlineData((byte)FrameType.Stats)]
    [InlineData((byte)FrameType.Goodbye)]
    [InlineData((byte)0)]
    public void Any_byte_after_goodbye_is_FrameAfterGoodbye(byte first) =>
        AssertViolation(
            WireStream.WithHello().Message(FrameType.Goodbye, new Goodbye { Reason = Goodbye.Types.Reason.Detach }).Raw([first]).ToArray(),
            ProtocolViolation.FrameAfterGoodbye);

    [Theory]
    [InlineData(FrameType.Hello, "FF")]             // a tag with no end
    [InlineData(FrameType.Hello, "0A05616263")]     // field 1 as a 5-byte string with 3 bytes
    [InlineData(FrameType.Definitions, "0A")]       // a field tag with no length
    [InlineData(FrameType.Definitions, "0A0208")]   // a nested CodeDefinition cut inside a field
    [InlineData(FrameType.Stats, "08FFFFFFFFFFFFFFFFFFFF01")] // an 11-byte varint
    [InlineData(FrameType.Goodbye, "0F")]           // wire type 7 does not exist
    [InlineData(FrameType.Exceptions, "0A0452")]     // a record whose detail (field 10) has no length
    [InlineData(FrameType.Exceptions, "12030A01")]   // a tally whose type name is cut
    public void Payloads_that_do_not_decode_are_MalformedMessage(FrameType type, string payloadHex)
    {
        WireStream builder = type == FrameType.Hello ? new WireStream().Preamble() : WireStream.WithHello();
        AssertViolation(builder.Frame((byte)type, Convert.FromHexString(payloadHex)).ToArray(), ProtocolViolation.MalformedMessage);
    }

    [Fact]
    public void Exceptions_nested_beyond_the_decoders_recursion_limit_are_MalformedMessage()
    {
        // A chain of causes 200 deep: the decoder stops at its recursion limit (100) instead of the stack.
        var detail = new ExceptionDetail { TypeName = "builtins.ValueError" };
        for (int i = 0; i < 200; i++)
        {
            detail = new ExceptionDetail { TypeName = "builtins.ValueError", Cause = detail };
        }

        var exceptions = new Exceptions { Records = { new ExceptionRecord { ThreadId = 1, Detail = detail } } };
        byte[] stream = WireStream.WithHello().Message(FrameType.Exceptions, exceptions).ToArray();
        var error = Assert.Throws<ProtocolException>(() => Parse.All(stream, []));
        Assert.Equal(ProtocolViolation.MalformedMessage, error.Violation);
    }

    /// <summary>Every split of <paramref name="stream"/> must raise <paramref name="expected"/>.</summary>
    private static void AssertViolation(byte[] stream, ProtocolViolation expected)
    {
        foreach (int[] cuts in Segments.Splits(stream.Length))
        {
            var error = Assert.Throws<ProtocolException>(() => Parse.All(stream, cuts));
            Assert.True(expected == error.Violation, $"{Segments.Describe(cuts)}: {error.Message}");
            Assert.StartsWith($"{expected}: ", error.Message);
        }
    }

    private static byte[] Header(FrameType type, uint length)
    {
        var header = new byte[WireFormat.FrameHeaderSize];
        header[0] = (byte)type;
        BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(1), length);
        return header;
    }
}

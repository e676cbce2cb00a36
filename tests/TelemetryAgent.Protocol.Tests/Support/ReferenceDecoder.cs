using TelemetryAgent.Protocol.Messages;

namespace TelemetryAgent.Protocol.Tests.Support;

/// <summary>
/// A deliberately naive decoder of a whole, valid stream held in one array, written from the spec and
/// sharing no code with the parser: the oracle that the parser's output is checked against.
/// </summary>
public static class ReferenceDecoder
{
    public sealed record Decoded(List<string> Frames, List<int> FrameEnds, bool EndsWithGoodbye, long Events);

    public static Decoded Decode(byte[] stream)
    {
        if (stream.Length < 8 || stream[0] != (byte)'T' || stream[1] != (byte)'A' || stream[2] != (byte)'P' || stream[3] != (byte)'Y')
        {
            throw new InvalidDataException("not a stream");
        }

        var frames = new List<string>();
        var ends = new List<int>();
        int offset = 8;
        byte lastType = 0;
        long events = 0;
        while (offset < stream.Length)
        {
            byte type = stream[offset];
            int length = stream[offset + 1] | stream[offset + 2] << 8 | stream[offset + 3] << 16 | stream[offset + 4] << 24;
            int payload = offset + 5;
            frames.Add(type switch
            {
                1 => FrameText.Message(FrameType.Hello, Hello.Parser.ParseFrom(stream, payload, length)),
                2 => FrameText.Message(FrameType.Definitions, Definitions.Parser.ParseFrom(stream, payload, length)),
                3 => FrameText.Events(DecodeRecords(stream, payload, length).ToList()),
                4 => FrameText.Message(FrameType.Stats, Stats.Parser.ParseFrom(stream, payload, length)),
                5 => FrameText.Message(FrameType.Goodbye, Goodbye.Parser.ParseFrom(stream, payload, length)),
                6 => FrameText.Message(FrameType.Exceptions, Exceptions.Parser.ParseFrom(stream, payload, length)),
                _ => throw new InvalidDataException($"type {type}"),
            });
            events += type == 3 ? length / 16 : 0;
            offset = payload + length;
            ends.Add(offset);
            lastType = type;
        }

        return new Decoded(frames, ends, lastType == 5, events);
    }

    private static IEnumerable<EventRecord> DecodeRecords(byte[] stream, int offset, int length)
    {
        for (int at = offset; at < offset + length; at += 16)
        {
            ulong timestamp = BitConverter.ToUInt64(stream, at);
            ulong word = BitConverter.ToUInt64(stream, at + 8);
            yield return new EventRecord(timestamp, (uint)(word >> 40), (uint)(word >> 8 & 0xFFFF_FFFF), (EventKind)(word & 0xFF));
        }
    }
}

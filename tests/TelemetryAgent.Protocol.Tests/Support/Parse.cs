using System.Buffers;
using TelemetryAgent.Testing;

namespace TelemetryAgent.Protocol.Tests.Support;

/// <summary>Runs the parser over one in-memory sequence the way the read loop does, minus the pipe.</summary>
public static class Parse
{
    public sealed record Outcome(List<string> Frames, long Consumed, WireStreamPhase Phase, long FramesRead, long EventsRead);

    public static Outcome All(ReadOnlySequence<byte> input)
    {
        var handler = new RecordingHandler();
        var state = new WireStreamState();
        var reader = new SequenceReader<byte>(input);
        try
        {
            if (WireParser.TryReadPreamble(ref reader, ref state))
            {
                while (WireParser.TryReadFrame(ref reader, ref state, ref handler))
                {
                }
            }

            return new Outcome(handler.Frames, reader.Consumed, state.Phase, state.FramesRead, state.EventsRead);
        }
        finally
        {
            state.ReleaseScratch();
        }
    }

    public static Outcome All(byte[] input, int[] cuts) => All(Segments.Create(input, cuts));

    /// <summary>
    /// Parses <paramref name="stream"/> in every split and asserts each gives the reference decoding; then
    /// asserts that every strict prefix parses exactly the frames it holds whole and reports "need more".
    /// </summary>
    public static void AssertEverySplitAndPrefix(byte[] stream)
    {
        ReferenceDecoder.Decoded expected = ReferenceDecoder.Decode(stream);
        foreach (int[] cuts in Segments.Splits(stream.Length, expected.FrameEnds))
        {
            Outcome outcome = All(stream, cuts);
            Assert.True(outcome.Consumed == stream.Length, $"{Segments.Describe(cuts)}: consumed {outcome.Consumed} of {stream.Length}");
            Assert.Equal(expected.Frames, outcome.Frames);
        }

        AssertEveryPrefixNeedsMoreData(stream, expected);
    }

    public static void AssertEveryPrefixNeedsMoreData(byte[] stream, ReferenceDecoder.Decoded expected)
    {
        var random = new Random(stream.Length);
        foreach (int length in Segments.SplitPoints(stream.Length, expected.FrameEnds).Where(p => p < stream.Length))
        {
            int wholeFrames = expected.FrameEnds.Count(end => end <= length);
            long boundary = wholeFrames == 0 ? (length >= WireFormat.PreambleSize ? WireFormat.PreambleSize : 0) : expected.FrameEnds[wholeFrames - 1];
            byte[] prefix = stream.AsSpan(0, length).ToArray();
            int[][] splits = length < 2 ? [[]] : [[], Segments.RandomCuts(random, length)];
            foreach (int[] cuts in splits)
            {
                Outcome outcome = All(prefix, cuts);
                Assert.True(outcome.Consumed == boundary, $"prefix of {length} bytes, {Segments.Describe(cuts)}: consumed {outcome.Consumed}, expected {boundary}");
                Assert.Equal(expected.Frames.Take(wholeFrames), outcome.Frames);
            }
        }
    }
}

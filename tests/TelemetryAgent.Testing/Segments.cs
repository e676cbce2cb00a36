using System.Buffers;
using TelemetryAgent.Protocol;

namespace TelemetryAgent.Testing;

/// <summary>
/// Builds multi-segment sequences and enumerates the ways to split an input, so that every parser test
/// sees its bytes cut at every place a socket read could cut them.
/// </summary>
public static class Segments
{
    /// <summary>Inputs up to this length are split in every possible way (2^(n-1) ways).</summary>
    public const int ExhaustiveLimit = 14;

    /// <summary>
    /// A sequence whose segments end at <paramref name="cuts"/> (ascending offsets; a repeated offset makes
    /// an empty segment). Every segment is its own array, so a span that outlives its segment is not masked.
    /// </summary>
    public static ReadOnlySequence<byte> Create(ReadOnlySpan<byte> data, IReadOnlyList<int> cuts)
    {
        Segment? first = null;
        Segment? last = null;
        int start = 0;
        for (int i = 0; i <= cuts.Count; i++)
        {
            int end = i < cuts.Count ? cuts[i] : data.Length;
            byte[] piece = data.Slice(start, end - start).ToArray();
            last = last is null ? first = new Segment(piece, runningIndex: 0) : last.Append(piece);
            start = end;
        }

        return new ReadOnlySequence<byte>(first!, 0, last!, last!.Memory.Length);
    }

    /// <summary>The input in segments of <paramref name="segmentSize"/> bytes (the last one shorter), as a socket pipe delivers it.</summary>
    public static ReadOnlySequence<byte> OfSize(ReadOnlySpan<byte> data, int segmentSize)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(segmentSize, 1);
        var cuts = new List<int>();
        for (var offset = segmentSize; offset < data.Length; offset += segmentSize) cuts.Add(offset);
        return Create(data, cuts);
    }

    /// <summary>Above this length not every single split point is tried, only <see cref="SplitPoints"/>.</summary>
    public const int AllPointsLimit = 4096;

    /// <summary>
    /// Every way to split an input of <paramref name="length"/> bytes when it is small; otherwise no split,
    /// each of <see cref="SplitPoints"/> alone, one byte per segment, and <paramref name="randomCount"/> seeded
    /// random splits (some with empty segments).
    /// </summary>
    public static IEnumerable<int[]> Splits(int length, IReadOnlyCollection<int>? anchors = null, int randomCount = 24, int seed = 7)
    {
        if (length <= ExhaustiveLimit)
        {
            int points = Math.Max(length - 1, 0);
            for (int mask = 0; mask < 1 << points; mask++)
            {
                var cuts = new List<int>();
                for (int bit = 0; bit < points; bit++)
                {
                    if ((mask & 1 << bit) != 0)
                    {
                        cuts.Add(bit + 1);
                    }
                }

                yield return cuts.ToArray();
            }

            yield break;
        }

        yield return [];
        foreach (int cut in SplitPoints(length, anchors))
        {
            if (cut > 0 && cut < length)
            {
                yield return [cut];
            }
        }

        yield return Enumerable.Range(1, length - 1).ToArray();
        var random = new Random(seed);
        for (int i = 0; i < randomCount; i++)
        {
            yield return RandomCuts(random, length);
        }
    }

    /// <summary>
    /// Offsets 0..<paramref name="length"/> worth cutting at: all of them for inputs up to
    /// <see cref="AllPointsLimit"/>; for larger ones (testing each would be quadratic) the first and last bytes,
    /// the bytes around each anchor (frame boundaries, where headers and payloads meet), and an even stride.
    /// </summary>
    public static IEnumerable<int> SplitPoints(int length, IReadOnlyCollection<int>? anchors = null)
    {
        if (length <= AllPointsLimit)
        {
            return Enumerable.Range(0, length + 1);
        }

        var points = new SortedSet<int>();
        foreach (int anchor in (anchors ?? []).Append(0).Append(WireFormat.PreambleSize).Append(length))
        {
            for (int delta = -16; delta <= 16; delta++)
            {
                points.Add(Math.Clamp(anchor + delta, 0, length));
            }
        }

        for (int stride = 1; stride < 128; stride++)
        {
            points.Add((int)((long)length * stride / 128));
        }

        return points;
    }

    public static int[] RandomCuts(Random random, int length)
    {
        int count = random.Next(1, Math.Min(length, 64) + 1);
        var cuts = new List<int>(count);
        for (int i = 0; i < count; i++)
        {
            cuts.Add(random.Next(0, length + 1));
        }

        cuts.Sort();
        return cuts.ToArray();
    }

    public static string Describe(int[] cuts) => cuts.Length == 0 ? "one segment" : $"cuts at [{string.Join(",", cuts)}]";

    private sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public Segment(byte[] data, long runningIndex)
        {
            Memory = data;
            RunningIndex = runningIndex;
        }

        public Segment Append(byte[] data)
        {
            var next = new Segment(data, RunningIndex + Memory.Length);
            Next = next;
            return next;
        }
    }
}

using System.Buffers;
using TelemetryAgent.Protocol;
using TelemetryAgent.Protocol.Messages;

namespace TelemetryAgent.Benchmarks;

/// <summary>
/// A realistic recorded connection, built in memory: HELLO, definitions, then call events of four threads
/// walking call stacks of varying depth over a few hundred functions, in EVENTS frames of about 64 KiB,
/// with a STATS frame now and then and GOODBYE at the end.
/// </summary>
public static class SyntheticStream
{
    public const int Threads = 4;
    public const int Functions = 300;

    public static byte[] Create(int eventCount, int eventsPerFrame = 4096, int seed = 42)
    {
        var random = new Random(seed);
        var output = new ArrayBufferWriter<byte>();
        WireEncoder.WritePreamble(output);
        WireEncoder.WriteMessage(output, FrameType.Hello, new Hello
        {
            ProtocolVersion = WireFormat.Version, Pid = 4242, Argv = { "service.py" }, PythonVersion = "3.12.1", Mode = "full",
            ClockMonotonicNs = 1_000_000, ClockUnixNs = 1_700_000_000_000_000_000,
        });

        var definitions = new Definitions();
        for (uint code = 1; code <= Functions; code++)
        {
            definitions.Codes.Add(new CodeDefinition
            {
                Id = code, QualifiedName = $"Handler{code % 17}.method_{code}", FileName = $"/srv/app/module_{code % 23}.py",
                FirstLine = code * 7, Module = $"app.module_{code % 23}",
            });
        }

        for (uint thread = 1; thread <= Threads; thread++)
        {
            definitions.Threads.Add(new ThreadDefinition { Id = thread, Ident = 139_000_000 + thread, NativeId = 4242 + thread, Name = $"worker-{thread}" });
        }

        WireEncoder.WriteMessage(output, FrameType.Definitions, definitions);

        var stacks = new Stack<uint>[Threads];
        for (int i = 0; i < Threads; i++)
        {
            stacks[i] = new Stack<uint>();
        }

        var frame = new EventRecord[eventsPerFrame];
        ulong timestamp = 1_000_000;
        int written = 0;
        int frames = 0;
        while (written < eventCount)
        {
            int count = Math.Min(eventsPerFrame, eventCount - written);
            int threadIndex = random.Next(Threads);
            for (int i = 0; i < count; i++)
            {
                // Threads take turns in bursts, as they do under the GIL.
                if (random.Next(64) == 0)
                {
                    threadIndex = random.Next(Threads);
                }

                Stack<uint> stack = stacks[threadIndex];
                timestamp += (ulong)random.Next(40, 3000);
                bool push = stack.Count == 0 || (stack.Count < 40 && random.Next(100) < 52);
                if (push)
                {
                    uint code = (uint)random.Next(1, Functions + 1);
                    stack.Push(code);
                    frame[i] = new EventRecord(timestamp, (uint)threadIndex + 1, code, EventKind.Start);
                }
                else
                {
                    frame[i] = new EventRecord(timestamp, (uint)threadIndex + 1, stack.Pop(), EventKind.Return);
                }
            }

            WireEncoder.WriteEvents(output, frame.AsSpan(0, count));
            written += count;
            if (++frames % 8 == 0)
            {
                WireEncoder.WriteMessage(output, FrameType.Stats, new Stats { EventsRecorded = (ulong)written, EventsSent = (ulong)written, FramesSent = (ulong)frames });
            }
        }

        WireEncoder.WriteMessage(output, FrameType.Goodbye, new Goodbye { Reason = Goodbye.Types.Reason.Exit, EndMonotonicNs = (long)timestamp });
        return output.WrittenSpan.ToArray();
    }

    /// <summary>The stream cut into segments of <paramref name="segmentSize"/> bytes, as a socket pipe delivers it.</summary>
    public static ReadOnlySequence<byte> InSegments(byte[] stream, int segmentSize)
    {
        Segment first = new(stream.AsMemory(0, Math.Min(segmentSize, stream.Length)), 0);
        Segment last = first;
        for (int offset = segmentSize; offset < stream.Length; offset += segmentSize)
        {
            last = last.Append(stream.AsMemory(offset, Math.Min(segmentSize, stream.Length - offset)));
        }

        return new ReadOnlySequence<byte>(first, 0, last, last.Memory.Length);
    }

    private sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public Segment(ReadOnlyMemory<byte> memory, long runningIndex)
        {
            Memory = memory;
            RunningIndex = runningIndex;
        }

        public Segment Append(ReadOnlyMemory<byte> memory)
        {
            var next = new Segment(memory, RunningIndex + Memory.Length);
            Next = next;
            return next;
        }
    }
}

using TelemetryAgent.Protocol;
using TelemetryAgent.Protocol.Messages;

namespace TelemetryAgent.Testing;

/// <summary>
/// A realistic recorded connection, built in memory: HELLO, definitions, then call events of four threads
/// walking call stacks of varying depth over a few hundred functions, in EVENTS frames of about 64 KiB,
/// with a STATS frame now and then and GOODBYE at the end.
/// </summary>
public static class SyntheticStream
{
    public const int Threads = 4;
    public const int Functions = 300;

    /// <summary>A service's HELLO: pid 4242, full mode.</summary>
    public static Hello Hello() => new()
    {
        ProtocolVersion = WireFormat.Version, Pid = 4242, Argv = { "service.py" }, PythonVersion = "3.12.1", Mode = "full",
        ClockMonotonicNs = 1_000_000, ClockUnixNs = 1_700_000_000_000_000_000, WorkingDirectory = "/srv/app",
    };

    /// <summary><see cref="Functions"/> functions over 23 modules, and <see cref="Threads"/> worker threads.</summary>
    public static Definitions Definitions()
    {
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
        return definitions;
    }

    public static byte[] Create(int eventCount, int eventsPerFrame = 4096, int seed = 42)
    {
        var random = new Random(seed);
        var stream = new WireStream().Preamble().Message(FrameType.Hello, Hello()).Message(FrameType.Definitions, Definitions());

        var stacks = new Stack<uint>[Threads];
        for (var i = 0; i < Threads; i++) stacks[i] = new Stack<uint>();

        var frame = new EventRecord[eventsPerFrame];
        ulong timestamp = 1_000_000;
        var written = 0;
        var frames = 0;
        while (written < eventCount)
        {
            var count = Math.Min(eventsPerFrame, eventCount - written);
            var threadIndex = random.Next(Threads);
            for (var i = 0; i < count; i++)
            {
                // Threads take turns in bursts, as they do under the GIL.
                if (random.Next(64) == 0) threadIndex = random.Next(Threads);

                var stack = stacks[threadIndex];
                timestamp += (ulong)random.Next(40, 3000);
                var push = stack.Count == 0 || (stack.Count < 40 && random.Next(100) < 52);
                if (push)
                {
                    var code = (uint)random.Next(1, Functions + 1);
                    stack.Push(code);
                    frame[i] = new EventRecord(timestamp, (uint)threadIndex + 1, code, EventKind.Start);
                }
                else
                {
                    frame[i] = new EventRecord(timestamp, (uint)threadIndex + 1, stack.Pop(), EventKind.Return);
                }
            }

            stream.Events(frame.AsSpan(0, count));
            written += count;
            if (++frames % 8 == 0)
            {
                stream.Stats(new Stats { EventsRecorded = (ulong)written, EventsSent = (ulong)written, FramesSent = (ulong)frames });
            }
        }

        return stream.Goodbye(new Goodbye { Reason = Goodbye.Types.Reason.Exit, EndMonotonicNs = (long)timestamp }).ToArray();
    }
}

using System.Buffers;
using Google.Protobuf;
using TelemetryAgent.Protocol.Messages;
using TelemetryAgent.Protocol;
using WireFormat = TelemetryAgent.Protocol.WireFormat;

namespace TelemetryAgent.Testing;

/// <summary>
/// Builds wire streams with the protocol's own encoder: the one stream builder of the tests and benchmarks, from
/// well-formed connections to single raw bytes for violations.
/// </summary>
public sealed class WireStream
{
    private readonly ArrayBufferWriter<byte> _output = new();

    /// <summary>The preamble and <see cref="TestMessages.Hello()"/>.</summary>
    public static WireStream WithHello() => new WireStream().Preamble().Message(FrameType.Hello, TestMessages.Hello());

    public int Length => _output.WrittenCount;

    public WireStream Preamble(ushort version = WireFormat.Version, ushort flags = 0)
    {
        WireEncoder.WritePreamble(_output, version, flags);
        return this;
    }

    public WireStream Message(FrameType type, IMessage message)
    {
        WireEncoder.WriteMessage(_output, type, message);
        return this;
    }

    /// <summary>HELLO of <c>/srv/app/app.py</c> with process id <paramref name="pid"/> (<see cref="TestMessages.Hello(long)"/>).</summary>
    public WireStream Hello(long pid) => Message(FrameType.Hello, TestMessages.Hello(pid));

    /// <summary>DEFINITIONS of functions in <c>/srv/app/app.py</c> (first line = id) and threads (1 is the main one).</summary>
    public WireStream Definitions((uint Id, string Name)[] codes, (uint Id, string Name)[] threads)
    {
        var definitions = new Definitions();
        foreach (var (id, name) in codes)
        {
            definitions.Codes.Add(new CodeDefinition { Id = id, QualifiedName = name, FileName = "/srv/app/app.py", FirstLine = id });
        }
        foreach (var (id, name) in threads)
        {
            definitions.Threads.Add(new ThreadDefinition { Id = id, Name = name, IsMain = id == 1 });
        }
        return Message(FrameType.Definitions, definitions);
    }

    public WireStream Stats(Stats stats) => Message(FrameType.Stats, stats);

    public WireStream Exceptions(Exceptions exceptions) => Message(FrameType.Exceptions, exceptions);

    public WireStream Goodbye(Goodbye goodbye) => Message(FrameType.Goodbye, goodbye);

    public WireStream Events(params EventRecord[] records) => Events(records.AsSpan());

    public WireStream Events(ReadOnlySpan<EventRecord> records)
    {
        WireEncoder.WriteEvents(_output, records);
        return this;
    }

    public WireStream Frame(byte type, ReadOnlySpan<byte> payload)
    {
        WireEncoder.WriteFrame(_output, type, payload);
        return this;
    }

    public WireStream Raw(ReadOnlySpan<byte> bytes)
    {
        _output.Write(bytes);
        return this;
    }

    public byte[] ToArray() => _output.WrittenSpan.ToArray();
}

/// <summary>Messages for streams and sessions, in the shape the shim sends them.</summary>
public static class TestMessages
{
    /// <summary>A HELLO of <c>app.py</c> (pid 4242) whose clocks start at 1 ms.</summary>
    public static Hello Hello() => new()
    {
        ProtocolVersion = 1,
        ShimVersion = "0.1.0",
        Pid = 4242,
        Argv = { "app.py", "--port", "8080" },
        PythonImplementation = "cpython",
        PythonVersion = "3.12.1",
        ClockMonotonicNs = 1_000_000,
        ClockUnixNs = 1_700_000_000_000_000_000,
        Mode = "full",
        ToolId = 2,
    };

    /// <summary>
    /// A HELLO of <c>/srv/app/app.py</c> run in <c>/srv/app</c>, whose monotonic clock starts at 0 (so a monotonic time
    /// is an offset from <c>ClockUnixNs</c>).
    /// </summary>
    public static Hello Hello(long pid)
    {
        var hello = new Hello
        {
            ProtocolVersion = 1, Pid = pid, ClockMonotonicNs = 0, ClockUnixNs = 1_700_000_000_000_000_000,
            WorkingDirectory = SessionScript.WorkingDirectory, Executable = "/usr/bin/python3",
        };
        hello.Argv.Add("/srv/app/app.py");
        return hello;
    }

    public static Definitions Definitions() => new()
    {
        Codes =
        {
            new CodeDefinition { Id = 1, QualifiedName = "main", FileName = "app.py", FirstLine = 1, Module = "__main__" },
            new CodeDefinition { Id = 2, QualifiedName = "Parser.parse.<locals>.helper", FileName = "/srv/é/parser.py", FirstLine = 40, KindFlags = 1 },
        },
        Threads = { new ThreadDefinition { Id = 1, Ident = 140_000_000_000_000, NativeId = 4242, Name = "MainThread", IsMain = true } },
    };

    /// <summary>
    /// An EXCEPTIONS message using every field: a handled record whose exception has notes, a cause, a context and
    /// a group of members (one nested), an escaped one without detail, and tallies.
    /// </summary>
    public static Exceptions Exceptions()
    {
        var inner = new ExceptionDetail
        {
            TypeName = "builtins.KeyError", Message = "'é'", Traceback = { new Location { CodeId = 2, Line = 44 } },
        };
        var group = new ExceptionDetail
        {
            TypeName = "builtins.ExceptionGroup",
            Message = "batch failed (2 sub-exceptions)",
            Members =
            {
                new ExceptionDetail { TypeName = "builtins.ValueError", Message = "bad row 3" },
                new ExceptionDetail { TypeName = "builtins.ExceptionGroup", Message = "nested (1 sub-exception)", Members = { inner } },
            },
            MembersOmitted = 3,
            NestingTruncated = true,
        };
        return new Exceptions
        {
            Records =
            {
                new ExceptionRecord
                {
                    ThreadId = 1, RaisedNs = 1_000_100, FateNs = 1_000_900, Fate = ExceptionFate.FateHandled,
                    HandledAt = new Location { CodeId = 1, Line = 12 },
                    Stack = { new Location { CodeId = 1, Line = 10 }, new Location { CodeId = uint.MaxValue, Line = uint.MaxValue } },
                    StackTruncated = true, FramesUnwound = 1, Reraises = 2,
                    Detail = new ExceptionDetail
                    {
                        TypeName = "app.errors.Invalid", Message = "order 7 🙂", MessageStatus = ExceptionDetail.Types.MessageStatus.MessageTruncated,
                        Notes = { "while loading", "retry 2" }, NotesOmitted = 1,
                        Traceback = { new Location { CodeId = 1, Line = 10 } },
                        Cause = group, SuppressContext = true,
                        Context = new ExceptionDetail { TypeName = "builtins.OSError", MessageStatus = ExceptionDetail.Types.MessageStatus.MessageUnavailable },
                    },
                },
                new ExceptionRecord { ThreadId = WireFormat.MaxThreadId, Fate = ExceptionFate.FateEscapedProgram },
            },
            Tallies =
            {
                new ExceptionTally { TypeName = "builtins.StopIteration", RaisedAt = new Location { CodeId = 2, Line = 41 }, Fate = ExceptionFate.FateHandled, Count = ulong.MaxValue },
                new ExceptionTally { TypeName = "builtins.TimeoutError", Fate = ExceptionFate.FateInFlight, Count = 1 },
            },
        };
    }

    /// <summary>A typical whole connection: every frame type, events in two frames, GOODBYE last.</summary>
    public static byte[] TypicalStream() => WireStream.WithHello()
        .Message(FrameType.Definitions, Definitions())
        .Events(
            new EventRecord(1_000_000, 1, 1, EventKind.Start),
            new EventRecord(1_000_500, 1, 2, EventKind.Start))
        .Message(FrameType.Stats, new Stats { EventsRecorded = 2, EventsSent = 2, FramesSent = 3, Connects = 1 })
        .Events(
            new EventRecord(1_002_000, 1, 2, EventKind.Return),
            new EventRecord(1_003_000, WireFormat.MaxThreadId, uint.MaxValue, EventKind.Seed))
        .Message(FrameType.Goodbye, new Goodbye { Reason = Goodbye.Types.Reason.Exit, EndMonotonicNs = 1_004_000 })
        .ToArray();
}

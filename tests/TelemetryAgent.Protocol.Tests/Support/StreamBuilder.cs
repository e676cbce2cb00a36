using System.Buffers;
using Google.Protobuf;
using TelemetryAgent.Protocol.Messages;

namespace TelemetryAgent.Protocol.Tests.Support;

/// <summary>Fluent construction of test streams on top of <see cref="WireEncoder"/>.</summary>
public sealed class StreamBuilder
{
    private readonly ArrayBufferWriter<byte> _output = new();

    public static StreamBuilder WithHello()
    {
        var builder = new StreamBuilder();
        builder.Preamble().Message(FrameType.Hello, TestMessages.Hello());
        return builder;
    }

    public int Length => _output.WrittenCount;

    public StreamBuilder Preamble(ushort version = WireFormat.Version, ushort flags = 0)
    {
        WireEncoder.WritePreamble(_output, version, flags);
        return this;
    }

    public StreamBuilder Message(FrameType type, IMessage message)
    {
        WireEncoder.WriteMessage(_output, type, message);
        return this;
    }

    public StreamBuilder Events(params EventRecord[] records)
    {
        WireEncoder.WriteEvents(_output, records);
        return this;
    }

    public StreamBuilder Frame(byte type, ReadOnlySpan<byte> payload)
    {
        WireEncoder.WriteFrame(_output, type, payload);
        return this;
    }

    public StreamBuilder Raw(ReadOnlySpan<byte> bytes)
    {
        _output.Write(bytes);
        return this;
    }

    public byte[] ToArray() => _output.WrittenSpan.ToArray();
}

public static class TestMessages
{
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
    public static byte[] TypicalStream() => StreamBuilder.WithHello()
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

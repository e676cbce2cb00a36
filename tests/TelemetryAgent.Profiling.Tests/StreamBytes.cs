using System.Buffers;
using TelemetryAgent.Protocol;
using TelemetryAgent.Protocol.Messages;

namespace TelemetryAgent.Profiling.Tests;

/// <summary>Builds a wire stream with the protocol's encoder, for tests that go through the real read loop.</summary>
internal sealed class StreamBytes
{
    private readonly ArrayBufferWriter<byte> _output = new();

    public StreamBytes() => WireEncoder.WritePreamble(_output);

    public StreamBytes Hello(long pid)
    {
        var hello = new Hello
        {
            ProtocolVersion = 1, Pid = pid, ClockMonotonicNs = 0, ClockUnixNs = 1_700_000_000_000_000_000,
            WorkingDirectory = SessionScript.WorkingDirectory, Executable = "/usr/bin/python3",
        };
        hello.Argv.Add("/srv/app/app.py");
        WireEncoder.WriteMessage(_output, FrameType.Hello, hello);
        return this;
    }

    public StreamBytes Definitions((uint Id, string Name)[] codes, (uint Id, string Name)[] threads)
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
        WireEncoder.WriteMessage(_output, FrameType.Definitions, definitions);
        return this;
    }

    public StreamBytes Events(params EventRecord[] records)
    {
        WireEncoder.WriteEvents(_output, records);
        return this;
    }

    public StreamBytes Exceptions(Exceptions exceptions)
    {
        WireEncoder.WriteMessage(_output, FrameType.Exceptions, exceptions);
        return this;
    }

    public StreamBytes Stats(Stats stats)
    {
        WireEncoder.WriteMessage(_output, FrameType.Stats, stats);
        return this;
    }

    public StreamBytes Goodbye(Goodbye goodbye)
    {
        WireEncoder.WriteMessage(_output, FrameType.Goodbye, goodbye);
        return this;
    }

    public byte[] ToArray() => _output.WrittenSpan.ToArray();
}

using Google.Protobuf;
using TelemetryAgent.Protocol.Messages;

namespace TelemetryAgent.Protocol.Tests.Support;

/// <summary>Describes decoded frames as comparable text, one line per frame, so failures diff readably.</summary>
public static class FrameText
{
    public static string Message(FrameType type, IMessage message) =>
        $"{type.ToString().ToUpperInvariant()} {JsonFormatter.Default.Format(message)}";

    public static string Events(IEnumerable<EventRecord> records) =>
        "EVENTS " + string.Join(" ", records.Select(r => $"{r.Timestamp}/{r.ThreadId}/{r.CodeId}/{(byte)r.Kind}"));
}

/// <summary>A class handler that records every frame it is given.</summary>
public sealed class RecordingHandler : IWireHandler
{
    public List<string> Frames { get; } = [];

    public int EventsCalls { get; private set; }

    public void OnHello(Hello hello) => Frames.Add(FrameText.Message(FrameType.Hello, hello));

    public void OnDefinitions(Definitions definitions) => Frames.Add(FrameText.Message(FrameType.Definitions, definitions));

    public void OnEvents(ReadOnlySpan<byte> packedRecords)
    {
        EventsCalls++;
        var records = new EventRecord[EventRecord.Count(packedRecords)];
        for (int i = 0; i < records.Length; i++)
        {
            records[i] = EventRecord.Read(packedRecords, i);
        }

        Frames.Add(FrameText.Events(records));
    }

    public void OnStats(Stats stats) => Frames.Add(FrameText.Message(FrameType.Stats, stats));

    public void OnGoodbye(Goodbye goodbye) => Frames.Add(FrameText.Message(FrameType.Goodbye, goodbye));
}

/// <summary>A struct handler, as production code passes one: state must survive being passed by ref.</summary>
public struct CountingHandler : IWireHandler
{
    public int Messages;
    public long Events;
    public ulong TimestampSum;

    public void OnHello(Hello hello) => Messages++;

    public void OnDefinitions(Definitions definitions) => Messages++;

    public void OnEvents(ReadOnlySpan<byte> packedRecords)
    {
        int count = EventRecord.Count(packedRecords);
        for (int i = 0; i < count; i++)
        {
            TimestampSum += EventRecord.Read(packedRecords, i).Timestamp;
        }

        Events += count;
    }

    public void OnStats(Stats stats) => Messages++;

    public void OnGoodbye(Goodbye goodbye) => Messages++;
}

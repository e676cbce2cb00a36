using Google.Protobuf;
using TelemetryAgent.Protocol.Messages;

namespace TelemetryAgent.Protocol.Tests.Support;

/// <summary>Describes decoded frames as comparable text, one line per frame, so failures diff readably.</summary>
public static class FrameText
{
    public static string Message(FrameType type, IMessage message) =>
        $"{type.ToString().ToUpperInvariant()} {JsonFormatter.Default.Format(message)}";

    /// <summary>Up to this many records are spelled out; longer frames show their head and a checksum.</summary>
    public const int SpelledOutRecords = 64;

    public static string Events(IReadOnlyList<EventRecord> records)
    {
        if (records.Count <= SpelledOutRecords)
        {
            return "EVENTS " + string.Join(" ", records.Select(Spell));
        }

        // FNV-1a over every field: any difference in any record changes it.
        ulong hash = 14695981039346656037;
        foreach (EventRecord r in records)
        {
            foreach (ulong field in (ReadOnlySpan<ulong>)[r.Timestamp, r.ThreadId, r.CodeId, (byte)r.Kind])
            {
                hash = (hash ^ field) * 1099511628211;
            }
        }

        return $"EVENTS {records.Count} records, fnv {hash:X16}: {string.Join(" ", records.Take(8).Select(Spell))} ...";
    }

    private static string Spell(EventRecord r) => $"{r.Timestamp}/{r.ThreadId}/{r.CodeId}/{(byte)r.Kind}";
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

    public void OnExceptions(Exceptions exceptions) => Frames.Add(FrameText.Message(FrameType.Exceptions, exceptions));
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

    public void OnExceptions(Exceptions exceptions) => Messages++;
}

using System.Buffers;
using System.IO.Pipelines;
using System.Text.Json;
using Google.Protobuf;
using TelemetryAgent.Protocol.Messages;
using TelemetryAgent.Protocol.Tests.Support;
using TelemetryAgent.Testing;

namespace TelemetryAgent.Protocol.Tests;

/// <summary>
/// proto/testdata/*.bin are streams written by the Python shim's encoder; each *.json beside it describes
/// the same stream frame by frame (proto/PROTOCOL.md "Golden JSON layout"). Parsing the .bin, in every
/// split, must give exactly the JSON. The shim's own tests check the other direction.
/// </summary>
public sealed class GoldenStreamTests
{
    /// <summary>Kept in code so the comparison is exercised even on a checkout without golden files.</summary>
    private const string BuiltInJson = """
        {
          "description": "built into the test: every frame type, ids at their widest, a generator resumed",
          "frames": [
            {"type": "HELLO", "message": {"protocol_version": 1, "pid": 4242, "argv": ["app.py", "-v"],
              "clock_monotonic_ns": 1000000, "clock_unix_ns": 1700000000123456789, "mode": "full", "tool_id": 2}},
            {"type": "DEFINITIONS", "message": {
              "codes": [{"id": 1, "qualified_name": "main", "file_name": "app.py", "first_line": 1, "module": "__main__"},
                        {"id": 4294967295, "qualified_name": "gen", "file_name": "app.py", "first_line": 9, "kind_flags": 1}],
              "threads": [{"id": 16777215, "ident": 18446744073709551615, "native_id": 77, "name": "MainThread", "is_main": true}]}},
            {"type": "EVENTS", "events": [
              {"ts": 1000000, "thread": 16777215, "code": 1, "kind": "SEED"},
              {"ts": 1000100, "thread": 16777215, "code": 4294967295, "kind": "START"},
              {"ts": 1000200, "thread": 16777215, "code": 4294967295, "kind": "YIELD"},
              {"ts": 1000300, "thread": 16777215, "code": 4294967295, "kind": "RESUME"},
              {"ts": 1000400, "thread": 16777215, "code": 4294967295, "kind": "THROW"},
              {"ts": 1000500, "thread": 16777215, "code": 4294967295, "kind": "UNWIND"},
              {"ts": 18446744073709551615, "thread": 16777215, "code": 1, "kind": "RETURN"}]},
            {"type": "STATS", "message": {"events_recorded": 7, "events_sent": 7, "frames_sent": 4, "connects": 1}},
            {"type": "EXCEPTIONS", "message": {
              "records": [{"thread_id": 16777215, "raised_ns": 1000450, "fate_ns": 1000500, "fate": "FATE_HANDLED",
                "handled_at": {"code_id": 1, "line": 3}, "stack": [{"code_id": 1, "line": 3}, {"code_id": 4294967295, "line": 10}],
                "frames_unwound": 1, "detail": {"type_name": "builtins.ValueError", "message": "bad", "notes": ["row 3"],
                  "traceback": [{"code_id": 4294967295, "line": 10}],
                  "cause": {"type_name": "builtins.KeyError", "message": "'k'", "message_status": "MESSAGE_TRUNCATED"},
                  "members": [{"type_name": "builtins.OSError", "message_status": "MESSAGE_UNAVAILABLE"}], "members_omitted": 2}}],
              "tallies": [{"type_name": "builtins.ValueError", "raised_at": {"code_id": 4294967295, "line": 10},
                "fate": "FATE_HANDLED", "count": 18446744073709551615}]}},
            {"type": "GOODBYE", "message": {"reason": "REASON_EXIT", "end_monotonic_ns": 1000600,
              "final_stats": {"events_recorded": 7, "events_sent": 7, "frames_sent": 5, "connects": 1}}}
          ]
        }
        """;

    private const string BuiltIn = "(built-in)";

    public static TheoryData<string> Streams()
    {
        var streams = new TheoryData<string> { BuiltIn };
        foreach (string bin in GoldenFiles())
        {
            streams.Add(Path.GetFileNameWithoutExtension(bin));
        }

        return streams;
    }

    [Theory]
    [MemberData(nameof(Streams))]
    public async Task Golden_stream_parses_to_its_json_in_every_split(string name)
    {
        (byte[] stream, string json) = Load(name);
        List<string> expected = ExpectedFrames(json);
        Assert.NotEmpty(expected);

        ReferenceDecoder.Decoded decoded = ReferenceDecoder.Decode(stream);
        foreach (int[] cuts in Segments.Splits(stream.Length, decoded.FrameEnds, randomCount: 16))
        {
            Parse.Outcome outcome = Parse.All(stream, cuts);
            Assert.True(outcome.Consumed == stream.Length, $"{name}, {Segments.Describe(cuts)}: consumed {outcome.Consumed} of {stream.Length}");
            Assert.Equal(expected, outcome.Frames);
        }

        Assert.Equal(expected, decoded.Frames);
        Parse.AssertEveryPrefixNeedsMoreData(stream, decoded);

        var handler = new RecordingHandler();
        WireConnectionResult result = await WireConnection.RunAsync(PipeReader.Create(new ReadOnlySequence<byte>(stream)), handler);
        bool endsWithGoodbye = expected[^1].StartsWith("GOODBYE ", StringComparison.Ordinal);
        Assert.Equal(endsWithGoodbye ? WireStreamEnd.Goodbye : WireStreamEnd.EndOfStream, result.End);
        Assert.Equal(stream.Length, result.Bytes);
        Assert.Equal(expected, handler.Frames);
    }

    [Fact]
    public void Golden_folder_holds_bin_and_json_in_pairs()
    {
        string folder = TestDataFolder();
        string[] bins = GoldenFiles();
        string[] jsons = Directory.GetFiles(folder, "*.json");
        Assert.True(bins.Length > 0, $"{folder} has no golden .bin streams");
        Assert.Equal(
            bins.Select(Path.GetFileNameWithoutExtension).Order(StringComparer.Ordinal),
            jsons.Select(Path.GetFileNameWithoutExtension).Order(StringComparer.Ordinal));
    }

    private static (byte[] Stream, string Json) Load(string name)
    {
        if (name == BuiltIn)
        {
            return (Encode(BuiltInJson), BuiltInJson);
        }

        string basePath = Path.Combine(TestDataFolder(), name);
        return (File.ReadAllBytes(basePath + ".bin"), File.ReadAllText(basePath + ".json"));
    }

    /// <summary>The frames a golden JSON describes, in <see cref="FrameText"/> form.</summary>
    private static List<string> ExpectedFrames(string json)
    {
        using JsonDocument document = JsonDocument.Parse(json);
        var frames = new List<string>();
        foreach (JsonElement frame in document.RootElement.GetProperty("frames").EnumerateArray())
        {
            FrameType type = Enum.Parse<FrameType>(frame.GetProperty("type").GetString()!, ignoreCase: true);
            frames.Add(type == FrameType.Events
                ? FrameText.Events(ReadEvents(frame.GetProperty("events")))
                : FrameText.Message(type, ReadMessage(type, frame.GetProperty("message"))));
        }

        return frames;
    }

    private static IMessage ReadMessage(FrameType type, JsonElement message)
    {
        string text = QuoteIntegers(message);
        return type switch
        {
            FrameType.Hello => JsonParser.Default.Parse<Hello>(text),
            FrameType.Definitions => JsonParser.Default.Parse<Definitions>(text),
            FrameType.Stats => JsonParser.Default.Parse<Stats>(text),
            FrameType.Goodbye => JsonParser.Default.Parse<Goodbye>(text),
            FrameType.Exceptions => JsonParser.Default.Parse<Exceptions>(text),
            _ => throw new InvalidDataException($"{type} carries no message"),
        };
    }

    /// <summary>
    /// Google.Protobuf's JsonParser reads JSON numbers as doubles, which loses 64-bit values above 2^53
    /// (nanosecond wall clocks, thread idents). The protobuf JSON mapping also accepts integers as strings,
    /// which it reads exactly, so integers are handed over as strings.
    /// </summary>
    private static string QuoteIntegers(JsonElement element)
    {
        using var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer))
        {
            Write(element, writer);
        }

        return System.Text.Encoding.UTF8.GetString(buffer.ToArray());

        static void Write(JsonElement element, Utf8JsonWriter writer)
        {
            switch (element.ValueKind)
            {
                case JsonValueKind.Object:
                    writer.WriteStartObject();
                    foreach (JsonProperty property in element.EnumerateObject())
                    {
                        writer.WritePropertyName(property.Name);
                        Write(property.Value, writer);
                    }

                    writer.WriteEndObject();
                    break;
                case JsonValueKind.Array:
                    writer.WriteStartArray();
                    foreach (JsonElement item in element.EnumerateArray())
                    {
                        Write(item, writer);
                    }

                    writer.WriteEndArray();
                    break;
                case JsonValueKind.Number when element.GetRawText().All(c => char.IsAsciiDigit(c) || c == '-'):
                    writer.WriteStringValue(element.GetRawText());
                    break;
                default:
                    element.WriteTo(writer);
                    break;
            }
        }
    }

    /// <summary>
    /// The events of a golden EVENTS frame; a run <c>{"repeat": n, "ts_step": s, "events": [...]}</c> stands for its
    /// events n times, the timestamps of copy k moved by k * s (proto/PROTOCOL.md).
    /// </summary>
    private static List<EventRecord> ReadEvents(JsonElement events)
    {
        var records = new List<EventRecord>();
        foreach (JsonElement e in events.EnumerateArray())
        {
            if (!e.TryGetProperty("repeat", out JsonElement repeat))
            {
                records.Add(new EventRecord(
                    e.GetProperty("ts").GetUInt64(),
                    e.GetProperty("thread").GetUInt32(),
                    e.GetProperty("code").GetUInt32(),
                    Enum.Parse<EventKind>(e.GetProperty("kind").GetString()!.Replace("_", "", StringComparison.Ordinal), ignoreCase: true)));
                continue;
            }

            List<EventRecord> run = ReadEvents(e.GetProperty("events"));
            ulong step = e.GetProperty("ts_step").GetUInt64();
            for (ulong k = 0; k < repeat.GetUInt64(); k++)
            {
                records.AddRange(run.Select(record => record with { Timestamp = record.Timestamp + k * step }));
            }
        }

        return records;
    }

    /// <summary>Encodes a golden JSON with the C# encoder (used for the built-in stream).</summary>
    private static byte[] Encode(string json)
    {
        var builder = new WireStream().Preamble();
        using JsonDocument document = JsonDocument.Parse(json);
        foreach (JsonElement frame in document.RootElement.GetProperty("frames").EnumerateArray())
        {
            FrameType type = Enum.Parse<FrameType>(frame.GetProperty("type").GetString()!, ignoreCase: true);
            if (type == FrameType.Events)
            {
                builder.Events(ReadEvents(frame.GetProperty("events")).ToArray());
            }
            else
            {
                builder.Message(type, ReadMessage(type, frame.GetProperty("message")));
            }
        }

        return builder.ToArray();
    }

    private static string[] GoldenFiles()
    {
        string folder = TestDataFolder();
        return Directory.Exists(folder) ? Directory.GetFiles(folder, "*.bin").Order(StringComparer.Ordinal).ToArray() : [];
    }

    private static string TestDataFolder()
    {
        for (DirectoryInfo? directory = new(AppContext.BaseDirectory); directory is not null; directory = directory.Parent)
        {
            if (File.Exists(Path.Combine(directory.FullName, "TelemetryAgent.sln")))
            {
                return Path.Combine(directory.FullName, "proto", "testdata");
            }
        }

        throw new DirectoryNotFoundException($"no TelemetryAgent.sln above {AppContext.BaseDirectory}");
    }
}

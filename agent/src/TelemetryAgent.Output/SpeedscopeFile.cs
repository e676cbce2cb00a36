using System.Globalization;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using TelemetryAgent.Profiling;
using TelemetryAgent.Profiling.Formats;

namespace TelemetryAgent.Output;

/// <summary>
/// profile.speedscope.json (https://www.speedscope.app/file-format-schema.json): frames shared by all profiles,
/// and one "sampled" profile per thread of each process whose samples are the distinct stacks of the call tree
/// weighted by their self time in nanoseconds. Threads with no self time are left out.
/// </summary>
public sealed class SpeedscopeFile : IOutputFile
{
    public const string FileName = "profile.speedscope.json";
    public const string SchemaUrl = "https://www.speedscope.app/file-format-schema.json";
    /// <summary>The file's <c>exporter</c> field.</summary>
    public const string Exporter = "telemetry-agent";

    public string Name => FileName;

    public void Write(Stream output, OutputRun run) => Write(output, run.Processes, run.Title);

    private static void Write(Stream output, IReadOnlyList<ProcessProfile> profiles, string name)
    {
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(profiles);

        var frames = new List<FunctionInfo>();
        var frameIndexes = new Dictionary<FunctionInfo, int>();
        var threadProfiles = new List<ThreadSamples>();
        foreach (var profile in profiles)
        {
            foreach (var thread in profile.Threads)
            {
                var samples = CollectSamples(thread.Root, frames, frameIndexes);
                if (samples.Weights.Count == 0) continue;
                threadProfiles.Add(samples with
                {
                    Name = $"{ProfileLabels.Process(profile)} {ProfileLabels.Thread(thread)}",
                });
            }
        }

        using var json = new Utf8JsonWriter(output, JsonOutput.Options);
        json.WriteStartObject();
        json.WriteString("$schema", SchemaUrl);
        json.WriteString("name", name);
        json.WriteString("exporter", Exporter);
        json.WriteNumber("activeProfileIndex", IndexOfHeaviest(threadProfiles));

        json.WriteStartObject("shared");
        json.WriteStartArray("frames");
        foreach (var frame in frames)
        {
            json.WriteStartObject();
            json.WriteString("name", frame.QualifiedName);
            json.WriteString("file", frame.DisplayFile);
            json.WriteNumber("line", frame.FirstLine);
            json.WriteEndObject();
        }
        json.WriteEndArray();
        json.WriteEndObject();

        json.WriteStartArray("profiles");
        foreach (var thread in threadProfiles)
        {
            json.WriteStartObject();
            json.WriteString("type", "sampled");
            json.WriteString("name", thread.Name);
            json.WriteString("unit", "nanoseconds");
            json.WriteNumber("startValue", 0);
            json.WriteNumber("endValue", thread.TotalWeight);
            json.WriteStartArray("samples");
            // One stack per line keeps the file compact and still line-diffable (JSON allows the leading
            // whitespace that stands in for the writer's indentation).
            var stackText = new StringBuilder();
            var indentation = "\n" + new string(' ', json.CurrentDepth * 2);
            foreach (var stack in thread.Stacks)
            {
                stackText.Clear().Append(indentation).Append('[');
                for (var i = 0; i < stack.Length; i++)
                {
                    if (i > 0) stackText.Append(',');
                    stackText.Append(stack[i].ToString(CultureInfo.InvariantCulture));
                }
                json.WriteRawValue(stackText.Append(']').ToString(), skipInputValidation: true);
            }
            json.WriteEndArray();
            json.WriteStartArray("weights");
            foreach (var weight in thread.Weights) json.WriteNumberValue(weight);
            json.WriteEndArray();
            json.WriteEndObject();
        }
        json.WriteEndArray();
        json.WriteEndObject();
    }

    private static ThreadSamples CollectSamples(CallNode root, List<FunctionInfo> frames, Dictionary<FunctionInfo, int> frameIndexes)
    {
        var stacks = new List<int[]>();
        var weights = new List<long>();
        var path = new List<int>();
        long total = 0;
        CallTreeWalk.Visit(root, (node, depth) =>
        {
            // Nodes below a thread root always have a function.
            var function = node.Function!;
            if (!frameIndexes.TryGetValue(function, out var frameIndex))
            {
                frameIndex = frames.Count;
                frames.Add(function);
                frameIndexes.Add(function, frameIndex);
            }
            path.RemoveRange(depth - 1, path.Count - (depth - 1));
            path.Add(frameIndex);
            if (node.SelfNs <= 0) return;
            stacks.Add([.. path]);
            weights.Add(node.SelfNs);
            total += node.SelfNs;
        });
        return new ThreadSamples("", stacks, weights, total);
    }

    private static int IndexOfHeaviest(List<ThreadSamples> profiles)
    {
        var best = 0;
        for (var i = 1; i < profiles.Count; i++)
        {
            if (profiles[i].TotalWeight > profiles[best].TotalWeight) best = i;
        }
        return best;
    }

    private sealed record ThreadSamples(string Name, List<int[]> Stacks, List<long> Weights, long TotalWeight);
}

/// <summary>JSON settings shared by the JSON outputs: indented, "\n" line ends, non-ASCII names kept readable.</summary>
internal static class JsonOutput
{
    public static readonly JsonWriterOptions Options = new()
    {
        Indented = true,
        NewLine = "\n",
        Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };
}

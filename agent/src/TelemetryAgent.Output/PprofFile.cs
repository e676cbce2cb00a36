using System.IO.Compression;
using Google.Protobuf;
using Perftools.Profiles;
using TelemetryAgent.Profiling;
using TelemetryAgent.Profiling.Formats;
using ValueType = Perftools.Profiles.ValueType;

namespace TelemetryAgent.Output;

/// <summary>
/// <c>profile.pb.gz</c>: gzip of one <c>perftools.profiles.Profile</c> for every process of a run, with two
/// values per sample, wall time (self, nanoseconds; the default) and calls, so that <c>go tool pprof</c>, Pyroscope
/// and speedscope open it.
/// </summary>
/// <remarks>
/// Processes and threads are sample labels, not frames: <c>process</c> (<c>&lt;service&gt; (pid N)</c>, as in
/// profile.folded), <c>thread</c> (<c>thread &lt;name&gt;</c>) and the numeric <c>pid</c>.
/// <c>go tool pprof -tagroot=process,thread</c> puts them back at the root of every stack, as profile.folded has
/// them. Functions are named as in every other output (<c>qualname (file:line)</c>); one location per function,
/// leaf first in each sample.
/// </remarks>
public sealed class PprofFile : IOutputFile
{
    public const string FileName = "profile.pb.gz";

    public string Name => FileName;

    public void Write(Stream output, OutputRun run) => Write(output, run.Processes);

    public static void Write(Stream output, IReadOnlyList<ProcessProfile> processes)
    {
        ArgumentNullException.ThrowIfNull(output);
        using var gzip = new GZipStream(output, CompressionLevel.Optimal, leaveOpen: true);
        Build(processes).WriteTo(gzip);
    }

    public static Profile Build(IReadOnlyList<ProcessProfile> processes)
    {
        ArgumentNullException.ThrowIfNull(processes);
        var profile = new Profile();
        var strings = new StringTable(profile.StringTable);
        profile.SampleType.Add(new ValueType { Type = strings[ProfileSampleTypes.WallType], Unit = strings[ProfileSampleTypes.WallUnit] });
        profile.SampleType.Add(new ValueType { Type = strings[ProfileSampleTypes.CallsType], Unit = strings[ProfileSampleTypes.CallsUnit] });
        profile.DefaultSampleType = strings[ProfileSampleTypes.WallType];
        profile.PeriodType = profile.SampleType[0].Clone();
        profile.Period = 1;
        profile.Comment.Add(strings[processes.Any(process => process.Recording.IsSampled)
            ? "telemetry-agent: self time and calls from burst windows (sys.monitoring), scaled to the whole run: estimates"
            : "telemetry-agent: exact self time and calls of every Python call (sys.monitoring), not sampled"]);
        // One mapping for all the Python code: tools then treat the functions as symbolized.
        profile.Mapping.Add(new Mapping { Id = 1, Filename = strings["cpython"], HasFunctions = true, HasFilenames = true });

        var functions = new InternTable<FunctionInfo>(ReferenceEqualityComparer.Instance);
        var processKey = strings["process"];
        var threadKey = strings["thread"];
        var pidKey = strings["pid"];
        var locations = new List<ulong>();
        foreach (var process in processes)
        {
            var processLabel = new Label { Key = processKey, Str = strings[ProfileLabels.Process(process)] };
            var pidLabel = new Label { Key = pidKey, Num = process.Identity.Pid };
            // Labels are values: one per thread, shared by its samples, rather than one per sample.
            var threadLabels = new Dictionary<ThreadProfile, Label>(ReferenceEqualityComparer.Instance);
            foreach (var sample in StackDeltas.Totals(process))
            {
                locations.Clear();
                for (var node = sample.Leaf; node.Function is not null; node = node.Parent!)
                {
                    var function = node.Function;
                    // Function and location ids are equal: one location per function.
                    var id = (ulong)functions.IndexOf(function, out var added);
                    if (added)
                    {
                        profile.Function.Add(new Function
                        {
                            Id = id, Name = strings[function.Label], SystemName = strings[function.QualifiedName],
                            Filename = strings[function.FileName], StartLine = function.FirstLine,
                        });
                        var location = new Location { Id = id, MappingId = 1 };
                        location.Line.Add(new Line { FunctionId = id });
                        profile.Location.Add(location);
                    }
                    locations.Add(id);
                }
                // After the frames' strings, so that the string table keeps its order.
                if (!threadLabels.TryGetValue(sample.Thread, out var threadLabel))
                {
                    threadLabel = new Label { Key = threadKey, Str = strings[ProfileLabels.Thread(sample.Thread)] };
                    threadLabels.Add(sample.Thread, threadLabel);
                }
                var encoded = new Sample();
                encoded.LocationId.Add(locations);
                encoded.Value.Add(sample.SelfNs);
                encoded.Value.Add(sample.Calls);
                encoded.Label.Add(processLabel);
                encoded.Label.Add(threadLabel);
                encoded.Label.Add(pidLabel);
                profile.Sample.Add(encoded);
            }
        }

        if (processes.Count > 0)
        {
            var start = processes.Min(process => process.FirstEventUnixNs);
            profile.TimeNanos = start;
            profile.DurationNanos = Math.Max(0, processes.Max(process => process.LastEventUnixNs) - start);
        }
        return profile;
    }
}

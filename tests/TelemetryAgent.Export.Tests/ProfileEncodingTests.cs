using System.IO.Compression;
using Google.Protobuf;
using OpenTelemetry.Proto.Collector.Profiles.V1Development;
using TelemetryAgent.Profiling;
using TelemetryAgent.Export.Profiles;
using TelemetryAgent.Testing;
using TelemetryAgent.Output;
using TelemetryAgent.Profiling.Formats;
using TelemetryAgent.Sessions;

namespace TelemetryAgent.Export.Tests;

/// <summary>
/// The OTLP profiles encoding and profile.pb.gz for the fixed aggregate of the golden tests (<see cref="SampleRun"/>):
/// golden bytes (as protobuf JSON), and the folded stacks rebuilt from them equal the agent's folded files.
/// </summary>
public sealed class ProfileEncodingTests
{
    private static IReadOnlyList<ProcessProfile> Sample() => SampleRun.Build().Profiles;

    private static ExportProfilesServiceRequest EncodeTotals(IReadOnlyList<ProcessProfile> profiles)
        => OtlpProfileEncoder.Encode(profiles
            .Select(profile => new ProfileInterval(profile, StackDeltas.Totals(profile),
                profile.FirstEventUnixNs, profile.LastEventUnixNs))
            .ToList());

    private static string Folded(IReadOnlyList<ProcessProfile> profiles, FoldedWeight weight)
    {
        using var text = new StringWriter();
        FoldedStacksFile.Write(text, profiles, weight);
        return text.ToString();
    }

    [Fact]
    public void The_encoded_request_matches_its_golden_file()
    {
        var request = EncodeTotals(Sample());
        var json = new JsonFormatter(JsonFormatter.Settings.Default.WithIndentation()).Format(request) + "\n";
        Golden.Verify(json, "otlp-profiles.json");
    }

    [Fact]
    public void The_request_keeps_the_dictionary_rules_and_rebuilds_the_folded_files_value_for_value()
    {
        var profiles = Sample();
        // Through the wire format, as a receiver sees it.
        var request = ExportProfilesServiceRequest.Parser.ParseFrom(EncodeTotals(profiles).ToByteArray());

        ProfileFolding.AssertDictionaryRules(request);
        Assert.Equal(Folded(profiles, FoldedWeight.SelfNanoseconds), ProfileFolding.FromOtlp([request], ProfileSampleTypes.WallType));
        Assert.Equal(Folded(profiles, FoldedWeight.Calls), ProfileFolding.FromOtlp([request], ProfileSampleTypes.CallsType));
    }

    [Fact]
    public void Every_profile_names_its_measurement_period_interval_and_resource()
    {
        var profiles = Sample();
        var request = EncodeTotals(profiles);
        var strings = request.Dictionary.StringTable;
        Assert.Equal(profiles.Count, request.ResourceProfiles.Count);
        for (var i = 0; i < profiles.Count; i++)
        {
            var resourceProfiles = request.ResourceProfiles[i];
            Assert.Equal(
                ProcessResource.Attributes(profiles[i].Identity).Select(attribute => attribute.Key),
                resourceProfiles.Resource.Attributes.Select(attribute => attribute.Key));
            var scope = Assert.Single(resourceProfiles.ScopeProfiles);
            Assert.Equal(OtlpProfileEncoder.ScopeName, scope.Scope.Name);
            Assert.Equal(
                [("wall", "nanoseconds"), ("calls", "count")],
                scope.Profiles.Select(profile => (strings[profile.SampleType.TypeStrindex], strings[profile.SampleType.UnitStrindex])));
            foreach (var profile in scope.Profiles)
            {
                Assert.Equal(profile.SampleType, profile.PeriodType);
                Assert.Equal(1, profile.Period);
                Assert.Equal((ulong)profiles[i].Clock.ToUnixNs(profiles[i].FirstTimestampNs), profile.TimeUnixNano);
                Assert.Equal((ulong)(profiles[i].LastTimestampNs - profiles[i].FirstTimestampNs), profile.DurationNano);
            }
            Assert.NotEqual(scope.Profiles[0].ProfileId, scope.Profiles[1].ProfileId);
        }
        // Every location is a CPython frame.
        Assert.All(request.Dictionary.LocationTable.Skip(1), location =>
        {
            var attribute = request.Dictionary.AttributeTable[Assert.Single(location.AttributeIndices)];
            Assert.Equal("profile.frame.type", strings[attribute.KeyStrindex]);
            Assert.Equal("cpython", attribute.Value.StringValue);
        });
    }

    [Fact]
    public void Stacks_are_leaf_first()
    {
        var request = EncodeTotals(Sample());
        var d = request.Dictionary;
        string Name(int location) => d.StringTable[d.FunctionTable[d.LocationTable[location].Lines[0].FunctionIndex].SystemNameStrindex];
        // checkout: <module> -> handle_order -> fib -> fib -> fib (recursion), the deepest stack of the sample.
        var deepest = d.StackTable.Skip(1).MaxBy(stack => stack.LocationIndices.Count)!;
        Assert.Equal(["fib", "fib", "fib", "handle_order", "<module>"], deepest.LocationIndices.Select(Name));
    }

    private sealed class CheckpointRecorder : IProcessObserver
    {
        public List<ProcessProfile> Cumulative { get; } = [];
        public void OnStarted(ProcessProfile running) { }
        public void OnCheckpoint(ProcessProfile checkpoint) => Cumulative.Add(checkpoint);
        public void OnCompleted(ProcessProfile completed) => Cumulative.Add(completed);
    }

    [Fact]
    public void Burst_profiles_say_they_are_scaled_and_an_estimate_that_shrinks_reports_nothing_negative()
    {
        var recorder = new CheckpointRecorder();
        var script = new SessionScript(mode: "burst", observer: recorder)
            .Thread(1, "MainThread", isMain: true).Thread(2, "worker").Code(1, "main").Code(2, "work");
        // HELLO's clock is 1_000. Window 1 (9_000 to 10_000) stands for 9_000 ns: scale 9.
        script.WindowStart(9_000).Seed(9_000, 1).WindowEnd(10_000);
        script.Session.RequestCheckpoint();
        script.Session.TakeRequestedCheckpoint();
        // Window 2 (10_500 to 12_500): only the worker runs; the scale falls to 11_500 / 3_000.
        script.WindowStart(10_500).Start(10_500, 2, thread: 2).Return(12_500, 2, thread: 2).WindowEnd(12_500);
        script.Complete();

        var deltas = new StackDeltas();
        var requests = recorder.Cumulative
            .Select(cumulative => OtlpProfileEncoder.Encode([new ProfileInterval(cumulative, deltas.Next(cumulative), 0, 1)]))
            .ToList();
        Assert.Equal("app (pid 4242);thread MainThread;main (app.py:1) 9000\n", ProfileFolding.FromOtlp([requests[0]], "wall"));
        // main's estimate fell from 9_000 to 3_833 ns: the second interval has nothing for it, and nothing negative.
        var second = requests[1].ResourceProfiles.Single().ScopeProfiles.Single().Profiles;
        Assert.All(second.SelectMany(profile => profile.Samples), sample => Assert.True(sample.Values[0] > 0));
        Assert.DoesNotContain("main (app.py:1) ", ProfileFolding.FromOtlp([requests[1]], "wall").Split('\n').Select(line => line.Split(';').Last()));

        var dictionary = requests[1].Dictionary;
        var attributes = second[0].AttributeIndices.Select(index => dictionary.AttributeTable[index])
            .ToDictionary(attribute => dictionary.StringTable[attribute.KeyStrindex], attribute => attribute.Value.StringValue);
        Assert.Equal("burst", attributes["telemetry_agent.recording.mode"]);
        Assert.Equal("3.833", attributes["telemetry_agent.recording.scale"]);
    }

    [Fact]
    public void Interval_profiles_hold_only_their_interval_and_add_up_to_the_total()
    {
        var recorder = new CheckpointRecorder();
        var script = new SessionScript(observer: recorder)
            .Thread(1, "MainThread", isMain: true).Thread(2, "worker")
            .Code(1, "main").Code(2, "work").Code(3, "idle");
        // Interval 1: main calls work twice; worker idles from 150 on.
        script.Start(100, 1).Start(150, 3, thread: 2).Start(200, 2).Return(300, 2).Start(400, 2).Return(450, 2);
        script.Session.RequestCheckpoint();
        script.Session.TakeRequestedCheckpoint();
        // Interval 2: idle calls itself once; main (450 to 950) and the outer idle (450 to 900) run on.
        script.Start(900, 3, thread: 2).Return(950, 3, thread: 2);
        script.Session.RequestCheckpoint();
        script.Session.TakeRequestedCheckpoint();
        // Interval 3: work again, then the end.
        script.Start(1_000, 2).Return(1_600, 2).Return(1_700, 1);
        var completed = script.Complete();
        Assert.Equal(3, recorder.Cumulative.Count);

        var deltas = new StackDeltas();
        var requests = new List<ExportProfilesServiceRequest>();
        long? previousEnd = null;
        foreach (var cumulative in recorder.Cumulative)
        {
            var start = previousEnd ?? cumulative.FirstEventUnixNs;
            var end = cumulative.LastEventUnixNs;
            requests.Add(OtlpProfileEncoder.Encode([new ProfileInterval(cumulative, deltas.Next(cumulative), start, end)]));
            previousEnd = end;
        }

        // The first interval is the first checkpoint; the second holds only what happened after it.
        Assert.Equal(Folded([recorder.Cumulative[0]], FoldedWeight.SelfNanoseconds), ProfileFolding.FromOtlp([requests[0]], "wall"));
        Assert.Equal(
            "app (pid 4242);thread MainThread;main (app.py:1) 500\n" +
            "app (pid 4242);thread worker;idle (app.py:1) 450\n" +
            "app (pid 4242);thread worker;idle (app.py:1);idle (app.py:1) 50\n",
            ProfileFolding.FromOtlp([requests[1]], "wall"));
        Assert.Equal(
            "app (pid 4242);thread worker;idle (app.py:1);idle (app.py:1) 1\n",
            ProfileFolding.FromOtlp([requests[1]], "calls"));
        // Together they are the process's totals; the intervals follow each other.
        Assert.Equal(Folded([completed], FoldedWeight.SelfNanoseconds), ProfileFolding.FromOtlp(requests, "wall"));
        Assert.Equal(Folded([completed], FoldedWeight.Calls), ProfileFolding.FromOtlp(requests, "calls"));
        var times = requests.Select(r => r.ResourceProfiles[0].ScopeProfiles[0].Profiles[0]).Select(p => (p.TimeUnixNano, p.DurationNano)).ToList();
        for (var i = 1; i < times.Count; i++) Assert.Equal(times[i - 1].TimeUnixNano + times[i - 1].DurationNano, times[i].TimeUnixNano);
        Assert.All(requests, ProfileFolding.AssertDictionaryRules);
    }

    [Fact]
    public void Pprof_file_decodes_with_the_generated_classes_to_the_folded_files()
    {
        var profiles = Sample();
        using var file = new MemoryStream();
        PprofFile.Write(file, profiles);
        file.Position = 0;
        using var gunzip = new GZipStream(file, CompressionMode.Decompress);
        var pprof = Perftools.Profiles.Profile.Parser.ParseFrom(gunzip);

        Assert.Equal("", pprof.StringTable[0]);
        Assert.Equal(
            [("wall", "nanoseconds"), ("calls", "count")],
            pprof.SampleType.Select(type => (pprof.StringTable[(int)type.Type], pprof.StringTable[(int)type.Unit])));
        Assert.Equal("wall", pprof.StringTable[(int)pprof.DefaultSampleType]);
        Assert.All(pprof.Location, location => Assert.True(location.Id > 0 && location.MappingId == 1));
        Assert.All(pprof.Function, function => Assert.True(function.Id > 0));
        Assert.Equal(pprof.Location.Count, pprof.Location.Select(location => location.Id).Distinct().Count());
        Assert.All(pprof.Sample, sample => Assert.Equal(2, sample.Value.Count));
        Assert.Equal(profiles[0].FirstEventUnixNs, pprof.TimeNanos);

        Assert.Equal(Folded(profiles, FoldedWeight.SelfNanoseconds), ProfileFolding.FromPprof(pprof, 0));
        Assert.Equal(Folded(profiles, FoldedWeight.Calls), ProfileFolding.FromPprof(pprof, 1));
        // Processes are also told apart by their numeric pid label.
        Assert.Equal(
            profiles.Select(profile => profile.Identity.Pid).Order(),
            pprof.Sample.Select(sample => sample.Label.Single(label => pprof.StringTable[(int)label.Key] == "pid").Num).Distinct().Order());
    }
}

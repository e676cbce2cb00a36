using System.Text.Json;
using Microsoft.Extensions.Time.Testing;
using TelemetryAgent.Cli;
using TelemetryAgent.Output;
using TelemetryAgent.Testing;

namespace TelemetryAgent.Profiling.Tests;

/// <summary>
/// Every output of <see cref="SampleRun"/> written by the folder exporter against its golden file (UPDATE_GOLDEN=1
/// rewrites them and fails), plus structural checks that do not depend on the goldens.
/// </summary>
public sealed class OutputGoldenTests : IDisposable
{
    private readonly TemporaryFolder _temporary = new();
    // Not created yet: the exporter creates it.
    private readonly string _folder;

    public OutputGoldenTests() => _folder = _temporary.File("outputs");

    public void Dispose() => _temporary.Dispose();

    private OutputReport WriteSample(int topFunctions = SummaryJsonFile.DefaultTopFunctions)
    {
        var (profiles, store, time) = SampleRun.Build();
        var run = OutputRun.Create(profiles, time, connectionsWithoutHello: store.Snapshot().ConnectionsWithoutProfile);
        return FolderExporter.Standard(topFunctions).Write(_folder, run);
    }

    private string Output(string name) => File.ReadAllText(Path.Combine(_folder, name));

    [Theory]
    [InlineData(FoldedStacksFile.ProfileFolded)]
    [InlineData(FoldedStacksFile.CallsFolded)]
    [InlineData(SpeedscopeFile.FileName)]
    [InlineData(SummaryJsonFile.FileName)]
    [InlineData(ExceptionsJsonFile.FileName)]
    public void Output_matches_its_golden_file(string name)
    {
        var report = WriteSample();
        Assert.True(report.AllSucceeded, string.Join("; ", report.Files.Select(file => $"{file.Name}: {file.Error}")));
        Golden.Verify(Output(name), name);
    }

    [Fact]
    public void Console_summary_matches_its_golden_file()
    {
        var report = WriteSample();
        Golden.Verify(ConsoleSummary.Format(report.Summary), "console-summary.txt");
    }

    [Fact]
    public void Folded_stacks_add_up_to_the_trees_and_are_sorted()
    {
        var report = WriteSample();
        var selfLines = FoldedLines(Output(FoldedStacksFile.ProfileFolded));
        var callLines = FoldedLines(Output(FoldedStacksFile.CallsFolded));

        var processes = report.Summary.Processes;
        var selfTotal = processes.SelectMany(p => p.Threads).Sum(t => t.Root.TotalNs);
        Assert.Equal(selfTotal, selfLines.Sum(line => line.Weight));
        Assert.Equal(report.Summary.Calls, callLines.Sum(line => line.Weight));
        foreach (var lines in new[] { selfLines, callLines })
        {
            Assert.All(lines, line => Assert.True(line.Weight > 0));
            Assert.Equal(lines.Select(l => l.Stack).Order(StringComparer.Ordinal), lines.Select(l => l.Stack));
            Assert.All(lines, line => Assert.Matches(@"^[^;]+ \(pid \d+\);thread [^;]+(;[^;]+)+$", line.Stack));
        }
    }

    [Fact]
    public void Speedscope_file_has_the_schemas_required_fields_and_consistent_indexes()
    {
        var report = WriteSample();
        using var document = JsonDocument.Parse(Output(SpeedscopeFile.FileName));
        var file = document.RootElement;

        Assert.Equal("https://www.speedscope.app/file-format-schema.json", file.GetProperty("$schema").GetString());
        var frames = file.GetProperty("shared").GetProperty("frames");
        Assert.Equal(JsonValueKind.Array, frames.ValueKind);
        foreach (var frame in frames.EnumerateArray())
        {
            Assert.Equal(JsonValueKind.String, frame.GetProperty("name").ValueKind);
            if (frame.TryGetProperty("file", out var fileName)) Assert.Equal(JsonValueKind.String, fileName.ValueKind);
            if (frame.TryGetProperty("line", out var line)) Assert.True(line.GetInt32() >= 0);
        }

        var profiles = file.GetProperty("profiles");
        Assert.NotEqual(0, profiles.GetArrayLength());
        Assert.InRange(file.GetProperty("activeProfileIndex").GetInt32(), 0, profiles.GetArrayLength() - 1);
        long allWeights = 0;
        foreach (var profile in profiles.EnumerateArray())
        {
            Assert.Equal("sampled", profile.GetProperty("type").GetString());
            Assert.Equal(JsonValueKind.String, profile.GetProperty("name").ValueKind);
            Assert.Contains(profile.GetProperty("unit").GetString(),
                new[] { "none", "nanoseconds", "microseconds", "milliseconds", "seconds", "bytes" });
            var start = profile.GetProperty("startValue").GetInt64();
            var end = profile.GetProperty("endValue").GetInt64();
            var samples = profile.GetProperty("samples");
            var weights = profile.GetProperty("weights");
            Assert.Equal(samples.GetArrayLength(), weights.GetArrayLength());
            foreach (var sample in samples.EnumerateArray())
            {
                Assert.NotEqual(0, sample.GetArrayLength());
                Assert.All(sample.EnumerateArray(), index => Assert.InRange(index.GetInt32(), 0, frames.GetArrayLength() - 1));
            }
            var sum = weights.EnumerateArray().Sum(weight => weight.GetInt64());
            Assert.True(end >= start);
            Assert.Equal(end - start, sum);
            allWeights += sum;
        }

        // Cross-check with the other output: the same time in total.
        Assert.Equal(FoldedLines(Output(FoldedStacksFile.ProfileFolded)).Sum(line => line.Weight), allWeights);
        Assert.Equal(report.Summary.Processes.Sum(p => p.Threads.Count(t => t.Root.TotalNs > 0)), profiles.GetArrayLength());
    }

    [Fact]
    public void Summary_lists_processes_and_flags_truncated_functions()
    {
        WriteSample(topFunctions: 2);
        using var document = JsonDocument.Parse(Output(SummaryJsonFile.FileName));
        var summary = document.RootElement;

        Assert.Equal(2, summary.GetProperty("functions").GetArrayLength());
        Assert.True(summary.GetProperty("functions_truncated").GetBoolean());
        var worker = summary.GetProperty("processes").EnumerateArray().Single(p => p.GetProperty("pid").GetInt64() == 4300);
        Assert.Equal("worker", worker.GetProperty("service_name").GetString());
        Assert.Equal("EndOfStream", worker.GetProperty("connection").GetProperty("end_reason").GetString());
        Assert.Equal(1, worker.GetProperty("recording").GetProperty("implicit_exits").GetInt64());
        Assert.Equal(1, worker.GetProperty("recording").GetProperty("unmatched_exits").GetInt64());
        Assert.Equal(5, summary.GetProperty("totals").GetProperty("events_dropped").GetInt64());
    }

    [Fact]
    public void Flame_graph_page_is_written_from_the_merged_tree()
    {
        var report = WriteSample();
        Assert.True(report.Files.Single(file => file.Name == FlameGraphHtmlFile.FileName).Succeeded);
        var page = Output(FlameGraphHtmlFile.FileName);
        Assert.Contains("checkout (pid 4242)", page);
        Assert.Contains("thread ThreadPoolExecutor-0_0", page);

        var merged = MergedCallTree.Of(report.Summary.Processes);
        Assert.Equal(["checkout (pid 4242)", "worker (pid 4300)"], merged.Children.Select(child => child.Name));
        Assert.Equal(merged.Children.Sum(child => child.TotalNs), merged.TotalNs);
        Assert.Equal(report.Summary.Processes.SelectMany(p => p.Threads).Sum(t => t.Root.TotalNs), merged.TotalNs);
        merged.At().AssertConsistent();
    }

    [Fact]
    public void A_folder_that_cannot_be_created_fails_every_file_without_throwing()
    {
        File.WriteAllText(_folder, "a file where the folder should be");
        try
        {
            var report = WriteSample();
            Assert.Equal(FolderExporter.StandardFiles().Count, report.Files.Count);
            Assert.All(report.Files, file => Assert.False(file.Succeeded));
            Assert.False(report.AllSucceeded);
        }
        finally
        {
            File.Delete(_folder);
        }
    }

    [Fact]
    public void One_file_that_cannot_be_written_costs_only_that_file()
    {
        Directory.CreateDirectory(Path.Combine(_folder, SummaryJsonFile.FileName));
        var report = WriteSample();

        var failed = Assert.Single(report.Files, file => !file.Succeeded);
        Assert.Equal(SummaryJsonFile.FileName, failed.Name);
        Assert.Equal(FolderExporter.StandardFiles().Count - 1, report.Files.Count(file => file.Succeeded));
        Assert.False(File.Exists(Path.Combine(_folder, SummaryJsonFile.FileName + ".tmp")));
        Assert.NotEmpty(Output(FoldedStacksFile.ProfileFolded));
    }

    [Fact]
    public void No_processes_still_gives_valid_outputs()
    {
        var report = FolderExporter.Standard().Write(_folder, OutputRun.Create([], new FakeTimeProvider(SampleRun.Start)));
        Assert.True(report.AllSucceeded, string.Join("; ", report.Files.Select(file => $"{file.Name}: {file.Error}")));
        Assert.Equal("", Output(FoldedStacksFile.ProfileFolded));
        using var speedscope = JsonDocument.Parse(Output(SpeedscopeFile.FileName));
        Assert.Equal(0, speedscope.RootElement.GetProperty("profiles").GetArrayLength());
        Assert.Contains("No function calls were recorded.", ConsoleSummary.Format(report.Summary));
    }

    private static (string Stack, long Weight)[] FoldedLines(string text)
    {
        Assert.True(text.Length == 0 || text.EndsWith('\n'));
        return text.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(line =>
            {
                var space = line.LastIndexOf(' ');
                return (line[..space], long.Parse(line[(space + 1)..], System.Globalization.CultureInfo.InvariantCulture));
            })
            .ToArray();
    }
}

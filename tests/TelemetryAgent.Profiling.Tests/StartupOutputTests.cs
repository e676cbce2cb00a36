using System.Text.Json;
using TelemetryAgent.Cli;
using TelemetryAgent.Output;
using TelemetryAgent.Profiling.Startup;
using TelemetryAgent.Protocol.Messages;
using TelemetryAgent.Sessions;
using TelemetryAgent.Testing;
using WireStartup = TelemetryAgent.Protocol.Messages.Startup;

namespace TelemetryAgent.Profiling.Tests;

/// <summary>The start-up phase through the session into the model and every output that shows it (golden files).</summary>
public sealed class StartupOutputTests : IDisposable
{
    private readonly TemporaryFolder _temporary = new();

    public void Dispose() => _temporary.Dispose();

    private OutputReport WriteSample()
    {
        var (profiles, time) = StartupSample.Build();
        var report = FolderExporter.Standard().Write(_temporary.File("outputs"), OutputRun.Create(profiles, time));
        Assert.True(report.AllSucceeded, string.Join("; ", report.Files.Select(file => $"{file.Name}: {file.Error}")));
        return report;
    }

    [Fact]
    public void Session_keeps_the_startup_and_appends_the_invocations()
    {
        var (profiles, _) = StartupSample.Build();
        var process = Assert.Single(profiles);
        var startup = Assert.IsType<StartupPhase>(process.Startup);
        Assert.Equal(ReadyRule.OnFunction, startup.Rule);
        Assert.Equal(StartupSample.ReadyNs - StartupSample.ProcessStartNs, startup.TotalNs);
        Assert.Equal(StartupSample.ShimStartNs - StartupSample.ProcessStartNs, startup.InterpreterNs);
        // json (28 ms), the failed optional import (1 ms), handlers (20 ms); json's children are inside it.
        Assert.Equal(49_000_000, startup.Imports.TotalNs);
        Assert.Equal([0, 3, 4], startup.Imports.Roots);
        Assert.Equal([1], startup.Imports.Children(0));
        Assert.Equal([1, 2, 3], process.FirstInvocations.Select(invocation => invocation.Number));

        var comparison = FirstInvocationComparison.Of(process.FirstInvocations)!;
        Assert.Equal(15_000_000, comparison.First.DurationNs);
        Assert.Equal(2_500_000, comparison.LaterMedianNs);
        Assert.Equal(["csv"], comparison.ImportsOnlyInFirst.Select(import => import.Module));
        Assert.Equal(12_000_000, comparison.ImportsOnlyInFirstNs);

        // Each invocation's exact call tree, from the calls the session recorded between its call and its return.
        var first = process.FirstInvocations[0].CallTree!;
        first.At("handle").Has(calls: 1, resumes: 0, selfNs: 13_500_000, totalNs: 15_000_000);
        first.At("handle", "connect").Has(calls: 1, resumes: 0, selfNs: 1_000_000, totalNs: 1_000_000);
        first.At("handle", "lookup").Has(calls: 1, resumes: 0, selfNs: 500_000, totalNs: 500_000);
        Assert.Equal(15_000_000, first.TotalNs);
        var second = process.FirstInvocations[1].CallTree!;
        second.At("handle").Has(calls: 1, resumes: 0, selfNs: 2_500_000, totalNs: 3_000_000);
        Assert.Equal(["lookup"], second.At("handle").Children.Select(child => child.Function!.QualifiedName));
        process.FirstInvocations[2].CallTree!.At("handle", "lookup").Has(calls: 1, resumes: 0, selfNs: 500_000, totalNs: 500_000);
        var only = Assert.Single(comparison.FunctionsOnlyInFirst!);
        Assert.Equal(("connect", 1L, 1_000_000L), (only.Function.QualifiedName, only.Calls, only.SelfNs));
    }

    [Fact]
    public void Startup_json_matches_its_golden_file()
    {
        var report = WriteSample();
        Golden.Verify(File.ReadAllText(Path.Combine(report.Folder, StartupJsonFile.FileName)), "startup.json");
    }

    [Fact]
    public void Console_lines_match_their_golden_file()
    {
        var report = WriteSample();
        Golden.Verify(ConsoleSummary.Format(report.Summary), "console-summary-startup.txt");
    }

    [Fact]
    public void Flame_graph_shows_the_import_tree_as_a_startup_frame()
    {
        var report = WriteSample();
        var html = File.ReadAllText(Path.Combine(report.Folder, FlameGraphHtmlFile.FileName));
        const string dataStart = "<script id=\"profile-data\" type=\"application/json\">";
        var start = html.IndexOf(dataStart, StringComparison.Ordinal) + dataStart.Length;
        Golden.VerifyJson(html[start..html.IndexOf("</script>", start, StringComparison.Ordinal)], "flamegraph-startup-data.json");
        Assert.Contains("1 start-up (import trees)", html, StringComparison.Ordinal);
    }

    [Fact]
    public void Startup_json_lists_no_process_without_a_startup()
    {
        var (profiles, _, time) = SampleRun.Build();
        var stream = new MemoryStream();
        new StartupJsonFile().Write(stream, OutputRun.Create(profiles, time));
        using var document = JsonDocument.Parse(stream.ToArray());
        Assert.Equal(0, document.RootElement.GetProperty("processes").GetArrayLength());
    }

    [Theory]
    [InlineData(2u, "names parent 2, which is not an earlier entry")]
    [InlineData(5u, "names parent 5")]
    public void A_parent_that_is_not_an_earlier_entry_is_an_invalid_record(uint parent, string message)
    {
        var script = new SessionScript();
        var stats = new Stats
        {
            Startup = new WireStartup
            {
                ShimStartNs = 10, ReadyNs = 20,
                Imports = { StartupSample.Import("a", 0, 11, 12, 0, 0, 1), StartupSample.Import("b", parent, 12, 13, 0, 0, 1) },
            },
        };
        var violation = Assert.Throws<TelemetryAgent.Protocol.ProtocolException>(() => script.Session.OnStats(stats));
        Assert.Equal(TelemetryAgent.Protocol.ProtocolViolation.InvalidRecord, violation.Violation);
        Assert.Contains(message, violation.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Ready_before_the_shim_started_is_an_invalid_record()
    {
        var script = new SessionScript();
        var violation = Assert.Throws<TelemetryAgent.Protocol.ProtocolException>(
            () => script.Session.OnStats(new Stats { Startup = new WireStartup { ShimStartNs = 10, ReadyNs = 5 } }));
        Assert.Equal(TelemetryAgent.Protocol.ProtocolViolation.InvalidRecord, violation.Violation);
    }
}

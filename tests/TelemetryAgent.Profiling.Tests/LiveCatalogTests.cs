using Microsoft.Extensions.Time.Testing;
using TelemetryAgent.Live;
using TelemetryAgent.Output;
using TelemetryAgent.Sessions;
using TelemetryAgent.Testing;

namespace TelemetryAgent.Profiling.Tests;

/// <summary>The live views' catalog: ended processes kept within bounds, their memory given back when they go; the differential page's data.</summary>
public sealed class LiveCatalogTests
{
    private readonly FakeTimeProvider _time = new(SessionScript.AgentTimeAt(0));

    private sealed class Connection(ProcessSession session) : ILiveConnection
    {
        public ProcessProfile? Profile => session.Profile;

        public Task<ProcessProfile> SnapshotAsync() => session.RequestSnapshotAsync();

        public Task<IReadOnlyList<FunctionStats>> FunctionStatisticsAsync() => session.RequestFunctionStatisticsAsync();
    }

    private (LiveProcess Process, SessionScript Script) Add(ProcessCatalog catalog, List<long> released, long pid)
    {
        var script = new SessionScript(time: _time, pid: pid).Thread(1, "MainThread", isMain: true).Code(1, "main");
        return (catalog.Add(new Connection(script.Session), () => released.Add(pid)), script);
    }

    [Fact]
    public void Ended_processes_are_kept_up_to_the_count_and_the_age_and_released_when_they_go()
    {
        var catalog = new ProcessCatalog(new RetentionSettings { MaxEndedProcesses = 2, KeepEndedFor = TimeSpan.FromMinutes(10) }, _time);
        var released = new List<long>();
        var processes = Enumerable.Range(1, 4).Select(pid => Add(catalog, released, pid)).ToArray();
        Assert.Equal(4, catalog.Processes().Count);

        foreach (var (process, script) in processes.Take(3))
        {
            _time.Advance(TimeSpan.FromSeconds(1));
            catalog.Ended(process, script.Complete());
        }
        Assert.Equal([1L], released); // three ended, two kept: the oldest went
        Assert.Equal([2L, 3L, 4L], catalog.Processes().Select(process => process.Profile!.Identity.Pid));
        Assert.True(catalog.Processes()[2].IsRunning);

        _time.Advance(TimeSpan.FromMinutes(10));
        catalog.Trim();
        Assert.Equal([1L, 2L, 3L], released);
        Assert.False(catalog.EvictOldestEnded());
        Assert.Single(catalog.Processes());
    }

    [Fact]
    public void The_budget_reclaims_ended_processes_before_it_refuses_a_running_one()
    {
        const long chunk = AggregateMemoryBudget.ChunkBytes;
        var catalog = new ProcessCatalog(time: _time);
        var budget = new AggregateMemoryBudget(2 * chunk) { Reclaim = catalog.EvictOldestEnded };
        var script = new SessionScript(time: _time).Thread(1, "MainThread", isMain: true).Code(1, "main");
        Assert.True(budget.TryReserve(2 * chunk)); // what the process's trees took
        var process = catalog.Add(new Connection(script.Session), () => budget.Release(2 * chunk));
        catalog.Ended(process, script.Complete());
        Assert.Single(catalog.Processes());

        Assert.True(budget.TryReserve(chunk)); // a running process needs room: the ended one goes
        Assert.Empty(catalog.Processes());
        Assert.False(budget.TryReserve(2 * chunk)); // nothing is left to let go
    }

    [Fact]
    public void The_differential_page_holds_both_sides_per_node_and_nodes_only_one_side_has()
    {
        var before = new SessionScript(time: _time).Thread(1, "MainThread", isMain: true).Code(1, "main").Code(2, "old").Code(3, "shared");
        before.Start(1_000, 1).Start(2_000, 2).Return(3_000, 2).Start(4_000, 3).Return(5_000, 3).Return(6_000, 1);
        var after = new SessionScript(time: _time).Thread(1, "MainThread", isMain: true).Code(1, "main").Code(3, "shared").Code(4, "new");
        after.Start(1_000, 1).Start(2_000, 4).Return(4_000, 4).Start(4_000, 3).Return(5_000, 3).Return(6_000, 1);
        var text = new StringWriter();
        FlameGraphHtmlFile.WriteDifference(text, MergedCallTree.Of([before.Complete()], byService: true),
            MergedCallTree.Of([after.Complete()], byService: true), "diff", _time.GetUtcNow());
        var page = text.ToString();
        const string marker = "<script id=\"profile-data\" type=\"application/json\">";
        var json = page[(page.IndexOf(marker, StringComparison.Ordinal) + marker.Length)..];
        using var data = System.Text.Json.JsonDocument.Parse(json[..json.IndexOf("</script>", StringComparison.Ordinal)]);
        var nodes = data.RootElement.GetProperty("nodes").EnumerateArray().Select(value => value.GetInt64()).ToArray();
        var baseline = data.RootElement.GetProperty("baseline").EnumerateArray().Select(value => value.GetInt64()).ToArray();
        Assert.Equal(nodes.Length / 2, baseline.Length);
        var strings = data.RootElement.GetProperty("strings").EnumerateArray().Select(value => value.GetString()).ToArray();
        var functions = data.RootElement.GetProperty("functions").EnumerateArray().Select(value => value.GetInt32()).ToArray();
        string Name(int node)
        {
            var reference = (int)nodes[node * 6];
            return reference >= 0 ? strings[functions[reference * 6]]! : strings[-reference - 1]!;
        }
        var byName = Enumerable.Range(0, nodes.Length / 6).ToDictionary(Name, node => node);
        // new: 2 µs after, nothing before; old: the reverse; shared: 1 µs on both sides.
        Assert.Equal((1L, 2_000L), (nodes[byName["new"] * 6 + 1], nodes[byName["new"] * 6 + 4]));
        Assert.Equal((0L, 0L), (baseline[byName["new"] * 3], baseline[byName["new"] * 3 + 2]));
        Assert.Equal((0L, 0L), (nodes[byName["old"] * 6 + 1], nodes[byName["old"] * 6 + 4]));
        Assert.Equal((1L, 1_000L), (baseline[byName["old"] * 3], baseline[byName["old"] * 3 + 2]));
        Assert.Equal(1_000L, baseline[byName["shared"] * 3 + 2]);
        Assert.Contains("differential · ", page);
    }
}

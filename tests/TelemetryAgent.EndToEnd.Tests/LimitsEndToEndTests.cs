using TelemetryAgent.EndToEnd.Tests.Support;
using TelemetryAgent.Testing;

namespace TelemetryAgent.EndToEnd.Tests;

/// <summary>The agent's limits with real programs: what reaching one costs, and that it costs no one else.</summary>
public sealed class LimitsEndToEndTests : IDisposable
{
    private readonly TemporaryFolder _temp = new();

    public void Dispose() => _temp.Dispose();


    [Fact]
    public async Task A_process_beyond_the_definition_limit_is_cut_off_while_another_is_served_in_full()
    {
        // 3000 distinct functions, called once each: more code definitions than the limit.
        var wide = _temp.Write("wide.py", """
            for i in range(3000):
                exec(f"def f{i}():\n    return {i}\n")
                globals()[f"f{i}"]()
            print("wide done")
            """);
        var small = _temp.Write("small.py", "def leaf(i):\n    return i\n\nprint(sum(leaf(i) for i in range(1000)))\n");
        using var agent = await ServeAgent.StartAsync(_temp.File("agent.sock"), _temp.File("out"), "--max-definitions", "2000");
        var environment = new Dictionary<string, string?> { ["PYTHONPATH"] = Repo.Path("python-shim"), ["TELEMETRY_SHIM_MODE"] = "full" };
        var runs = await Task.WhenAll(
            Processes.RunPythonAsync(["-m", "telemetry_shim", "--socket", agent.SocketPath, wide], environment: environment),
            Processes.RunPythonAsync(["-m", "telemetry_shim", "--socket", agent.SocketPath, small], environment: environment));
        Assert.True(runs[0].ExitCode == 0 && runs[0].Stdout == "wide done\n", runs[0].ToString());
        Assert.True(runs[1].ExitCode == 0 && runs[1].Stdout == "499500\n", runs[1].ToString());
        await ServeAgent.WaitUntilAsync(() => agent.OutputFolders().Any(folder => Path.GetFileName(folder).StartsWith("small-")), "small's outputs");
        var stopped = await agent.StopAsync();

        Assert.Contains("TooManyDefinitions: code id 2001 is above this agent's limit of 2000 definitions", stopped.Stderr);
        Assert.Matches(@"protocol errors \d+ \(TooManyDefinitions \d+\)", stopped.Stderr);
        var smallProcess = ServeAgent.ProcessIn(Assert.Single(agent.OutputFolders(), folder => Path.GetFileName(folder).StartsWith("small-")));
        Assert.Equal("Goodbye", smallProcess.GetProperty("connection").GetProperty("end_reason").GetString());
        // The cut-off process still has the profile of what it sent before the limit.
        var wideProcess = ServeAgent.ProcessIn(agent.OutputFolders().First(folder => Path.GetFileName(folder).StartsWith("wide-")));
        Assert.Equal("TooManyDefinitions", wideProcess.GetProperty("connection").GetProperty("violation").GetString());
        Assert.InRange(wideProcess.GetProperty("recording").GetProperty("functions_defined").GetInt32(), 1, 2000);
    }

    [Fact]
    public async Task Calls_beyond_the_call_tree_limit_are_kept_in_a_counted_truncated_node()
    {
        var script = _temp.Write("paths.py", """
            def leaf():
                return 1
            for i in range(200):  # 200 distinct functions (code objects), each calling leaf: 400 paths
                exec(f"def branch{i}():\n    return leaf()\n")
            print(sum(globals()[f"branch{i}"]() for i in range(200)))
            """);
        var output = _temp.File("out");
        var result = await Processes.RunAgentAsync(["run", "-o", output, "--max-call-tree-nodes", "100", script]);
        Assert.True(result.ExitCode == 0 && result.Stdout == "200\n", result.ToString());
        var process = ServeAgent.ProcessInRun(output);
        var recording = process.GetProperty("recording");
        Assert.True(recording.GetProperty("truncated_pushes").GetInt64() > 0, recording.ToString());
        Assert.InRange(recording.GetProperty("call_tree_nodes").GetInt64(), 100, 200);
        Assert.Contains(";[truncated] ", File.ReadAllText(Path.Combine(output, "calls.folded")));
    }
}

using TelemetryAgent.EndToEnd.Tests.Support;
using Xunit.Abstractions;

namespace TelemetryAgent.EndToEnd.Tests;

/// <summary>
/// The load test (tests/load/load_test.py) in its small form: 10 real shimmed processes for 3 s against a real
/// `serve`; every event sent is received, every event recorded is sent or dropped. scripts/load-test runs the
/// long form (100 processes, 60 s) and docs/operations.md has its figures.
/// </summary>
public sealed class LoadTests(ITestOutputHelper output)
{
    [Fact]
    public async Task Ten_processes_streaming_at_once_lose_no_event_unaccounted()
    {
        var result = await Processes.RunPythonAsync(
            [Repo.Path("tests", "load", "load_test.py"), "--agent-dll", Processes.AgentDll, "--python", Processes.Python.Path,
             "--processes", "10", "--seconds", "3"],
            timeout: TimeSpan.FromMinutes(5));
        output.WriteLine(result.Stdout);
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("; connections: 10\n", result.Stdout);          // one each: no shim had to reconnect
        Assert.Contains("connection ends (Goodbye 11)", result.Stdout);  // and the warm-up process
        Assert.DoesNotContain("FAILED", result.Stdout);
    }
}

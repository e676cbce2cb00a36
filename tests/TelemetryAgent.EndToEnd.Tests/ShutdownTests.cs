using System.Diagnostics;
using TelemetryAgent.EndToEnd.Tests.Support;
using TelemetryAgent.Testing;

namespace TelemetryAgent.EndToEnd.Tests;

/// <summary>SIGTERM to `serve` while a real shimmed program is streaming.</summary>
public sealed class ShutdownTests : IDisposable
{
    private readonly TemporaryFolder _temp = new();

    public void Dispose() => _temp.Dispose();

    [Fact]
    public async Task Sigterm_completes_open_sessions_and_writes_their_outputs_within_the_deadline()
    {
        var script = _temp.File("busy.py");
        File.WriteAllText(script, """
            import os, sys, time
            def tick(n):
                return n + 1
            n = 0
            print("started", flush=True)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not os.path.exists(sys.argv[1]):
                n = tick(n)
                time.sleep(0.001)
            print("done", n > 0, flush=True)
            """);
        var stopFile = _temp.File("stop");
        using var agent = await ServeAgent.StartAsync(_temp.File("agent.sock"), _temp.File("out"), "--shutdown-timeout", "5");
        using var program = Processes.Start(Processes.Python.Path, ["-m", "telemetry_shim", "--socket", agent.SocketPath, script, stopFile],
            environment: new Dictionary<string, string?> { ["PYTHONPATH"] = Repo.Path("python-shim"), ["TELEMETRY_SHIM_MODE"] = "full" });
        Assert.Equal("started", await program.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(30)));
        // Accepted: from here the agent reads the stream, and keeps reading while it stops (open connections get 1 s).
        await agent.WaitForAcceptedConnectionsAsync(1);
        // And has read more than 100 events of it (the query API says so), however slowly a loaded machine ships them.
        var queries = QueryApi.Open(Hosting.LiveViews.QuerySocketPathFor(agent.SocketPath));
        async Task<long> ReceivedAsync() => (await queries.ListProcessesAsync(new TelemetryAgent.Live.Contracts.ListProcessesRequest()))
            .Processes.Where(p => p.Pid == program.Id).Select(p => p.EventsReceived).DefaultIfEmpty(0).Single();
        var deadline = Stopwatch.StartNew();
        while (await ReceivedAsync() <= 100)
        {
            Assert.True(deadline.Elapsed < TimeSpan.FromSeconds(60), "the agent received no more than 100 events in 60 s");
            await Task.Delay(50);
        }

        var stopping = Stopwatch.StartNew();
        var stopped = await agent.StopAsync(TimeSpan.FromSeconds(30));
        stopping.Stop();
        Assert.True(stopped.ExitCode == 0, stopped.ToString());
        Assert.True(stopping.Elapsed < TimeSpan.FromSeconds(5 + 3), $"stopping took {stopping.Elapsed}");
        Assert.Contains("connection ends (Cancelled 1)", stopped.Stderr);

        // The open session was completed and written, with what it had received.
        var folder = Assert.Single(agent.OutputFolders());
        var process = ServeAgent.ProcessIn(folder);
        Assert.Equal(program.Id, process.GetProperty("pid").GetInt64());
        Assert.Equal("Cancelled", process.GetProperty("connection").GetProperty("end_reason").GetString());
        Assert.True(process.GetProperty("recording").GetProperty("events_received").GetInt64() > 100, process.ToString());
        foreach (var name in new[] { "summary.json", "profile.folded", "flamegraph.html", "exceptions.json" })
            Assert.True(File.Exists(Path.Combine(folder, name)), name);
        Assert.False(File.Exists(agent.SocketPath), "the socket file is removed");

        // The program never noticed.
        File.WriteAllText(stopFile, "");
        var finished = await Processes.WaitAsync(program, TimeSpan.FromSeconds(30));
        Assert.True(finished.ExitCode == 0 && finished.Stdout == "done True\n", finished.ToString());
    }
}

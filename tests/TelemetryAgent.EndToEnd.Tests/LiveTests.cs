using System.Diagnostics;
using System.Text.RegularExpressions;
using Grpc.Core;
using TelemetryAgent.Cli;
using TelemetryAgent.EndToEnd.Tests.Support;
using TelemetryAgent.Live.Contracts;
using TelemetryAgent.Testing;

namespace TelemetryAgent.EndToEnd.Tests;

/// <summary>
/// The live views of a real `serve` with a real shimmed program that runs on: a snapshot between two phases of the
/// program against what the agent writes at exit, `top` in plain mode, `status` and its exit codes, time ranges.
/// </summary>
public sealed partial class LiveTests : IDisposable
{
    private readonly TemporaryFolder _temp = new();

    public void Dispose() => _temp.Dispose();

    private string SocketPath => _temp.File("agent.sock");
    private string QuerySocketPath => _temp.File("agent.query.sock");
    private string OutputRoot => _temp.File("out");
    private static string Program => Repo.Path("tests", "TelemetryAgent.EndToEnd.Tests", "live_phases.py");
    // How frames name the program's file: relative to the working directory, the repository.
    private const string ProgramFile = "tests/TelemetryAgent.EndToEnd.Tests/live_phases.py";

    private Process StartProgram(params string[] arguments) =>
        Processes.Start(Processes.Python.Path, ["-m", "telemetry_shim", "--socket", SocketPath, Program, .. arguments],
            environment: new Dictionary<string, string?> { ["PYTHONPATH"] = Repo.Path("python-shim"), ["TELEMETRY_SHIM_MODE"] = "full" });

    private static async Task WaitForLineAsync(Process process, string line)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        while (await process.StandardOutput.ReadLineAsync(timeout.Token) is { } read)
        {
            if (read == line) return;
        }
        throw new InvalidOperationException($"the program ended before printing '{line}': {await process.StandardError.ReadToEndAsync()}");
    }

    private static string CallsOfProgram(string callsFolded) => Folded.OnlyFramesOf(callsFolded, "live_phases.py", "live_phases");

    private Task<Finished> Agent(params string[] arguments) => Processes.RunAgentAsync([.. arguments, "--socket", SocketPath],
        timeout: TimeSpan.FromSeconds(60));

    [Fact]
    public async Task A_snapshot_between_two_phases_holds_exactly_the_first_and_the_exit_folder_adds_the_second()
    {
        using var agent = await ServeAgent.StartAsync(SocketPath, OutputRoot);
        await ServeAgent.WaitUntilAsync(() => File.Exists(QuerySocketPath), "the query socket");
        // Owner-only from the moment it exists (made so before bind), never the umask's mode.
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(QuerySocketPath));
        using var program = StartProgram();
        await WaitForLineAsync(program, "phase one done");

        // Events reach the agent in the order the shim recorded them: once the marker's call is in, so is phase one.
        var client = QueryApi.Open(QuerySocketPath);
        var request = new ProfileRequest
        {
            Process = new ProcessSelector { Pid = program.Id }, Format = ProfileFormat.FoldedCalls, Range = new TimeRange { SinceStart = true },
        };
        await WaitUntilAsync(async () => (await QueryApi.ProfileTextAsync(client, request)).Contains(";phase_one_done (", StringComparison.Ordinal),
            "the marker's call at the agent");

        var snapshot = _temp.File("snapshot");
        var taken = await Agent("snapshot", "--pid", program.Id.ToString(), "-o", snapshot);
        Assert.True(taken.ExitCode == 0, taken.ToString());
        Assert.Contains($"wrote {snapshot}/", taken.Stderr);
        string[] everyFile = [.. Output.FolderExporter.StandardFiles().Select(file => file.Name)];
        Assert.Equal(everyFile.Order(), Directory.GetFiles(snapshot).Select(Path.GetFileName).Order());
        Assert.Empty(Directory.GetDirectories(_temp.Path, ".*.partial"));

        await program.StandardInput.WriteLineAsync("go on");
        await program.StandardInput.FlushAsync();
        var finished = await Processes.WaitAsync(program, TimeSpan.FromSeconds(60));
        Assert.True(finished.ExitCode == 0, finished.ToString());
        await ServeAgent.WaitUntilAsync(() => agent.OutputFolders().Length == 1, "the exit folder");

        var atSnapshot = CallsOfProgram(File.ReadAllText(Path.Combine(snapshot, "calls.folded")));
        var atExit = CallsOfProgram(File.ReadAllText(Path.Combine(agent.OutputFolders()[0], "calls.folded")));
        // Exactly what ran before the snapshot: the exit's calls without phase two's, which ran after.
        var beforeSnapshot = string.Concat(atExit.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Where(line => !line.Contains(";phase_two (", StringComparison.Ordinal)).Select(line => line + "\n"));
        Assert.Equal(beforeSnapshot, atSnapshot);
        Assert.Contains($"live_phases;thread MainThread;<module> ({ProgramFile}:1);main ({ProgramFile}:39);phase_one ({ProgramFile}:15);work ({ProgramFile}:7) 1000\n", atSnapshot);
        Assert.Contains($";phase_two ({ProgramFile}:24);work ({ProgramFile}:7) 700\n", atExit);
        Assert.Contains($";phase_two ({ProgramFile}:24);extra ({ProgramFile}:11) 300\n", atExit);
        // The snapshot's summary is of a process still running: its connection had not ended.
        Assert.Contains("\"end_reason\": null", File.ReadAllText(Path.Combine(snapshot, "summary.json")));

        // Ended processes stay queryable: the whole run, then a range of its buckets.
        var ended = (await client.ListProcessesAsync(new ListProcessesRequest())).Processes.Single(process => process.Pid == program.Id);
        Assert.False(ended.Running);
        Assert.Equal("Goodbye", ended.EndReason);
        var whole = CallsOfProgram(await QueryApi.ProfileTextAsync(client, request));
        Assert.Equal(atExit, whole);
        var ranged = request.Clone();
        ranged.Range = new TimeRange
        {
            Between = new Between { StartUnixNs = ended.ConnectedUnixNs - 1_000_000_000, EndUnixNs = ended.EndedUnixNs + 60_000_000_000 },
        };
        Assert.Equal(atExit, CallsOfProgram(await QueryApi.ProfileTextAsync(client, ranged)));

        var stopped = await agent.StopAsync();
        Assert.True(stopped.ExitCode == 0, stopped.ToString());
        Assert.False(File.Exists(QuerySocketPath), "the query socket is removed at stop");
    }

    [Fact]
    public async Task Top_in_plain_mode_prints_a_table_every_second_with_growing_counts()
    {
        using var agent = await ServeAgent.StartAsync(SocketPath, OutputRoot);
        using var program = StartProgram("spin");
        try
        {
            await WaitForLineAsync(program, "spinning");
            var top = await Agent("top", "--pid", program.Id.ToString(), "--iterations", "3", "--limit", "5");
            Assert.True(top.ExitCode == 0, top.ToString());
            var blocks = top.Stdout.Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
            Assert.Equal(3, blocks.Length);
            var callsOfWork = new List<long>();
            foreach (var block in blocks)
            {
                var lines = block.Split('\n');
                Assert.StartsWith($"telemetry-agent top · pid {program.Id} · 1 running · ", lines[0]);
                Assert.Equal("  %Self  %Total      Self     Total   Calls/s        Calls  Function (file:line)", lines[1]);
                var work = lines.Single(line => line.EndsWith($" work ({ProgramFile}:7)", StringComparison.Ordinal));
                var match = TopRow().Match(work);
                Assert.True(match.Success, work);
                Assert.True(long.Parse(match.Groups["rate"].Value.Replace(",", "")) > 0, work);
                callsOfWork.Add(long.Parse(match.Groups["calls"].Value.Replace(",", "")));
            }
            Assert.True(callsOfWork[0] < callsOfWork[1] && callsOfWork[1] < callsOfWork[2], string.Join(", ", callsOfWork));
        }
        finally
        {
            program.StandardInput.Close();
            await Processes.WaitAsync(program, TimeSpan.FromSeconds(60));
        }
    }

    [Fact]
    public async Task Top_gives_the_exact_calls_of_the_full_computation_and_charges_open_frames_their_time_so_far()
    {
        using var agent = await ServeAgent.StartAsync(SocketPath, OutputRoot);
        await ServeAgent.WaitUntilAsync(() => File.Exists(QuerySocketPath), "the query socket");
        using var program = StartProgram();
        try
        {
            await WaitForLineAsync(program, "phase one done");
            var client = QueryApi.Open(QuerySocketPath);
            var selector = new ProcessSelector { Pid = program.Id };
            var calls = new ProfileRequest { Process = selector, Format = ProfileFormat.FoldedCalls, Range = new TimeRange { SinceStart = true } };
            await WaitUntilAsync(async () => (await QueryApi.ProfileTextAsync(client, calls)).Contains(";phase_one_done (", StringComparison.Ordinal),
                "the marker's call at the agent");

            // The program waits on stdin, inside main: two updates, the second of an interval where nothing returned.
            using var watch = client.WatchTop(new TopRequest { Process = selector, Order = TopOrder.CallsSinceStart, Limit = 100, IntervalMs = 300 },
                deadline: DateTime.UtcNow.AddSeconds(60));
            var updates = new List<TopUpdate>();
            while (updates.Count < 2 && await watch.ResponseStream.MoveNext(CancellationToken.None)) updates.Add(watch.ResponseStream.Current);
            var first = updates[0].Rows.Where(row => row.File == ProgramFile).ToDictionary(row => row.QualifiedName);
            var second = updates[1].Rows.Where(row => row.File == ProgramFile).ToDictionary(row => row.QualifiedName);
            Assert.Equal(1000, first["work"].CallsSinceStart);
            Assert.Equal(1, first["phase_one"].CallsSinceStart);
            Assert.Equal(1, first["phase_one_done"].CallsSinceStart);
            Assert.Equal(1, first["main"].CallsSinceStart);
            Assert.Equal(0, second["work"].Calls);
            Assert.Equal(1000, second["work"].CallsSinceStart);
            Assert.Equal(first["work"].TotalNsSinceStart, second["work"].TotalNsSinceStart);
            // main has not returned: its total is its time so far, at least the work it called, and grows while it waits
            // (the shim's STATS, about once a second, move the process's clock on).
            Assert.True(first["main"].TotalNsSinceStart >= first["phase_one"].TotalNsSinceStart + first["phase_one_done"].TotalNsSinceStart);

            // The same figures as the full computation over a checkpoint's copy of the trees (summary.json's functions).
            var snapshot = _temp.File("snapshot");
            var taken = await Agent("snapshot", "--pid", program.Id.ToString(), "-o", snapshot);
            Assert.True(taken.ExitCode == 0, taken.ToString());
            using var summary = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(snapshot, "summary.json")));
            var full = summary.RootElement.GetProperty("functions").EnumerateArray()
                .Where(function => function.GetProperty("file").GetString() == ProgramFile)
                .ToDictionary(function => function.GetProperty("qualified_name").GetString()!, function => function.GetProperty("calls").GetInt64());
            Assert.Equal(full.OrderBy(entry => entry.Key), second.ToDictionary(entry => entry.Key, entry => entry.Value.CallsSinceStart).OrderBy(entry => entry.Key));
        }
        finally
        {
            program.StandardInput.Close();
            await Processes.WaitAsync(program, TimeSpan.FromSeconds(60));
        }
    }

    [GeneratedRegex(@"^\s*[\d.]+%\s+[\d.]+%\s+\S+ \S+\s+\S+ \S+\s+(?<rate>[\d,]+)\s+(?<calls>[\d,]+)  work ")]
    private static partial Regex TopRow();

    [Fact]
    public async Task Status_exits_0_when_healthy_1_when_shims_dropped_events_and_3_without_an_agent()
    {
        var none = await Agent("status");
        Assert.True(none.ExitCode == StatusCommand.ExitCodes.Unreachable, none.ToString());
        Assert.Contains("cannot reach the agent", none.Stderr);
        Assert.Equal(StatusCommand.ExitCodes.Unreachable, (await Agent("status", "--check", "live")).ExitCode);

        // Started before the agent, the program's shim drops what it records until it connects, and says so.
        using var program = StartProgram("spin");
        try
        {
            await WaitForLineAsync(program, "spinning");
            using var agent = await ServeAgent.StartAsync(SocketPath, OutputRoot);
            var healthy = await Agent("status", "--check", "live");
            Assert.True(healthy.ExitCode == StatusCommand.ExitCodes.Healthy, healthy.ToString());
            Assert.Contains("ok    ingest: accepting on", healthy.Stdout);
            Assert.Equal(StatusCommand.ExitCodes.Healthy, (await Agent("status", "--check", "ready", "--quiet")).ExitCode);

            Finished degraded = healthy;
            await WaitUntilAsync(async () => (degraded = await Agent("status")).ExitCode == StatusCommand.ExitCodes.Degraded,
                "status to say the shim dropped events", describe: () => degraded.ToString());
            Assert.StartsWith("telemetry-agent: degraded, ready;", degraded.Stdout);
            Assert.Matches(@"warn  drops: shims dropped [\d.]+ events/s over the last minute", degraded.Stdout);
        }
        finally
        {
            program.StandardInput.Close();
            await Processes.WaitAsync(program, TimeSpan.FromSeconds(60));
        }
        var bad = await Agent("status", "--check", "sometimes");
        Assert.True(bad.ExitCode == StatusCommand.ExitCodes.Usage, bad.ToString());
    }

    [Fact]
    public async Task Status_exits_4_while_the_agent_stops_and_still_answers()
    {
        // An OTLP endpoint that takes connections and never answers: the stop waits for the agent's own metrics' last
        // export (up to 5 s), with the ingest socket closed and the query socket still up.
        var silent = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        silent.Start();
        try
        {
            var endpoint = $"http://127.0.0.1:{((System.Net.IPEndPoint)silent.LocalEndpoint).Port}";
            using var agent = await ServeAgent.StartAsync(SocketPath, OutputRoot, "--otlp-endpoint", endpoint, "--otlp-protocol", "http/protobuf");
            await ServeAgent.WaitUntilAsync(() => File.Exists(QuerySocketPath), "the query socket");
            var client = QueryApi.Open(QuerySocketPath);
            Assert.True((await client.GetStatusAsync(new StatusRequest())).Ready);

            Assert.True(Transport.Native.SendSignal(agent.Process.Id, 15));
            await WaitUntilAsync(async () => !(await client.GetStatusAsync(new StatusRequest())).Ready, "the agent to stop accepting shims");
            var checks = await Task.WhenAll(Agent("status"), Agent("status", "--check", "ready", "--quiet"));
            Assert.True(checks[0].ExitCode == StatusCommand.ExitCodes.NotReady, checks[0].ToString());
            Assert.Contains("ingest: not accepting connections", checks[0].Stdout);
            Assert.True(checks[1].ExitCode == StatusCommand.ExitCodes.NotReady, checks[1].ToString());

            await Processes.WaitAsync(agent.Process, TimeSpan.FromSeconds(60));
            Assert.False(File.Exists(QuerySocketPath), "the query socket is removed at the end of the stop");
        }
        finally
        {
            silent.Stop();
        }
    }

    [Fact]
    public async Task Healthy_agent_with_nothing_connected_exits_0()
    {
        using var agent = await ServeAgent.StartAsync(SocketPath, OutputRoot);
        var status = await Agent("status", "--json");
        Assert.True(status.ExitCode == StatusCommand.ExitCodes.Healthy, status.ToString());
        Assert.Contains("\"ready\": true", status.Stdout);
    }

    private static async Task WaitUntilAsync(Func<Task<bool>> condition, string what, double seconds = 60, Func<string>? describe = null)
    {
        var deadline = Stopwatch.StartNew();
        while (!await condition())
        {
            if (deadline.Elapsed.TotalSeconds > seconds) throw new TimeoutException($"timed out waiting for {what}; last: {describe?.Invoke()}");
            await Task.Delay(100);
        }
    }
}

using System.Diagnostics;
using System.Globalization;
using System.Net.Sockets;
using Grpc.Core;
using Grpc.Net.Client;
using Microsoft.Extensions.Time.Testing;
using TelemetryAgent.Live.Contracts;
using TelemetryAgent.Output;
using TelemetryAgent.Profiling;
using TelemetryAgent.Testing;

namespace TelemetryAgent.Benchmarks;

/// <summary>
/// The live views' figures (docs/performance.md "Live views"): a snapshot of a live process with 50,000 stacks, what a
/// `top` client costs the agent, the buckets' memory per process for an hour, and the agent's side of a range's flame
/// graph. The first two run the real agent and real Python programs; build the agent first (dotnet build -c Release).
/// </summary>
public static class LiveBenchmarks
{
    private static readonly string Repo = FindRepo();
    private static readonly string AgentDll = Path.Combine(Repo, "agent", "src", "TelemetryAgent", "bin", "Release", "net10.0", "telemetry-agent.dll");

    public static async Task<int> RunAsync(string name, string? argument = null)
    {
        switch (name)
        {
            case "snapshot": return await SnapshotAsync(argument);
            case "snapshot-files": return SnapshotFiles();
            case "top": return await TopCostAsync(wide: false);
            case "top-wide": return await TopCostAsync(wide: true);
            case "top-refresh": return TopRefresh();
            case "timeline-memory": return TimelineMemory();
            case "range": return RangeFlameGraph();
            default:
                Console.Error.WriteLine("live benchmarks: snapshot, snapshot-files, top, top-wide, top-refresh, timeline-memory, range");
                return 2;
        }
    }

    /// <summary>
    /// A snapshot of a live process with 50,000 distinct stacks: the query API's answer, and the CLI end to end. With
    /// <paramref name="baselineDll"/> (another build's telemetry-agent.dll), the same for that build, in alternate
    /// rounds in the same run, so that both see the same load.
    /// </summary>
    private static async Task<int> SnapshotAsync(string? baselineDll)
    {
        string[] builds = baselineDll is null ? [AgentDll] : [AgentDll, Path.GetFullPath(baselineDll)];
        var agents = new List<Agent>();
        var programs = new List<Process>();
        try
        {
            var clients = new List<Query.QueryClient>();
            foreach (var dll in builds)
            {
                var agent = await Agent.StartAsync(dll);
                agents.Add(agent);
                var program = Agent.Python(agent.Socket, Path.Combine(Repo, "tests", "browser", "wide_program.py"), "250", "200");
                programs.Add(program);
                await WaitForLineAsync(program, "ready");
                var client = agent.Client();
                clients.Add(client);
                var process = await UntilAsync(async () => (await client.ListProcessesAsync(new ListProcessesRequest())).Processes
                    .FirstOrDefault(p => p.Pid == program.Id && p.CallTreeNodes >= 50_000), "50,000 stacks at the agent");
                Console.WriteLine($"{dll}: process {process.Pid}: {process.CallTreeNodes:N0} call-tree nodes, {process.EventsReceived:N0} events");
            }

            // Wall time on a shared machine counts the other processes' turns too; the agent's CPU time for the answer
            // does not, so both are printed. The first answer, which includes compiling the code, is printed on its own.
            var first = new double[builds.Length];
            var api = builds.Select(_ => new List<double>()).ToArray();
            var apiCpu = builds.Select(_ => new List<double>()).ToArray();
            long bytes = 0;
            for (var i = 0; i < 8; i++)
            {
                for (var b = 0; b < builds.Length; b++)
                {
                    var cpu = CpuTime(agents[b].Process.Id);
                    var watch = Stopwatch.StartNew();
                    using var call = clients[b].Snapshot(new SnapshotRequest { Process = new ProcessSelector { Pid = programs[b].Id } });
                    bytes = 0;
                    await foreach (var chunk in call.ResponseStream.ReadAllAsync()) bytes += chunk.Data.Length;
                    if (i == 0)
                    {
                        first[b] = watch.Elapsed.TotalMilliseconds;
                        continue;
                    }
                    api[b].Add(watch.Elapsed.TotalMilliseconds);
                    apiCpu[b].Add((CpuTime(agents[b].Process.Id) - cpu).TotalMilliseconds);
                }
            }
            var cli = builds.Select(_ => new List<double>()).ToArray();
            for (var i = 0; i < 3; i++)
            {
                for (var b = 0; b < builds.Length; b++)
                {
                    var folder = Path.Combine(agents[b].Folder, $"snapshot-{i}");
                    var watch = Stopwatch.StartNew();
                    var run = Process.Start(new ProcessStartInfo("dotnet")
                    {
                        ArgumentList = { builds[b], "snapshot", "--pid", programs[b].Id.ToString(CultureInfo.InvariantCulture), "--socket", agents[b].Socket, "-o", folder },
                        RedirectStandardError = true,
                    })!;
                    await run.WaitForExitAsync();
                    cli[b].Add(watch.Elapsed.TotalMilliseconds);
                    if (run.ExitCode != 0) throw new InvalidOperationException(await run.StandardError.ReadToEndAsync());
                }
            }
            for (var b = 0; b < builds.Length; b++)
            {
                Console.WriteLine(builds.Length == 1 ? "this build:" : b == 0 ? "this build (rounds alternate with the baseline):" : $"baseline {builds[b]}:");
                Console.WriteLine($"  query API Snapshot (checkpoint + 7 files, {bytes / 1e6:F1} MB): the first {first[b]:F0} ms; the next: wall {Figures(api[b])}");
                Console.WriteLine($"    the agent's CPU time for it: {Figures(apiCpu[b])}");
                Console.WriteLine($"  telemetry-agent snapshot, end to end (the CLI's own start-up included): {Figures(cli[b])}");
            }
            return 0;
        }
        finally
        {
            foreach (var program in programs)
            {
                program.StandardInput.Close();
                await program.WaitForExitAsync();
                program.Dispose();
            }
            foreach (var agent in agents) await agent.DisposeAsync();
        }
    }

    /// <summary>
    /// Where a snapshot's time goes, in process: a tree shaped like wide_program.py 250 x 200 (50,000 stacks), the
    /// checkpoint on the session's side, the run's summary, and each of the 7 files written into memory.
    /// </summary>
    private static int SnapshotFiles()
    {
        const int Callers = 250, Callees = 200, Runs = 8;
        var script = new SessionScript().Thread(1, "MainThread", isMain: true);
        script.Code(1, "<module>", "/srv/app/tests/browser/wide_program.py", 1);
        for (uint i = 0; i < Callers; i++) script.Code(2 + i, $"caller_{i}", "<string>", 1 + 2 * i);
        for (uint j = 0; j < Callees; j++) script.Code(2 + Callers + j, $"callee_{j}", "<string>", 1 + 2 * j);
        long ts = 1;
        script.Start(ts++, 1);
        for (uint i = 0; i < Callers; i++)
        {
            for (uint j = 0; j < Callees; j++)
                script.Start(ts += 3, 2 + i).Start(ts += 5, 2 + Callers + j).Return(ts += 7, 2 + Callers + j).Return(ts += 2, 2 + i);
        }
        var session = script.Session;
        var files = FolderExporter.StandardFiles();
        var columns = new List<double>[files.Count + 3];
        for (var c = 0; c < columns.Length; c++) columns[c] = [];
        long bytes = 0;
        for (var run = 0; run < Runs + 1; run++)
        {
            var watch = Stopwatch.StartNew();
            var answer = session.RequestSnapshotAsync();
            session.TakeRequestedCheckpoint();
            var snapshot = answer.Result;
            var checkpoint = watch.Elapsed.TotalMilliseconds;
            watch.Restart();
            var outputRun = OutputRun.Create([snapshot], TimeProvider.System, snapshot.ConnectedAt, snapshot.CheckpointTakenAt);
            var summary = watch.Elapsed.TotalMilliseconds;
            var times = new double[files.Count];
            bytes = 0;
            for (var f = 0; f < files.Count; f++)
            {
                using var content = new MemoryStream();
                watch.Restart();
                files[f].Write(content, outputRun);
                times[f] = watch.Elapsed.TotalMilliseconds;
                bytes += content.Length;
            }
            if (run == 0) continue; // the code's first run
            columns[0].Add(checkpoint);
            columns[1].Add(summary);
            for (var f = 0; f < files.Count; f++) columns[2 + f].Add(times[f]);
            columns[^1].Add(checkpoint + summary + times.Sum());
        }
        Console.WriteLine($"{script.Profile.CallTreeNodes:N0} call-tree nodes, {bytes / 1e6:F1} MB of files; median (min-max) of {Runs} after a warm-up, one thread:");
        Console.WriteLine($"  {"checkpoint",-26} {Figures(columns[0])}");
        Console.WriteLine($"  {"summary (OutputRun)",-26} {Figures(columns[1])}");
        for (var f = 0; f < files.Count; f++) Console.WriteLine($"  {files[f].Name,-26} {Figures(columns[2 + f])}");
        Console.WriteLine($"  {"all",-26} {Figures(columns[^1])}");
        List<double> serial = [], parallel = [];
        for (var run = 0; run < 2 * Runs + 2; run++)
        {
            var answer = session.RequestSnapshotAsync();
            session.TakeRequestedCheckpoint();
            var outputRun = OutputRun.Create([answer.Result], TimeProvider.System, answer.Result.ConnectedAt, answer.Result.CheckpointTakenAt);
            var watch = Stopwatch.StartNew();
            if (run % 2 == 0)
            {
                foreach (var file in files) file.Write(new MemoryStream(), outputRun);
            }
            else
            {
                // As the query API's Snapshot writes them.
                Task.WaitAll([.. files.Select(file => Task.Run(() => file.Write(new MemoryStream(), outputRun)))]);
            }
            if (run >= 2) (run % 2 == 0 ? serial : parallel).Add(watch.Elapsed.TotalMilliseconds);
        }
        Console.WriteLine($"  the 7 files one after the other {Figures(serial)}; at once on the thread pool {Figures(parallel)}");
        return 0;
    }

    /// <summary>
    /// The agent's CPU time with and without a `top` client refreshing every second, over the same length of time, in
    /// alternating windows, with a live program sending the whole time.
    /// </summary>
    /// <summary>
    /// What a `top` client refreshing every second costs the agent: a busy program with a small tree (`live_phases.py
    /// spin`), or, <paramref name="wide"/>, an idle one with 50,000 stacks (where a refresh's cost is the tree's, if any).
    /// </summary>
    private static async Task<int> TopCostAsync(bool wide)
    {
        const int Windows = 4;
        var window = TimeSpan.FromSeconds(15);
        await using var agent = await Agent.StartAsync();
        using var program = wide
            ? Agent.Python(agent.Socket, Path.Combine(Repo, "tests", "browser", "wide_program.py"), "250", "200")
            : Agent.Python(agent.Socket, Path.Combine(Repo, "tests", "TelemetryAgent.EndToEnd.Tests", "live_phases.py"), "spin");
        await WaitForLineAsync(program, wide ? "ready" : "spinning");
        var client = agent.Client();
        var nodes = wide ? 50_000 : 1;
        var process = await UntilAsync(async () => (await client.ListProcessesAsync(new ListProcessesRequest())).Processes
            .FirstOrDefault(p => p.Pid == program.Id && p.CallTreeNodes >= nodes), "the program at the agent");
        Console.WriteLine($"process {process.Pid}: {process.CallTreeNodes:N0} call-tree nodes");
        await Task.Delay(TimeSpan.FromSeconds(3)); // past the start-up burst

        // A first client, not counted: the agent compiles its query paths then (the JIT's second tier comes later still).
        var warmUp = await WithTopAsync(() => CpuShareAsync(agent.Process, window));
        var without = new List<double>();
        var with = new List<double>();
        for (var i = 0; i < Windows; i++)
        {
            without.Add(await CpuShareAsync(agent.Process, window));
            with.Add(await WithTopAsync(() => CpuShareAsync(agent.Process, window)));
        }
        Console.WriteLine($"agent CPU with the first top client (warm-up, not counted): {warmUp:F2}% of one core");
        Console.WriteLine($"agent CPU without top, {window.TotalSeconds:0} s windows: {string.Join(", ", without.Select(p => $"{p:F2}%"))} of one core");
        Console.WriteLine($"agent CPU with top --plain (1 refresh/s): {string.Join(", ", with.Select(p => $"{p:F2}%"))} of one core");
        var differences = with.Zip(without, (a, b) => a - b).Order().ToArray();
        Console.WriteLine($"top adds {Median(differences):F2}% of one core (median of {Windows} pairs; min {differences[0]:F2}%, max {differences[^1]:F2}%)");
        program.StandardInput.Close();
        await program.WaitForExitAsync();
        return 0;

        async Task<double> WithTopAsync(Func<Task<double>> measure)
        {
            using var top = Process.Start(new ProcessStartInfo("dotnet")
            {
                ArgumentList = { AgentDll, "top", "--socket", agent.Socket, "--pid", program.Id.ToString(CultureInfo.InvariantCulture), "--plain" },
                RedirectStandardOutput = true, RedirectStandardInput = true,
            })!;
            var output = top.StandardOutput.ReadToEndAsync();
            await Task.Delay(TimeSpan.FromSeconds(3)); // its start-up and first interval are not the steady cost
            var share = await measure();
            top.Kill();
            await top.WaitForExitAsync();
            if (!(await output).Contains("%Self", StringComparison.Ordinal)) throw new InvalidOperationException("top printed no table");
            return share;
        }
    }

    /// <summary>
    /// The session's side of one `top` refresh, in process: a tree of the given size with 200 stacks busy between
    /// refreshes, answered by a checkpoint and the full computation over its copy, or by the function statistics kept
    /// from what changed. Both answers are compared: the figures must be equal.
    /// </summary>
    private static int TopRefresh()
    {
        const int Refreshes = 30, Busy = 200;
        Console.WriteLine($"{"stacks in tree",15} {"checkpoint + compute (µs)",26} {"from what changed (µs)",23} {"first question (µs)",20}");
        foreach (var stacks in new[] { 2_000, 20_000, 50_000 })
        {
            var script = new SessionScript().Thread(1, "MainThread", isMain: true);
            var callers = stacks / 100;
            for (uint code = 1; code <= callers + 100; code++) script.Code(code, $"f{code}");
            long ts = 1;
            void Call(uint caller, uint callee)
            {
                script.Start(ts++, caller).Start(ts++, (uint)callers + 1 + callee).Return(ts++, (uint)callers + 1 + callee).Return(ts++, caller);
            }
            for (uint caller = 1; caller <= callers; caller++)
                for (uint callee = 0; callee < 100; callee++) Call(caller, callee);
            var session = script.Session;
            var watch = Stopwatch.StartNew();
            Take(session, () => session.RequestFunctionStatisticsAsync());
            var first = watch.Elapsed.TotalMicroseconds;
            var random = new Random(7);
            var full = new List<double>();
            var changed = new List<double>();
            for (var refresh = 0; refresh < Refreshes; refresh++)
            {
                for (var i = 0; i < Busy; i++) Call((uint)random.Next(1, callers + 1), (uint)random.Next(100));
                watch.Restart();
                var live = Take(session, () => session.RequestFunctionStatisticsAsync());
                changed.Add(watch.Elapsed.TotalMicroseconds);
                watch.Restart();
                var copied = Take(session, () => session.RequestSnapshotAsync()).FunctionStatistics();
                full.Add(watch.Elapsed.TotalMicroseconds);
                if (!live.SequenceEqual(copied)) throw new InvalidOperationException("the two computations differ");
            }
            Console.WriteLine($"{stacks,15:N0} {Median([.. full.Order()]),26:N0} {Median([.. changed.Order()]),23:N0} {first,20:N0}");
        }
        Console.WriteLine($"(median of {Refreshes} refreshes, {Busy} stacks busy between two; one thread, no gRPC)");
        return 0;

        // As the session's read loop does when it is woken: the request is answered on the session's thread.
        static T Take<T>(Sessions.ProcessSession session, Func<Task<T>> ask)
        {
            var answer = ask();
            session.TakeRequestedCheckpoint();
            return answer.IsCompleted ? answer.Result : throw new InvalidOperationException("not answered");
        }
    }

    private static async Task<double> CpuShareAsync(Process process, TimeSpan window)
    {
        var before = CpuTime(process.Id);
        var watch = Stopwatch.StartNew();
        await Task.Delay(window);
        var used = CpuTime(process.Id) - before;
        return 100 * used.TotalSeconds / watch.Elapsed.TotalSeconds;
    }

    /// <summary>utime + stime of a process, from /proc/PID/stat (clock ticks of 1/100 s).</summary>
    private static TimeSpan CpuTime(int pid)
    {
        var stat = File.ReadAllText($"/proc/{pid}/stat");
        var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        var ticks = long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture);
        return TimeSpan.FromSeconds(ticks / 100.0);
    }

    /// <summary>
    /// One process's buckets over an hour (10 s buckets, the defaults), with a given number of stacks busy in every
    /// bucket out of a larger tree: what they hold, in the agent's own estimate (the one the memory budget counts).
    /// </summary>
    private static int TimelineMemory()
    {
        Console.WriteLine($"{"stacks in tree",15} {"busy per bucket",16} {"buckets",8} {"held MiB",9} {"bytes/bucket",13} {"dropped",8}");
        foreach (var (stacks, busy) in new[] { (2_000, 200), (20_000, 2_000), (50_000, 5_000), (50_000, 50_000) })
        {
            var time = new FakeTimeProvider(SessionScript.AgentTimeAt(0));
            var script = new SessionScript(time: time, timeline: TimelineSettings.Default).Thread(1, "MainThread", isMain: true);
            var callers = stacks / 100;
            for (uint code = 1; code <= callers + 100; code++) script.Code(code, $"f{code}");
            const long second = 1_000_000_000;
            long ts = second;
            void Call(uint caller, uint callee)
            {
                script.Start(ts++, caller).Start(ts++, (uint)callers + 1 + callee).Return(ts++, (uint)callers + 1 + callee).Return(ts++, caller);
            }
            for (uint caller = 1; caller <= callers; caller++)
                for (uint callee = 0; callee < 100; callee++) Call(caller, callee);
            var random = new Random(7);
            for (var bucket = 1; bucket <= 360; bucket++)
            {
                ts = Math.Max(ts, bucket * 10 * second);
                for (var i = 0; i < busy; i++) Call((uint)random.Next(1, callers + 1), (uint)random.Next(100));
                time.SetUtcNow(SessionScript.AgentTimeAt(ts + second));
                script.Session.AfterFrame();
            }
            var timeline = script.Profile.Timeline!;
            var bucketBytes = timeline.Buckets.Average(b => (double)b.Bytes);
            Console.WriteLine($"{stacks,15:N0} {busy,16:N0} {timeline.Buckets.Count,8} {timeline.HeldBytes / 1048576.0,9:F1} {bucketBytes,13:N0} {timeline.DroppedBuckets,8}");
        }
        Console.WriteLine($"(window {TimelineSettings.Default.Window.TotalMinutes:0} min, buckets of {TimelineSettings.Default.BucketLength.TotalSeconds:0} s, " +
                          $"bound {TimelineSettings.Default.MaxBytes >> 20} MiB per process: past it the oldest buckets go)");
        return 0;
    }

    /// <summary>The agent's side of a range's flame graph for 60,000 stacks: buckets to a profile, merged, the page written.</summary>
    private static int RangeFlameGraph()
    {
        var time = new FakeTimeProvider(SessionScript.AgentTimeAt(0));
        var script = new SessionScript(time: time, timeline: TimelineSettings.Default).Thread(1, "MainThread", isMain: true);
        const int Callers = 250, Callees = 240;
        for (uint code = 1; code <= Callers + Callees; code++) script.Code(code, $"f{code}");
        long ts = 1_000_000_000;
        for (uint caller = 1; caller <= Callers; caller++)
        {
            for (uint callee = 0; callee < Callees; callee++)
                script.Start(ts++, caller).Start(ts++, Callers + 1 + callee).Return(ts++, Callers + 1 + callee).Return(ts++, caller);
        }
        time.SetUtcNow(SessionScript.AgentTimeAt(ts + 11_000_000_000));
        script.Session.AfterFrame();
        var timeline = script.Profile.Timeline!;
        List<double> samples = [], ranges = [], merges = [], pages = [];
        var size = 0;
        for (var i = 0; i < 12; i++)
        {
            var watch = Stopwatch.StartNew();
            var profile = timeline.Select(long.MinValue, long.MaxValue).ToProfile(script.Profile, time.GetUtcNow())!;
            var range = watch.Elapsed.TotalMilliseconds;
            var merged = MergedCallTree.Of([profile]);
            var merge = watch.Elapsed.TotalMilliseconds - range;
            var text = new StringWriter();
            FlameGraphHtmlFile.Write(text, merged, "range", time.GetUtcNow());
            size = text.GetStringBuilder().Length;
            samples.Add(watch.Elapsed.TotalMilliseconds);
            if (i < 2) continue;
            ranges.Add(range);
            merges.Add(merge);
            pages.Add(watch.Elapsed.TotalMilliseconds - range - merge);
        }
        Console.WriteLine($"range flame graph of {script.Profile.CallTreeNodes:N0} nodes ({size / 1e6:F1} MB page): {Figures(samples.Skip(2).ToList())} (after 2 warm-ups)");
        Console.WriteLine($"  buckets to a profile {Figures(ranges)}; merged tree {Figures(merges)}; page {Figures(pages)}");
        return 0;
    }

    private static string Figures(IReadOnlyList<double> milliseconds)
        => $"median {Median(milliseconds.Order().ToArray()):F0} ms, min {milliseconds.Min():F0} ms, max {milliseconds.Max():F0} ms over {milliseconds.Count}";

    private static double Median(double[] sorted) => sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;

    private static async Task WaitForLineAsync(Process process, string line)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        while (await process.StandardOutput.ReadLineAsync(timeout.Token) is { } read)
        {
            if (read == line) return;
        }
        throw new InvalidOperationException($"{process.StartInfo.FileName} ended before printing '{line}'");
    }

    private static async Task<T> UntilAsync<T>(Func<Task<T?>> condition, string what)
    {
        var deadline = Stopwatch.StartNew();
        while (true)
        {
            if (await condition() is { } value && !Equals(value, false)) return value;
            if (deadline.Elapsed > TimeSpan.FromSeconds(120)) throw new TimeoutException($"timed out waiting for {what}");
            await Task.Delay(100);
        }
    }

    private static string FindRepo()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "TelemetryAgent.sln"))) return dir.FullName;
        }
        throw new InvalidOperationException("TelemetryAgent.sln not found");
    }

    /// <summary>A real `serve` in a folder of its own, stopped with SIGTERM.</summary>
    private sealed class Agent : IAsyncDisposable
    {
        private Agent(Process process, string folder)
        {
            Process = process;
            Folder = folder;
        }

        public Process Process { get; }
        public string Folder { get; }
        public string Socket => Path.Combine(Folder, "agent.sock");

        public static async Task<Agent> StartAsync(string? dll = null)
        {
            dll ??= AgentDll;
            if (!File.Exists(dll)) throw new InvalidOperationException($"no agent at {dll}: dotnet build -c Release first");
            var folder = Directory.CreateTempSubdirectory("telemetry-live-bench-").FullName;
            var process = Process.Start(new ProcessStartInfo("dotnet")
            {
                ArgumentList = { dll, "serve", "--socket", Path.Combine(folder, "agent.sock"), "-o", Path.Combine(folder, "out") },
                RedirectStandardError = true,
            })!;
            process.ErrorDataReceived += (_, _) => { };
            process.BeginErrorReadLine();
            var agent = new Agent(process, folder);
            await UntilAsync(() => Task.FromResult(File.Exists(Path.Combine(folder, "agent.query.sock"))), "the agent's query socket");
            return agent;
        }

        public static Process Python(string socket, string script, params string[] arguments)
        {
            var python = Environment.GetEnvironmentVariable("TELEMETRY_PYTHON") is { Length: > 0 } configured ? configured : "python3.12";
            var start = new ProcessStartInfo(python)
            {
                ArgumentList = { "-m", "telemetry_shim", "--socket", socket, script }, RedirectStandardOutput = true, RedirectStandardInput = true,
                WorkingDirectory = Repo,
            };
            foreach (var argument in arguments) start.ArgumentList.Add(argument);
            start.Environment["PYTHONPATH"] = Path.Combine(Repo, "python-shim");
            start.Environment["TELEMETRY_SHIM_MODE"] = "full";
            return Process.Start(start)!;
        }

        public Query.QueryClient Client()
        {
            var path = Path.Combine(Folder, "agent.query.sock");
            var handler = new SocketsHttpHandler
            {
                ConnectCallback = async (_, cancellation) =>
                {
                    var socket = new System.Net.Sockets.Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                    await socket.ConnectAsync(new UnixDomainSocketEndPoint(path), cancellation);
                    return new NetworkStream(socket, ownsSocket: true);
                },
            };
            return new Query.QueryClient(GrpcChannel.ForAddress("http://telemetry-agent",
                new GrpcChannelOptions { HttpHandler = handler, MaxReceiveMessageSize = null }));
        }

        public async ValueTask DisposeAsync()
        {
            if (!Process.HasExited)
            {
                Process.Kill(entireProcessTree: false);
                await Process.WaitForExitAsync();
            }
            Process.Dispose();
            try { Directory.Delete(Folder, recursive: true); } catch (IOException) { }
        }
    }
}

using System.Text.Json;
using TelemetryAgent.EndToEnd.Tests.Support;
using TelemetryAgent.Testing;

namespace TelemetryAgent.EndToEnd.Tests;

/// <summary>
/// examples/fixture_app.py through the real `telemetry-agent run`: a real Python 3.12+ process, the real shim,
/// a real Unix socket. Its numbers are checked against cProfile's on the same program.
/// </summary>
public sealed class RunFixtureTests : IClassFixture<RunFixtureTests.FixtureRun>
{
    private const string FixtureScript = "examples/fixture_app.py";

    /// <summary>
    /// Generators and coroutines: cProfile counts every resume as a call; we count one call per START and the
    /// resumes (RESUME, THROW) apart, so their sum is what cProfile reports.
    /// </summary>
    private static readonly HashSet<string> GeneratorsAndCoroutines = ["countdown", "fetch", "fetch_all"];

    private readonly FixtureRun _run;

    public RunFixtureTests(FixtureRun run) => _run = run;

    /// <summary>One agent run and one cProfile run of the fixture, shared by the tests of this class.</summary>
    public sealed class FixtureRun : IAsyncLifetime
    {
        private readonly TemporaryFolder _temp = new();
        public Finished Agent { get; private set; } = null!;
        public Finished Plain { get; private set; } = null!;
        public string OutputFolder => _temp.File("out");
        public JsonDocument Summary { get; private set; } = null!;
        public Dictionary<(int Line, string Name), long> CProfileCalls { get; } = [];

        public async Task InitializeAsync()
        {
            Agent = await Processes.RunAgentAsync(["run", "--summary-functions", "100000", "-o", OutputFolder, FixtureScript]);
            Plain = await Processes.RunPythonAsync([FixtureScript]);
            Summary = JsonDocument.Parse(File.ReadAllText(Path.Combine(OutputFolder, "summary.json")));

            var stats = _temp.File("cprofile.out");
            var cprofile = await Processes.RunPythonAsync(["-m", "cProfile", "-o", stats, FixtureScript]);
            Assert.True(cprofile.ExitCode == 0, cprofile.ToString());
            var dump = await Processes.RunPythonAsync(["-c",
                "import json, pstats, sys\n" +
                "stats = pstats.Stats(sys.argv[1]).stats\n" +
                "print(json.dumps([[f, l, n, v[1]] for (f, l, n), v in stats.items() if f.endswith('fixture_app.py')]))",
                stats]);
            Assert.True(dump.ExitCode == 0, dump.ToString());
            foreach (var entry in JsonDocument.Parse(dump.Stdout).RootElement.EnumerateArray())
                CProfileCalls[(entry[1].GetInt32(), entry[2].GetString()!)] = entry[3].GetInt64();
        }

        public Task DisposeAsync()
        {
            Summary?.Dispose();
            _temp.Dispose();
            return Task.CompletedTask;
        }
    }

    [Fact]
    public void ProgramRunsAsWithoutTheShim()
    {
        Assert.True(_run.Agent.ExitCode == 0, _run.Agent.ToString());
        Assert.Equal(_run.Plain.Stdout, _run.Agent.Stdout);
    }

    /// <summary>
    /// The shim's C callbacks recorded (the test command builds them for every Python before the agent, which ships
    /// them), unless TELEMETRY_SHIM_NATIVE=off asks for the Python ones; summary.json and the console say which.
    /// </summary>
    [Fact]
    public void TheRunSaysWhichCallbacksRecorded()
    {
        var expected = Environment.GetEnvironmentVariable("TELEMETRY_SHIM_NATIVE") == "off" ? "python" : "native";
        var recording = _run.Summary.RootElement.GetProperty("processes")[0].GetProperty("recording");
        Assert.Equal(expected, recording.GetProperty("callbacks").GetString());
        Assert.Contains($" events ({expected} callbacks), ended:", _run.Agent.Stdout + _run.Agent.Stderr);
    }

    [Fact]
    public void CallCountsEqualCProfilesForEveryFunctionOfTheFixture()
    {
        var ours = new Dictionary<(int Line, string Name), (long Calls, long Resumes)>();
        foreach (var function in _run.Summary.RootElement.GetProperty("functions").EnumerateArray())
        {
            if (!function.GetProperty("path").GetString()!.EndsWith("fixture_app.py", StringComparison.Ordinal)) continue;
            var name = function.GetProperty("qualified_name").GetString()!.Split('.')[^1];
            var key = (function.GetProperty("line").GetInt32(), name);
            var (calls, resumes) = ours.GetValueOrDefault(key);
            ours[key] = (calls + function.GetProperty("calls").GetInt64(), resumes + function.GetProperty("resumes").GetInt64());
        }

        Assert.True(_run.CProfileCalls.Count >= 20, $"cProfile saw only {_run.CProfileCalls.Count} fixture functions");
        Assert.Equal(_run.CProfileCalls.Keys.OrderBy(k => k), ours.Keys.OrderBy(k => k));
        foreach (var (key, cprofileCalls) in _run.CProfileCalls)
        {
            var (calls, resumes) = ours[key];
            if (GeneratorsAndCoroutines.Contains(key.Name))
            {
                Assert.True(resumes > 0, $"{key}: a generator or coroutine with no resume");
                Assert.True(calls + resumes == cprofileCalls, $"{key}: calls {calls} + resumes {resumes} != cProfile {cprofileCalls}");
            }
            else
            {
                Assert.True(calls == cprofileCalls, $"{key}: calls {calls} != cProfile {cprofileCalls}");
                Assert.True(resumes == 0, $"{key}: a plain function with {resumes} resumes");
            }
        }
        // The numbers the fixture was written to produce: fib(15) once and fib(10) eight times in threads.
        Assert.Equal(1973 + 8 * 177, ours[(17, "fib")].Calls);
        Assert.Equal((1L, 6L), ours[(GeneratorLine("countdown"), "countdown")]);
    }

    [Fact]
    public void CallsFoldedMatchesGoldenOnTheFixturesFrames()
    {
        var folded = File.ReadAllText(Path.Combine(_run.OutputFolder, "calls.folded"));
        Golden.Verify(Folded.OnlyFramesOf(folded, "(examples/fixture_app.py:", "fixture_app"), "fixture_app.calls.folded");
    }

    [Fact]
    public void SummaryCountsProcessesThreadsAndEventsWithoutLoss()
    {
        var totals = _run.Summary.RootElement.GetProperty("totals");
        Assert.Equal(1, totals.GetProperty("processes").GetInt32());
        Assert.Equal(3, totals.GetProperty("threads").GetInt32());
        Assert.Equal(0, totals.GetProperty("events_dropped").GetInt64());
        Assert.Equal(0, totals.GetProperty("unmatched_exits").GetInt64());
        Assert.Equal(0, totals.GetProperty("implicit_exits").GetInt64());
        var process = _run.Summary.RootElement.GetProperty("processes")[0];
        Assert.Equal("Goodbye", process.GetProperty("connection").GetProperty("end_reason").GetString());
        var threads = process.GetProperty("threads").EnumerateArray().Select(t => t.GetProperty("name").GetString()).Order();
        Assert.Equal(["MainThread", "worker-1", "worker-2"], threads);
        // Every event was either START..RETURN balanced or a seeded frame: received = recorded by the shim.
        Assert.True(totals.GetProperty("events_received").GetInt64() > 2 * 3389);
    }

    [Fact]
    public void MainThreadRootsAreTheProgramAndTheInterpretersExitWorkOnly()
    {
        // No frame of the shim, its runner or runpy: the program's <module>, then what Python runs at exit
        // (threading._shutdown joining threads, logging's atexit handler).
        var roots = Folded.Parse(File.ReadAllText(Path.Combine(_run.OutputFolder, "calls.folded")))
            .Where(stack => stack.Frames[1] == "thread MainThread")
            .Select(stack => stack.Frames[2])
            .ToHashSet();
        Assert.Contains("<module> (examples/fixture_app.py:1)", roots);
        Assert.All(roots, root => Assert.True(
            root.StartsWith("<module> (examples/fixture_app.py", StringComparison.Ordinal)
            || root.StartsWith("_shutdown (threading.py", StringComparison.Ordinal)
            || root.StartsWith("shutdown (logging/__init__.py", StringComparison.Ordinal), root));
    }

    [Fact]
    public void ConsoleSummaryListsTopFunctionsAndTheOutputFolder()
    {
        var stderr = _run.Agent.Stderr.Replace("\r", "", StringComparison.Ordinal);
        const string heading = "Top 20 functions by self time:\n";
        var table = stderr[(stderr.IndexOf(heading, StringComparison.Ordinal) + heading.Length)..];
        var lines = table[..table.IndexOf("\n\n", StringComparison.Ordinal)].Split('\n');
        // The table is aligned: the header says where each column starts. Locations (a frozen module's) and
        // function names (typing's "<generic parameters of SupportsAbs>") may hold spaces.
        var header = lines[0];
        var locationAt = header.IndexOf("location", StringComparison.Ordinal);
        var functionAt = header.IndexOf("function", StringComparison.Ordinal);
        Assert.True(locationAt > 0 && functionAt > locationAt, header);
        var listed = lines.Skip(1).Select(line =>
        {
            Assert.True(line.Length > functionAt, line);
            var calls = line[..locationAt].Trim().Split(' ', StringSplitOptions.RemoveEmptyEntries)[0];
            return $"{calls} {line[locationAt..functionAt].TrimEnd()} {line[functionAt..]}";
        }).ToList();
        // The 20 heaviest functions of summary.json, in its order, with their exact calls. Which ones they are
        // depends on the machine's speed (start-up imports against fib), so the console is held to the JSON.
        var expected = _run.Summary.RootElement.GetProperty("functions").EnumerateArray().Take(20)
            .Select(f => $"{f.GetProperty("calls").GetInt64():N0} {f.GetProperty("file").GetString()}:{f.GetProperty("line").GetInt32()} {f.GetProperty("qualified_name").GetString()}");
        Assert.Equal(expected, listed);
        Assert.Contains(_run.Summary.RootElement.GetProperty("functions").EnumerateArray(), f =>
            f.GetProperty("qualified_name").GetString() == "fib" && f.GetProperty("calls").GetInt64() == 3389);
        Assert.Contains(_run.OutputFolder, stderr);
        foreach (var file in new[] { "profile.folded", "calls.folded", "profile.speedscope.json", "flamegraph.html", "summary.json" })
            Assert.True(new FileInfo(Path.Combine(_run.OutputFolder, file)).Length > 0, file);
    }

    private static int GeneratorLine(string name) =>
        File.ReadAllLines(Repo.Path(FixtureScript)).Select((text, index) => (text, index))
            .First(line => line.text.StartsWith($"def {name}(", StringComparison.Ordinal)).index + 1;
}

using System.Text.Json;
using TelemetryAgent.EndToEnd.Tests.Support;
using TelemetryAgent.Testing;

namespace TelemetryAgent.EndToEnd.Tests;

/// <summary>
/// `telemetry-agent run --mode burst` and `--mode exceptions` on real programs: burst windows rooted, balanced,
/// labelled sampled in every output and scaled consistently; exceptions mode with no call event and the same exception
/// groups, count for count, as a full run.
/// </summary>
public sealed class ModesEndToEndTests : IDisposable
{
    private readonly TemporaryFolder _temp = new();

    public void Dispose() => _temp.Dispose();

    // A busy main thread and a thread that sleeps through the whole run.
    private const string BusyAndIdle = """
        import threading, time

        def fib(n):
            return n if n < 2 else fib(n - 1) + fib(n - 2)

        def sleeper():
            time.sleep(1.6)

        thread = threading.Thread(target=sleeper, name="sleeper")
        thread.start()
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            fib(14)
        thread.join()
        """;

    [Fact]
    public async Task BurstModeWindowsAreRootedBalancedLabelledAndScaled()
    {
        var script = _temp.File("busy.py");
        File.WriteAllText(script, BusyAndIdle);
        var output = _temp.File("out");
        var run = await Processes.RunAgentAsync(["run", "--mode", "burst", "-o", output, script],
            environment: new Dictionary<string, string?>
            {
                ["TELEMETRY_SHIM_WINDOW_MS"] = "20", ["TELEMETRY_SHIM_PERIOD_MS"] = "200", ["TELEMETRY_SHIM_BUDGET"] = "off",
            });
        Assert.True(run.ExitCode == 0, run.ToString());

        using var summary = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, "summary.json")));
        var process = summary.RootElement.GetProperty("processes")[0];
        var recording = process.GetProperty("recording");
        Assert.Equal("burst", recording.GetProperty("mode").GetString());
        Assert.True(recording.GetProperty("sampled").GetBoolean());
        var windows = recording.GetProperty("windows");
        var count = windows.GetProperty("count").GetInt64();
        var covered = windows.GetProperty("covered_ns").GetInt64();
        var represented = windows.GetProperty("represented_ns").GetInt64();
        var scale = windows.GetProperty("scale").GetDouble();
        // One window per 200 ms jittered to [100, 300) ms: never more often than every 100 ms; fewer on a machine too busy
        // to wake the sender on time, but more than one in the 1.6 s the program runs.
        Assert.InRange(count, 2, represented / 100_000_000 + 1);
        // 20 ms each on average: the sender wakes early by the time a close has taken (the GIL), so
        // one window may end a little before 20 ms and another after; the last may be cut by the exit.
        Assert.InRange(covered, count * 10_000_000, count * 60_000_000);
        Assert.Equal((double)represented / covered, scale, tolerance: 1e-5);  // summary.json rounds the scale
        Assert.Equal(2 * count, process.GetProperty("shim_stats").GetProperty("event_toggles").GetInt64());
        // Balanced and rooted: every window closed what it opened, no exit was repaired.
        foreach (var counter in new[] { "frames_open_at_end", "implicit_exits", "unmatched_exits" })
            Assert.Equal(0, recording.GetProperty(counter).GetInt64());

        // Labelled in every output.
        var label = process.GetProperty("label").GetString()!;
        Assert.EndsWith(", sampled)", label);
        var folded = File.ReadAllText(Path.Combine(output, "profile.folded"));
        var stacks = Folded.Parse(folded).ToArray();
        Assert.All(stacks, stack => Assert.Equal(label, stack.Frames[0]));
        Assert.Contains(label, File.ReadAllText(Path.Combine(output, "profile.speedscope.json")));
        Assert.Contains(label, File.ReadAllText(Path.Combine(output, "flamegraph.html")));
        Assert.Contains("burst mode: ", run.Stderr);
        Assert.Contains("calls and times are estimates", run.Stderr);

        // Rooted: the main thread's stacks start at the script, the sleeper's at its thread bootstrap.
        var main = stacks.Where(stack => stack.Frames[1] == "thread MainThread").ToArray();
        var sleeper = stacks.Where(stack => stack.Frames[1] == "thread sleeper").ToArray();
        // A window may also catch the interpreter's exit work on the main thread (threading._shutdown).
        Assert.All(main, stack => Assert.True(stack.Frames[2].StartsWith("<module> (", StringComparison.Ordinal)
            || stack.Frames[2].StartsWith("_shutdown (threading.py", StringComparison.Ordinal), stack.Frames[2]));
        Assert.Contains(main, stack => stack.Frames[2].StartsWith("<module> (", StringComparison.Ordinal));
        Assert.All(sleeper, stack => Assert.StartsWith("Thread._bootstrap (", stack.Frames[2]));
        Assert.Contains(sleeper, stack => stack.Frames[^1].StartsWith("sleeper (", StringComparison.Ordinal));

        // Scaled consistently: each thread is on the stack for the whole of every window it lives through, so its
        // scaled time is the represented span (the main thread), or nearly (the sleeper starts a moment later).
        // The program may end inside the last window: the main thread's share of that one window can be missing.
        var mainTotal = main.Sum(stack => stack.Weight);
        var sleeperTotal = sleeper.Sum(stack => stack.Weight);
        Assert.InRange(mainTotal, represented - represented / count, represented * 1.01);
        Assert.InRange(sleeperTotal, represented * 0.80, represented * 1.01);
        // fib has most of the main thread's self time.
        var fibSelf = main.Where(stack => stack.Frames[^1].StartsWith("fib (", StringComparison.Ordinal)).Sum(stack => stack.Weight);
        Assert.True(fibSelf > mainTotal / 2, $"fib self {fibSelf} of {mainTotal}");
    }

    [Fact]
    public async Task ExceptionsModeRecordsNoCallAndEveryExceptionGroupExactly()
    {
        const string app = "examples/exceptions_app.py";
        var full = Processes.RunAgentAsync(["run", "--mode", "full", "-o", _temp.File("full"), app]);
        var exceptionsOnly = Processes.RunAgentAsync(["run", "--mode", "exceptions", "-o", _temp.File("exceptions"), app]);
        Assert.True((await full).ExitCode == 0, (await full).ToString());
        var run = await exceptionsOnly;
        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Contains("exceptions mode: no calls recorded", run.Stderr);
        Assert.Contains("No function calls were recorded.", run.Stderr);

        using var summary = JsonDocument.Parse(File.ReadAllText(_temp.File("exceptions/summary.json")));
        foreach (var process in summary.RootElement.GetProperty("processes").EnumerateArray())
        {
            var recording = process.GetProperty("recording");
            Assert.Equal("exceptions", recording.GetProperty("mode").GetString());
            Assert.Equal(0, recording.GetProperty("events_received").GetInt64());
            Assert.Equal(0UL, process.GetProperty("shim_stats").GetProperty("events_recorded").GetUInt64());
        }

        var expected = ProgramGroups(_temp.File("full/exceptions.json"));
        var actual = ProgramGroups(_temp.File("exceptions/exceptions.json"));
        Assert.True(expected.Count >= 10, $"{expected.Count} program groups");
        Assert.Equal(expected, actual);
    }

    private const string AppOverStdlib = """
        import json

        def encode(i):
            return json.dumps({"i": i, "values": [i] * 20})

        def work():
            return sum(len(encode(i)) for i in range(2000))

        print(work())
        """;

    [Fact]
    public async Task FiltersLeaveStdlibOutChargeItsTimeToTheCallerAndSaySo()
    {
        var script = _temp.File("app.py");
        File.WriteAllText(script, AppOverStdlib);
        var plain = Processes.RunAgentAsync(["run", "--mode", "full", "-o", _temp.File("plain"), script]);
        var filtered = Processes.RunAgentAsync(["run", "--mode", "full", "-o", _temp.File("filtered"), script],
            environment: new Dictionary<string, string?> { ["TELEMETRY_SHIM_EXCLUDE"] = "stdlib" });
        Assert.True((await plain).ExitCode == 0, (await plain).ToString());
        var run = await filtered;
        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Equal((await plain).Stdout, run.Stdout);
        Assert.Contains("filters: exclude stdlib (left-out code's time is its nearest recorded caller's self time)", run.Stderr);

        var withStdlib = Functions(_temp.File("plain/summary.json"));
        var withoutStdlib = Functions(_temp.File("filtered/summary.json"));
        // Unfiltered, json's encoder is recorded under encode(); filtered, nothing of the standard library is.
        Assert.Equal(2000, withStdlib["json.dumps"].Calls);
        Assert.DoesNotContain(withoutStdlib.Keys, name => name.StartsWith("json.", StringComparison.Ordinal));
        Assert.True(withStdlib["__main__.encode"].SelfNs < withStdlib["__main__.encode"].TotalNs);
        // The program's own functions keep their exact counts; encode() now owns the time of what it called.
        foreach (var name in new[] { "__main__.encode", "__main__.work", "__main__.work.<locals>.<genexpr>" })
            Assert.Equal(withStdlib[name].Calls, withoutStdlib[name].Calls);
        Assert.Equal(withoutStdlib["__main__.encode"].TotalNs, withoutStdlib["__main__.encode"].SelfNs);

        using var summary = JsonDocument.Parse(File.ReadAllText(_temp.File("filtered/summary.json")));
        var filters = summary.RootElement.GetProperty("processes")[0].GetProperty("recording").GetProperty("filters");
        Assert.Equal(["stdlib"], filters.GetProperty("exclude").EnumerateArray().Select(pattern => pattern.GetString()));
        Assert.Empty(filters.GetProperty("include").EnumerateArray());
        var folded = Folded.Parse(File.ReadAllText(_temp.File("filtered/profile.folded")));
        Assert.DoesNotContain(folded, stack => stack.Frames.Any(frame => frame.Contains("/json/", StringComparison.Ordinal)));
    }

    private static Dictionary<string, (long Calls, long SelfNs, long TotalNs)> Functions(string summaryPath)
    {
        using var document = JsonDocument.Parse(File.ReadAllText(summaryPath));
        return document.RootElement.GetProperty("functions").EnumerateArray().ToDictionary(
            function => $"{function.GetProperty("module").GetString()}.{function.GetProperty("qualified_name").GetString()}",
            function => (function.GetProperty("calls").GetInt64(), function.GetProperty("self_ns").GetInt64(),
                function.GetProperty("total_ns").GetInt64()));
    }

    /// <summary>The program's own exception groups (not library-internal) of the first process: type, site, counts by fate.</summary>
    private static SortedSet<string> ProgramGroups(string path)
    {
        using var document = JsonDocument.Parse(File.ReadAllText(path));
        var groups = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var group in document.RootElement.GetProperty("processes")[0].GetProperty("groups").EnumerateArray())
        {
            if (group.GetProperty("library_internal").GetBoolean()) continue;
            groups.Add($"{group.GetProperty("type").GetString()} at {group.GetProperty("raise_site").GetProperty("site").GetString()}: " +
                       $"{group.GetProperty("count").GetInt64()} {group.GetProperty("by_fate").GetRawText()}");
        }
        return groups;
    }
}

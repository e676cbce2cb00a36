using System.Text.Json;
using TelemetryAgent.EndToEnd.Tests.Support;
using TelemetryAgent.Testing;

namespace TelemetryAgent.EndToEnd.Tests;

/// <summary>What real CPython emits that a naive stack builder gets wrong, through the real pipeline.</summary>
public sealed class CPythonQuirksTests : IDisposable
{
    private readonly TemporaryFolder _temp = new();

    public void Dispose() => _temp.Dispose();

    /// <summary>Calls per stack of the script's own frames (`a;b;c`), and summary.json's totals.</summary>
    private async Task<(IReadOnlyDictionary<string, long> Calls, JsonElement Totals)> RunAsync(string source)
    {
        var script = _temp.File("quirks.py");
        File.WriteAllText(script, source);
        var result = await Processes.RunAgentAsync(["run", "-o", _temp.File("out"), "quirks.py"], workingDirectory: _temp.Path);
        Assert.True(result.ExitCode == 0, result.ToString());
        var calls = new Dictionary<string, long>();
        foreach (var (frames, weight) in Folded.Parse(File.ReadAllText(_temp.File("out/calls.folded"))))
        {
            var ours = frames.Skip(2).Where(f => f.Contains("(quirks.py:", StringComparison.Ordinal)).Select(f => f[..f.IndexOf(' ')]);
            var key = string.Join(';', ours);
            if (frames[^1].Contains("(quirks.py:", StringComparison.Ordinal)) calls[key] = calls.GetValueOrDefault(key) + weight;
        }
        using var summary = JsonDocument.Parse(File.ReadAllText(_temp.File("out/summary.json")));
        return (new DiagnosedCounts(calls, $"{result}\n--- summary.json\n{summary.RootElement}"), summary.RootElement.GetProperty("totals").Clone());
    }

    [Fact]
    public async Task ClosedAndAbandonedGeneratorsLeaveTheTreeIntact()
    {
        // gen.close() and a generator collected while suspended: GeneratorExit is thrown in; on some versions
        // an exit event is missing. Whatever CPython emits, later calls must stay under their real caller.
        var (calls, totals) = await RunAsync("""
            def cleanup():
                pass

            def numbers():
                try:
                    yield 1
                    yield 2
                finally:
                    cleanup()

            def after():
                pass

            def main():
                closed = numbers()
                next(closed)
                closed.close()
                abandoned = numbers()
                next(abandoned)
                del abandoned
                after()

            main()
            after()
            """);
        Assert.Equal(1, calls["<module>;main;after"]);
        Assert.Equal(1, calls["<module>;after"]);
        Assert.Equal(2, calls["<module>;main;numbers"]);
        Assert.Equal(2, calls["<module>;main;numbers;cleanup"]);
        Assert.Equal(0, totals.GetProperty("unmatched_exits").GetInt64());
    }

    [Fact]
    public async Task ExceptionsUnwindingThroughFramesKeepCountsAndStacks()
    {
        var (calls, totals) = await RunAsync("""
            def inner(n):
                if n == 0:
                    raise ValueError("deep")
                return inner(n - 1)

            def outer():
                try:
                    inner(5)
                except ValueError:
                    pass
                return sibling()

            def sibling():
                return 1

            for _ in range(3):
                outer()
            """);
        Assert.Equal(3, calls["<module>;outer"]);
        Assert.Equal(3, calls["<module>;outer;sibling"]);
        Assert.Equal(3, calls["<module>;outer;inner;inner;inner;inner;inner;inner"]);
        Assert.Equal(0, totals.GetProperty("implicit_exits").GetInt64());
        Assert.Equal(0, totals.GetProperty("unmatched_exits").GetInt64());
    }

    [Fact]
    public async Task ProgramEndingWithFramesStillOpenIsClosedCleanly()
    {
        // sys.exit inside nested calls, and a daemon thread still running when the interpreter exits.
        var (calls, _) = await RunAsync("""
            import sys, threading, time

            def spin():
                while True:
                    time.sleep(0.01)

            def leave():
                sys.exit(0)

            def work():
                leave()

            threading.Thread(target=spin, daemon=True, name="spinner").start()
            time.sleep(0.05)
            work()
            """);
        Assert.Equal(1, calls["<module>;work;leave"]);
        Assert.True(calls.ContainsKey("spin"), string.Join(", ", calls.Keys));
        // The spinner's frames were still open at exit: closed at the end, counted as such, with their time.
        using var summary = JsonDocument.Parse(File.ReadAllText(_temp.File("out/summary.json")));
        var process = summary.RootElement.GetProperty("processes")[0];
        Assert.True(process.GetProperty("recording").GetProperty("frames_open_at_end").GetInt64() >= 1, process.ToString());
        var spin = summary.RootElement.GetProperty("functions").EnumerateArray()
            .Single(f => f.GetProperty("qualified_name").GetString() == "spin");
        Assert.True(spin.GetProperty("total_ns").GetInt64() >= 40_000_000, spin.ToString()); // ran >= the main thread's 50 ms sleep
    }

    /// <summary>Call counts that say, when a stack is missing, what was there and how the run went.</summary>
    private sealed class DiagnosedCounts(Dictionary<string, long> counts, string run) : IReadOnlyDictionary<string, long>
    {
        public long this[string key] => counts.TryGetValue(key, out var value) ? value
            : throw new Xunit.Sdk.XunitException($"no stack '{key}'; stacks: {string.Join(", ", counts.Keys)}\n{run}");
        public IEnumerable<string> Keys => counts.Keys;
        public IEnumerable<long> Values => counts.Values;
        public int Count => counts.Count;
        public bool ContainsKey(string key) => counts.ContainsKey(key);
        public bool TryGetValue(string key, out long value) => counts.TryGetValue(key, out value);
        public IEnumerator<KeyValuePair<string, long>> GetEnumerator() => counts.GetEnumerator();
        System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();
    }
}

using System.Text.Json;
using TelemetryAgent.EndToEnd.Tests.Support;
using TelemetryAgent.Testing;

namespace TelemetryAgent.EndToEnd.Tests;

/// <summary>
/// The start-up phase through the real `telemetry-agent run`: a real program whose handler imports a module lazily,
/// ready at the handler's first call; startup.json's tree, the first invocations and the console's start-up lines.
/// </summary>
public sealed class StartupEndToEndTests : IDisposable
{
    private readonly TemporaryFolder _temp = new();

    public void Dispose() => _temp.Dispose();

    private const string Handlers = """
        import json

        def handle(event):
            import csv  # lazily: the first invocation pays for it
            return json.dumps(event)
        """;

    private const string Main = """
        import decimal
        import handlers

        for number in range(5):
            handlers.handle({"n": number})
        """;

    [Fact]
    public async Task StartupJsonHasTheImportTreeAndTheLazyImportOfTheFirstInvocationOnly()
    {
        File.WriteAllText(_temp.File("handlers.py"), Handlers);
        var script = _temp.File("app.py");
        File.WriteAllText(script, Main);
        var output = _temp.File("out");
        var run = await Processes.RunAgentAsync(["run", "--mode", "exceptions", "-o", output, script],
            environment: new Dictionary<string, string?> { ["TELEMETRY_SHIM_READY_ON"] = "handlers:handle" });
        Assert.True(run.ExitCode == 0, run.ToString());

        using var document = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, "startup.json")));
        var process = Assert.Single(document.RootElement.GetProperty("processes").EnumerateArray());
        Assert.Equal("on_function", process.GetProperty("ready_rule").GetString());
        Assert.Equal("handlers:handle", process.GetProperty("ready_target").GetString());
        var tree = process.GetProperty("imports").GetProperty("tree").EnumerateArray().ToArray();
        var topLevel = tree.Select(node => node.GetProperty("module").GetString()).ToArray();
        Assert.Contains("decimal", topLevel);
        Assert.Contains("handlers", topLevel);
        var handlers = tree.Single(node => node.GetProperty("module").GetString() == "handlers");
        Assert.Contains("json", handlers.GetProperty("children").EnumerateArray().Select(child => child.GetProperty("module").GetString()));
        Assert.DoesNotContain("csv", topLevel);
        foreach (var node in tree)
        {
            Assert.Equal(node.GetProperty("self_ns").GetInt64(),
                node.GetProperty("find_ns").GetInt64() + node.GetProperty("load_ns").GetInt64() + node.GetProperty("exec_ns").GetInt64());
            Assert.True(node.GetProperty("cumulative_ns").GetInt64() >= node.GetProperty("self_ns").GetInt64());
        }
        var phases = process.GetProperty("phases");
        Assert.True(phases.GetProperty("interpreter_ns").GetInt64() > 0);
        Assert.Equal(process.GetProperty("total_ns").GetInt64(),
            phases.GetProperty("interpreter_ns").GetInt64() + phases.GetProperty("imports_ns").GetInt64() + phases.GetProperty("other_ns").GetInt64());

        var invocations = process.GetProperty("first_invocations").EnumerateArray().ToArray();
        Assert.Equal([1, 2, 3], invocations.Select(invocation => invocation.GetProperty("number").GetInt32()));
        Assert.Equal(["csv"], invocations[0].GetProperty("imports").EnumerateArray().Select(node => node.GetProperty("module").GetString()));
        Assert.Empty(invocations[1].GetProperty("imports").EnumerateArray());
        Assert.Empty(invocations[2].GetProperty("imports").EnumerateArray());
        var comparison = process.GetProperty("first_vs_later");
        Assert.Contains("csv", comparison.GetProperty("imports_only_in_first").EnumerateArray().Select(module => module.GetString()));

        Assert.Contains("to ready (first call of handlers:handle)", run.Stderr + run.Stdout, StringComparison.Ordinal);
        Assert.Contains("costliest imports by self time", run.Stderr + run.Stdout, StringComparison.Ordinal);
        Assert.Contains("First invocation:", run.Stderr + run.Stdout, StringComparison.Ordinal);
    }
}

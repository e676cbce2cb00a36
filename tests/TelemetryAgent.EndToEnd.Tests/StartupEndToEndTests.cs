using System.Text.Json;
using OpenTelemetry.Proto.Trace.V1;
using TelemetryAgent.EndToEnd.Tests.Support;
using TelemetryAgent.OtlpReceiver;
using TelemetryAgent.Testing;
using static TelemetryAgent.EndToEnd.Tests.Support.Otlp;

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
        // Exceptions mode records the calls of the first invocations only (a window each): the lazy import's importlib
        // frames are in the first one's tree alone.
        string[] FunctionsOf(JsonElement invocation) => [.. invocation.GetProperty("call_tree").EnumerateArray()
            .Select(node => node.GetProperty("function").GetString()!)];
        Assert.All(invocations, invocation => Assert.StartsWith("handle (", FunctionsOf(invocation)[0], StringComparison.Ordinal));
        Assert.Contains(FunctionsOf(invocations[0]), function => function.StartsWith("_find_and_load (", StringComparison.Ordinal));
        Assert.DoesNotContain(FunctionsOf(invocations[1]), function => function.StartsWith("_find_and_load (", StringComparison.Ordinal));
        Assert.Contains(comparison.GetProperty("functions_only_in_first").EnumerateArray(),
            function => function.GetProperty("function").GetString()!.StartsWith("_find_and_load (", StringComparison.Ordinal));

        Assert.Contains("to ready (first call of handlers:handle)", run.Stderr + run.Stdout, StringComparison.Ordinal);
        Assert.Contains("costliest imports by self time", run.Stderr + run.Stdout, StringComparison.Ordinal);
        Assert.Contains("First invocation:", run.Stderr + run.Stdout, StringComparison.Ordinal);
    }

    // A handler that connects and fills its cache on its first call only.
    private const string CachingHandlers = """
        _cache = None

        def connect():
            return sum(range(1000))

        def load_cache():
            global _cache
            _cache = {key: str(key) for key in range(100)}

        def lookup(key):
            return _cache[key]

        def handle(keys):
            if _cache is None:
                connect()
                load_cache()
            return [lookup(key) for key in keys]
        """;

    // An invocation's call tree as (function name, calls, parent position) per node.
    private static (string Function, long Calls, int Parent)[] CallsOf(JsonElement invocation) => [.. invocation.GetProperty("call_tree").EnumerateArray()
        .Select(node => (node.GetProperty("function").GetString()!.Split(' ')[0], node.GetProperty("calls").GetInt64(),
            node.GetProperty("parent").GetInt32()))];

    // In full mode from the process's own call tree; in burst and exceptions mode from a window of call events the shim
    // opens for each of them.
    [Theory]
    [InlineData("full")]
    [InlineData("burst")]
    [InlineData("exceptions")]
    public async Task EachFirstInvocationHasItsExactCallTreeAndTheFunctionsOnlyTheFirstRan(string mode)
    {
        File.WriteAllText(_temp.File("handlers.py"), CachingHandlers);
        var script = _temp.File("app.py");
        File.WriteAllText(script, "import handlers\n\nfor number in range(5):\n    handlers.handle([1, 2, number])\n");
        var output = _temp.File("out");
        var run = await Processes.RunAgentAsync(["run", "--mode", mode, "-o", output, script],
            environment: new Dictionary<string, string?> { ["TELEMETRY_SHIM_READY_ON"] = "handlers:handle" });
        Assert.True(run.ExitCode == 0, run.ToString());

        using var document = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, "startup.json")));
        var process = Assert.Single(document.RootElement.GetProperty("processes").EnumerateArray());
        var invocations = process.GetProperty("first_invocations").EnumerateArray().ToArray();
        Assert.Equal([1, 2, 3], invocations.Select(invocation => invocation.GetProperty("number").GetInt32()));
        // Exactly the program's calls: in each, the handler once and three lookups; the first also connected and loaded.
        Assert.Equal([("handle", 1L, 0), ("connect", 1L, 1), ("load_cache", 1L, 1), ("lookup", 3L, 1)], CallsOf(invocations[0]));
        Assert.Equal([("handle", 1L, 0), ("lookup", 3L, 1)], CallsOf(invocations[1]));
        Assert.Equal([("handle", 1L, 0), ("lookup", 3L, 1)], CallsOf(invocations[2]));
        foreach (var invocation in invocations)
        {
            // Every nanosecond under the handler is some node's own time.
            var nodes = invocation.GetProperty("call_tree").EnumerateArray().ToArray();
            Assert.Equal(nodes[0].GetProperty("total_ns").GetInt64(), nodes.Sum(node => node.GetProperty("self_ns").GetInt64()));
        }

        var onlyFirst = process.GetProperty("first_vs_later").GetProperty("functions_only_in_first").EnumerateArray()
            .Select(function => function.GetProperty("function").GetString()!).Order(StringComparer.Ordinal).ToArray();
        Assert.Equal(2, onlyFirst.Length);
        Assert.StartsWith("connect (", onlyFirst[0], StringComparison.Ordinal);
        Assert.EndsWith("handlers.py:3)", onlyFirst[0], StringComparison.Ordinal);
        Assert.StartsWith("load_cache (", onlyFirst[1], StringComparison.Ordinal);
        Assert.EndsWith("handlers.py:6)", onlyFirst[1], StringComparison.Ordinal);
        Assert.Contains("Functions only the first ran: 2,", run.Stderr + run.Stdout, StringComparison.Ordinal);
    }

    // Burst windows of a minute: the second invocation waits until the burst window that waited for the first one's
    // window is open, and starts inside it. That burst window ends there, and the invocation gets a window of its own.
    [Fact]
    public async Task AnInvocationThatStartsInsideABurstWindowStillHasItsExactCallTree()
    {
        File.WriteAllText(_temp.File("handlers.py"), CachingHandlers);
        var script = _temp.File("app.py");
        File.WriteAllText(script, """
            import sys, time
            import handlers
            monitoring = sys.monitoring
            tool = [tool for tool in range(6) if monitoring.get_tool(tool) == "telemetry_shim"][0]

            handlers.handle([1, 2, 0])
            deadline = time.monotonic() + 20
            while not monitoring.get_events(tool) & monitoring.events.PY_START and time.monotonic() < deadline:
                time.sleep(0.001)
            print("inside a burst window:", bool(monitoring.get_events(tool) & monitoring.events.PY_START))
            handlers.handle([1, 2, 1])
            """);
        var output = _temp.File("out");
        var run = await Processes.RunAgentAsync(["run", "--mode", "burst", "-o", output, script],
            environment: new Dictionary<string, string?>
            {
                ["TELEMETRY_SHIM_READY_ON"] = "handlers:handle", ["TELEMETRY_SHIM_FIRST_INVOCATIONS"] = "2",
                ["TELEMETRY_SHIM_WINDOW_MS"] = "60000", ["TELEMETRY_SHIM_PERIOD_MS"] = "240000", ["TELEMETRY_SHIM_BUDGET"] = "off",
            });
        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Contains("inside a burst window: True", run.Stdout, StringComparison.Ordinal);

        using var document = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, "startup.json")));
        var process = Assert.Single(document.RootElement.GetProperty("processes").EnumerateArray());
        var invocations = process.GetProperty("first_invocations").EnumerateArray().ToArray();
        Assert.Equal([("handle", 1L, 0), ("connect", 1L, 1), ("load_cache", 1L, 1), ("lookup", 3L, 1)], CallsOf(invocations[0]));
        Assert.Equal([("handle", 1L, 0), ("lookup", 3L, 1)], CallsOf(invocations[1]));
    }

    // A dependency that takes 20 ms to execute, imported by the handlers' module; one the handler imports lazily.
    private const string TracedHandlers = """
        import time
        import slow_dependency

        def handle(event):
            import lazy_dependency
            return event
        """;

    [Theory]
    [InlineData("http/protobuf")]
    [InlineData("grpc")]
    public async Task TheStartupTraceReachesARealReceiverNestedAsImported(string protocol)
    {
        File.WriteAllText(_temp.File("handlers.py"), TracedHandlers);
        File.WriteAllText(_temp.File("slow_dependency.py"), "import time\ntime.sleep(0.02)\n");
        File.WriteAllText(_temp.File("lazy_dependency.py"), "import time\ntime.sleep(0.01)\n");
        var script = _temp.File("app.py");
        File.WriteAllText(script, Main);
        await using var receiver = await OtlpReceiver.OtlpReceiver.StartAsync();
        var endpoint = protocol == "grpc" ? receiver.GrpcEndpoint : receiver.HttpEndpoint;
        var run = await Processes.RunAgentAsync(
            ["run", "--mode", "burst", "-o", _temp.File("out"), "--otlp-endpoint", endpoint.ToString(), "--otlp-protocol", protocol, script],
            environment: OtlpExportTests.CleanEnvironment(new Dictionary<string, string?>
            {
                ["TELEMETRY_SHIM_READY_ON"] = "handlers:handle", ["K_SERVICE"] = "orders", ["K_REVISION"] = "orders-00002",
            }));
        Assert.True(run.ExitCode == 0, run.ToString());
        await receiver.WaitForAsync(OtlpSignal.Traces, 1, TimeSpan.FromSeconds(30));

        var resourceSpans = receiver.Traces.Snapshot().SelectMany(request => request.Message.ResourceSpans).ToArray();
        var resource = Attributes(resourceSpans[0].Resource.Attributes);
        Assert.Equal("app", resource["service.name"].StringValue);
        Assert.Equal("orders", resource["faas.name"].StringValue);
        Assert.Equal("gcp_cloud_run", resource["cloud.platform"].StringValue);
        var spans = resourceSpans.SelectMany(r => r.ScopeSpans).SelectMany(scope => scope.Spans).ToArray();
        Assert.All(resourceSpans.SelectMany(r => r.ScopeSpans), scope => Assert.Equal("telemetry-agent.startup", scope.Scope.Name));
        var root = Assert.Single(spans, span => span.ParentSpanId.IsEmpty);
        Assert.Equal("startup", root.Name);
        Assert.All(spans, span => Assert.Equal(root.TraceId, span.TraceId));
        Assert.Equal("on_function", Attributes(root.Attributes)["python.startup.ready_rule"].StringValue);
        var byId = spans.ToDictionary(span => span.SpanId);

        var interpreter = Assert.Single(spans, span => span.Name == "interpreter start-up");
        Assert.Equal(root.SpanId, interpreter.ParentSpanId);
        Assert.Equal(root.StartTimeUnixNano, interpreter.StartTimeUnixNano);
        var handlers = Assert.Single(spans, span => span.Name == "import handlers");
        Assert.Equal(root.SpanId, handlers.ParentSpanId);
        var slow = Assert.Single(spans, span => span.Name == "import slow_dependency");
        Assert.Equal(handlers.SpanId, slow.ParentSpanId);
        Assert.True(slow.EndTimeUnixNano - slow.StartTimeUnixNano >= 20_000_000);
        Assert.True(Attributes(slow.Attributes)["python.import.exec_ns"].IntValue >= 20_000_000);
        // Every span but the invocations lies inside its parent; the invocations begin after ready, when the root ends.
        foreach (var span in spans.Where(span => !span.ParentSpanId.IsEmpty && !span.Name.StartsWith("invocation", StringComparison.Ordinal)))
        {
            var parent = byId[span.ParentSpanId];
            Assert.True(parent.StartTimeUnixNano <= span.StartTimeUnixNano && span.EndTimeUnixNano <= parent.EndTimeUnixNano, span.Name);
        }

        var invocations = spans.Where(span => span.Name.StartsWith("invocation", StringComparison.Ordinal)).OrderBy(span => span.StartTimeUnixNano).ToArray();
        Assert.Equal(["invocation 1", "invocation 2", "invocation 3"], invocations.Select(span => span.Name));
        Assert.All(invocations, invocation => Assert.Equal(root.SpanId, invocation.ParentSpanId));
        // Ready is the handler's first call; in burst mode the invocation is timed once its window of call events is open.
        Assert.InRange(invocations[0].StartTimeUnixNano, root.EndTimeUnixNano, Assert.Single(spans, span => span.Name == "import lazy_dependency").StartTimeUnixNano);
        Assert.Equal([true, false, false], invocations.Select(span => Attributes(span.Attributes)["faas.coldstart"].BoolValue));
        // Off AWS Lambda the shim does not read the handler's argument: nothing says what triggered the calls.
        Assert.All(invocations, span => Assert.DoesNotContain("faas.trigger", Attributes(span.Attributes).Keys));
        var lazy = Assert.Single(spans, span => span.Name == "import lazy_dependency");
        Assert.Equal(invocations[0].SpanId, lazy.ParentSpanId);
        Assert.True(invocations[0].StartTimeUnixNano <= lazy.StartTimeUnixNano && lazy.EndTimeUnixNano <= invocations[0].EndTimeUnixNano);

        // The histogram beside the trace, under the same resource.
        var metrics = LatestMetricsByInstance(receiver).Values.Single(entry => entry.Resource["service.name"].StringValue == "app").Metrics;
        var duration = metrics["python.startup.duration"].Histogram.DataPoints.Single();
        Assert.Equal(1UL, duration.Count);
        // The same duration, in seconds as a double: equal within a microsecond (rounding to 6 places can differ by one).
        var rootSeconds = (root.EndTimeUnixNano - root.StartTimeUnixNano) / 1e9;
        Assert.InRange(duration.Sum, rootSeconds - 1e-6, rootSeconds + 1e-6);
    }

    [Fact]
    public async Task OnLambdaEachFirstInvocationSpanSaysWhatTriggeredIt()
    {
        File.WriteAllText(_temp.File("handlers.py"), Handlers);
        var script = _temp.File("app.py");
        // Events as the AWS Lambda documentation shows them (trimmed): an HTTP API request, an SQS message, a schedule.
        File.WriteAllText(script, """
            import handlers

            handlers.handle({"version": "2.0", "routeKey": "GET /orders", "rawPath": "/orders", "requestContext": {"http": {"method": "GET"}}})
            handlers.handle({"Records": [{"messageId": "059f36b4", "eventSource": "aws:sqs", "body": "{}"}]})
            handlers.handle({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}})
            """);
        var output = _temp.File("out");
        await using var receiver = await OtlpReceiver.OtlpReceiver.StartAsync();
        var run = await Processes.RunAgentAsync(
            ["run", "--mode", "exceptions", "-o", output, "--otlp-endpoint", receiver.HttpEndpoint.ToString(), "--otlp-protocol", "http/protobuf", script],
            environment: OtlpExportTests.CleanEnvironment(new Dictionary<string, string?>
            {
                ["AWS_LAMBDA_FUNCTION_NAME"] = "orders", ["_HANDLER"] = "handlers.handle", ["AWS_REGION"] = "eu-west-1",
            }));
        Assert.True(run.ExitCode == 0, run.ToString());
        await receiver.WaitForAsync(OtlpSignal.Traces, 1, TimeSpan.FromSeconds(30));

        var resourceSpans = receiver.Traces.Snapshot().SelectMany(request => request.Message.ResourceSpans).ToArray();
        Assert.Equal("aws_lambda", Attributes(resourceSpans[0].Resource.Attributes)["cloud.platform"].StringValue);
        var invocations = resourceSpans.SelectMany(r => r.ScopeSpans).SelectMany(scope => scope.Spans)
            .Where(span => span.Name.StartsWith("invocation", StringComparison.Ordinal)).OrderBy(span => span.StartTimeUnixNano).ToArray();
        Assert.Equal(["http", "pubsub", "timer"], invocations.Select(span => Attributes(span.Attributes)["faas.trigger"].StringValue));

        using var document = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, "startup.json")));
        var process = Assert.Single(document.RootElement.GetProperty("processes").EnumerateArray());
        Assert.Equal("lambda_handler", process.GetProperty("ready_rule").GetString());
        Assert.Equal(["http", "pubsub", "timer"],
            process.GetProperty("first_invocations").EnumerateArray().Select(invocation => invocation.GetProperty("trigger").GetString()));
    }
}

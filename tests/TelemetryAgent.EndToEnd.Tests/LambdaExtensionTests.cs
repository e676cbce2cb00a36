using System.Collections.Concurrent;
using System.Diagnostics;
using TelemetryAgent.EndToEnd.Tests.Support;
using TelemetryAgent.Lambda;
using TelemetryAgent.OtlpReceiver;
using TelemetryAgent.Testing;
using Xunit.Abstractions;
using static TelemetryAgent.EndToEnd.Tests.Support.Otlp;

namespace TelemetryAgent.EndToEnd.Tests;

/// <summary>
/// `telemetry-agent lambda-extension` as deploy/lambda lays out the layer, against an emulator of Lambda's Runtime and
/// Extensions APIs (there is no real Lambda here): the extension entry point, the agent, and a Python runtime started
/// through the layer's AWS_LAMBDA_EXEC_WRAPPER under the shim, exporting to a real OTLP receiver.
/// </summary>
public sealed class LambdaExtensionTests(ITestOutputHelper output) : IDisposable
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);
    private readonly TemporaryFolder _temp = new();

    public void Dispose() => _temp.Dispose();

    // Busy for a few milliseconds so that the handler is among the functions with the most self time (the metrics'
    // per-function series are capped); the second invocation raises, as a handler's error does.
    private const string Handlers = """
        def handle(event, context):
            import csv  # lazily: the first invocation pays for it
            total = 0
            for n in range(200_000):
                total += n % 7
            if event.get("fail"):
                raise ValueError("refused order %s" % event["order"])
            return {"order": event["order"], "total": total}
        """;

    /// <summary>
    /// The layer as deploy/lambda/build-layer.sh makes it, with the agent as this repository built it, and with its C launcher
    /// (built with the sanitizers) or without it, as a layer built where no C compiler was found.
    /// </summary>
    private async Task<string> MakeLayerAsync(bool launcher)
    {
        var layer = _temp.File("opt");
        Directory.CreateDirectory(Path.Combine(layer, "extensions"));
        var agent = Directory.CreateDirectory(Path.Combine(layer, "telemetry-agent")).FullName;
        File.Copy(Repo.Path("deploy", "lambda", "layer", "extensions", "telemetry-agent"), Path.Combine(layer, "extensions", "telemetry-agent"));
        File.Copy(Repo.Path("deploy", "lambda", "layer", "telemetry-agent", "exec-wrapper"), Path.Combine(agent, "exec-wrapper"));
        File.CreateSymbolicLink(Path.Combine(agent, "telemetry-agent"), Path.Combine(Path.GetDirectoryName(Processes.AgentDll)!, "telemetry-agent"));
        File.CreateSymbolicLink(Path.Combine(agent, "python-shim"), Repo.Path("python-shim"));
        if (launcher)
        {
            var build = await Processes.RunAsync("cc", ["-O1", "-g", "-Wall", "-Wextra", "-Werror", "-fsanitize=address,undefined",
                "-fno-sanitize-recover=all", "-o", Path.Combine(agent, "extension-launcher"), Repo.Path("deploy", "lambda", "extension-launcher.c")]);
            Assert.True(build.ExitCode == 0, build.ToString());
        }
        return layer;
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task EachInvocationIsExportedBeforeTheNextEventAndShutdownSendsTheRest(bool launcher)
    {
        var layer = await MakeLayerAsync(launcher);
        // Both sides find the socket by the default rule (the launcher binds it when there is one).
        var runtimeDirectory = Directory.CreateDirectory(_temp.File("run")).FullName;
        var task = Directory.CreateDirectory(_temp.File("task")).FullName;
        File.WriteAllText(Path.Combine(task, "handlers.py"), Handlers);
        await using var receiver = await OtlpReceiver.OtlpReceiver.StartAsync();
        await using var emulator = await LambdaEmulator.StartAsync();
        var environment = OtlpExportTests.CleanEnvironment(new Dictionary<string, string?>
        {
            ["AWS_LAMBDA_RUNTIME_API"] = emulator.RuntimeApi,
            ["AWS_LAMBDA_FUNCTION_NAME"] = LambdaEmulator.FunctionName,
            ["AWS_LAMBDA_FUNCTION_VERSION"] = "$LATEST",
            ["AWS_REGION"] = "eu-west-1",
            ["_HANDLER"] = "handlers.handle",
            ["LAMBDA_TASK_ROOT"] = task,
            ["TELEMETRY_AGENT_SOCKET"] = null,
            ["XDG_RUNTIME_DIR"] = runtimeDirectory,
            ["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.HttpEndpoint.ToString(),
            ["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/protobuf",
            ["PYTHONPATH"] = null,
            // A first export on a busy test machine (its code compiled as it first runs) may take longer than the default.
            ["TELEMETRY_LAMBDA_FLUSH_TIMEOUT"] = "30",
        });
        // What the collector had when the extension asked for its next event: the n-th ask follows invocation n-1.
        var seenAtNext = new ConcurrentDictionary<int, (long HandlerCalls, int InvocationSpans, long RefusedOrders)>();
        emulator.ExtensionAskedForNext = (_, asked) => seenAtNext[asked] = (HandlerCalls(receiver), InvocationSpans(receiver).Length, RefusedOrders(receiver));

        var init = Stopwatch.StartNew();
        using var extension = Processes.Start(Path.Combine(layer, "extensions", "telemetry-agent"), [], environment: environment);
        var extensionExit = Processes.WaitAsync(extension, 4 * Timeout);
        // As Lambda does: the runtime starts once every extension has registered.
        await emulator.WaitForRegistrationAsync(1, Timeout);
        output.WriteLine($"the extension registered {init.Elapsed.TotalMilliseconds:0} ms after it was started");
        using var runtime = Processes.Start(Path.Combine(layer, "telemetry-agent", "exec-wrapper"),
            [Processes.Python.Path, Repo.Path("tests", "TelemetryAgent.EndToEnd.Tests", "lambda_runtime.py")], environment: environment);
        var runtimeExit = Processes.WaitAsync(runtime, 4 * Timeout);
        // A step that times out says what both processes wrote.
        async Task Step(Task step)
        {
            try
            {
                await step;
            }
            catch (TimeoutException timeout)
            {
                extension.Kill();
                runtime.Kill();
                throw new TimeoutException($"{timeout.Message}\n--- extension\n{await extensionExit}\n--- runtime\n{await runtimeExit}");
            }
        }
        await Step(emulator.WaitForInitAsync(extensions: 1, Timeout));
        output.WriteLine($"Init (extension and runtime started, both asked for their first event): {init.Elapsed.TotalMilliseconds:0} ms");
        Assert.Equal(["telemetry-agent"], emulator.ExtensionNames);

        var results = new List<InvocationResult>();
        foreach (var payload in (string[])["""{"order": 1}""", """{"order": 2, "fail": true}""", """{"order": 3}"""])
        {
            var invoke = emulator.InvokeAsync(payload, Timeout);
            await Step(invoke);
            results.Add(await invoke);
        }
        // Lambda's shutdown: the runtime gets SIGTERM, the extension SHUTDOWN, and its export must finish within 2 s.
        runtime.Kill();
        output.WriteLine($"--- runtime: {await runtimeExit}");
        var shutdown = Stopwatch.StartNew();
        emulator.Shutdown();
        var finished = await extensionExit;
        output.WriteLine($"SHUTDOWN to the extension's exit: {shutdown.Elapsed.TotalMilliseconds:0} ms");
        output.WriteLine(finished.ToString());
        Assert.True(finished.ExitCode == 0, finished.ToString());
        Assert.Contains("\"total\"", results[0].Body);
        Assert.Equal("Unhandled", results[1].ErrorType);
        Assert.Null(results[2].ErrorType);
        for (var invocation = 1; invocation <= 3; invocation++)
        {
            // Before the environment would be frozen: this invocation's calls, its span (the first three are traced), and
            // the exception the second one raised (caught by the runtime).
            Assert.Equal((invocation, invocation, invocation >= 2 ? 1 : 0), seenAtNext[invocation + 1]);
        }
        Assert.Empty(emulator.ExtensionErrors);
        // The completed process went out at SHUTDOWN: its final metrics say how its connection ended.
        Assert.Equal(3, HandlerCalls(receiver));
        var resources = LatestMetricsByInstance(receiver).Values.Select(process => process.Resource)
            .Where(resource => resource["service.name"].StringValue != "telemetry-agent").ToArray();
        Assert.Equal(["aws_lambda"], resources.Select(resource => resource["cloud.platform"].StringValue));
        Assert.Equal(["true", "false", "false"], InvocationSpans(receiver).Select(span =>
            Attributes(span.Attributes).TryGetValue("faas.coldstart", out var cold) ? cold.BoolValue.ToString().ToLowerInvariant() : "false"));
        Assert.Contains(launcher ? "telemetry-agent: registered by the launcher as telemetry-agent" : "telemetry-agent: registered as telemetry-agent",
            finished.Stderr);
        Assert.Contains($"listening on {Path.Combine(runtimeDirectory, "telemetry-agent.sock")}", finished.Stderr);
    }

    [Fact]
    public async Task AFunctionRunWithoutTheShimIsServedAndTheExtensionSaysWhatIsMissing()
    {
        var layer = await MakeLayerAsync(launcher: true);
        var task = Directory.CreateDirectory(_temp.File("task")).FullName;
        File.WriteAllText(Path.Combine(task, "handlers.py"), Handlers);
        await using var emulator = await LambdaEmulator.StartAsync();
        var environment = OtlpExportTests.CleanEnvironment(new Dictionary<string, string?>
        {
            ["AWS_LAMBDA_RUNTIME_API"] = emulator.RuntimeApi,
            ["AWS_LAMBDA_FUNCTION_NAME"] = LambdaEmulator.FunctionName,
            ["_HANDLER"] = "handlers.handle",
            ["LAMBDA_TASK_ROOT"] = task,
            ["TELEMETRY_AGENT_SOCKET"] = _temp.File("agent.sock"),
            ["PYTHONPATH"] = null,
        });
        using var extension = Processes.Start(Path.Combine(layer, "extensions", "telemetry-agent"), [], environment: environment);
        var extensionExit = Processes.WaitAsync(extension, 4 * Timeout);
        await emulator.WaitForRegistrationAsync(1, Timeout);
        // No AWS_LAMBDA_EXEC_WRAPPER: the runtime runs without the shim.
        using var runtime = Processes.Start(Processes.Python.Path, [Repo.Path("tests", "TelemetryAgent.EndToEnd.Tests", "lambda_runtime.py")],
            environment: environment);
        var runtimeExit = Processes.WaitAsync(runtime, 4 * Timeout);
        await emulator.WaitForInitAsync(extensions: 1, Timeout);
        var first = await emulator.InvokeAsync("""{"order": 1}""", Timeout);
        var second = await emulator.InvokeAsync("""{"order": 2}""", Timeout);
        runtime.Kill();
        await runtimeExit;
        emulator.Shutdown();
        var finished = await extensionExit;
        output.WriteLine(finished.ToString());
        Assert.Equal(0, finished.ExitCode);
        Assert.Contains("\"total\"", first.Body);
        Assert.Contains("\"total\"", second.Body);
        Assert.Empty(emulator.ExtensionErrors);
        // Said once, at the first invocation, which waited for it.
        var warning = "no process that counts its handler's calls connected within 2 s of the first invocation";
        Assert.Single(finished.Stderr.Split('\n'), line => line.Contains(warning));
    }

    [Fact]
    public async Task WhereTheLauncherCannotRegisterTheAgentTriesAgainAndSaysWhy()
    {
        var layer = await MakeLayerAsync(launcher: true);
        var port = UnusedPort();
        var run = await Processes.RunAsync(Path.Combine(layer, "extensions", "telemetry-agent"), [], environment: new Dictionary<string, string?>
        {
            ["AWS_LAMBDA_RUNTIME_API"] = $"127.0.0.1:{port}", ["TELEMETRY_AGENT_SOCKET"] = _temp.File("agent.sock"),
        });
        Assert.Equal(1, run.ExitCode);
        Assert.Contains($"cannot register with the Lambda Extensions API at 127.0.0.1:{port}", run.Stderr);
        // The launcher's socket went with its registration; the agent's went with its failure.
        Assert.False(File.Exists(_temp.File("agent.sock")));
    }

    [Theory]
    [InlineData("0", "descriptor 0 is not")]
    [InlineData("987", "descriptor 987 is not an open socket")]
    public async Task AnInheritedSocketThatIsNotTheListeningOneIsRefused(string descriptor, string problem)
    {
        var run = await Processes.RunAgentAsync(["lambda-extension", "--socket", _temp.File("agent.sock"), "--listen-fd", descriptor,
            "--extension-id", "b3c6a3c4"], environment: new Dictionary<string, string?> { ["AWS_LAMBDA_RUNTIME_API"] = $"127.0.0.1:{UnusedPort()}" });
        Assert.Equal(1, run.ExitCode);
        Assert.Contains(problem, run.Stderr);
    }

    [Fact]
    public async Task TheLauncherOptionsComeWithWhatTheyNeed()
    {
        var environment = new Dictionary<string, string?> { ["AWS_LAMBDA_RUNTIME_API"] = "127.0.0.1:9001" };
        var noSocket = await Processes.RunAgentAsync(["lambda-extension", "--listen-fd", "3"], environment: environment);
        Assert.Equal(2, noSocket.ExitCode);
        Assert.Contains("--listen-fd needs --socket", noSocket.Stderr);
        var noIdentifier = await Processes.RunAgentAsync(["lambda-extension", "--event-fd", "4"], environment: environment);
        Assert.Equal(2, noIdentifier.ExitCode);
        Assert.Contains("--event-fd needs --extension-id", noIdentifier.Stderr);
    }

    private static int UnusedPort()
    {
        using var probe = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        probe.Start();
        return ((System.Net.IPEndPoint)probe.LocalEndpoint).Port;
    }

    [Fact]
    public async Task WithoutTheRuntimeApiItSaysItIsNotInLambda()
    {
        var run = await Processes.RunAgentAsync(["lambda-extension"], environment: new Dictionary<string, string?> { ["AWS_LAMBDA_RUNTIME_API"] = null });
        Assert.Equal(2, run.ExitCode);
        Assert.Contains("AWS_LAMBDA_RUNTIME_API is not set", run.Stderr);

        var wrong = await Processes.RunAgentAsync(["lambda-extension"], environment: new Dictionary<string, string?>
        {
            ["AWS_LAMBDA_RUNTIME_API"] = "127.0.0.1:9001", ["TELEMETRY_LAMBDA_FLUSH_TIMEOUT"] = "soon",
        });
        Assert.Equal(2, wrong.ExitCode);
        Assert.Contains("TELEMETRY_LAMBDA_FLUSH_TIMEOUT takes a number of seconds from 0.05 to 60, not \"soon\"", wrong.Stderr);
    }

    [Fact]
    public async Task WhenItCannotRegisterItSaysWhyAndExits()
    {
        // A port nothing listens on: the Extensions API is unreachable.
        var port = UnusedPort();
        var run = await Processes.RunAgentAsync(["lambda-extension", "--socket", _temp.File("agent.sock")],
            environment: new Dictionary<string, string?> { ["AWS_LAMBDA_RUNTIME_API"] = $"127.0.0.1:{port}" });
        Assert.Equal(1, run.ExitCode);
        Assert.Contains($"cannot register with the Lambda Extensions API at 127.0.0.1:{port}", run.Stderr);
    }

    [Fact]
    public void EventsReadAsTheApiReferenceShowsThem()
    {
        var invoke = ExtensionsApiClient.ParseEvent("""
            {"eventType": "INVOKE", "deadlineMs": 1676051149000, "requestId": "3da1f2dc-3222-475e-9205-e2e6c6318895",
             "invokedFunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:ExtensionTest",
             "tracing": {"type": "X-Amzn-Trace-Id", "value": "Root=1-5f35ae12-0c0fec141ab77a00bc047aa2;Parent=2be948a625588e32;Sampled=1"}}
            """u8);
        Assert.Equal(new ExtensionEvent("INVOKE", DateTimeOffset.FromUnixTimeMilliseconds(1676051149000), "3da1f2dc-3222-475e-9205-e2e6c6318895", ""), invoke);
        var shutdown = ExtensionsApiClient.ParseEvent("""{"eventType": "SHUTDOWN", "shutdownReason": "spindown", "deadlineMs": 1676051151000}"""u8);
        Assert.Equal(("SHUTDOWN", "spindown"), (shutdown.Type, shutdown.ShutdownReason));
    }

    [Fact]
    public void ARegistrationResponseGivesTheIdentifierOrSaysWhatWentWrong()
    {
        Assert.Equal("5f2b8b96-5a34-4a47-8a3c-7b45e5b5b6b1", ExtensionsApiClient.ReadRegistration(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nlambda-extension-identifier:  5f2b8b96-5a34-4a47-8a3c-7b45e5b5b6b1 \r\n" +
            "Content-Length: 2\r\n\r\n{}"));
        Assert.Contains("register: HTTP 403 Forbidden: {\"errorMessage\":\"registration is closed\"}", Assert.Throws<ExtensionsApiException>(() =>
            ExtensionsApiClient.ReadRegistration("HTTP/1.1 403 Forbidden\r\nContent-Length: 38\r\n\r\n{\"errorMessage\":\"registration is closed\"}")).Message);
        Assert.Contains("has no Lambda-Extension-Identifier header", Assert.Throws<ExtensionsApiException>(() =>
            ExtensionsApiClient.ReadRegistration("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")).Message);
        Assert.Contains("not an HTTP response", Assert.Throws<ExtensionsApiException>(() => ExtensionsApiClient.ReadRegistration("")).Message);
        Assert.Contains("not an HTTP response (SSH-2.0-OpenSSH_9.2)", Assert.Throws<ExtensionsApiException>(() =>
            ExtensionsApiClient.ReadRegistration("SSH-2.0-OpenSSH_9.2\r\n")).Message);
    }

    [Fact]
    public async Task TheFirstEventsResponseReadsFromAnInheritedConnectionWhateverItsFraming()
    {
        const string invoke = """{"eventType":"INVOKE","deadlineMs":1676051149000,"requestId":"3da1f2dc"}""";
        string[] responses =
        [
            $"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {invoke.Length}\r\n\r\n{invoke}",
            // Kestrel's, Go's and most servers' answer to a body written without its length.
            $"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10;name=value\r\n{invoke[..16]}\r\n{invoke.Length - 16:x}\r\n{invoke[16..]}\r\n0\r\nTrailer: x\r\n\r\n",
            // Delimited by the connection's end (the request said Connection: close).
            $"HTTP/1.0 200 OK\r\n\r\n{invoke}",
        ];
        foreach (var response in responses)
        {
            var bytes = System.Text.Encoding.UTF8.GetBytes(response);
            for (var split = 0; split <= bytes.Length; split++)
            {
                using var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
                listener.Start();
                var agentSide = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
                await agentSide.ConnectAsync(listener.LocalEndpoint);
                using (var apiSide = await listener.AcceptSocketAsync())
                {
                    await apiSide.SendAsync(bytes.AsMemory(0, split));
                    await apiSide.SendAsync(bytes.AsMemory(split));
                }
                var read = await ExtensionsApiClient.ReadEventResponseAsync(agentSide, CancellationToken.None);
                Assert.Equal(new ExtensionEvent("INVOKE", DateTimeOffset.FromUnixTimeMilliseconds(1676051149000), "3da1f2dc", ""), read);
            }
        }
    }

    [Theory]
    [InlineData("HTTP/1.1 403 Forbidden\r\nContent-Length: 20\r\n\r\n{\"errorType\":\"x.y\"}", "event/next: HTTP 403 Forbidden: {\"errorType\":\"x.y\"}")]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 9", "the response ended in its headers")]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 90\r\n\r\n{}", "Content-Length 90 with 2 bytes of body")]
    [InlineData("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n20\r\n{}", "a chunked body ends inside a chunk")]
    [InlineData("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "not a chunk size: \"zz\"")]
    [InlineData("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n", "a chunked body ends in a chunk's size")]
    [InlineData("", "event/next: not an HTTP response")]
    public void AFirstEventsResponseThatDoesNotReadSaysWhat(string response, string problem)
    {
        var error = Assert.Throws<ExtensionsApiException>(() => ExtensionsApiClient.ReadEventResponse(System.Text.Encoding.UTF8.GetBytes(response)));
        Assert.Contains(problem, error.Message);
    }

    [Theory]
    [InlineData("", "not JSON")]
    [InlineData("{\"eventType\": ", "not JSON")]
    [InlineData("[1, 2]", "not a JSON object")]
    [InlineData("{\"deadlineMs\": 5}", "has no eventType")]
    [InlineData("{\"eventType\": 7}", "has no eventType")]
    public void AnEventThatDoesNotReadSaysWhat(string body, string problem)
    {
        var error = Assert.Throws<ExtensionsApiException>(() => ExtensionsApiClient.ParseEvent(System.Text.Encoding.UTF8.GetBytes(body)));
        Assert.Contains(problem, error.Message);
    }

    private static long HandlerCalls(OtlpReceiver.OtlpReceiver receiver) =>
        LatestMetricsByInstance(receiver).Values
            .Where(process => process.Metrics.ContainsKey("python.profile.function.calls"))
            .SelectMany(process => IntPoints(process.Metrics["python.profile.function.calls"]))
            .Where(point => point.Attributes["code.function.name"].StringValue == "handlers.handle")
            .Sum(point => point.Value);

    private static long RefusedOrders(OtlpReceiver.OtlpReceiver receiver) =>
        LogRecords(receiver).Select(record => Attributes(record.Record.Attributes))
            .Where(attributes => attributes["exception.type"].StringValue == "builtins.ValueError"
                                 && attributes.TryGetValue("exception.message", out var message) && message.StringValue == "refused order 2")
            .Sum(attributes => attributes["python.profile.exception.count"].IntValue);

    private static OpenTelemetry.Proto.Trace.V1.Span[] InvocationSpans(OtlpReceiver.OtlpReceiver receiver) =>
        receiver.Traces.Snapshot().SelectMany(request => request.Message.ResourceSpans).SelectMany(r => r.ScopeSpans)
            .SelectMany(scope => scope.Spans).Where(span => span.Name.StartsWith("invocation", StringComparison.Ordinal))
            .OrderBy(span => span.StartTimeUnixNano).ToArray();
}

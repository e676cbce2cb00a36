using System.Diagnostics;
using System.Text.Json;
using TelemetryAgent.EndToEnd.Tests.Support;
using TelemetryAgent.OtlpReceiver;
using static TelemetryAgent.EndToEnd.Tests.Support.Otlp;
using TelemetryAgent.Testing;

namespace TelemetryAgent.EndToEnd.Tests;

/// <summary>OTLP export as processes come and go: children, a late collector, `serve`'s intervals, export off.</summary>
public sealed class OtlpExportBehaviourTests : IDisposable
{
    private readonly TemporaryFolder _temp = new();

    public void Dispose() => _temp.Dispose();


    [Fact]
    public async Task A_child_process_gets_a_resource_of_its_own_with_its_own_resource_attributes()
    {
        var child = _temp.Write("child.py", "def work():\n    return sum(range(1000))\n\nprint(work())\n");
        var parent = _temp.Write("parent.py", $$"""
            import os, subprocess, sys
            environment = dict(os.environ, OTEL_RESOURCE_ATTRIBUTES="role=child")
            subprocess.run([sys.executable, {{JsonSerializer.Serialize(child)}}], env=environment, check=True)
            """);
        await using var run = await OtlpExportTests.RunAsync(_temp, "grpc", [parent],
            new() { ["OTEL_RESOURCE_ATTRIBUTES"] = "role=parent,deployment.environment.name=test" });
        Assert.True(run.Agent.ExitCode == 0, run.Agent.ToString());

        var resources = LatestMetricsByInstance(run.Receiver).Values.Select(entry => entry.Resource).ToList();
        Assert.Equal(3, resources.Count);
        var parentResource = resources.Single(r => r["service.name"].StringValue == "parent");
        var childResource = resources.Single(r => r["service.name"].StringValue == "child");
        Assert.Equal("parent", parentResource["role"].StringValue);
        Assert.Equal("test", parentResource["deployment.environment.name"].StringValue);
        Assert.Equal("child", childResource["role"].StringValue);
        Assert.False(childResource.ContainsKey("deployment.environment.name")); // its own variable replaced the parent's
        Assert.Equal(parentResource["process.pid"].IntValue, childResource["process.parent_pid"].IntValue);
        Assert.NotEqual(parentResource["service.instance.id"].StringValue, childResource["service.instance.id"].StringValue);
        // The agent's own resource takes nothing from its environment's OTEL_RESOURCE_ATTRIBUTES.
        var agent = resources.Single(r => r["service.name"].StringValue == "telemetry-agent");
        Assert.False(agent.ContainsKey("role"));
    }

    [Theory]
    [InlineData("grpc")]
    [InlineData("http/protobuf")]
    public async Task Nothing_is_lost_when_the_collector_comes_up_late(string protocol)
    {
        using var ports = OtlpReceiver.OtlpReceiver.ReservePorts();
        var port = protocol == "grpc" ? ports.GrpcPort : ports.HttpPort;
        var output = _temp.File("out");
        using var agentProcess = Processes.Start("dotnet",
            [Processes.AgentDll, "run", "-o", output, "--otlp-endpoint", $"http://127.0.0.1:{port}", "--otlp-protocol", protocol,
             "examples/fixture_app.py"],
            // The agent waits for its exports as long as one may take: ample time for each step below to be seen.
            // Without the start-up traces: their SDK instance sends metrics of its own, whose turned-away request
            // could end the wait for the agent's below.
            environment: OtlpExportTests.CleanEnvironment(new() { ["OTEL_EXPORTER_OTLP_TIMEOUT"] = "60000", ["OTEL_TRACES_EXPORTER"] = "none" }));
        agentProcess.StandardInput.Close();
        // The program's last line: it has done its work and is about to exit. (Watching for the program among the
        // agent's children missed it: a run can be over within a pause of the test host's polling.)
        var lastLinePrinted = new TaskCompletionSource();
        var finishing = Processes.WaitAsync(agentProcess, Processes.DefaultTimeout,
            onOutputLine: line => { if (line.StartsWith("workers = ", StringComparison.Ordinal)) lastLinePrinted.TrySetResult(); });
        // Down (connections refused) while the program runs, so its final export is first tried against a closed
        // port; then up but unavailable until it has turned away a metrics request (the agent is seen still trying,
        // however long the first phase took); then accepting all but the first logs request, if none was turned away
        // yet. The final logs may go out only once the final metrics are through: a collector that turned away
        // everything until it had seen both could hold the logs back for the whole of the metrics' retries.
        // Each step waits on what it observes.
        await Task.WhenAny(lastLinePrinted.Task, finishing).WaitAsync(Processes.DefaultTimeout);
        // Then until the program has exited: the agent's children are the probe of the interpreter (gone by now)
        // and the program.
        await ServeAgent.WaitUntilAsync(() => !Processes.ChildrenOf(agentProcess.Id).Any(), "the program to exit", seconds: 120);
        await using var receiver = await OtlpReceiver.OtlpReceiver.StartAsync(
            ports, new OtlpReceiverOptions { InitialFailures = new FailurePlan(Until: DateTimeOffset.MaxValue) });
        bool TurnedAway(OtlpSignal signal) => receiver.Attempts.Any(attempt => attempt.Signal == signal && !attempt.Accepted);
        // The next attempts come after the backoff of the refused ones, which grows the longer the collector was down
        // (on a loaded machine, the program's run): a bound well inside the agent's 2 minutes of retries.
        await ServeAgent.WaitUntilAsync(() => TurnedAway(OtlpSignal.Metrics) || finishing.IsCompleted,
            "a metrics request while the collector is unavailable", seconds: 90);
        // A logs request turned away between this check and the new plan only adds one retry.
        receiver.Failures.Set(TurnedAway(OtlpSignal.Logs) ? null : FailurePlan.FirstRequests(1, signal: OtlpSignal.Logs));
        var agent = await finishing;
        Assert.True(agent.ExitCode == 0, agent.ToString());
        Assert.False(agent.Stderr.Contains("OTLP export:", StringComparison.Ordinal), agent.ToString());

        var byService = LatestMetricsByInstance(receiver).Values.ToDictionary(entry => entry.Resource["service.name"].StringValue);
        AssertFixtureCalls(byService["fixture_app"].Metrics, Path.Combine(output, "summary.json"));
        using var summary = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, "summary.json")));
        Assert.Equal(summary.RootElement.GetProperty("totals").GetProperty("events_received").GetInt64(),
            SingleInt(byService["fixture_app"].Metrics["python.profile.events.received"]));
        Assert.Equal(
            summary.RootElement.GetProperty("exceptions").GetProperty("groups").GetInt32(),
            LogRecords(receiver).Count(r => r.Resource["service.name"].StringValue == "fixture_app"));
        Assert.True(TurnedAway(OtlpSignal.Metrics) && TurnedAway(OtlpSignal.Logs), agent.ToString());
        // The attempts made while it was down or unavailable are the agent's export failures.
        var failures = IntPoints(byService["telemetry-agent"].Metrics["telemetry_agent.export.failures"]);
        Assert.Contains(failures, p => p.Attributes["telemetry_agent.signal"].StringValue == "metrics" && p.Value > 0);
    }

    [Theory]
    [InlineData("grpc")]
    [InlineData("http/protobuf")]
    public async Task Start_up_traces_a_collector_refuses_are_said_once_and_counted_with_the_agents_export_failures(string protocol)
    {
        await using var receiver = await OtlpReceiver.OtlpReceiver.StartAsync(
            new OtlpReceiverOptions { InitialFailures = new FailurePlan(Until: DateTimeOffset.MaxValue, Signal: OtlpSignal.Traces) });
        var agent = await Processes.RunAgentAsync(
            ["run", "-o", _temp.File("out"), "--otlp-endpoint", OtlpExportTests.EndpointFor(receiver, protocol).ToString(), "--otlp-protocol", protocol,
             "examples/fixture_app.py"],
            // Each refused request is retried by the SDK within this timeout: the run ends soon after its last try.
            environment: OtlpExportTests.CleanEnvironment(new() { ["OTEL_EXPORTER_OTLP_TIMEOUT"] = "3000" }));
        Assert.True(agent.ExitCode == 0, agent.ToString());
        Assert.Contains(receiver.Attempts, attempt => attempt.Signal == OtlpSignal.Traces && !attempt.Accepted);
        Assert.DoesNotContain(receiver.Attempts, attempt => attempt.Signal == OtlpSignal.Traces && attempt.Accepted);
        var said = agent.Stderr.Split('\n').Where(line => line.Contains("start-up trace of pid", StringComparison.Ordinal)).ToList();
        Assert.True(said.Count == 1, agent + "\n--- attempts\n" + string.Join("\n", receiver.Attempts.Select(a => $"{a.Signal} {a.Accepted} {a.Error}")));
        Assert.Contains("fixture_app", said[0], StringComparison.Ordinal);

        // The agent's own metrics (sent at its end: metrics are accepted) count the refused trace requests.
        var byService = LatestMetricsByInstance(receiver).Values.ToDictionary(entry => entry.Resource["service.name"].StringValue);
        var failures = IntPoints(byService["telemetry-agent"].Metrics["telemetry_agent.export.failures"]);
        Assert.Contains(failures, p => p.Attributes["telemetry_agent.signal"].StringValue == "traces" && p.Value > 0);
    }

    [Theory]
    [InlineData("grpc", OtlpSignal.Metrics)]
    [InlineData("grpc", OtlpSignal.Logs)]
    [InlineData("http/protobuf", OtlpSignal.Metrics)]
    [InlineData("http/protobuf", OtlpSignal.Logs)]
    public async Task A_collector_that_resets_the_connection_mid_request_loses_nothing(string protocol, OtlpSignal signal)
    {
        await using var receiver = await OtlpReceiver.OtlpReceiver.StartAsync(
            new OtlpReceiverOptions { InitialFailures = FailurePlan.ResetFirstRequests(1, signal) });
        var output = _temp.File("out");
        var agent = await Processes.RunAgentAsync(
            ["run", "-o", output, "--otlp-endpoint", OtlpExportTests.EndpointFor(receiver, protocol).ToString(), "--otlp-protocol", protocol,
             "examples/fixture_app.py"],
            // Without the start-up traces: their SDK instance sends metrics of its own (the start-up histogram), whose
            // request could be the one reset, and its failures are not among the agent's export counters.
            environment: OtlpExportTests.CleanEnvironment(new() { ["OTEL_TRACES_EXPORTER"] = "none" }));
        Assert.True(agent.ExitCode == 0, agent.ToString());
        Assert.False(agent.Stderr.Contains("OTLP export:", StringComparison.Ordinal), agent.ToString());
        Assert.Contains(receiver.Attempts, attempt => attempt.Signal == signal && attempt.Error?.Contains("reset", StringComparison.Ordinal) == true);

        // The reset request was sent again, and everything arrived: the process's metrics and each of its exception groups.
        var byService = LatestMetricsByInstance(receiver).Values.ToDictionary(entry => entry.Resource["service.name"].StringValue);
        AssertFixtureCalls(byService["fixture_app"].Metrics, Path.Combine(output, "summary.json"));
        using var summary = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, "summary.json")));
        Assert.Equal(
            summary.RootElement.GetProperty("exceptions").GetProperty("groups").GetInt32(),
            LogRecords(receiver).Count(r => r.Resource["service.name"].StringValue == "fixture_app"));
        // The reset is the agent's export failure, counted by the exception that reported it (on a loaded machine a
        // retry may time out as well, so at least once).
        var failures = IntPoints(byService["telemetry-agent"].Metrics["telemetry_agent.export.failures"]);
        Assert.Contains(failures, p => p.Attributes["telemetry_agent.signal"].StringValue == signal.ToString().ToLowerInvariant()
                                       && p.Attributes["error.type"].StringValue == "HttpRequestException" && p.Value >= 1);
    }

    [Fact]
    public async Task A_collector_that_always_resets_the_connection_gets_an_error_naming_what_was_lost()
    {
        await using var receiver = await OtlpReceiver.OtlpReceiver.StartAsync(
            new OtlpReceiverOptions { InitialFailures = FailurePlan.ResetFirstRequests(int.MaxValue, OtlpSignal.Metrics) });
        var agent = await Processes.RunAgentAsync(
            ["run", "-o", _temp.File("out"), "--otlp-endpoint", receiver.GrpcEndpoint.ToString(), "--otlp-protocol", "grpc",
             "examples/fixture_app.py"],
            // Short requests, so that the retries give up soon.
            environment: OtlpExportTests.CleanEnvironment(new() { ["OTEL_EXPORTER_OTLP_TIMEOUT"] = "3000" }));
        Assert.True(agent.ExitCode == 0, agent.ToString());
        // Lost when the last retry gives up within run's wait for exports, or unsent when that wait ends first (on a
        // loaded machine): either way the message names the process.
        Assert.Matches(@"OTLP export: (the final metrics of pid \d+ \(fixture_app\) could not be sent to http://127\.0\.0\.1:\d+/ " +
                       @"\(every retry failed\): they are lost|the agent stopped before the final export of pid \d+ \(fixture_app\) finished)",
            agent.Stderr);
        // Logs were not reset: they arrived.
        Assert.NotEmpty(LogRecords(receiver));
        Assert.Empty(LatestMetricsByInstance(receiver));
    }

    [Theory]
    [InlineData("OTEL_SDK_DISABLED", "true", new OtlpSignal[0])]
    [InlineData("OTEL_METRICS_EXPORTER", "none", new[] { OtlpSignal.Logs, OtlpSignal.Profiles, OtlpSignal.Traces })]
    [InlineData("OTEL_LOGS_EXPORTER", "none", new[] { OtlpSignal.Metrics, OtlpSignal.Profiles, OtlpSignal.Traces })]
    [InlineData("OTEL_LOGS_EXPORTER", "console,otlp", new[] { OtlpSignal.Metrics, OtlpSignal.Logs, OtlpSignal.Profiles, OtlpSignal.Traces })]
    // The start-up traces: switching them off changes nothing else.
    [InlineData("OTEL_TRACES_EXPORTER", "none", new[] { OtlpSignal.Metrics, OtlpSignal.Logs, OtlpSignal.Profiles })]
    public async Task The_specifications_switches_turn_export_or_one_signal_off(string variable, string value, OtlpSignal[] sent)
    {
        await using var run = await OtlpExportTests.RunAsync(_temp, "grpc", ["examples/fixture_app.py"], new() { [variable] = value });
        Assert.True(run.Agent.ExitCode == 0, run.Agent.ToString());
        Assert.DoesNotContain("OTLP export:", run.Agent.Stderr);
        Assert.DoesNotContain("Exporter failed", run.Agent.Stderr);
        Assert.Equal(sent, run.Receiver.Attempts.Select(attempt => attempt.Signal!.Value).Distinct().Order());
        Assert.All(run.Receiver.Attempts, attempt => Assert.True(attempt.Accepted));
        if (sent.Contains(OtlpSignal.Metrics))
        {
            // What is sent is whole: the process's and the agent's own metrics.
            var services = LatestMetricsByInstance(run.Receiver).Values.Select(entry => entry.Resource["service.name"].StringValue).Order();
            Assert.Equal(["fixture_app", "telemetry-agent"], services);
        }
    }

    [Theory]
    [InlineData("grpc", false)]
    [InlineData("http/protobuf", false)]
    [InlineData("grpc", true)]
    [InlineData("http/protobuf", true)]
    public async Task Export_over_TLS_trusts_the_configured_CA_and_presents_the_client_certificate_for_mutual_TLS(string protocol, bool mutual)
    {
        using var authority = new TestCertificateAuthority();
        using var serverCertificate = authority.IssueServer();
        using var clientCertificate = authority.IssueClient();
        TestCertificateAuthority.WritePem(authority.Certificate, _temp.File("ca.pem"));
        TestCertificateAuthority.WritePem(clientCertificate, _temp.File("client.pem"), _temp.File("client-key.pem"));
        await using var receiver = await OtlpReceiver.OtlpReceiver.StartAsync(new OtlpReceiverOptions
        {
            Certificate = serverCertificate,
            ClientCertificateAuthority = mutual ? authority.Certificate : null,
        });
        var environment = new Dictionary<string, string?> { ["OTEL_EXPORTER_OTLP_CERTIFICATE"] = _temp.File("ca.pem") };
        if (mutual)
        {
            // The per-signal forms, for each signal.
            foreach (var signal in new[] { "METRICS", "LOGS", "PROFILES", "TRACES" })
            {
                environment[$"OTEL_EXPORTER_OTLP_{signal}_CLIENT_CERTIFICATE"] = _temp.File("client.pem");
                environment[$"OTEL_EXPORTER_OTLP_{signal}_CLIENT_KEY"] = _temp.File("client-key.pem");
            }
        }
        var endpoint = OtlpExportTests.EndpointFor(receiver, protocol).ToString();
        Assert.StartsWith("https://", endpoint);
        var agent = await Processes.RunAgentAsync(
            ["run", "-o", _temp.File("out"), "--otlp-endpoint", endpoint, "--otlp-protocol", protocol, "examples/fixture_app.py"],
            environment: OtlpExportTests.CleanEnvironment(environment));
        Assert.True(agent.ExitCode == 0, agent.ToString());
        Assert.DoesNotContain("OTLP export:", agent.Stderr);
        Assert.Equal([OtlpSignal.Metrics, OtlpSignal.Logs, OtlpSignal.Profiles, OtlpSignal.Traces],
            receiver.Attempts.Select(attempt => attempt.Signal!.Value).Distinct().Order());
        Assert.All(receiver.Attempts, attempt => Assert.True(attempt.Accepted));
        var byInstance = LatestMetricsByInstance(receiver).Values.ToList();
        var program = byInstance.Where(e => e.Resource["service.name"].StringValue == "fixture_app").ToList();
        // Should the program's metrics be missing, the failure says what did arrive and what the agent said.
        Assert.True(program.Count == 1, $"metrics of {string.Join(", ", byInstance.Select(e => e.Resource["service.name"].StringValue))} " +
                                        $"in {receiver.Metrics.Snapshot().Count} requests; the agent: {agent}");
        AssertFixtureCalls(program[0].Metrics, _temp.File("out/summary.json"));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Export_over_TLS_sends_nothing_to_a_collector_it_cannot_trust_or_that_wants_a_client_certificate(bool mutual)
    {
        using var authority = new TestCertificateAuthority();
        using var other = new TestCertificateAuthority("another CA");
        using var serverCertificate = authority.IssueServer();
        // Without mutual TLS the agent trusts another CA; with it, it trusts the right one but has no client certificate.
        TestCertificateAuthority.WritePem(mutual ? authority.Certificate : other.Certificate, _temp.File("ca.pem"));
        await using var receiver = await OtlpReceiver.OtlpReceiver.StartAsync(new OtlpReceiverOptions
        {
            Certificate = serverCertificate,
            ClientCertificateAuthority = mutual ? authority.Certificate : null,
        });
        var agent = await Processes.RunAgentAsync(
            ["run", "-o", _temp.File("out"), "--otlp-endpoint", receiver.HttpEndpoint.ToString(), "--otlp-protocol", "http/protobuf",
             "examples/fixture_app.py"],
            environment: OtlpExportTests.CleanEnvironment(new()
            {
                ["OTEL_EXPORTER_OTLP_CERTIFICATE"] = _temp.File("ca.pem"),
                // Short requests, so that the retries give up soon.
                ["OTEL_EXPORTER_OTLP_TIMEOUT"] = "2000",
            }),
            timeout: TimeSpan.FromMinutes(4));
        Assert.True(agent.ExitCode == 0, agent.ToString());
        // The user is told the metrics did not arrive: as lost when the final attempt gives up within run's wait, or as
        // unsent when that wait ends first (which of the two depends on how long each TLS failure takes).
        // Either way the message names the process.
        Assert.Matches(@"OTLP export: (the final metrics of pid \d+ \(fixture_app\) could not be sent|the agent stopped before the final export of pid \d+ \(fixture_app\) finished)",
            agent.Stderr);
        Assert.DoesNotContain(receiver.Attempts, attempt => attempt.Accepted);
    }

    [Fact]
    public async Task With_a_retry_directory_what_could_not_be_sent_is_kept_on_disk()
    {
        using var ports = OtlpReceiver.OtlpReceiver.ReservePorts(); // nobody listens there
        var port = ports.HttpPort;
        var directory = _temp.File("retry");
        var agent = await Processes.RunAgentAsync(
            ["run", "-o", _temp.File("out"), "--otlp-endpoint", $"http://127.0.0.1:{port}", "--otlp-retry-directory", directory,
             _temp.Write("small.py", "def f():\n    raise KeyError('k')\n\ntry:\n    f()\nexcept KeyError:\n    pass\n")],
            environment: OtlpExportTests.CleanEnvironment());
        Assert.True(agent.ExitCode == 0, agent.ToString());
        // The SDK keeps each failed request as a .blob under <signal>/<destination>/, to resend it every 60 s.
        var blobs = Directory.GetFiles(directory, "*.blob", SearchOption.AllDirectories)
            .Select(path => Path.GetRelativePath(directory, path).Split('/')[0]).ToHashSet();
        Assert.Contains("metrics", blobs);
        Assert.Contains("logs", blobs);
    }

    private Process StartServe(string socket, params string[] options) =>
        Processes.Start("dotnet", [Processes.AgentDll, "serve", "--socket", socket, "-o", _temp.File("out"), .. options],
            environment: OtlpExportTests.CleanEnvironment());

    private static async Task<Finished> StopAsync(Process agent)
    {
        Assert.True(Transport.Native.SendSignal(agent.Id, 15));
        return await Processes.WaitAsync(agent, TimeSpan.FromSeconds(30));
    }

    [Fact]
    public async Task Serve_says_once_that_export_is_off()
    {
        var socket = _temp.File("agent.sock");
        using var agent = StartServe(socket);
        await ServeAgent.WaitUntilAsync(() => File.Exists(socket), "the socket");
        var run = await Processes.RunPythonAsync(["-m", "telemetry_shim", "--socket", socket, _temp.Write("quick.py", "print(1)\n")],
            environment: new Dictionary<string, string?> { ["PYTHONPATH"] = Repo.Path("python-shim") });
        Assert.True(run.ExitCode == 0, run.ToString());
        await ServeAgent.WaitUntilAsync(() => ServeAgent.CompletedFolders(_temp.File("out")).Length == 1, "the output folder");
        var finished = await StopAsync(agent);
        Assert.True(finished.ExitCode == 0, finished.ToString());
        Assert.Single(finished.Stderr.Split('\n'), line => line.Contains("OTLP export is off", StringComparison.Ordinal));
        Assert.DoesNotContain("OTLP export:", finished.Stderr);
    }

    [Theory]
    // The option wins over OTEL_METRIC_EXPORT_INTERVAL, which sets the interval when the option is not given.
    [InlineData(null, "3600000", "0.5")]
    [InlineData("cumulative", "500", null)]
    [InlineData("delta", "500", null)]
    // lowmemory: delta for synchronous counters only; the agent's counters are observable, so they stay cumulative.
    [InlineData("lowmemory", null, "0.5")]
    public async Task Serve_exports_every_interval_and_logs_only_the_groups_that_changed(string? temporality, string? intervalVariable, string? intervalOption)
    {
        await using var receiver = await OtlpReceiver.OtlpReceiver.StartAsync();
        var socket = _temp.File("agent.sock");
        var environment = OtlpExportTests.CleanEnvironment(new()
        {
            ["OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"] = temporality,
            ["OTEL_METRIC_EXPORT_INTERVAL"] = intervalVariable,
        });
        using var agent = Processes.Start("dotnet",
            [Processes.AgentDll, "serve", "--socket", socket, "-o", _temp.File("out"), "--otlp-endpoint", receiver.HttpEndpoint.ToString(),
             .. intervalOption is null ? Array.Empty<string>() : ["--export-interval", intervalOption]],
            environment: environment);
        await ServeAgent.WaitUntilAsync(() => File.Exists(socket), "the socket");
        // Raises 20 ValueErrors, and 20 more once the test has seen the first ones exported; then stays quiet until the
        // test has seen two more exports: the changes fall in at least two intervals and quiet intervals follow,
        // however slowly a loaded machine runs the program.
        var script = _temp.Write("bursty.py", """
            import os, sys, time

            def parse(text):
                try:
                    return int(text)
                except ValueError:
                    return None

            def wait_for(path):
                deadline = time.monotonic() + 120
                while not os.path.exists(path) and time.monotonic() < deadline:
                    time.sleep(0.01)

            for phase in ("first", "second"):
                for _ in range(20):
                    parse("x")
                wait_for(sys.argv[1] + "." + phase)
            """);
        var go = _temp.File("go");
        using var program = Processes.Start(Processes.Python.Path, ["-m", "telemetry_shim", "--socket", socket, script, go],
            environment: new Dictionary<string, string?> { ["PYTHONPATH"] = Repo.Path("python-shim") });
        program.StandardInput.Close();
        long Logged() => LogRecords(receiver).Where(r => r.Resource["service.name"].StringValue == "bursty")
            .Select(r => Attributes(r.Record.Attributes))
            .Where(a => a["exception.type"].StringValue == "builtins.ValueError")
            .Sum(a => a["python.profile.exception.count"].IntValue);
        int MetricExports() => receiver.Metrics.Snapshot().SelectMany(request => request.Message.ResourceMetrics)
            .Count(r => Attributes(r.Resource.Attributes)["service.name"].StringValue == "bursty");
        await ServeAgent.WaitUntilAsync(() => Logged() == 20 || program.HasExited, "the first 20 ValueErrors exported", seconds: 60);
        File.WriteAllText(go + ".first", "");
        await ServeAgent.WaitUntilAsync(() => Logged() == 40 || program.HasExited, "the next 20 ValueErrors exported", seconds: 60);
        var exportsSoFar = MetricExports();
        await ServeAgent.WaitUntilAsync(() => MetricExports() >= exportsSoFar + 2 || program.HasExited, "two exports of the quiet part", seconds: 60);
        File.WriteAllText(go + ".second", "");
        var run = await Processes.WaitAsync(program, TimeSpan.FromSeconds(60));
        Assert.True(run.ExitCode == 0, run.ToString());
        await ServeAgent.WaitUntilAsync(() => ServeAgent.CompletedFolders(_temp.File("out")).Length == 1, "the output folder");
        var finished = await StopAsync(agent);
        Assert.True(finished.ExitCode == 0, finished.ToString());

        var folder = ServeAgent.CompletedFolders(_temp.File("out")).Single();
        using var exceptions = JsonDocument.Parse(File.ReadAllText(Path.Combine(folder, "exceptions.json")));
        var group = exceptions.RootElement.GetProperty("processes")[0].GetProperty("groups").EnumerateArray()
            .Single(g => g.GetProperty("type").GetString() == "builtins.ValueError");
        var total = group.GetProperty("count").GetInt64();
        Assert.Equal(40, total);

        // One export per interval.
        var exportsOfTheProcess = receiver.Metrics.Snapshot()
            .SelectMany(request => request.Message.ResourceMetrics)
            .Where(r => Attributes(r.Resource.Attributes)["service.name"].StringValue == "bursty")
            .Select(r => r.ScopeMetrics.SelectMany(s => s.Metrics).ToDictionary(m => m.Name))
            .ToList();
        Assert.True(exportsOfTheProcess.Count >= 4, $"{exportsOfTheProcess.Count} metric exports");
        var exceptionSums = exportsOfTheProcess.Where(m => m.ContainsKey("python.profile.exceptions"))
            .Select(m => m["python.profile.exceptions"].Sum).ToList();
        var counts = exceptionSums
            .Select(sum => sum.DataPoints.Single(p => Attributes(p.Attributes)["exception.type"].StringValue == "builtins.ValueError").AsInt)
            .ToList();
        // An up-down counter (the agent's open connections) stays cumulative whatever the preference.
        var agentOwn = LatestMetricsByInstance(receiver).Values.Single(entry => entry.Resource["service.name"].StringValue == "telemetry-agent");
        Assert.Equal(OpenTelemetry.Proto.Metrics.V1.AggregationTemporality.Cumulative,
            agentOwn.Metrics["telemetry_agent.connections.open"].Sum.AggregationTemporality);
        if (temporality == "delta")
        {
            // Delta: each export holds its interval's count; they add up to the total.
            Assert.All(exceptionSums, sum => Assert.Equal(OpenTelemetry.Proto.Metrics.V1.AggregationTemporality.Delta, sum.AggregationTemporality));
            Assert.True(counts.Count >= 2, $"{counts.Count} exports with ValueErrors");
            Assert.Equal(total, counts.Sum());
        }
        else
        {
            // Cumulative: never decreasing, ending at the total.
            Assert.All(exceptionSums, sum => Assert.Equal(OpenTelemetry.Proto.Metrics.V1.AggregationTemporality.Cumulative, sum.AggregationTemporality));
            Assert.Equal(counts.Order(), counts);
            Assert.Equal(total, counts[^1]);
        }

        // One record per interval in which the group changed: their counts add up to the total, none is empty.
        var records = LogRecords(receiver).Where(r => r.Resource["service.name"].StringValue == "bursty")
            .Select(r => Attributes(r.Record.Attributes))
            .Where(a => a["python.profile.exception.fingerprint"].StringValue == group.GetProperty("fingerprint").GetString())
            .ToList();
        Assert.True(records.Count >= 2, $"{records.Count} records");
        Assert.True(records.Count < exportsOfTheProcess.Count, "a record for an interval without a change");
        Assert.All(records, r => Assert.True(r["python.profile.exception.count"].IntValue > 0));
        Assert.Equal(total, records.Sum(r => r["python.profile.exception.count"].IntValue));
        Assert.Equal(total, records[^1]["python.profile.exception.count_total"].IntValue);
    }
}

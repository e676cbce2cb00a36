using System.Diagnostics;
using System.IO.Compression;
using OpenTelemetry.Proto.Collector.Profiles.V1Development;
using TelemetryAgent.EndToEnd.Tests.Support;
using TelemetryAgent.Testing;
using TelemetryAgent.OtlpReceiver;
using Xunit.Abstractions;
using Receiver = TelemetryAgent.OtlpReceiver.OtlpReceiver;

namespace TelemetryAgent.EndToEnd.Tests;

/// <summary>
/// Profiles from real Python programs through the real `telemetry-agent run` and `serve` into the real OTLP receiver:
/// decoded and folded again, they equal the agent's own profile.folded and calls.folded, value for value; so does
/// profile.pb.gz.
/// </summary>
public sealed class ProfilesExportTests(ITestOutputHelper output) : IDisposable
{
    private const string FixtureScript = "examples/fixture_app.py";

    private readonly TemporaryFolder _temp = new();

    public void Dispose() => _temp.Dispose();

    /// <summary>No OTLP settings or resource of the test's own environment may leak into the agent or the program.</summary>
    private static readonly Dictionary<string, string?> CleanEnvironment = new()
    {
        ["OTEL_EXPORTER_OTLP_ENDPOINT"] = null, ["OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT"] = null,
        ["OTEL_EXPORTER_OTLP_PROTOCOL"] = null, ["OTEL_EXPORTER_OTLP_PROFILES_PROTOCOL"] = null,
        ["OTEL_RESOURCE_ATTRIBUTES"] = null, ["OTEL_SERVICE_NAME"] = null,
    };

    private static string Endpoint(Receiver receiver, string protocol)
        => (protocol == "grpc" ? receiver.GrpcEndpoint : receiver.HttpEndpoint).AbsoluteUri;

    private static void AssertFoldedFilesEqual(string folder, IReadOnlyList<ExportProfilesServiceRequest> requests)
    {
        Assert.All(requests, ProfileFolding.AssertDictionaryRules);
        Assert.Equal(File.ReadAllText(Path.Combine(folder, "profile.folded")), ProfileFolding.FromOtlp(requests, "wall"));
        Assert.Equal(File.ReadAllText(Path.Combine(folder, "calls.folded")), ProfileFolding.FromOtlp(requests, "calls"));
    }

    private static Perftools.Profiles.Profile ReadPprof(string path)
    {
        using var gzip = new GZipStream(File.OpenRead(path), CompressionMode.Decompress);
        return Perftools.Profiles.Profile.Parser.ParseFrom(gzip);
    }

    [Theory]
    [InlineData("http/protobuf")]
    [InlineData("grpc")]
    public async Task Run_sends_the_fixtures_profile_and_writes_profile_pb_gz_that_equal_the_folded_files(string protocol)
    {
        await using var receiver = await Receiver.StartAsync();
        var folder = _temp.File("out");
        var run = await Processes.RunAgentAsync(
            ["run", "--otlp-endpoint", Endpoint(receiver, protocol), "--otlp-protocol", protocol, "-o", folder, FixtureScript],
            environment: CleanEnvironment);
        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Contains("profile.pb.gz", run.Stderr + run.Stdout);

        // `run` flushes its exporters before it exits: the profile is there already.
        var received = receiver.Profiles.Snapshot();
        var request = Assert.Single(received);
        AssertFoldedFilesEqual(folder, [request.Message]);
        var resource = request.Message.ResourceProfiles.Single().Resource.Attributes.ToDictionary(a => a.Key, a => a.Value);
        Assert.Equal("fixture_app", resource["service.name"].StringValue);
        Assert.Equal("cpython", resource["process.runtime.name"].StringValue);

        var pprof = ReadPprof(Path.Combine(folder, "profile.pb.gz"));
        Assert.Equal(File.ReadAllText(Path.Combine(folder, "profile.folded")), ProfileFolding.FromPprof(pprof, 0));
        Assert.Equal(File.ReadAllText(Path.Combine(folder, "calls.folded")), ProfileFolding.FromPprof(pprof, 1));

        var d = request.Message.Dictionary;
        output.WriteLine($"{protocol}: request {request.WireBytes} bytes on the wire; dictionary: {d.StringTable.Count} strings, " +
                         $"{d.FunctionTable.Count} functions, {d.StackTable.Count} stacks; profile.pb.gz {new FileInfo(Path.Combine(folder, "profile.pb.gz")).Length} bytes");
    }

    [Fact]
    public async Task Run_retries_while_the_collector_answers_unavailable_and_loses_nothing()
    {
        await using var receiver = await Receiver.StartAsync(new OtlpReceiverOptions
        {
            // Profiles' own requests: the SDK's signals (metrics, logs, start-up traces) retry on their own, silently.
            InitialFailures = FailurePlan.FirstRequests(3, retryAfter: TimeSpan.FromSeconds(1), signal: OtlpSignal.Profiles),
        });
        var folder = _temp.File("out");
        var run = await Processes.RunAgentAsync(["run", "--otlp-endpoint", Endpoint(receiver, "http/protobuf"), "-o", folder, FixtureScript],
            environment: CleanEnvironment);
        Assert.True(run.ExitCode == 0, run.ToString());

        Assert.Equal(3, receiver.Failures.Rejected);
        Assert.Contains("HTTP 503", run.Stderr);
        AssertFoldedFilesEqual(folder, receiver.Profiles.Select(request => request.Message).ToList());
    }

    [Fact]
    public async Task Run_waits_for_a_collector_that_is_down_and_loses_nothing()
    {
        using var ports = Receiver.ReservePorts();
        var folder = _temp.File("out");
        using var agent = Processes.Start("dotnet",
            [Processes.AgentDll, "run", "--otlp-endpoint", $"http://127.0.0.1:{ports.GrpcPort}", "--otlp-protocol", "grpc", "-o", folder, FixtureScript],
            environment: CleanEnvironment);
        agent.StandardInput.Close();
        var stdout = agent.StandardOutput.ReadToEndAsync();

        // The collector comes up only once the agent has said that it could not connect and will retry.
        var stderr = new System.Text.StringBuilder();
        Receiver? receiver = null;
        try
        {
            using var timeout = new CancellationTokenSource(Processes.DefaultTimeout);
            while (await agent.StandardError.ReadLineAsync(timeout.Token) is { } line)
            {
                stderr.AppendLine(line);
                if (receiver is null && line.Contains("retrying", StringComparison.Ordinal))
                {
                    receiver = await Receiver.StartAsync(ports);
                }
            }
            await agent.WaitForExitAsync(timeout.Token);
            Assert.True(agent.ExitCode == 0, $"exit {agent.ExitCode}\n{await stdout}\n{stderr}");
            Assert.True(receiver is not null, $"the agent never retried:\n{stderr}");
            AssertFoldedFilesEqual(folder, receiver.Profiles.Select(request => request.Message).ToList());
        }
        finally
        {
            if (receiver is not null) await receiver.DisposeAsync();
        }
    }

    [Fact]
    public async Task Serve_exports_every_interval_and_the_intervals_add_up_to_the_process()
    {
        await using var receiver = await Receiver.StartAsync();
        var socket = _temp.File("agent.sock");
        var outputRoot = _temp.File("out");
        using var agent = Processes.Start("dotnet",
            [Processes.AgentDll, "serve", "--socket", socket, "-o", outputRoot, "--export-interval", "0.5",
                "--otlp-endpoint", Endpoint(receiver, "grpc"), "--otlp-protocol", "grpc"],
            environment: CleanEnvironment);
        var started = Stopwatch.StartNew();
        while (!File.Exists(socket))
        {
            Assert.True(started.Elapsed < TimeSpan.FromSeconds(30), "the agent did not create its socket");
            await Task.Delay(50);
        }

        // Work in small steps until two interval profiles have arrived (however slow the machine), so that every
        // interval has some; then the final one follows when it ends. The test says when, through a file.
        var script = _temp.File("steady.py");
        var enough = _temp.File("enough");
        File.WriteAllText(script,
            "import os, sys, time\n\n" +
            "def step(i):\n    return sum(range(i % 50))\n\n" +
            "def main():\n    give_up = time.monotonic() + 120\n    n = 0\n" +
            "    while not os.path.exists(sys.argv[1]) and time.monotonic() < give_up:\n        step(n)\n        n += 1\n" +
            "        if n % 100 == 0:\n            time.sleep(0.01)\n\n" +
            "main()\n");
        var running = Processes.RunPythonAsync(["-m", "telemetry_shim", "--socket", socket, script, enough],
            environment: new Dictionary<string, string?>(CleanEnvironment) { ["PYTHONPATH"] = Repo.Path("python-shim") },
            timeout: TimeSpan.FromSeconds(180));
        await ServeAgent.WaitUntilAsync(() => receiver.Profiles.Count >= 2 || running.IsCompleted, "two interval profiles", seconds: 120);
        File.WriteAllText(enough, "");
        var program = await running;
        Assert.True(program.ExitCode == 0, program.ToString());

        while (ServeAgent.CompletedFolders(outputRoot).Length != 1)
        {
            Assert.True(started.Elapsed < TimeSpan.FromSeconds(60), "the process's folder was not written");
            await Task.Delay(50);
        }
        Assert.True(Transport.Native.SendSignal(agent.Id, 15));
        var finished = await Processes.WaitAsync(agent, TimeSpan.FromSeconds(30));
        Assert.True(finished.ExitCode == 0, finished.ToString());

        var requests = receiver.Profiles.Select(request => request.Message).ToList();
        output.WriteLine($"{requests.Count} profiles requests for a {program.Stdout.Length}-byte run; agent said: {finished.Stderr}");
        Assert.True(requests.Count >= 3, $"expected two interval profiles and the final one, got {requests.Count}");
        var folder = ServeAgent.CompletedFolders(outputRoot).Single();
        AssertFoldedFilesEqual(folder, requests);
        Assert.Equal(File.ReadAllText(Path.Combine(folder, "calls.folded")), ProfileFolding.FromPprof(ReadPprof(Path.Combine(folder, "profile.pb.gz")), 1));

        // Each interval begins where the previous one ended.
        var intervals = requests.Select(r => r.ResourceProfiles.Single().ScopeProfiles.Single().Profiles[0])
            .Select(p => (Start: p.TimeUnixNano, End: p.TimeUnixNano + p.DurationNano)).ToList();
        for (var i = 1; i < intervals.Count; i++) Assert.Equal(intervals[i - 1].End, intervals[i].Start);
    }
}

using TelemetryAgent.EndToEnd.Tests.Support;
using TelemetryAgent.Testing;

namespace TelemetryAgent.EndToEnd.Tests;

/// <summary>The command line a user reads: help for every option, and Ctrl-C reaching the program.</summary>
public sealed class CommandLineTests : IDisposable
{
    private readonly TemporaryFolder _temp = new();

    public void Dispose() => _temp.Dispose();

    [Theory]
    [InlineData("run", new[] { "--python", "--output", "--service-name", "--top", "--summary-functions", "--child-grace", "--shim-path", "--otlp-endpoint", "--otlp-protocol", "--otlp-retry", "--otlp-retry-directory", "<program>" })]
    [InlineData("serve", new[] { "--socket", "--output", "--otlp-endpoint", "--otlp-protocol", "--otlp-retry", "--otlp-retry-directory", "--export-interval" })]
    public async Task HelpExplainsEveryOption(string command, string[] options)
    {
        var help = await Processes.RunAgentAsync([command, "--help"]);
        Assert.True(help.ExitCode == 0, help.ToString());
        foreach (var option in options)
        {
            var line = help.Stdout.Split('\n').FirstOrDefault(l => l.TrimStart().StartsWith(option, StringComparison.Ordinal) || l.Contains($" {option} ", StringComparison.Ordinal));
            Assert.True(line is not null, $"{option} missing from:\n{help.Stdout}");
            Assert.True(line!.Trim().Length > option.Length + 20, $"{option} has no explanation: '{line}'");
        }
    }

    [Theory]
    [InlineData("run --otlp-protocol bogus app.py", "telemetry-agent run: --otlp-protocol takes grpc or http/protobuf, not 'bogus'.")]
    [InlineData("serve --otlp-retry sometimes", "telemetry-agent serve: --otlp-retry takes in_memory, disk or none, not 'sometimes'.")]
    [InlineData("run --mode fast app.py", "telemetry-agent run: --mode takes full, burst or exceptions, not 'fast'.")]
    [InlineData("run --top many app.py", "telemetry-agent run: --top takes a whole number, 0 or more, not 'many'.")]
    [InlineData("serve --max-threads 0", "telemetry-agent serve: --max-threads takes a whole number from 1 to 16777215, not '0'.")]
    [InlineData("serve --export-interval soon", "telemetry-agent serve: --export-interval takes a number of seconds from 0.1 to 86400, not 'soon'.")]
    [InlineData("serve --shutdown-timeout 0", "telemetry-agent serve: --shutdown-timeout takes a number of seconds from 1 to 3600, not '0'.")]
    [InlineData("serve --allow-uid no-such-user-here", "telemetry-agent serve: --allow-uid: no user named no-such-user-here")]
    public async Task A_wrong_value_is_one_line_naming_the_option_and_what_it_takes(string arguments, string error)
    {
        // No endpoint is set: a wrong export option is an error even when export is off.
        var result = await Processes.RunAgentAsync(arguments.Split(' '), workingDirectory: _temp.Path,
            environment: OtlpExportTests.CleanEnvironment(), timeout: TimeSpan.FromSeconds(60));
        Assert.True(result.ExitCode == 2, result.ToString());
        Assert.Equal(error + "\n", result.Stderr);
        Assert.Equal("", result.Stdout);
    }

    [Fact]
    public async Task InterruptReachesTheProgramAndOutputsAreStillWritten()
    {
        var script = _temp.File("wait.py");
        File.WriteAllText(script, """
            import faulthandler, signal, sys, time

            # Should the program hang, the test asks it for every thread's Python stack before it kills it.
            faulthandler.register(signal.SIGUSR1, all_threads=True)

            # Python leaves SIGINT alone when it starts with it ignored (a background job of a non-interactive shell):
            # the test needs the usual handler whatever started it.
            signal.signal(signal.SIGINT, signal.default_int_handler)

            def wait_forever():
                try:
                    # Ready only inside the handler's reach: the test's SIGINT may land as soon as the line is written.
                    print("ready", flush=True)
                    while True:
                        time.sleep(0.01)
                except KeyboardInterrupt:
                    print("interrupted", flush=True)
                    raise SystemExit(7)

            # How this process receives signals, for the failure message should SIGINT never arrive.
            with open("/proc/self/status") as status:
                print(*(line.strip() for line in status if line.startswith(("Sig", "Shd"))), sep="; ", file=sys.stderr, flush=True)
            wait_forever()
            """);
        // SIGINT at its default, as a terminal's job has it: a background job of a non-interactive shell (how a CI
        // runner may start this suite) inherits SIGINT ignored, and an agent started so keeps it ignored, as any program would.
        using var agent = Processes.Start("env", ["--default-signal=INT", "dotnet", Processes.AgentDll, "run", "-o", _temp.File("out"), script]);
        Assert.Equal("ready", await agent.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(60)));
        agent.StandardInput.Close();
        // No terminal here, so only the agent gets the signal: it must pass it on to the program.
        Assert.True(Transport.Native.SendSignal(agent.Id, 2));
        var finished = await Processes.WaitAsync(agent, TimeSpan.FromSeconds(60), beforeKill: process =>
        {
            foreach (var child in Processes.ChildrenOf(process.Id)) Transport.Native.SendSignal(child, 10); // SIGUSR1
        });
        Assert.True(finished.ExitCode == 7, finished.ToString());
        Assert.Contains("interrupted", finished.Stdout);
        Assert.Contains("wait_forever", File.ReadAllText(_temp.File("out/calls.folded")));
    }
}

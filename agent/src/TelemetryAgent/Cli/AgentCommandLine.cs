using System.CommandLine;

namespace TelemetryAgent.Cli;

/// <summary>The `telemetry-agent` command line: `run`, `serve`, and `top`, `snapshot`, `status` over serve's query API.</summary>
public static class AgentCommandLine
{
    public static int Invoke(string[] args)
    {
        // A Lambda extension's start is on every cold start's path (Lambda starts the function only once it has
        // registered): the other commands' options are not even made.
        RootCommand root = args.Length > 0 && args[0] == "lambda-extension"
            ? new RootCommand("TelemetryAgent as an AWS Lambda extension.") { LambdaExtensionCommand.Create() }
            : Full();
        // `run`'s program arguments belong to the program: hand System.CommandLine only the agent's part.
        if (args.Length > 0 && args[0] == "run") args = RunCommand.SeparateProgram(args);
        return Invoke(root, args);
    }

    private static RootCommand Full() => new(
            "TelemetryAgent: exact call trees of Python 3.12+ programs from sys.monitoring (PEP 669).\n" +
            "`run` profiles one program (and its child processes) and writes flame graphs when it exits;\n" +
            "`serve` is the long-lived agent that any number of shimmed processes connect to;\n" +
            "`top`, `snapshot` and `status` ask a running `serve` about the processes it watches and about itself;\n" +
            "`lambda-extension` runs the agent as an AWS Lambda extension.")
        {
            RunCommand.Create(),
            ServeCommand.Create(),
            TopCommand.Create(),
            SnapshotCommand.Create(),
            StatusCommand.Create(),
            LambdaExtensionCommand.Create(),
        };

    private static int Invoke(RootCommand root, string[] args)
    {
        var parsed = root.Parse(args);
        // A wrong value is one line per error, naming the option and what it takes (OptionValues), not the whole help.
        if (parsed.Errors.Count > 0 && parsed.CommandResult.Command != root)
        {
            foreach (var message in parsed.Errors.Select(error => error.Message).Distinct())
                Console.Error.WriteLine($"telemetry-agent {parsed.CommandResult.Command.Name}: {string.Join(' ', message.Split('\n', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))}");
            return 2;
        }
        // `run` passes SIGINT and SIGTERM on to the program and `serve` stops on them, each in its own time:
        // System.CommandLine must not end the process 2 s after a signal (exit 130 or 143) in the middle of that.
        // The other commands keep its handling (Ctrl-C cancels them).
        var invocation = new InvocationConfiguration();
        if (args.Length > 0 && args[0] is "run" or "serve" or "lambda-extension") invocation.ProcessTerminationTimeout = null;
        var code = parsed.Invoke(invocation);
        // A command line that does not parse exits 2, like every other usage error (`status` gives 1 a meaning).
        return parsed.Errors.Count > 0 ? 2 : code;
    }
}

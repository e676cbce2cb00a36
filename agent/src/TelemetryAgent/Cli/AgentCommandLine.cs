using System.CommandLine;

namespace TelemetryAgent.Cli;

/// <summary>The `telemetry-agent` command line: `run`, `serve`, and `top`, `snapshot`, `status` over serve's query API.</summary>
public static class AgentCommandLine
{
    public static int Invoke(string[] args)
    {
        var root = new RootCommand(
            "TelemetryAgent: exact call trees of Python 3.12+ programs from sys.monitoring (PEP 669).\n" +
            "`run` profiles one program (and its child processes) and writes flame graphs when it exits;\n" +
            "`serve` is the long-lived agent that any number of shimmed processes connect to;\n" +
            "`top`, `snapshot` and `status` ask a running `serve` about the processes it watches and about itself.")
        {
            RunCommand.Create(),
            ServeCommand.Create(),
            TopCommand.Create(),
            SnapshotCommand.Create(),
            StatusCommand.Create(),
        };
        // `run`'s program arguments belong to the program: hand System.CommandLine only the agent's part.
        if (args.Length > 0 && args[0] == "run") args = RunCommand.SeparateProgram(args);
        var parsed = root.Parse(args);
        // serve owns SIGINT and SIGTERM (an orderly stop within --shutdown-timeout). System.CommandLine's own handling
        // would cancel the action and, 2 s later, end the process with exit code 143 in the middle of that stop.
        var invocation = new InvocationConfiguration();
        if (args.Length > 0 && args[0] == "serve") invocation.ProcessTerminationTimeout = null;
        var code = parsed.Invoke(invocation);
        // A command line that does not parse exits 2, like every other usage error (`status` gives 1 a meaning).
        return parsed.Errors.Count > 0 ? 2 : code;
    }
}

using System.Runtime.Versioning;
using TelemetryAgent.Cli;

// Unix sockets, signals and sys.monitoring's users: the agent runs where Python services run.
[assembly: UnsupportedOSPlatform("windows")]

return AgentCommandLine.Invoke(args);

using System.CommandLine;
using System.Globalization;
using Grpc.Core;
using TelemetryAgent.Live.Contracts;

namespace TelemetryAgent.Cli;

/// <summary>
/// `telemetry-agent status`: the health of a running `serve`, and an exit code for systemd and Kubernetes probes
/// (docs/operations.md "Status and probes").
/// </summary>
public static class StatusCommand
{
    /// <summary>The exit codes, in one place.</summary>
    public static class ExitCodes
    {
        public const int Healthy = 0;
        public const int Degraded = 1;
        public const int Usage = 2;
        public const int Unreachable = 3;
        public const int NotReady = 4;
    }

    private static readonly Option<string> Check = new("--check")
    {
        Description = "What the exit code says: healthy (0 ok, 1 degraded, 4 not ready), live (0 when the agent answers: a liveness probe) " +
                      "or ready (0 when it accepts shims, 4 when not: a readiness probe). 3: the agent cannot be reached, in every case.",
        DefaultValueFactory = _ => "healthy",
    };

    private static readonly Option<double> Timeout = new("--timeout")
    {
        Description = "Seconds to wait for the answer.",
        DefaultValueFactory = _ => 5.0,
    };

    private static readonly Option<bool> Quiet = new("--quiet", "-q") { Description = "Print nothing unless the check fails." };

    private static readonly Option<bool> Json = new("--json") { Description = "Print the agent's answer as JSON." };

    public static Command Create()
    {
        var command = new Command("status", "The health of a running `telemetry-agent serve`: connections, events/s, drops, memory, export; " +
                                            "exit 0 healthy, 1 degraded, 3 unreachable, 4 not ready (probes: --check live|ready).")
        {
            Check, Timeout, Quiet, Json,
        };
        QueryClient.AddTo(command);
        Check.AcceptOnlyFromAmong("healthy", "live", "ready");
        command.SetAction((result, cancellation) => ExecuteAsync(result, cancellation));
        return command;
    }

    private static async Task<int> ExecuteAsync(ParseResult result, CancellationToken cancellation)
    {
        if (QueryClient.Open(result, out var error) is not { } client)
        {
            Console.Error.WriteLine($"telemetry-agent status: {error}");
            return ExitCodes.Usage;
        }
        var check = result.GetValue(Check)!;
        var quiet = result.GetValue(Quiet);
        StatusResponse status;
        try
        {
            status = await client.GetStatusAsync(new StatusRequest(),
                deadline: DateTime.UtcNow.AddSeconds(Math.Clamp(result.GetValue(Timeout), 0.1, 600)), cancellationToken: cancellation);
        }
        catch (RpcException e)
        {
            Console.Error.WriteLine($"telemetry-agent status: {QueryClient.Explain(e, result)}");
            return ExitCodes.Unreachable;
        }
        var code = check switch
        {
            "live" => ExitCodes.Healthy,
            "ready" => status.Ready ? ExitCodes.Healthy : ExitCodes.NotReady,
            _ => !status.Ready ? ExitCodes.NotReady : status.State == "ok" ? ExitCodes.Healthy : ExitCodes.Degraded,
        };
        if (quiet && code == ExitCodes.Healthy) return code;
        if (result.GetValue(Json)) Console.WriteLine(Google.Protobuf.JsonFormatter.Default.Format(status));
        else Print(status, Console.Out);
        return code;
    }

    private static void Print(StatusResponse status, TextWriter output)
    {
        var inv = CultureInfo.InvariantCulture;
        var up = DateTimeOffset.UtcNow - DateTimeOffset.UnixEpoch.AddTicks(status.StartedUnixNs / 100);
        output.WriteLine($"telemetry-agent: {status.State}, {(status.Ready ? "ready" : "not ready")}; up {Duration(up)}; version {status.Version}");
        var rejected = status.ConnectionsRejected.Count == 0 ? "0"
            : string.Join(", ", status.ConnectionsRejected.Select(pair => string.Create(inv, $"{pair.Key} {pair.Value:N0}")));
        output.WriteLine(string.Create(inv, $"connections: {status.ConnectionsActive:N0} open, {status.ConnectionsAccepted:N0} accepted, rejected {rejected}"));
        output.WriteLine(string.Create(inv, $"processes: {status.ProcessesRunning} running, {status.ProcessesEnded} ended and kept"));
        output.WriteLine(string.Create(inv,
            $"events: {status.EventsReceived:N0} received, {status.EventsPerSecond:N0}/s over the last minute; shims dropped {status.EventsDroppedByShims:N0} ({status.DropsPerSecond:0.#}/s)"));
        output.WriteLine(string.Create(inv, $"memory for aggregates: {status.MemoryReservedBytes >> 20:N0} MiB of {status.MemoryLimitBytes >> 20:N0} MiB"));
        output.WriteLine($"export: {status.Export}");
        foreach (var check in status.Checks) output.WriteLine($"  {check.State,-4}  {check.Name}: {check.Detail}");
    }

    private static string Duration(TimeSpan span) => span.TotalHours >= 1
        ? $"{(int)span.TotalHours}h{span.Minutes:00}m"
        : span.TotalMinutes >= 1 ? $"{span.Minutes}m{span.Seconds:00}s" : $"{Math.Max(0, span.Seconds)}s";
}

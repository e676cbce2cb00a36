using System.CommandLine;
using System.Runtime.InteropServices;
using TelemetryAgent.Export;
using TelemetryAgent.Export.Settings;
using TelemetryAgent.Hosting;
using TelemetryAgent.Output;

namespace TelemetryAgent.Cli;

/// <summary>
/// `telemetry-agent serve`: the long-lived agent. Any number of processes started under the shim connect to
/// its socket; each one's flame graphs are written when it ends. Stops on SIGINT or SIGTERM.
/// </summary>
public static class ServeCommand
{
    /// <summary>The shim's default, so both sides agree with no setting (python-shim/telemetry_shim).</summary>
    public static string DefaultSocketPath()
    {
        if (Environment.GetEnvironmentVariable("TELEMETRY_AGENT_SOCKET") is { Length: > 0 } configured) return configured;
        if (Environment.GetEnvironmentVariable("XDG_RUNTIME_DIR") is { Length: > 0 } runtime)
            return Path.Combine(runtime, "telemetry-agent.sock");
        return $"/tmp/telemetry-agent-{Transport.Native.CurrentUserId()}.sock";
    }

    private static readonly Option<string?> Socket = new("--socket")
    {
        Description = "The Unix socket to listen on (created owner-only; a stale socket left by a dead agent is replaced). " +
                      "Default: $TELEMETRY_AGENT_SOCKET, else $XDG_RUNTIME_DIR/telemetry-agent.sock, else /tmp/telemetry-agent-<uid>.sock: " +
                      "the same default as the shim's.",
    };

    private static readonly Option<string> Output = new("--output", "-o")
    {
        Description = "The folder under which each finished process gets <service>-<pid>-<time>/ with its flame graphs and summary.",
        DefaultValueFactory = _ => "telemetry-out",
    };

    private static readonly Option<double> ShutdownTimeout = OptionValues.Seconds("--shutdown-timeout", 10.0, 1, 3600,
        "Seconds that stopping (SIGTERM, Ctrl-C) may take: connections still open get 1 s to end, then are closed, " +
        "every process's outputs are written and pending OTLP exports sent; what is not done by then is lost.");

    public static Command Create()
    {
        var command = new Command("serve", "Run the agent as a daemon for any number of shimmed processes " +
                                           "(`python -m telemetry_shim app.py`, or the sitecustomize autostart).")
        {
            Socket, Output, ShutdownTimeout, ExportOptions.Otlp, ExportOptions.Endpoint, ExportOptions.Protocol, ExportOptions.Retry,
            ExportOptions.RetryDirectory, ExportOptions.ExportInterval,
        };
        AgentOptions.AddTo(command);
        LiveOptions.AddTo(command);
        command.SetAction((result, _) =>
        {
            if (ExportOptions.Resolve(result, out var problem) is not { } otlp)
            {
                Console.Error.WriteLine($"telemetry-agent serve: {problem}");
                return Task.FromResult(2);
            }
            if (ExportOptions.Interval(result, out problem) is not { } interval)
            {
                Console.Error.WriteLine($"telemetry-agent serve: {problem}");
                return Task.FromResult(2);
            }
            return ExecuteAsync(result.GetValue(Socket) ?? DefaultSocketPath(), result.GetValue(Output)!, otlp,
                interval, TimeSpan.FromSeconds(result.GetValue(ShutdownTimeout)), result);
        });
        return command;
    }

    private static async Task<int> ExecuteAsync(string socketPath, string outputRoot, OtlpSettings otlp, TimeSpan exportInterval,
        TimeSpan shutdownTimeout, ParseResult options)
    {
        var log = Console.Error;
        if (AgentOptions.Read(options, out var optionError) is not var (limits, access, redactor))
        {
            log.WriteLine($"telemetry-agent serve: {optionError}");
            return 2;
        }
        if (LiveOptions.Read(options, socketPath, out var liveError) is not var (liveOptions, timeline, retention))
        {
            log.WriteLine($"telemetry-agent serve: {liveError}");
            return 2;
        }
        var stop = new TaskCompletionSource();
        using var onInt = PosixSignalRegistration.Create(PosixSignal.SIGINT, Stop);
        using var onTerm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, Stop);

        outputRoot = Path.GetFullPath(outputRoot);
        var statistics = new AgentStatistics();
        var export = ExportPipeline.Create(new ExportContext(otlp, log, exportInterval, statistics.Snapshot));
        var host = new AgentHost(log, limits, observers: [new ProcessFolders(FolderExporter.Standard(), outputRoot, log), .. export.Observers], statistics)
        {
            Verbose = true,
            RetainProfiles = false,
            CheckpointInterval = export.IsEmpty ? null : exportInterval,
            Access = access,
            Redactor = redactor,
            Catalog = new Live.ProcessCatalog(retention),
            Timeline = timeline,
        };
        try
        {
            host.Listen(socketPath);
        }
        catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or UnauthorizedAccessException or ArgumentException)
        {
            log.WriteLine($"telemetry-agent serve: cannot listen on {socketPath}: {e.Message}");
            await host.DisposeAsync().ConfigureAwait(false);
            return 2;
        }
        var live = new LiveViews(host, liveOptions, () => otlp.Enabled ? $"on: {ExportOptions.Describe(otlp)}" : "off", log);
        try
        {
            await live.StartAsync(CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or UnauthorizedAccessException or ArgumentException
                                      or InvalidOperationException)
        {
            log.WriteLine($"telemetry-agent serve: cannot start the live views: {e.Message}");
            await live.DisposeAsync().ConfigureAwait(false);
            await host.DisposeAsync().ConfigureAwait(false);
            return 2;
        }
        log.WriteLine($"telemetry-agent: listening on {host.SocketPath}; outputs under {outputRoot}. Stop with Ctrl-C or SIGTERM.");
        log.WriteLine($"telemetry-agent: queries (top, snapshot, status) on {live.QuerySocketPath}" +
                      (liveOptions.QueryTcp is { } tcp ? $" and {tcp}" : "") +
                      (live.HttpAddress is { } ui ? $"; web UI at {ui}" : ""));
        log.WriteLine(otlp.Enabled
            ? $"telemetry-agent: exporting over OTLP every {exportInterval.TotalSeconds:0.#} s: {ExportOptions.Describe(otlp)}"
            : otlp.OffBecause is { } why ? $"telemetry-agent: OTLP export is off ({why})."
            : "telemetry-agent: OTLP export is off (no endpoint configured: set OTEL_EXPORTER_OTLP_ENDPOINT, --otlp-endpoint or --otlp).");
        await Task.WhenAny(stop.Task, host.Accepting).ConfigureAwait(false);
        var exitCode = 0;
        if (host.Accepting is { IsFaulted: true } failed)
        {
            log.WriteLine($"telemetry-agent: the socket stopped accepting connections: {failed.Exception!.InnerException?.Message}");
            exitCode = 1;
        }
        else
        {
            log.WriteLine("telemetry-agent: stopping; connections still open are closed and written.");
        }
        // One deadline for the whole stop: open connections completed and written, then pending exports sent.
        var stopping = System.Diagnostics.Stopwatch.StartNew();
        await live.DisposeAsync().ConfigureAwait(false);
        var disposed = host.DisposeAsync().AsTask();
        if (await Task.WhenAny(disposed, Task.Delay(shutdownTimeout)).ConfigureAwait(false) != disposed)
        {
            log.WriteLine($"telemetry-agent: stopping took longer than {shutdownTimeout.TotalSeconds:0.#} s (--shutdown-timeout); " +
                          "outputs not written by now are lost.");
            exitCode = 1;
        }
        var left = shutdownTimeout - stopping.Elapsed;
        await export.ShutdownAsync(left > TimeSpan.Zero ? left : TimeSpan.Zero).ConfigureAwait(false);
        log.WriteLine($"telemetry-agent: statistics: {host.Statistics.Snapshot()}");
        return exitCode;

        void Stop(PosixSignalContext context)
        {
            context.Cancel = true;
            stop.TrySetResult();
        }
    }
}

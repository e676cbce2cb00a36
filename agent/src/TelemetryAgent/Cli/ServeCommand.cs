using System.CommandLine;
using System.Runtime.InteropServices;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Hosting.Systemd;
using Microsoft.Extensions.Logging;
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

    private static readonly Option<string?> LogFormatOption = new("--log-format")
    {
        Description = "How the agent's log is written on stderr: plain (\"telemetry-agent: ...\" lines), json (one JSON object per " +
                      "line, with level and message) or systemd (<N> priority prefixes for the journal). Default: systemd when " +
                      "running as a systemd service, else plain.",
    };

    public static Command Create()
    {
        var command = new Command("serve", "Run the agent as a daemon for any number of shimmed processes " +
                                           "(`python -m telemetry_shim app.py`, or the sitecustomize autostart).")
        {
            Socket, Output, ShutdownTimeout, ExportOptions.Otlp, ExportOptions.Endpoint, ExportOptions.Protocol, ExportOptions.Retry,
            ExportOptions.RetryDirectory, ExportOptions.ExportInterval, LogFormatOption,
        };
        OptionValues.OneOf(LogFormatOption, "plain", "json", "systemd");
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
                interval, TimeSpan.FromSeconds(result.GetValue(ShutdownTimeout)), ReadLogFormat(result), result);
        });
        return command;
    }

    private static LogFormat ReadLogFormat(ParseResult result) => result.GetValue(LogFormatOption)?.Trim().ToLowerInvariant() switch
    {
        "plain" => LogFormat.Plain,
        "json" => LogFormat.Json,
        "systemd" => LogFormat.Systemd,
        _ => AgentLogging.DefaultFormat,
    };

    private static async Task<int> ExecuteAsync(string socketPath, string outputRoot, OtlpSettings otlp, TimeSpan exportInterval,
        TimeSpan shutdownTimeout, LogFormat logFormat, ParseResult options)
    {
        // Usage errors come before there is a log: one line on stderr and exit code 2, as for every command.
        if (AgentOptions.Read(options, out var optionError) is not var (limits, access, redactor))
        {
            Console.Error.WriteLine($"telemetry-agent serve: {optionError}");
            return 2;
        }
        if (LiveOptions.Read(options, socketPath, out var liveError) is not var (liveOptions, timeline, retention))
        {
            Console.Error.WriteLine($"telemetry-agent serve: {liveError}");
            return 2;
        }
        outputRoot = Path.GetFullPath(outputRoot);

        // The host's lifetime takes the signals when it starts; one before then (while the host is built) stops the agent
        // the same way, exit 0 once stopped, rather than ending the process with 130 or 143.
        IHostApplicationLifetime? lifetime = null;
        var stopRequested = 0;
        var earlyInterrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, StopEarly);
        var earlyTerminate = PosixSignalRegistration.Create(PosixSignal.SIGTERM, StopEarly);

        using var host = BuildHost(logFormat, shutdownTimeout, services =>
        {
            var log = services.GetRequiredService<ILoggerFactory>().CreateLogger("telemetry-agent");
            var statistics = new AgentStatistics();
            var export = ExportPipeline.Create(new ExportContext(otlp, new LogLineWriter(log, LogLevel.Warning), exportInterval, statistics.Snapshot));
            var folders = new ProcessFolders(FolderExporter.Standard(), outputRoot, new LogLineWriter(log, LogLevel.Information),
                problems: new LogLineWriter(log, LogLevel.Error));
            var agent = new AgentHost(log, limits, observers: [folders, .. export.Observers], statistics)
            {
                Verbose = true,
                RetainProfiles = false,
                CheckpointInterval = export.IsEmpty ? null : exportInterval,
                Access = access,
                Redactor = redactor,
                Catalog = new Live.ProcessCatalog(retention),
                Timeline = timeline,
            };
            var live = new LiveViews(agent, liveOptions, () => otlp.Enabled ? $"on: {ExportOptions.Describe(otlp)}" : "off", log);
            var exporting = otlp.Enabled
                ? $"exporting over OTLP every {exportInterval.TotalSeconds:0.#} s: {ExportOptions.Describe(otlp)}"
                : otlp.OffBecause is { } why ? $"OTLP export is off ({why})."
                : "OTLP export is off (no endpoint configured: set OTEL_EXPORTER_OTLP_ENDPOINT, --otlp-endpoint or --otlp).";
            return new AgentService(agent, socketPath, live, export, new ServeAnnouncement(outputRoot, exporting), shutdownTimeout,
                services.GetRequiredService<IHostApplicationLifetime>(), log);
        });
        Interlocked.Exchange(ref lifetime, host.Services.GetRequiredService<IHostApplicationLifetime>());
        if (Volatile.Read(ref stopRequested) != 0) lifetime.StopApplication();

        var service = host.Services.GetRequiredService<AgentService>();
        try
        {
            await host.StartAsync().ConfigureAwait(false);
        }
        catch (AgentStartException)
        {
            await service.AbandonAsync().ConfigureAwait(false);
            return 2;
        }
        catch (OperationCanceledException) when (lifetime.ApplicationStopping.IsCancellationRequested)
        {
            // Stopped while starting: the stop below runs as after any signal.
        }
        finally
        {
            // The host's lifetime has had the signals since its start began (ConsoleLifetime, or SystemdLifetime: SIGTERM only).
            earlyInterrupt.Dispose();
            earlyTerminate.Dispose();
        }
        await host.WaitForShutdownAsync().ConfigureAwait(false);
        return service.ExitCode;

        void StopEarly(PosixSignalContext context)
        {
            context.Cancel = true;
            Interlocked.Exchange(ref stopRequested, 1);
            Volatile.Read(ref lifetime)?.StopApplication();
        }
    }

    /// <summary>
    /// serve as a Generic Host with nothing of its defaults (no configuration files, no environment-named settings): one
    /// hosted service, the log in the chosen format on stderr, and the lifetime that fits where it runs.
    /// </summary>
    private static IHost BuildHost(LogFormat logFormat, TimeSpan shutdownTimeout, Func<IServiceProvider, AgentService> createAgent)
    {
        var builder = Host.CreateEmptyApplicationBuilder(new HostApplicationBuilderSettings { ApplicationName = "telemetry-agent" });
        builder.Services.Configure<HostOptions>(options => options.ShutdownTimeout = shutdownTimeout);
        builder.Services.AddSingleton(createAgent);
        builder.Services.AddHostedService(services => services.GetRequiredService<AgentService>());
        if (SystemdHelpers.IsSystemdService() || Environment.GetEnvironmentVariable("NOTIFY_SOCKET") is { Length: > 0 })
        {
            // systemd's Type=notify (or any supervisor that sets NOTIFY_SOCKET): READY=1 once the host has started, that is
            // once the sockets accept connections (AgentService), and STOPPING=1 when it begins to stop. This lifetime
            // stops on SIGTERM, the one signal systemd sends.
            builder.Services.AddSingleton<ISystemdNotifier, SystemdNotifier>();
            builder.Services.AddSingleton<IHostLifetime, SystemdLifetime>();
        }
        else
        {
            // SIGINT, SIGTERM and SIGQUIT stop the host; its own "Application started" lines are not the agent's.
            builder.Services.Configure<ConsoleLifetimeOptions>(options => options.SuppressStatusMessages = true);
        }
        AgentLogging.Configure(builder.Logging, logFormat);
        return builder.Build();
    }
}

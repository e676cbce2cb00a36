using System.CommandLine;
using System.Diagnostics;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using TelemetryAgent.Export;
using TelemetryAgent.Export.Settings;
using TelemetryAgent.Hosting;
using TelemetryAgent.Lambda;
using TelemetryAgent.Transport;

namespace TelemetryAgent.Cli;

/// <summary>
/// `telemetry-agent lambda-extension`: the agent as an AWS Lambda external extension (deploy/lambda lays out the layer).
/// It registers with the Extensions API at AWS_LAMBDA_RUNTIME_API, listens for the function's shim, and exports over
/// OTLP after every invocation, before Lambda freezes the environment (<see cref="LambdaExtension"/>).
/// </summary>
public static class LambdaExtensionCommand
{
    public const string RuntimeApiVariable = "AWS_LAMBDA_RUNTIME_API";

    /// <summary>--flush-timeout's value where nobody writes the command line: a function's environment variables.</summary>
    public const string FlushTimeoutVariable = "TELEMETRY_LAMBDA_FLUSH_TIMEOUT";

    private const double MinFlushSeconds = 0.05, MaxFlushSeconds = 60;

    private static readonly Option<string?> Socket = new("--socket")
    {
        Description = "The Unix socket to listen on. Default: the shim's default ($TELEMETRY_AGENT_SOCKET, else " +
                      "$XDG_RUNTIME_DIR/telemetry-agent.sock, else /tmp/telemetry-agent-<uid>.sock).",
    };

    private static readonly Option<string> Name = new("--name")
    {
        Description = "The name the extension registers under: its file's name in /opt/extensions, as Lambda requires.",
        DefaultValueFactory = _ => "telemetry-agent",
    };

    private static readonly Option<double> FlushTimeout = OptionValues.Seconds("--flush-timeout", LambdaExtensionSettings.Default.FlushTimeout.TotalSeconds,
        MinFlushSeconds, MaxFlushSeconds, "Seconds the export after an invocation may take before the extension lets Lambda freeze the environment; " +
                  $"what is not sent by then goes out with a later invocation or at SHUTDOWN. Default: ${FlushTimeoutVariable}, else 2.");

    public static Command Create()
    {
        var command = new Command("lambda-extension", "Run as an AWS Lambda external extension: export each invocation's data over " +
                                                      "OTLP before the environment is frozen (deploy/lambda).")
        {
            Socket, Name, FlushTimeout, ExportOptions.Otlp, ExportOptions.Endpoint, ExportOptions.Protocol, ExportOptions.Retry,
            ExportOptions.RetryDirectory,
        };
        command.SetAction((result, cancel) =>
        {
            if (ExportOptions.Resolve(result, out var problem) is not { } otlp)
            {
                Console.Error.WriteLine($"telemetry-agent lambda-extension: {problem}");
                return Task.FromResult(2);
            }
            if (Environment.GetEnvironmentVariable(RuntimeApiVariable) is not { Length: > 0 } runtimeApi)
            {
                Console.Error.WriteLine($"telemetry-agent lambda-extension: {RuntimeApiVariable} is not set: this command runs as a Lambda extension " +
                                        "(for anywhere else, see `serve`).");
                return Task.FromResult(2);
            }
            var flushSeconds = result.GetValue(FlushTimeout);
            if (result.GetResult(FlushTimeout) is not { Implicit: false } && Environment.GetEnvironmentVariable(FlushTimeoutVariable) is { Length: > 0 } fromEnvironment)
            {
                if (!double.TryParse(fromEnvironment, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out flushSeconds)
                    || !(flushSeconds >= MinFlushSeconds && flushSeconds <= MaxFlushSeconds))
                {
                    Console.Error.WriteLine($"telemetry-agent lambda-extension: {FlushTimeoutVariable} takes a number of seconds from {MinFlushSeconds} to {MaxFlushSeconds}, not \"{fromEnvironment}\"");
                    return Task.FromResult(2);
                }
            }
            var settings = LambdaExtensionSettings.Default with { FlushTimeout = TimeSpan.FromSeconds(flushSeconds) };
            return ExecuteAsync(runtimeApi, result.GetValue(Name)!, result.GetValue(Socket) ?? ServeCommand.DefaultSocketPath(), otlp, settings);
        });
        return command;
    }

    private static async Task<int> ExecuteAsync(string runtimeApi, string name, string socketPath, OtlpSettings otlp, LambdaExtensionSettings settings)
    {
        var started = Stopwatch.StartNew();
        var log = new PlainLoggerProvider(Console.Error).CreateLogger("lambda-extension");
        using var api = new ExtensionsApiClient(runtimeApi);
        // Lambda stops the extension with SHUTDOWN, not a signal; SIGTERM before then is a kill on its way.
        using var stop = new CancellationTokenSource();
        using var terminate = PosixSignalRegistration.Create(PosixSignal.SIGTERM, context =>
        {
            context.Cancel = true;
            stop.Cancel();
        });
        // Lambda starts the function's runtime once every extension has registered, and its shim connects at once: the
        // socket is bound first (its backlog holds the connection), then registration, and only then the export's
        // set-up, which takes longer than both.
        System.Net.Sockets.Socket listening;
        try
        {
            listening = UnixSocketListener.BindListening(ref socketPath);
        }
        catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or UnauthorizedAccessException or ArgumentException)
        {
            log.LogError("cannot listen on {Socket}: {Reason}", socketPath, e.Message);
            return 1;
        }
        try
        {
            await api.RegisterAsync(name, stop.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is ExtensionsApiException or System.Net.Sockets.SocketException or IOException or OperationCanceledException)
        {
            listening.Dispose();
            log.LogError("cannot register with the Lambda Extensions API at {Api}: {Reason}", runtimeApi, e.Message);
            return 1;
        }
        var registered = started.Elapsed;
        var statistics = new AgentStatistics();
        var export = ExportPipeline.Create(new ExportContext(otlp, new LogLineWriter(log, LogLevel.Warning), CheckpointInterval: null, statistics.Snapshot));
        // Verbose: a line per process (its connection and how it ended), a few per environment.
        await using var host = new AgentHost(log, observers: export.Observers, statistics: statistics) { Verbose = true };
        host.Listen(listening, socketPath);
        log.LogInformation("registered as {Name} in {Milliseconds:0} ms; listening on {Socket}; {Export}", name, registered.TotalMilliseconds,
            host.SocketPath, otlp.Enabled ? $"exporting after each invocation: {ExportOptions.Describe(otlp)}"
                : "OTLP export is off (no endpoint configured: set OTEL_EXPORTER_OTLP_ENDPOINT, --otlp-endpoint or --otlp)");
        var extension = new LambdaExtension(api, host, export, settings, log);
        try
        {
            return await extension.RunAsync(stop.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
            log.LogWarning("stopped by SIGTERM before SHUTDOWN; what was not exported is lost");
            return 1;
        }
    }
}

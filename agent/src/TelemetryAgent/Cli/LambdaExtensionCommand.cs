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

    // What deploy/lambda/extension-launcher.c hands down when it has bound the socket and registered already.
    private static readonly Option<int?> ListenDescriptor = new("--listen-fd")
    {
        Description = "An inherited descriptor of a Unix socket already listening at --socket, to serve instead of binding one " +
                      "(the layer's launcher binds it before the .NET runtime starts).",
    };

    private static readonly Option<string?> ExtensionId = new("--extension-id")
    {
        Description = "The identifier Lambda gave at a registration already made under --name (by the layer's launcher): " +
                      "the extension does not register again.",
    };

    private static readonly Option<int?> EventDescriptor = new("--event-fd")
    {
        Description = "An inherited descriptor of a connection to the Extensions API on which the first /event/next was sent " +
                      "(with Connection: close) by the layer's launcher: its response is the first event.",
    };

    private static readonly Option<double> FlushTimeout = OptionValues.Seconds("--flush-timeout", LambdaExtensionSettings.Default.FlushTimeout.TotalSeconds,
        MinFlushSeconds, MaxFlushSeconds, "Seconds the export after an invocation may take before the extension lets Lambda freeze the environment; " +
                  $"what is not sent by then goes out with a later invocation or at SHUTDOWN. Default: ${FlushTimeoutVariable}, else 2.");

    public static Command Create()
    {
        var command = new Command("lambda-extension", "Run as an AWS Lambda external extension: export each invocation's data over " +
                                                      "OTLP before the environment is frozen (deploy/lambda).")
        {
            Socket, Name, ListenDescriptor, ExtensionId, EventDescriptor, FlushTimeout, ExportOptions.Otlp, ExportOptions.Endpoint,
            ExportOptions.Protocol, ExportOptions.Retry, ExportOptions.RetryDirectory,
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
            if (result.GetValue(ListenDescriptor) is not null && result.GetValue(Socket) is null)
            {
                Console.Error.WriteLine("telemetry-agent lambda-extension: --listen-fd needs --socket, the path the socket listens at");
                return Task.FromResult(2);
            }
            if (result.GetValue(EventDescriptor) is not null && result.GetValue(ExtensionId) is null)
            {
                Console.Error.WriteLine("telemetry-agent lambda-extension: --event-fd needs --extension-id, the registration it was asked under");
                return Task.FromResult(2);
            }
            var launched = new Launched(result.GetValue(ListenDescriptor), result.GetValue(ExtensionId), result.GetValue(EventDescriptor));
            return ExecuteAsync(runtimeApi, result.GetValue(Name)!, result.GetValue(Socket) ?? ServeCommand.DefaultSocketPath(), launched, otlp, settings);
        });
        return command;
    }

    /// <summary>What the layer's launcher did before the agent started: a socket bound, a registration made, the first event asked for.</summary>
    private sealed record Launched(int? ListenDescriptor, string? ExtensionId, int? EventDescriptor);

    private static async Task<int> ExecuteAsync(string runtimeApi, string name, string socketPath, Launched launched, OtlpSettings otlp,
        LambdaExtensionSettings settings)
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
        // socket is bound first (its backlog holds the connection), then registration. The export's set-up takes longer
        // than both, so the first /event/next goes out before it: Init ends when every extension has asked.
        System.Net.Sockets.Socket listening;
        try
        {
            listening = launched.ListenDescriptor is { } descriptor
                ? UnixSocketListener.InheritListening(descriptor, socketPath)
                : UnixSocketListener.BindListening(ref socketPath);
        }
        catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or UnauthorizedAccessException or ArgumentException)
        {
            log.LogError("cannot listen on {Socket}: {Reason}", socketPath, e.Message);
            return 1;
        }
        try
        {
            if (launched.ExtensionId is { } identifier) api.Adopt(identifier);
            else await api.RegisterAsync(name, stop.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is ExtensionsApiException or System.Net.Sockets.SocketException or IOException or OperationCanceledException)
        {
            listening.Dispose();
            log.LogError("cannot register with the Lambda Extensions API at {Api}: {Reason}", runtimeApi, e.Message);
            return 1;
        }
        var registered = started.Elapsed;
        // On a thread of its own: the HTTP stack's first request compiles much of it, beside the export's set-up.
        var firstEvent = launched.EventDescriptor is { } asked
            ? Task.Run(() => ExtensionsApiClient.ReadEventResponseAsync(
                new System.Net.Sockets.Socket(new System.Net.Sockets.SafeSocketHandle(asked, ownsHandle: true)), stop.Token))
            : Task.Run(() => api.NextEventAsync(stop.Token));
        var statistics = new AgentStatistics();
        var export = ExportPipeline.Create(new ExportContext(otlp, new LogLineWriter(log, LogLevel.Warning), CheckpointInterval: null, statistics.Snapshot));
        // Verbose: a line per process (its connection and how it ended), a few per environment.
        await using var host = new AgentHost(log, observers: export.Observers, statistics: statistics) { Verbose = true };
        host.Listen(listening, socketPath);
        log.LogInformation("{Registered} as {Name} in {Milliseconds:0} ms; listening on {Socket}; {Export}",
            launched.ExtensionId is null ? "registered" : "registered by the launcher", name, registered.TotalMilliseconds, host.SocketPath,
            otlp.Enabled ? $"exporting after each invocation: {ExportOptions.Describe(otlp)}"
                : "OTLP export is off (no endpoint configured: set OTEL_EXPORTER_OTLP_ENDPOINT, --otlp-endpoint or --otlp)");
        var extension = new LambdaExtension(api, host, export, settings, log);
        try
        {
            return await extension.RunAsync(firstEvent, stop.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
            log.LogWarning("stopped by SIGTERM before SHUTDOWN; what was not exported is lost");
            return 1;
        }
    }
}

using System.CommandLine;
using TelemetryAgent.Export.Settings;

namespace TelemetryAgent.Cli;

/// <summary>The OTLP export options that `run` and `serve` share; the OTEL_EXPORTER_OTLP_* variables work too.</summary>
internal static class ExportOptions
{
    public static readonly Option<bool> Otlp = new("--otlp")
    {
        Description = "Export over OTLP even when no endpoint is configured: to the agent-side collector's default ports " +
                      $"({OtlpSettings.DefaultHttpEndpoint} for http/protobuf, {OtlpSettings.DefaultGrpcEndpoint} for grpc).",
    };

    public static readonly Option<string?> Endpoint = new("--otlp-endpoint")
    {
        Description = "The OTLP endpoint for every signal (wins over OTEL_EXPORTER_OTLP_ENDPOINT and its per-signal variables). " +
                      "Export is on when this or an OTEL_EXPORTER_OTLP_*ENDPOINT variable is set.",
    };

    public static readonly Option<string?> Protocol = new("--otlp-protocol")
    {
        Description = "grpc or http/protobuf (wins over OTEL_EXPORTER_OTLP_PROTOCOL). Default: http/protobuf.",
    };

    public static readonly Option<string?> Retry = new("--otlp-retry")
    {
        Description = "How metric and log exports are retried after a transient failure: in_memory (default: with backoff until " +
                      "the export's timeout), disk (kept in --otlp-retry-directory and resent every 60 s, also by a later agent) or none. " +
                      $"Wins over {OtlpRetry.ModeVariable}.",
    };

    public static readonly Option<string?> RetryDirectory = new("--otlp-retry-directory")
    {
        Description = $"The directory where disk retry keeps failed exports (turns disk retry on; wins over {OtlpRetry.DirectoryVariable}). " +
                      "Give it a directory of its own.",
    };

    public static readonly Option<double> ExportInterval = OptionValues.Seconds("--export-interval", 60.0, 0.1, 24 * 3600,
        $"Seconds between exports of the processes still running (each export covers its interval). Default: {IntervalVariable} " +
        "(milliseconds, as the OpenTelemetry specification says), else 60.");

    public const string IntervalVariable = "OTEL_METRIC_EXPORT_INTERVAL";

    /// <summary>
    /// The export interval: --export-interval when given, else OTEL_METRIC_EXPORT_INTERVAL (milliseconds), else 60 s;
    /// null with <paramref name="problem"/> set when the variable is not a number of milliseconds that the option would take.
    /// </summary>
    public static TimeSpan? Interval(System.CommandLine.ParseResult result, out string problem)
    {
        problem = "";
        if (result.GetResult(ExportInterval) is { Implicit: false } || Environment.GetEnvironmentVariable(IntervalVariable) is not { Length: > 0 } text)
            return TimeSpan.FromSeconds(result.GetValue(ExportInterval));
        if (double.TryParse(text.Trim(), System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out var milliseconds)
            && milliseconds >= 100 && milliseconds <= 24 * 3600 * 1000)
            return TimeSpan.FromMilliseconds(milliseconds);
        problem = $"{IntervalVariable}: '{text}' is not a number of milliseconds from 100 to 86400000.";
        return null;
    }

    /// <summary>How long exporters may take to send what is pending when the agent stops, at least.</summary>
    public static readonly TimeSpan ShutdownDeadline = TimeSpan.FromSeconds(10);

    /// <summary>
    /// How long `run` waits for its exports when the program has ended: <see cref="ShutdownDeadline"/>, or as long as
    /// one export may take (OTEL_EXPORTER_OTLP_TIMEOUT and its per-signal forms) when that is longer.
    /// </summary>
    public static TimeSpan FinalExportDeadline(OtlpSettings settings) => !settings.Enabled ? ShutdownDeadline
        : Enum.GetValues<OtlpSignal>().Where(settings.IsOn).Select(signal => settings.For(signal).Timeout).Append(ShutdownDeadline).Max();

    /// <summary>Where the export goes, for the log: one line per distinct endpoint.</summary>
    public static string Describe(OtlpSettings settings)
        => string.Join("; ", Enum.GetValues<OtlpSignal>()
            .Where(settings.IsOn)
            .Select(signal => settings.For(signal))
            .GroupBy(endpoint => (endpoint.Protocol, endpoint.Url))
            .Select(group => $"{string.Join(", ", group.Select(e => e.Signal.ToString().ToLowerInvariant()))} to {group.Key.Url} " +
                             $"({(group.Key.Protocol == OtlpProtocol.Grpc ? "grpc" : "http/protobuf")})"))
           + string.Concat(Enum.GetValues<OtlpSignal>().Where(signal => !settings.IsOn(signal))
               .Select(signal => $"; {signal.ToString().ToLowerInvariant()} off ({OtlpSettings.ExporterVariable(signal)})"))
           + (settings.Temporality == MetricsTemporality.Cumulative ? "" : $"; metrics temporality: {settings.Temporality.ToString().ToLowerInvariant()}")
           + $"; retry: {settings.Retry}";

    /// <summary>The options that take a value (for `run`'s split between its options and the program).</summary>
    public static readonly string[] WithValue = ["--otlp-endpoint", "--otlp-protocol", "--otlp-retry", "--otlp-retry-directory"];

    static ExportOptions()
    {
        // Checked here too, so that a wrong value is an error even when export is off.
        OptionValues.OneOf(Protocol, "grpc", "http/protobuf");
        OptionValues.OneOf(Retry, "in_memory", "disk", "none");
    }

    /// <summary>The settings, or null with <paramref name="problem"/> set when a value is invalid.</summary>
    public static OtlpSettings? Resolve(System.CommandLine.ParseResult result, out string problem)
    {
        problem = "";
        try
        {
            return OtlpSettings.Resolve(OtlpSettings.ProcessEnvironment(), result.GetValue(Endpoint), result.GetValue(Protocol),
                result.GetValue(Otlp), result.GetValue(Retry), result.GetValue(RetryDirectory));
        }
        catch (FormatException e)
        {
            problem = e.Message;
            return null;
        }
    }
}

using System.Globalization;

namespace TelemetryAgent.Export.Settings;

/// <summary>The signals the agent exports over OTLP.</summary>
public enum OtlpSignal
{
    Metrics,
    Logs,
    Profiles,
    Traces,
}

/// <summary>OTLP transports: <c>grpc</c> (HTTP/2) and <c>http/protobuf</c>.</summary>
public enum OtlpProtocol
{
    Grpc,
    HttpProtobuf,
}

/// <summary>
/// Which temporality the metrics exporter prefers (OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE): cumulative
/// for every instrument; delta for counters (observable ones included) and histograms; lowmemory delta for synchronous
/// counters and histograms only. Up-down counters stay cumulative in every case.
/// </summary>
public enum MetricsTemporality
{
    Cumulative,
    Delta,
    LowMemory,
}

/// <summary>Where and how one signal is sent.</summary>
/// <param name="Url">For <c>http/protobuf</c>, the full URL to POST to; for <c>grpc</c>, the server's base URL.</param>
public sealed record OtlpEndpoint(
    OtlpSignal Signal,
    Uri Url,
    OtlpProtocol Protocol,
    IReadOnlyList<KeyValuePair<string, string>> Headers,
    TimeSpan Timeout,
    bool Gzip)
{
    /// <summary>The CA to trust and the client certificate (OTEL_EXPORTER_OTLP_*CERTIFICATE, *CLIENT_KEY); null: the system's.</summary>
    public OtlpTls? Tls { get; init; }

    /// <summary>A handler for this endpoint's connections, with its TLS settings.</summary>
    public SocketsHttpHandler CreateHandler()
    {
        var handler = new SocketsHttpHandler();
        Tls?.Apply(handler);
        return handler;
    }
}

/// <summary>
/// The OTLP exporter settings, resolved once from the standard <c>OTEL_EXPORTER_OTLP_*</c> variables (each with its
/// per-signal override, <c>_PROFILES_</c> included) and the command line, which wins. Every exporter of the agent
/// takes its endpoint from here, so all signals agree.
/// </summary>
/// <remarks>
/// Export is on when an endpoint is configured (by variable or option) or <c>--otlp</c> asks for the defaults:
/// <c>http/protobuf</c> to <c>http://localhost:4318</c>, or <c>grpc</c> to <c>http://localhost:4317</c> (the
/// agent-side collector's ports, collector-config/agent.yaml).
/// </remarks>
public sealed class OtlpSettings
{
    public const string DefaultGrpcEndpoint = "http://localhost:4317";
    public const string DefaultHttpEndpoint = "http://localhost:4318";
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(10);

    private readonly Dictionary<OtlpSignal, OtlpEndpoint> _endpoints;

    private OtlpSettings(bool enabled, Dictionary<OtlpSignal, OtlpEndpoint> endpoints, OtlpRetry retry,
        MetricsTemporality temporality = MetricsTemporality.Cumulative, string? offBecause = null)
    {
        Enabled = enabled;
        _endpoints = endpoints;
        Retry = retry;
        Temporality = temporality;
        OffBecause = offBecause;
    }

    /// <summary>Export is off: nothing configured.</summary>
    public static OtlpSettings Disabled { get; } = new(false, [], OtlpRetry.Default);

    /// <summary>Whether any signal is exported.</summary>
    public bool Enabled { get; }

    /// <summary>Why export is off when an endpoint was configured (OTEL_SDK_DISABLED, every exporter <c>none</c>); else null.</summary>
    public string? OffBecause { get; }

    /// <summary>The metrics exporter's temporality preference.</summary>
    public MetricsTemporality Temporality { get; }

    /// <summary>Whether <paramref name="signal"/> is exported (OTEL_METRICS_EXPORTER, OTEL_LOGS_EXPORTER, OTEL_TRACES_EXPORTER may switch one off).</summary>
    public bool IsOn(OtlpSignal signal) => Enabled && _endpoints.ContainsKey(signal);

    /// <summary>The variable that picks a signal's exporter (<c>otlp</c> or <c>none</c>); profiles have one by analogy.</summary>
    public static string ExporterVariable(OtlpSignal signal) => $"OTEL_{signal.ToString().ToUpperInvariant()}_EXPORTER";

    public const string SdkDisabledVariable = "OTEL_SDK_DISABLED";
    public const string TemporalityVariable = "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE";

    /// <summary>How the SDK-based exporters (metrics, logs) retry transient failures.</summary>
    public OtlpRetry Retry { get; }

    public OtlpEndpoint For(OtlpSignal signal)
        => IsOn(signal) ? _endpoints[signal] : throw new InvalidOperationException($"OTLP export of {signal} is off.");

    /// <summary>
    /// Resolves the settings. Throws <see cref="FormatException"/> with a message naming the variable or option
    /// when a value is invalid (an unknown protocol, a malformed URL, header or timeout).
    /// </summary>
    /// <param name="environment">The variables to read (usually the process environment).</param>
    /// <param name="endpointOption"><c>--otlp-endpoint</c>: the base endpoint for every signal.</param>
    /// <param name="protocolOption"><c>--otlp-protocol</c>: <c>grpc</c> or <c>http/protobuf</c>.</param>
    /// <param name="forceEnabled"><c>--otlp</c>: export even when no endpoint is configured (to the defaults).</param>
    /// <param name="retryOption"><c>--otlp-retry</c>: <c>in_memory</c>, <c>disk</c> or <c>none</c> (<see cref="OtlpRetry"/>).</param>
    /// <param name="retryDirectoryOption"><c>--otlp-retry-directory</c>: where disk retry keeps failed exports.</param>
    public static OtlpSettings Resolve(
        IReadOnlyDictionary<string, string?> environment, string? endpointOption = null, string? protocolOption = null,
        bool forceEnabled = false, string? retryOption = null, string? retryDirectoryOption = null)
    {
        ArgumentNullException.ThrowIfNull(environment);
        string? Variable(string name) => environment.TryGetValue(name, out var value) && !string.IsNullOrWhiteSpace(value) ? value.Trim() : null;

        var anyEndpoint = endpointOption is not null || Variable("OTEL_EXPORTER_OTLP_ENDPOINT") is not null
                          || Enum.GetValues<OtlpSignal>().Any(signal => Variable(SignalVariable(signal, "ENDPOINT")) is not null);
        // Wrong option values are errors even when export is off.
        if (protocolOption is not null) ParseProtocol(protocolOption, "--otlp-protocol");
        if (!anyEndpoint && !forceEnabled) return Disabled;
        var retry = OtlpRetry.Resolve(Variable, retryOption, retryDirectoryOption);
        // The specification's switch for the whole SDK wins over every endpoint, options included.
        if (string.Equals(Variable(SdkDisabledVariable), "true", StringComparison.OrdinalIgnoreCase))
            return new OtlpSettings(false, [], retry, offBecause: $"{SdkDisabledVariable}=true");
        var temporality = Variable(TemporalityVariable)?.ToLowerInvariant() switch
        {
            null or "cumulative" => MetricsTemporality.Cumulative,
            "delta" => MetricsTemporality.Delta,
            "lowmemory" => MetricsTemporality.LowMemory,
            _ => throw new FormatException($"{TemporalityVariable}: '{Variable(TemporalityVariable)}' is not cumulative, delta or lowmemory."),
        };

        var endpoints = new Dictionary<OtlpSignal, OtlpEndpoint>();
        foreach (var signal in Enum.GetValues<OtlpSignal>())
        {
            // A list of exporters (`otlp,console`): this agent has only otlp, so a signal is on when the list names it.
            if (Variable(ExporterVariable(signal)) is { } exporters
                && !exporters.Split(',').Any(exporter => exporter.Trim().Equals("otlp", StringComparison.OrdinalIgnoreCase)))
                continue;
            // The option wins over the variables; a signal's own variable over the general one.
            string? Setting(string suffix) => Variable(SignalVariable(signal, suffix)) ?? Variable($"OTEL_EXPORTER_OTLP_{suffix}");
            // A setting with the variable it came from, for messages.
            (string, string)? Sourced(string suffix) => Variable(SignalVariable(signal, suffix)) is { } own ? (own, SignalVariable(signal, suffix))
                : Variable($"OTEL_EXPORTER_OTLP_{suffix}") is { } general ? (general, $"OTEL_EXPORTER_OTLP_{suffix}") : null;

            var protocol = protocolOption is not null
                ? ParseProtocol(protocolOption, "--otlp-protocol")
                : Variable(SignalVariable(signal, "PROTOCOL")) is { } signalProtocol
                    ? ParseProtocol(signalProtocol, SignalVariable(signal, "PROTOCOL"))
                    : Variable("OTEL_EXPORTER_OTLP_PROTOCOL") is { } protocolValue
                        ? ParseProtocol(protocolValue, "OTEL_EXPORTER_OTLP_PROTOCOL")
                        : OtlpProtocol.HttpProtobuf;

            Uri url;
            if (endpointOption is not null)
            {
                url = SignalUrl(ParseUrl(endpointOption, "--otlp-endpoint"), signal, protocol);
            }
            else if (Variable(SignalVariable(signal, "ENDPOINT")) is { } signalEndpoint)
            {
                // A signal's own endpoint is used as given (the OTLP exporter specification).
                url = ParseUrl(signalEndpoint, SignalVariable(signal, "ENDPOINT"));
            }
            else
            {
                var baseUrl = Variable("OTEL_EXPORTER_OTLP_ENDPOINT")
                              ?? (protocol == OtlpProtocol.Grpc ? DefaultGrpcEndpoint : DefaultHttpEndpoint);
                url = SignalUrl(ParseUrl(baseUrl, "OTEL_EXPORTER_OTLP_ENDPOINT"), signal, protocol);
            }

            var headersName = Variable(SignalVariable(signal, "HEADERS")) is not null ? SignalVariable(signal, "HEADERS") : "OTEL_EXPORTER_OTLP_HEADERS";
            var timeoutName = Variable(SignalVariable(signal, "TIMEOUT")) is not null ? SignalVariable(signal, "TIMEOUT") : "OTEL_EXPORTER_OTLP_TIMEOUT";
            var compressionName = Variable(SignalVariable(signal, "COMPRESSION")) is not null ? SignalVariable(signal, "COMPRESSION") : "OTEL_EXPORTER_OTLP_COMPRESSION";
            endpoints[signal] = new OtlpEndpoint(
                signal,
                url,
                protocol,
                ParseHeaders(Setting("HEADERS"), headersName),
                ParseTimeout(Setting("TIMEOUT"), timeoutName),
                ParseCompression(Setting("COMPRESSION"), compressionName))
            {
                Tls = OtlpTls.Resolve(Sourced("CERTIFICATE"), Sourced("CLIENT_CERTIFICATE"), Sourced("CLIENT_KEY")),
            };
        }
        if (endpoints.Count == 0)
            return new OtlpSettings(false, [], retry, offBecause: string.Join(", ", Enum.GetValues<OtlpSignal>().Select(s => $"{ExporterVariable(s)}={Variable(ExporterVariable(s))}")));
        return new OtlpSettings(true, endpoints, retry, temporality);
    }

    /// <summary>The process environment as <see cref="Resolve"/> reads it.</summary>
    public static IReadOnlyDictionary<string, string?> ProcessEnvironment()
    {
        var variables = new Dictionary<string, string?>(StringComparer.Ordinal);
        foreach (System.Collections.DictionaryEntry entry in Environment.GetEnvironmentVariables())
        {
            variables[(string)entry.Key] = entry.Value as string;
        }
        return variables;
    }

    /// <summary>The HTTP path of each signal under a base endpoint (OTLP/HTTP specification).</summary>
    public static string HttpPath(OtlpSignal signal) => signal switch
    {
        OtlpSignal.Metrics => "v1/metrics",
        OtlpSignal.Logs => "v1/logs",
        OtlpSignal.Profiles => "v1development/profiles",
        OtlpSignal.Traces => "v1/traces",
        _ => throw new ArgumentOutOfRangeException(nameof(signal)),
    };

    private static string SignalVariable(OtlpSignal signal, string suffix)
        => $"OTEL_EXPORTER_OTLP_{signal.ToString().ToUpperInvariant()}_{suffix}";

    private static Uri SignalUrl(Uri baseUrl, OtlpSignal signal, OtlpProtocol protocol)
    {
        if (protocol == OtlpProtocol.Grpc) return baseUrl;
        var text = baseUrl.AbsoluteUri;
        return new Uri((text.EndsWith('/') ? text : text + "/") + HttpPath(signal));
    }

    private static OtlpProtocol ParseProtocol(string value, string source) => value.Trim().ToLowerInvariant() switch
    {
        "grpc" => OtlpProtocol.Grpc,
        "http/protobuf" => OtlpProtocol.HttpProtobuf,
        "http/json" => throw new FormatException($"{source}: http/json is not supported; use grpc or http/protobuf."),
        _ => throw new FormatException($"{source}: '{value}' is not an OTLP protocol (grpc or http/protobuf)."),
    };

    private static Uri ParseUrl(string value, string source)
    {
        if (!Uri.TryCreate(value.Trim(), UriKind.Absolute, out var url) || url.Scheme is not ("http" or "https"))
        {
            throw new FormatException($"{source}: '{value}' is not an http:// or https:// URL.");
        }
        return url;
    }

    /// <summary><c>key1=value1,key2=value2</c>, values URL-encoded (W3C baggage-like, as the specification says).</summary>
    private static IReadOnlyList<KeyValuePair<string, string>> ParseHeaders(string? value, string source)
    {
        if (value is null) return [];
        var headers = new List<KeyValuePair<string, string>>();
        foreach (var item in value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var equals = item.IndexOf('=', StringComparison.Ordinal);
            if (equals <= 0) throw new FormatException($"{source}: '{item}' is not key=value.");
            headers.Add(new(Uri.UnescapeDataString(item[..equals].Trim()), Uri.UnescapeDataString(item[(equals + 1)..].Trim())));
        }
        return headers;
    }

    /// <summary>Milliseconds (the specification's unit); default 10 s.</summary>
    private static TimeSpan ParseTimeout(string? value, string source)
    {
        if (value is null) return DefaultTimeout;
        if (!int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var milliseconds) || milliseconds <= 0)
        {
            throw new FormatException($"{source}: '{value}' is not a positive number of milliseconds.");
        }
        return TimeSpan.FromMilliseconds(milliseconds);
    }

    private static bool ParseCompression(string? value, string source) => value?.ToLowerInvariant() switch
    {
        null or "none" => false,
        "gzip" => true,
        _ => throw new FormatException($"{source}: '{value}' is not a compression (gzip or none)."),
    };
}

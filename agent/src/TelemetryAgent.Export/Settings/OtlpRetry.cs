namespace TelemetryAgent.Export.Settings;

/// <summary>How the OpenTelemetry SDK's OTLP exporters retry transient failures (metrics and logs).</summary>
public enum OtlpRetryMode
{
    /// <summary>No retry: a failed export is lost.</summary>
    None,
    /// <summary>Retried in memory with exponential backoff until the export's timeout.</summary>
    InMemory,
    /// <summary>Written to a directory and resent by a background thread (every 60 s), also by a later agent.</summary>
    Disk,
}

/// <summary>
/// The SDK's retry settings: <c>OTEL_DOTNET_EXPERIMENTAL_OTLP_RETRY</c> (<c>in_memory</c>, <c>disk</c> or
/// <c>none</c>; default <c>in_memory</c>) and <c>OTEL_DOTNET_EXPERIMENTAL_OTLP_DISK_RETRY_DIRECTORY_PATH</c>,
/// or <c>--otlp-retry</c> and <c>--otlp-retry-directory</c>, which win. A directory alone turns disk retry on;
/// disk retry without a directory is an error (the SDK no longer falls back to a shared temporary folder).
/// </summary>
public sealed record OtlpRetry(OtlpRetryMode Mode, string? Directory)
{
    public const string ModeVariable = "OTEL_DOTNET_EXPERIMENTAL_OTLP_RETRY";
    public const string DirectoryVariable = "OTEL_DOTNET_EXPERIMENTAL_OTLP_DISK_RETRY_DIRECTORY_PATH";

    public static OtlpRetry Default { get; } = new(OtlpRetryMode.InMemory, null);

    /// <summary>The SDK's configuration keys for this setting (what its exporters read).</summary>
    public IReadOnlyDictionary<string, string?> SdkConfiguration() => Mode switch
    {
        OtlpRetryMode.InMemory => new Dictionary<string, string?> { [ModeVariable] = "in_memory" },
        OtlpRetryMode.Disk => new Dictionary<string, string?> { [ModeVariable] = "disk", [DirectoryVariable] = Directory },
        _ => new Dictionary<string, string?>(),
    };

    /// <summary>Throws <see cref="FormatException"/> naming the variable or option when a value is invalid.</summary>
    public static OtlpRetry Resolve(Func<string, string?> variable, string? modeOption, string? directoryOption)
    {
        ArgumentNullException.ThrowIfNull(variable);
        var (modeText, modeSource) = modeOption is not null ? (modeOption, "--otlp-retry") : (variable(ModeVariable), ModeVariable);
        var (directory, directorySource) = directoryOption is not null
            ? (directoryOption, "--otlp-retry-directory")
            : (variable(DirectoryVariable), DirectoryVariable);
        if (directory is not null && directory.Trim().Length == 0) throw new FormatException($"{directorySource}: the directory is empty.");

        var mode = modeText?.Trim().ToLowerInvariant() switch
        {
            null => directory is null ? OtlpRetryMode.InMemory : OtlpRetryMode.Disk,
            "in_memory" => OtlpRetryMode.InMemory,
            "disk" => OtlpRetryMode.Disk,
            "none" => OtlpRetryMode.None,
            _ => throw new FormatException($"{modeSource}: '{modeText}' is not a retry mode (in_memory, disk or none)."),
        };
        if (mode == OtlpRetryMode.Disk && directory is null)
        {
            throw new FormatException($"{modeSource}: disk retry needs a directory ({DirectoryVariable} or --otlp-retry-directory).");
        }
        return new OtlpRetry(mode, mode == OtlpRetryMode.Disk ? Path.GetFullPath(directory!.Trim()) : null);
    }

    public override string ToString() => Mode switch
    {
        OtlpRetryMode.InMemory => "in_memory",
        OtlpRetryMode.Disk => $"disk ({Directory})",
        _ => "none",
    };
}

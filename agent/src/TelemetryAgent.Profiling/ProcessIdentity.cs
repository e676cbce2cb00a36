namespace TelemetryAgent.Profiling;

/// <summary>Who a profiled process is, as its HELLO said.</summary>
/// <param name="ServiceName">OTEL_SERVICE_NAME when the process set it, else a name derived from its argv.</param>
public sealed record ProcessIdentity(
    long Pid,
    long ParentPid,
    IReadOnlyList<string> Argv,
    string Executable,
    string PythonImplementation,
    string PythonVersion,
    string HostName,
    string ServiceName,
    string ResourceAttributes,
    string ShimVersion,
    string WorkingDirectory,
    long ProcessStartUnixNs)
{
    /// <summary>The container the process runs in, as its cgroup names it; empty when unknown.</summary>
    public string ContainerId { get; init; } = "";

    /// <summary>The Kubernetes pod the process runs in, as its cgroup names it; empty when unknown.</summary>
    public string PodUid { get; init; } = "";

    /// <summary>The serverless platform's variables the shim found in the process's environment (name to value), from
    /// which the resource's <c>faas.*</c> and <c>cloud.*</c> attributes are made.</summary>
    public IReadOnlyDictionary<string, string> PlatformEnvironment { get; init; } = new Dictionary<string, string>();

    /// <summary>
    /// The configured service name; else the script's name without <c>.py</c> (<c>python app.py</c> gives
    /// <c>app</c>), the package's name for <c>python -m package</c> (argv[0] is its <c>__main__.py</c>), or the
    /// interpreter's name for <c>python -c</c> and an interactive interpreter.
    /// </summary>
    public static string ServiceNameOf(string configuredServiceName, IReadOnlyList<string> argv, string executable)
    {
        if (!string.IsNullOrWhiteSpace(configuredServiceName)) return configuredServiceName.Trim();

        var script = argv.Count > 0 ? argv[0] : "";
        if (script is not ("" or "-c" or "-m" or "-"))
        {
            var trimmed = script.TrimEnd('/');
            var name = Path.GetFileName(trimmed);
            if (name.EndsWith(".py", StringComparison.Ordinal)) name = name[..^3];
            if (name == "__main__")
            {
                var package = Path.GetFileName(Path.GetDirectoryName(trimmed) ?? "");
                if (package.Length > 0) name = package;
            }
            if (name.Length > 0) return name;
        }
        var interpreter = Path.GetFileName(executable ?? "");
        return interpreter.Length > 0 ? interpreter : "python";
    }
}

/// <summary>
/// Maps the shim's monotonic clock to wall time; both were read back to back by the shim (PROTOCOL.md "Clock").
/// </summary>
public readonly record struct ClockMapping(long MonotonicNs, long UnixNs)
{
    public long ToUnixNs(long monotonicNs) => UnixNs + (monotonicNs - MonotonicNs);

    public DateTimeOffset ToWallTime(long monotonicNs) => FromUnixNs(ToUnixNs(monotonicNs));

    public static DateTimeOffset FromUnixNs(long unixNs)
        => DateTimeOffset.UnixEpoch.AddTicks(unixNs / TimeSpan.NanosecondsPerTick);
}

/// <summary>The shim's own counters (STATS, or GOODBYE's final stats): cumulative, the last report wins.</summary>
/// <param name="OverheadNs">The shim's estimate of its own cost so far (callbacks, sender thread, window switching).</param>
/// <param name="ElapsedNs">Wall time since the shim started, the denominator of <see cref="AchievedOverhead"/>.</param>
/// <param name="EventToggles">Burst mode: set_events calls made to open and close windows.</param>
/// <param name="TogglesRefused">set_events calls the interpreter refused; after one, no window opened again.</param>
public sealed record ShimStatistics(
    ulong EventsRecorded,
    ulong EventsDropped,
    ulong EventsSent,
    ulong FramesSent,
    ulong Connects,
    ulong CallbackErrors,
    ulong OverheadNs = 0,
    ulong ElapsedNs = 0,
    ulong EventToggles = 0,
    ulong TogglesRefused = 0)
{
    public static readonly ShimStatistics None = new(0, 0, 0, 0, 0, 0);

    /// <summary>The share of wall time the shim estimates it cost (0.01 = 1%); null when it did not say.</summary>
    public double? AchievedOverhead => ElapsedNs > 0 ? (double)OverheadNs / ElapsedNs : null;
}

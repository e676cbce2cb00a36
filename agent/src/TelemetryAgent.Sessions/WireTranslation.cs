using TelemetryAgent.Profiling;
using TelemetryAgent.Protocol.Messages;

namespace TelemetryAgent.Sessions;

/// <summary>
/// The wire's messages as model values: the session boundary, below which nothing knows protobuf (exceptions are
/// translated by <see cref="ExceptionReader"/>, which also checks and bounds them).
/// </summary>
internal static class WireTranslation
{
    public static ProcessIdentity ToIdentity(this Hello hello)
    {
        var argv = hello.Argv.ToArray();
        return new ProcessIdentity(
            hello.Pid,
            hello.ParentPid,
            argv,
            hello.Executable,
            hello.PythonImplementation,
            hello.PythonVersion,
            hello.HostName,
            ProcessIdentity.ServiceNameOf(hello.ServiceName, argv, hello.Executable),
            hello.ResourceAttributes,
            hello.ShimVersion,
            hello.WorkingDirectory,
            hello.ProcessStartUnixNs)
        {
            ContainerId = hello.ContainerId,
            PodUid = hello.PodUid,
            PlatformEnvironment = PlatformEnvironment(hello.PlatformEnvironment),
        };
    }

    // "NAME=value" entries; a malformed or repeated one is skipped (the first of a name wins), at most 64 names.
    private static Dictionary<string, string> PlatformEnvironment(IEnumerable<string> entries)
    {
        var environment = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var entry in entries)
        {
            var equals = entry.IndexOf('=', StringComparison.Ordinal);
            if (equals <= 0 || environment.Count >= 64) continue;
            environment.TryAdd(entry[..equals], entry[(equals + 1)..]);
        }
        return environment;
    }

    /// <summary>An empty mode is a shim that predates the modes: full. An unknown one is kept as it was sent.</summary>
    public static RecordingMode ToRecordingMode(this Hello hello)
    {
        var mode = hello.Mode.Length == 0 ? RecordingMode.Full : hello.Mode;
        return new RecordingMode(mode, hello.WindowNs, hello.PeriodNs, hello.OverheadBudgetPpm,
            hello.Include.ToArray(), hello.Exclude.ToArray()) { Callbacks = hello.Callbacks };
    }

    public static ClockMapping ToClockMapping(this Hello hello) => new(hello.ClockMonotonicNs, hello.ClockUnixNs);

    public static ShimStatistics ToShimStatistics(this Stats stats)
        => new(stats.EventsRecorded, stats.EventsDropped, stats.EventsSent, stats.FramesSent, stats.Connects,
            stats.CallbackErrors, stats.OverheadNs, stats.ElapsedNs, stats.EventToggles, stats.TogglesRefused);

    /// <summary>Unspecified and values from a newer shim are <see cref="Fate.Unknown"/>.</summary>
    public static Fate ToFate(this ExceptionFate fate) => fate switch
    {
        ExceptionFate.FateHandled => Fate.Handled,
        ExceptionFate.FateEscapedThread => Fate.EscapedThread,
        ExceptionFate.FateEscapedProgram => Fate.EscapedProgram,
        ExceptionFate.FateUnraisable => Fate.Unraisable,
        ExceptionFate.FateAsyncioUnhandled => Fate.AsyncioUnhandled,
        ExceptionFate.FateInFlight => Fate.InFlight,
        _ => Fate.Unknown,
    };
}

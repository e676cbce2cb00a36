namespace TelemetryAgent.Profiling.Formats;

/// <summary>The two measurements of every profile the agent writes, OTLP and pprof alike.</summary>
public static class ProfileSampleTypes
{
    /// <summary>Self time per stack: exact nanoseconds, not a count of samples.</summary>
    public const string WallType = "wall";
    public const string WallUnit = "nanoseconds";
    /// <summary>Calls (PY_START) per stack.</summary>
    public const string CallsType = "calls";
    public const string CallsUnit = "count";
    /// <summary>The value of <c>profile.frame.type</c> on every location.</summary>
    public const string FrameType = "cpython";
}

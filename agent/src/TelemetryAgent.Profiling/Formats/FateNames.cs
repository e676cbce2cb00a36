namespace TelemetryAgent.Profiling.Formats;

/// <summary>Fate names as every output writes them (exceptions.json, summary.json, OTLP attributes).</summary>
public static class FateNames
{
    public static string Of(Fate fate) => fate switch
    {
        Fate.Handled => "handled",
        Fate.EscapedThread => "escaped_thread",
        Fate.EscapedProgram => "escaped_program",
        Fate.Unraisable => "unraisable",
        Fate.AsyncioUnhandled => "asyncio_unhandled",
        Fate.InFlight => "in_flight",
        _ => "unknown",
    };
}

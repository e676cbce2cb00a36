namespace TelemetryAgent.Profiling;

/// <summary>What finally happened to an exception (proto/PROTOCOL.md "Exceptions"; the session translates the wire's).</summary>
public enum Fate
{
    /// <summary>A fate this agent does not know (unspecified, or from a newer shim).</summary>
    Unknown,
    /// <summary>Caught by an <c>except</c> clause (or a context manager that swallowed it).</summary>
    Handled,
    /// <summary>Uncaught in a thread other than the main one.</summary>
    EscapedThread,
    /// <summary>Uncaught in the main thread: the program ended with it.</summary>
    EscapedProgram,
    /// <summary>Reported through <c>sys.unraisablehook</c> (raised in <c>__del__</c>, a callback, ...).</summary>
    Unraisable,
    /// <summary>Reached an asyncio event loop's exception handler.</summary>
    AsyncioUnhandled,
    /// <summary>Still propagating when the process or the shim ended.</summary>
    InFlight,
}

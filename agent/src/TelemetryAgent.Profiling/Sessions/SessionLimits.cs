using TelemetryAgent.Aggregation;

namespace TelemetryAgent.Sessions;

/// <summary>
/// Bounds on what one connection may make the agent hold, so that a buggy or hostile peer costs bounded memory.
/// Exceeding a definition bound ends the connection (<c>InvalidRecord</c>); the stack bound only stops growing
/// the tree.
/// </summary>
public sealed record SessionLimits
{
    public static SessionLimits Default { get; } = new();

    /// <summary>Largest code id accepted (ids are dense from 1, so this bounds the functions of a process).</summary>
    public int MaxCodeId { get; init; } = 1 << 20;

    /// <summary>
    /// Largest thread id accepted. Generous because servers that start a thread per request define a new
    /// thread each time.
    /// </summary>
    public int MaxThreadId { get; init; } = 1 << 20;

    /// <summary>
    /// Frames of one thread kept on its stack and in the tree. Deeper pushes are counted and paired but not
    /// stored; their time goes to the deepest stored frame.
    /// </summary>
    public int MaxStackDepth { get; init; } = 2048;

    /// <summary>Bounds on the exceptions kept for the process.</summary>
    public ExceptionLimits Exceptions { get; init; } = ExceptionLimits.Default;
}

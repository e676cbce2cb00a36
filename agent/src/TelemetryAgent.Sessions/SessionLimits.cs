using TelemetryAgent.Profiling;
using TelemetryAgent.Protocol;

namespace TelemetryAgent.Sessions;

/// <summary>
/// Bounds on what one connection may make the agent hold, so that a buggy or hostile peer costs bounded memory.
/// Exceeding the frame, definition or thread bound ends the connection with its own violation
/// (<c>FrameTooLarge</c>, <c>TooManyDefinitions</c>, <c>TooManyThreads</c>); the stack depth and call-tree bounds
/// only stop growing the tree, and count what they left out. docs/operations.md lists them with their options.
/// </summary>
public sealed record SessionLimits
{
    public static SessionLimits Default { get; } = new();

    /// <summary>Largest frame payload accepted, in bytes. The shim never sends more than the protocol's 1 MiB.</summary>
    public int MaxFramePayload { get; init; } = WireFormat.MaxFramePayload;

    /// <summary>
    /// Largest code id accepted: ids are dense from 1 and never defined twice, so this bounds the code definitions
    /// of one connection.
    /// </summary>
    public int MaxCodeId { get; init; } = 1 << 20;

    /// <summary>
    /// Largest thread id accepted (so the threads of one connection). Generous because servers that start a thread
    /// per request define a new thread each time.
    /// </summary>
    public int MaxThreadId { get; init; } = 1 << 20;

    /// <summary>
    /// Frames of one thread kept on its stack and in the tree. Deeper pushes are counted and paired but not
    /// stored; their time goes to the deepest stored frame.
    /// </summary>
    public int MaxStackDepth { get; init; } = 2048;

    /// <summary>
    /// Call-tree nodes (distinct stacks) of one process, over all its threads. Beyond it a call whose path has no
    /// node yet goes to a "[truncated]" node under its caller (at most one per node; what runs below it stays in
    /// it), counted in <see cref="ProcessProfile.TruncatedPushes"/>.
    /// </summary>
    public int MaxCallTreeNodes { get; init; } = 500_000;

    /// <summary>Bounds on the exceptions kept for the process.</summary>
    public ExceptionLimits Exceptions { get; init; } = ExceptionLimits.Default;
}

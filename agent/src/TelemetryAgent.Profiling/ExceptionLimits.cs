namespace TelemetryAgent.Profiling;

/// <summary>
/// Bounds on what the exceptions of one process may make the agent hold, whatever the peer sends. The shim has
/// tighter bounds of its own (shim.proto); these only make sure a buggy or hostile peer costs bounded memory.
/// docs/exceptions.md lists them.
/// </summary>
public sealed record ExceptionLimits
{
    public static ExceptionLimits Default { get; } = new();

    /// <summary>Groups (distinct fingerprints) per process; the exceptions of any more are counted in one
    /// "[other exceptions]" group.</summary>
    public int MaxGroups { get; init; } = 500;

    /// <summary>Distinct notes kept per group.</summary>
    public int MaxNotesPerGroup { get; init; } = 32;

    /// <summary>Distinct messages kept per group as samples.</summary>
    public int MaxSampleMessages { get; init; } = 5;

    /// <summary>Distinct handler locations kept per group.</summary>
    public int MaxHandledAtLocations { get; init; } = 8;

    /// <summary>Characters kept of one message or note; longer ones are cut.</summary>
    public int MaxTextLength { get; init; } = 1024;

    /// <summary>Characters of messages and notes kept for one record, over all its chained and member exceptions.</summary>
    public int MaxTextPerRecord { get; init; } = 32 * 1024;

    /// <summary>Notes kept per exception.</summary>
    public int MaxNotesPerException { get; init; } = 16;

    /// <summary>Frames kept of a stack or traceback (the innermost ones).</summary>
    public int MaxFrames { get; init; } = 256;

    /// <summary>Exceptions kept for one record: itself plus its causes, contexts and group members.</summary>
    public int MaxExceptionsPerRecord { get; init; } = 64;

    /// <summary>Depth of causes, contexts and members kept below a record's exception.</summary>
    public int MaxNesting { get; init; } = 8;
}

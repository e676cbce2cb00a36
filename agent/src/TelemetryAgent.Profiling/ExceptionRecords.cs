namespace TelemetryAgent.Profiling;

/// <summary>A line of a function: where an exception was raised, passed through or handled.</summary>
/// <param name="Line">The line number; 0 when the shim did not know it.</param>
public readonly record struct CodeLocation(FunctionInfo Function, int Line)
{
    /// <summary><c>file:line</c> with the file as shown to people (<see cref="FunctionInfo.DisplayFile"/>).</summary>
    public string Site => string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{Function.DisplayFile}:{Line}");
}

/// <summary>Whether an exception's message is whole (see <c>ExceptionDetail.MessageStatus</c> in shim.proto).</summary>
public enum ExceptionMessageStatus
{
    Ok,
    /// <summary>Cut by the shim or by the agent's bounds.</summary>
    Truncated,
    /// <summary>Not computed: <c>str()</c> would have run the program's own code, or it failed.</summary>
    Unavailable,
}

/// <summary>
/// What one exception object carried: its type, message, notes, traceback, chain and, for an exception group,
/// its members. Held within <see cref="ExceptionLimits"/>, whatever the peer sent.
/// </summary>
/// <param name="TypeName"><c>module.QualName</c>, e.g. <c>builtins.ValueError</c>.</param>
/// <param name="NotesOmitted">Notes left out by the shim or by the agent's bounds.</param>
/// <param name="Traceback">From <c>__traceback__</c>, outermost first; the last is where it was raised.</param>
/// <param name="TracebackFramesOmitted">Outermost frames left out by the agent's bounds.</param>
/// <param name="Context"><c>__context__</c>, only when not suppressed and not the cause.</param>
/// <param name="MembersOmitted">Members of a group left out by the shim or by the agent's bounds.</param>
/// <param name="NestingTruncated">Causes, contexts or members deeper than the shim's or the agent's bounds were left out.</param>
public sealed record ExceptionInfo(
    string TypeName,
    string Message,
    ExceptionMessageStatus MessageStatus,
    IReadOnlyList<string> Notes,
    long NotesOmitted,
    IReadOnlyList<CodeLocation> Traceback,
    int TracebackFramesOmitted,
    ExceptionInfo? Cause,
    ExceptionInfo? Context,
    bool SuppressContext,
    IReadOnlyList<ExceptionInfo> Members,
    long MembersOmitted,
    bool NestingTruncated)
{
    /// <summary>A <c>BaseExceptionGroup</c>: it has members, even if all were left out.</summary>
    public bool IsGroup => Members.Count > 0 || MembersOmitted > 0;
}

/// <summary>One exception object whose fate is known, with its ids resolved (an <c>ExceptionRecord</c>).</summary>
/// <param name="ThreadId">The shim's thread id (<see cref="ThreadProfile.Id"/>).</param>
/// <param name="RaisedNs">Shim monotonic clock at its first raise; 0 when unknown.</param>
/// <param name="FateNs">Shim monotonic clock when its fate was decided; 0 when unknown.</param>
/// <param name="HandledAt">For a handled exception, the handler's frame and line.</param>
/// <param name="Stack">The whole stack when it was raised, outermost first; the last is where it was raised.</param>
/// <param name="StackTruncated">Outermost frames were left out (by the shim or the agent's bounds).</param>
/// <param name="Detail">What it carried; null when the shim sent none.</param>
public sealed record ExceptionOccurrence(
    uint ThreadId,
    long RaisedNs,
    long FateNs,
    Fate Fate,
    CodeLocation? HandledAt,
    IReadOnlyList<CodeLocation> Stack,
    bool StackTruncated,
    long FramesUnwound,
    long Reraises,
    ExceptionInfo? Detail)
{
    /// <summary>The type's name, or <c>""</c> when the record had no detail.</summary>
    public string TypeName => Detail?.TypeName ?? "";

    /// <summary>Where it was raised: the innermost frame of the stack, else of the traceback; null when neither is known.</summary>
    public CodeLocation? RaiseSite
        => Stack.Count > 0 ? Stack[^1]
            : Detail is { Traceback.Count: > 0 } detail ? detail.Traceback[^1]
            : null;
}

/// <summary>Exceptions of one type, raise site and fate counted without detail (an <c>ExceptionTally</c>).</summary>
public sealed record ExceptionTallyEntry(string TypeName, CodeLocation? RaisedAt, Fate Fate, long Count);

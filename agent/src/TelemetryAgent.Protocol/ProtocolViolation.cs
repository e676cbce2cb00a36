using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;

namespace TelemetryAgent.Protocol;

/// <summary>Why a connection's stream was rejected. Each value is also a metric label.</summary>
public enum ProtocolViolation
{
    BadMagic,
    UnsupportedVersion,
    UnsupportedFlags,
    UnknownFrameType,
    FrameTooLarge,
    EmptyFrame,
    MisalignedEvents,
    MissingHello,
    DuplicateHello,
    FrameAfterGoodbye,
    MalformedMessage,
    InvalidRecord,
    UndefinedId,
    DuplicateDefinition,
    TruncatedStream,

    // The agent's own limits (docs/operations.md), beyond what the protocol allows.
    /// <summary>More code definitions than the connection may make (<c>--max-definitions</c>).</summary>
    TooManyDefinitions,
    /// <summary>More threads than the connection may define (<c>--max-threads</c>).</summary>
    TooManyThreads,
    /// <summary>The agent's memory for aggregates is used up (<c>--max-aggregate-memory</c>).</summary>
    AggregateMemoryExhausted,
}

/// <summary>A stream that breaks the protocol. Ends its own connection only.</summary>
public sealed class ProtocolException : Exception
{
    public ProtocolException(ProtocolViolation violation, string message)
        : this(violation, message, innerException: null)
    {
    }

    public ProtocolException(ProtocolViolation violation, string message, Exception? innerException)
        : base($"{violation}: {message}", innerException)
    {
        Violation = violation;
    }

    public ProtocolViolation Violation { get; }

    /// <summary>
    /// Throw helper for hot paths: callers stay small because the throw (and the message they pass,
    /// built only on the failing branch) lives out of line.
    /// </summary>
    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static void Throw(ProtocolViolation violation, string message) =>
        throw new ProtocolException(violation, message);
}

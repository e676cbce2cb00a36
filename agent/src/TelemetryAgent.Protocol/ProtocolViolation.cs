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
}

/// <summary>A stream that breaks the protocol. Ends its own connection only.</summary>
public sealed class ProtocolException(ProtocolViolation violation, string message)
    : Exception($"{violation}: {message}")
{
    public ProtocolViolation Violation { get; } = violation;
}

using TelemetryAgent.Profiling;
using TelemetryAgent.Protocol;

namespace TelemetryAgent.Sessions;

/// <summary>
/// How a connection ended, with the protocol violation or error text when there is one. The profile records it as
/// a <see cref="ConnectionOutcome"/> (<see cref="ToOutcome"/>).
/// </summary>
public readonly record struct ConnectionEnd(ConnectionEndReason Reason, ProtocolViolation? Violation, string? Detail)
{
    public static ConnectionEnd Goodbye => new(ConnectionEndReason.Goodbye, null, null);
    public static ConnectionEnd EndOfStream => new(ConnectionEndReason.EndOfStream, null, null);
    public static ConnectionEnd Cancelled => new(ConnectionEndReason.Cancelled, null, null);

    public static ConnectionEnd ProtocolError(ProtocolException error)
    {
        ArgumentNullException.ThrowIfNull(error);
        return new(ConnectionEndReason.ProtocolError, error.Violation, error.Message);
    }

    public static ConnectionEnd ProtocolError(ProtocolViolation violation, string detail)
        => new(ConnectionEndReason.ProtocolError, violation, detail);

    public static ConnectionEnd TransportError(string detail) => new(ConnectionEndReason.TransportError, null, detail);

    /// <summary>The end of a stream that kept to the protocol, as the read loop reports it.</summary>
    public static ConnectionEnd FromStreamEnd(WireStreamEnd end) => end switch
    {
        WireStreamEnd.Goodbye => Goodbye,
        WireStreamEnd.EndOfStream => EndOfStream,
        WireStreamEnd.Cancelled => Cancelled,
        _ => throw new ArgumentOutOfRangeException(nameof(end), end, "Unknown stream end."),
    };

    /// <summary>The model's record of this end: the violation by its name.</summary>
    public ConnectionOutcome ToOutcome() => new(Reason, Violation?.ToString(), Detail);

    /// <summary>A short label: the reason, or the violation for a protocol error (e.g. <c>UndefinedId</c>).</summary>
    public string Label => ToOutcome().Label;

    public override string ToString() => ToOutcome().ToString();
}

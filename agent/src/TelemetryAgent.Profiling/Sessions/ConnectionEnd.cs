using TelemetryAgent.Protocol;

namespace TelemetryAgent.Sessions;

/// <summary>Why a connection's session ended. Each value is also a label for "how connections end" counts.</summary>
public enum ConnectionEndReason
{
    /// <summary>The shim said GOODBYE and the stream ended after it.</summary>
    Goodbye,
    /// <summary>The stream ended cleanly on a frame boundary without GOODBYE: the process died or was killed.</summary>
    EndOfStream,
    /// <summary>The stream broke the protocol; <see cref="ConnectionEnd.Violation"/> says how.</summary>
    ProtocolError,
    /// <summary>The socket failed (for example, reset by the peer).</summary>
    TransportError,
    /// <summary>The agent stopped reading (shutting down).</summary>
    Cancelled,
}

/// <summary>How a connection ended, with the protocol violation or error text when there is one.</summary>
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

    /// <summary>A short label: the reason, or the violation for a protocol error (e.g. <c>UndefinedId</c>).</summary>
    public string Label => Violation is { } violation ? violation.ToString() : Reason.ToString();

    public override string ToString()
    {
        if (Detail is null) return Label;
        // A ProtocolException's message already starts with its violation.
        return Detail.StartsWith(Label, StringComparison.Ordinal) ? Detail : $"{Label}: {Detail}";
    }
}

namespace TelemetryAgent.Profiling;

/// <summary>Why a connection's session ended. Each value is also a label for "how connections end" counts.</summary>
public enum ConnectionEndReason
{
    /// <summary>The shim said GOODBYE and the stream ended after it.</summary>
    Goodbye,
    /// <summary>The stream ended cleanly on a frame boundary without GOODBYE: the process died or was killed.</summary>
    EndOfStream,
    /// <summary>The stream broke the protocol; <see cref="ConnectionOutcome.Violation"/> says how.</summary>
    ProtocolError,
    /// <summary>The socket failed (for example, reset by the peer).</summary>
    TransportError,
    /// <summary>The agent stopped reading (shutting down).</summary>
    Cancelled,
}

/// <summary>How a process's connection ended, as its profile records it.</summary>
/// <param name="Violation">For a protocol error, the protocol's name of the violation (e.g. <c>UndefinedId</c>).</param>
/// <param name="Detail">The error's text, when there is one.</param>
public readonly record struct ConnectionOutcome(ConnectionEndReason Reason, string? Violation, string? Detail)
{
    /// <summary>A short label: the reason, or the violation for a protocol error (e.g. <c>UndefinedId</c>).</summary>
    public string Label => Violation ?? Reason.ToString();

    public override string ToString()
    {
        if (Detail is null) return Label;
        // A protocol error's message already starts with its violation.
        return Detail.StartsWith(Label, StringComparison.Ordinal) ? Detail : $"{Label}: {Detail}";
    }
}

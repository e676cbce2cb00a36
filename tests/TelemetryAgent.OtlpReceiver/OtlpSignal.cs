namespace TelemetryAgent.OtlpReceiver;

/// <summary>The OTLP signals the receiver accepts.</summary>
public enum OtlpSignal
{
    Metrics,
    Logs,
    Profiles,
    Traces,
}

/// <summary>How a request reached the receiver.</summary>
public enum OtlpTransport
{
    /// <summary>OTLP/HTTP with a binary protobuf body (HTTP/1.1).</summary>
    Http,

    /// <summary>OTLP/gRPC over cleartext HTTP/2 (h2c).</summary>
    Grpc,
}

namespace TelemetryAgent.OtlpReceiver.Internal;

/// <summary>The gRPC status codes this receiver sends (values fixed by the gRPC specification).</summary>
internal enum GrpcStatusCode
{
    Ok = 0,
    InvalidArgument = 3,
    ResourceExhausted = 8,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
}

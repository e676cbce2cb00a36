namespace TelemetryAgent.OtlpReceiver;

/// <summary>
/// One request as the receiver answered it, accepted or not: what tests assert on when checking
/// retries, rejections and error replies.
/// </summary>
/// <param name="Signal">The signal the path names; null for an unknown path.</param>
/// <param name="Transport">HTTP or gRPC.</param>
/// <param name="Path">The request path.</param>
/// <param name="HttpStatus">The HTTP status sent.</param>
/// <param name="GrpcStatus">The grpc-status trailer sent (gRPC only).</param>
/// <param name="Error">Why the request was not accepted; null when it was.</param>
/// <param name="At">When the answer was decided.</param>
public sealed record ReceiverAttempt(
    OtlpSignal? Signal, OtlpTransport Transport, string Path, int HttpStatus, int? GrpcStatus, string? Error, DateTimeOffset At)
{
    public bool Accepted => Error is null;
}

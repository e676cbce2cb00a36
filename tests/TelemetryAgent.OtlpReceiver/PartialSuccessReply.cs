namespace TelemetryAgent.OtlpReceiver;

/// <summary>
/// A partial success the receiver answers with (see <see cref="OtlpReceiver.PartialSuccess"/>): so many items
/// (data points, log records or profiles) rejected, and why.
/// </summary>
/// <param name="Signal">Answer so only to this signal; null means every signal.</param>
public sealed record PartialSuccessReply(long Rejected, string Message, OtlpSignal? Signal = null);

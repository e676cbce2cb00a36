namespace TelemetryAgent.OtlpReceiver;

/// <summary>
/// Which requests the receiver rejects as temporarily unavailable (HTTP 503 / gRPC UNAVAILABLE):
/// the next <see cref="Count"/> requests, and every request until <see cref="Until"/>.
/// </summary>
/// <param name="Count">How many of the next requests to reject.</param>
/// <param name="Until">Reject every request arriving before this instant.</param>
/// <param name="RetryAfter">
/// Delay advertised to the client: HTTP <c>Retry-After</c> (whole seconds, rounded up) and gRPC
/// <c>google.rpc.RetryInfo</c> in <c>grpc-status-details-bin</c>. Null sends no hint.
/// </param>
/// <param name="Signal">Reject only requests of this signal; null means every signal.</param>
public sealed record FailurePlan(int Count = 0, DateTimeOffset? Until = null, TimeSpan? RetryAfter = null, OtlpSignal? Signal = null)
{
    public int Count { get; init; } =
        Count >= 0 ? Count : throw new ArgumentOutOfRangeException(nameof(Count), Count, "must not be negative");

    public TimeSpan? RetryAfter { get; init; } =
        RetryAfter is null || RetryAfter >= TimeSpan.Zero
            ? RetryAfter
            : throw new ArgumentOutOfRangeException(nameof(RetryAfter), RetryAfter, "must not be negative");

    /// <summary>Reject the next <paramref name="count"/> requests.</summary>
    public static FailurePlan FirstRequests(int count, TimeSpan? retryAfter = null, OtlpSignal? signal = null) =>
        new(Count: count, RetryAfter: retryAfter, Signal: signal);

    /// <summary>Reject every request for <paramref name="window"/>, starting now.</summary>
    public static FailurePlan For(TimeSpan window, TimeSpan? retryAfter = null, OtlpSignal? signal = null) =>
        new(Until: DateTimeOffset.UtcNow + window, RetryAfter: retryAfter, Signal: signal);
}

/// <summary>Thread-safe holder of the current <see cref="FailurePlan"/>.</summary>
public sealed class FailureInjector
{
    private readonly Lock _gate = new();
    private FailurePlan? _plan;
    private int _remaining;
    private int _rejected;

    private readonly TimeProvider _time;

    internal FailureInjector(FailurePlan? initial, TimeProvider time)
    {
        _time = time;
        Set(initial);
    }

    /// <summary>Replaces the current plan; null stops all injected failures.</summary>
    public void Set(FailurePlan? plan)
    {
        lock (_gate)
        {
            _plan = plan;
            _remaining = plan?.Count ?? 0;
        }
    }

    /// <summary>Requests rejected so far.</summary>
    public int Rejected
    {
        get
        {
            lock (_gate)
            {
                return _rejected;
            }
        }
    }

    /// <summary>Decides for one request: true when it must be rejected, with the delay to advertise.</summary>
    internal bool ShouldReject(OtlpSignal signal, out TimeSpan? retryAfter)
    {
        lock (_gate)
        {
            retryAfter = null;
            if (_plan is null || (_plan.Signal is { } only && only != signal))
            {
                return false;
            }
            bool reject;
            if (_remaining > 0)
            {
                _remaining--;
                reject = true;
            }
            else
            {
                reject = _plan.Until is { } until && _time.GetUtcNow() < until;
            }
            if (reject)
            {
                _rejected++;
                retryAfter = _plan.RetryAfter;
            }
            return reject;
        }
    }
}

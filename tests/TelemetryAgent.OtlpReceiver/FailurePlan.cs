using Grpc.Core;

namespace TelemetryAgent.OtlpReceiver;

/// <summary>
/// Which requests the receiver turns away: the next <see cref="Count"/> requests, and every request until
/// <see cref="Until"/>. By default it answers "unavailable" (HTTP 503 / gRPC UNAVAILABLE); <see cref="Code"/> picks
/// another answer, and <see cref="ResetConnection"/> none at all.
/// </summary>
/// <param name="Count">How many of the next requests to turn away.</param>
/// <param name="Until">Turn away every request arriving before this instant.</param>
/// <param name="RetryAfter">
/// Delay advertised to the client: HTTP <c>Retry-After</c> (whole seconds, rounded up) and gRPC
/// <c>google.rpc.RetryInfo</c> in the status details. Null sends no hint.
/// </param>
/// <param name="Signal">Turn away only requests of this signal; null means every signal.</param>
public sealed record FailurePlan(int Count = 0, DateTimeOffset? Until = null, TimeSpan? RetryAfter = null, OtlpSignal? Signal = null)
{
    public int Count { get; init; } =
        Count >= 0 ? Count : throw new ArgumentOutOfRangeException(nameof(Count), Count, "must not be negative");

    public TimeSpan? RetryAfter { get; init; } =
        RetryAfter is null || RetryAfter >= TimeSpan.Zero
            ? RetryAfter
            : throw new ArgumentOutOfRangeException(nameof(RetryAfter), RetryAfter, "must not be negative");

    /// <summary>
    /// The gRPC status of the answer; over HTTP, the status that the gRPC HTTP mapping pairs with it (503 for
    /// UNAVAILABLE, 429 for RESOURCE_EXHAUSTED, 400 for INVALID_ARGUMENT, ...), with a <c>google.rpc.Status</c> body.
    /// </summary>
    public StatusCode Code { get; init; } = StatusCode.Unavailable;

    /// <summary>
    /// No answer: once the request is under way (its headers and the first bytes of its body read), the TCP
    /// connection is reset (RST), as a collector that crashes or a proxy that drops the connection would do it.
    /// </summary>
    public bool ResetConnection { get; init; }

    /// <summary>
    /// Over HTTP, <see cref="RetryAfter"/> as an HTTP date (the receiver's clock plus the delay, in whole seconds)
    /// rather than a number of seconds.
    /// </summary>
    public bool RetryAfterAsDate { get; init; }

    /// <summary>Turn away the next <paramref name="count"/> requests.</summary>
    public static FailurePlan FirstRequests(int count, TimeSpan? retryAfter = null, OtlpSignal? signal = null) =>
        new(Count: count, RetryAfter: retryAfter, Signal: signal);

    /// <summary>Turn away every request for <paramref name="window"/>, starting now.</summary>
    public static FailurePlan For(TimeSpan window, TimeSpan? retryAfter = null, OtlpSignal? signal = null) =>
        new(Until: DateTimeOffset.UtcNow + window, RetryAfter: retryAfter, Signal: signal);

    /// <summary>Reset the connection of each of the next <paramref name="count"/> requests, mid-request.</summary>
    public static FailurePlan ResetFirstRequests(int count, OtlpSignal? signal = null) =>
        new(Count: count, Signal: signal) { ResetConnection = true };
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

    /// <summary>Requests turned away so far (answered with an error, or reset).</summary>
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

    /// <summary>
    /// Decides for one request: the plan that turns it away (answered as <paramref name="reset"/> asks: reset or
    /// answered), or null when it goes through. A reset plan is decided before the request is read, an answering one
    /// after, so each consumes its count at its own moment.
    /// </summary>
    internal FailurePlan? Decide(OtlpSignal signal, bool reset)
    {
        lock (_gate)
        {
            if (_plan is null || _plan.ResetConnection != reset || (_plan.Signal is { } only && only != signal))
            {
                return null;
            }
            bool turnAway;
            if (_remaining > 0)
            {
                _remaining--;
                turnAway = true;
            }
            else
            {
                turnAway = _plan.Until is { } until && _time.GetUtcNow() < until;
            }
            if (!turnAway)
            {
                return null;
            }
            _rejected++;
            return _plan;
        }
    }
}

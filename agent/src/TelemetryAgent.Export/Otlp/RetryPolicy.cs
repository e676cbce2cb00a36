namespace TelemetryAgent.Export.Otlp;

/// <summary>
/// When to try a retryable request again: exponential backoff with full jitter, or the server's delay
/// (<c>Retry-After</c>, gRPC <c>RetryInfo</c>) when it gave one; a request is given up once
/// <see cref="GiveUpAfter"/> has passed since its first attempt.
/// </summary>
public sealed record RetryPolicy
{
    public TimeSpan InitialBackoff { get; init; } = TimeSpan.FromMilliseconds(250);
    public TimeSpan MaxBackoff { get; init; } = TimeSpan.FromSeconds(5);
    /// <summary>A server's delay longer than this is shortened to it.</summary>
    public TimeSpan MaxServerDelay { get; init; } = TimeSpan.FromSeconds(60);
    public TimeSpan GiveUpAfter { get; init; } = TimeSpan.FromMinutes(2);

    public static RetryPolicy Default { get; } = new();

    /// <summary>The wait before retry number <paramref name="retry"/> (1 for the first retry).</summary>
    public TimeSpan Delay(int retry, TimeSpan? serverDelay, Random random)
    {
        ArgumentNullException.ThrowIfNull(random);
        if (serverDelay is { } requested) return requested < MaxServerDelay ? requested : MaxServerDelay;
        var ceiling = InitialBackoff.TotalMilliseconds * Math.Pow(2, Math.Min(retry - 1, 30));
        ceiling = Math.Min(ceiling, MaxBackoff.TotalMilliseconds);
        // Full jitter, but never less than half the step: senders spread out without hammering the server.
        return TimeSpan.FromMilliseconds(ceiling / 2 + random.NextDouble() * ceiling / 2);
    }
}

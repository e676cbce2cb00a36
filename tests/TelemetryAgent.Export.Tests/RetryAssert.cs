using TelemetryAgent.Export.Otlp;

namespace TelemetryAgent.Export.Tests;

/// <summary>What the exporters' retry waits, seen on a fake clock, must be under <see cref="RetryPolicy.Default"/>.</summary>
internal static class RetryAssert
{
    /// <summary>
    /// Each wait within its backoff step (full jitter over half the step: 0.125-0.25 s, 0.25-0.5 s, ... 2.5-5 s from
    /// the sixth retry on), and the retries given up only when the next wait would have crossed the two minutes.
    /// </summary>
    public static void BackedOffThenGaveUp(IReadOnlyList<TimeSpan> waits)
    {
        var policy = RetryPolicy.Default;
        for (var retry = 1; retry <= waits.Count; retry++)
        {
            var step = TimeSpan.FromTicks(Math.Min(policy.InitialBackoff.Ticks << Math.Min(retry - 1, 20), policy.MaxBackoff.Ticks));
            Assert.InRange(waits[retry - 1], step / 2, step);
        }
        var waited = waits.Aggregate(TimeSpan.Zero, (sum, wait) => sum + wait);
        Assert.InRange(waited, policy.GiveUpAfter - policy.MaxBackoff, policy.GiveUpAfter);
    }
}

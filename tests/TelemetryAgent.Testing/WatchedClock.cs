using System.Diagnostics;
using System.Threading.Channels;
using Microsoft.Extensions.Time.Testing;

namespace TelemetryAgent.Testing;

/// <summary>
/// A <see cref="FakeTimeProvider"/> that shows each wait started on it: a test sees the code under test waiting
/// (a <c>Task.Delay</c> on this clock, a timer), with how long it asked for, and then advances the clock by that much.
/// </summary>
public sealed class WatchedClock(DateTimeOffset start) : FakeTimeProvider(start)
{
    private readonly Channel<TimeSpan> _waits = Channel.CreateUnbounded<TimeSpan>();

    public WatchedClock() : this(new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero))
    {
    }

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        // Registered before it is announced: advancing the clock as soon as the wait is seen fires it.
        var timer = base.CreateTimer(callback, state, dueTime, period);
        if (dueTime != Timeout.InfiniteTimeSpan) _waits.Writer.TryWrite(dueTime);
        return timer;
    }

    /// <summary>
    /// The next wait started on this clock; null when <paramref name="done"/> became true first (checked every few
    /// milliseconds of real time). Throws <see cref="TimeoutException"/> when neither happened within <paramref name="timeout"/>.
    /// </summary>
    public async Task<TimeSpan?> NextWaitAsync(TimeSpan timeout, Func<bool>? done = null)
    {
        var waited = Stopwatch.StartNew();
        while (true)
        {
            if (_waits.Reader.TryRead(out var wait)) return wait;
            if (done?.Invoke() == true) return null;
            if (waited.Elapsed > timeout) throw new TimeoutException($"nothing waited on the clock within {timeout}");
            using var poll = new CancellationTokenSource(TimeSpan.FromMilliseconds(20));
            try
            {
                await _waits.Reader.WaitToReadAsync(poll.Token);
            }
            catch (OperationCanceledException)
            {
                // Time to look at done again.
            }
        }
    }
}

using TelemetryAgent.Sessions;
using TelemetryAgent.Testing;

namespace TelemetryAgent.Profiling.Tests;

/// <summary>The AWS Lambda handler calls that shims report ended (Stats.invocations_ended), as the Lambda extension waits on them.</summary>
public sealed class InvocationCountTests
{
    [Fact]
    public void Each_session_adds_what_its_cumulative_count_adds_and_a_smaller_one_is_ignored()
    {
        var counter = new InvocationCounter();
        var first = new SessionScript(invocations: counter, countsInvocations: true);
        var second = new SessionScript(pid: 4343, invocations: counter, countsInvocations: true);
        first.Stats(10, 0, invocationsEnded: 1).Stats(20, 0, invocationsEnded: 1);
        second.Stats(5, 0, invocationsEnded: 2);
        first.Stats(30, 0, invocationsEnded: 3).Stats(40, 0, invocationsEnded: 2);
        Assert.Equal(5, counter.Ended);
        Assert.Equal(3, first.Session.InvocationsEnded);
        Assert.True(first.Session.CountsInvocations);
        Assert.False(new SessionScript(invocations: counter).Session.CountsInvocations);
        Assert.Equal(2, counter.CountingProcesses);
    }

    [Fact]
    public async Task A_wait_for_a_counting_process_ends_at_the_first_hello_that_counts()
    {
        var counter = new InvocationCounter();
        var waiting = counter.WaitForCountingProcessAsync(CancellationToken.None);
        _ = new SessionScript(invocations: counter);
        Assert.False(waiting.IsCompleted);
        _ = new SessionScript(pid: 4343, invocations: counter, countsInvocations: true);
        await waiting.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(1, counter.CountingProcesses);
    }

    [Fact]
    public void The_final_stats_of_goodbye_count_too()
    {
        var counter = new InvocationCounter();
        var script = new SessionScript(invocations: counter, countsInvocations: true).Stats(1, 0, invocationsEnded: 1);
        script.Session.OnGoodbye(new Protocol.Messages.Goodbye { FinalStats = new Protocol.Messages.Stats { InvocationsEnded = 4 } });
        Assert.Equal(4, counter.Ended);
    }

    [Fact]
    public async Task A_wait_ends_when_the_count_is_reached_and_not_before()
    {
        var counter = new InvocationCounter();
        var script = new SessionScript(invocations: counter, countsInvocations: true);
        var waiting = counter.WaitForAsync(2, CancellationToken.None);
        script.Stats(1, 0, invocationsEnded: 1);
        Assert.False(waiting.IsCompleted);
        script.Stats(2, 0, invocationsEnded: 2);
        await waiting.WaitAsync(TimeSpan.FromSeconds(30));
        await counter.WaitForAsync(1, CancellationToken.None); // already reached: at once

        using var cancel = new CancellationTokenSource();
        var never = counter.WaitForAsync(3, cancel.Token);
        await cancel.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => never);
    }
}

using System.Diagnostics;
using Microsoft.Extensions.Logging;
using TelemetryAgent.Export;
using TelemetryAgent.Hosting;

namespace TelemetryAgent.Lambda;

/// <summary>What the extension does around each event.</summary>
/// <param name="FlushTimeout">How long, at most, the export after an invocation may take before the extension asks for the next event.</param>
/// <param name="ShutdownMargin">Kept free before SHUTDOWN's deadline, when Lambda kills the environment.</param>
/// <param name="FirstProcessWait">
/// How long the first invocation waits, at most, for a process that counts its handler's calls to connect: Init may end
/// before the agent serves its socket (the layer's launcher asks for the first event for it), and the runtime's shim
/// waits in the backlog until then. Waited once: a function that runs without the shim pays it on its first invocation.
/// </param>
public sealed record LambdaExtensionSettings(TimeSpan FlushTimeout, TimeSpan ShutdownMargin, TimeSpan FirstProcessWait)
{
    public static readonly LambdaExtensionSettings Default = new(TimeSpan.FromSeconds(2), TimeSpan.FromMilliseconds(200), TimeSpan.FromSeconds(2));
}

/// <summary>
/// The agent as an AWS Lambda external extension. Lambda freezes the environment as soon as the function's handler has
/// returned and every extension has asked for its next event, so nothing may wait for an interval or the process's
/// exit: after each INVOKE the extension waits until the shim says the handler's call ended (Stats.invocations_ended),
/// takes a checkpoint of every process and exports it, and only then asks for the next event. SHUTDOWN ends every
/// connection and sends everything left before its deadline.
/// </summary>
public sealed class LambdaExtension(ExtensionsApiClient api, AgentHost host, ExportPipeline export, LambdaExtensionSettings settings, ILogger log,
    TimeProvider? time = null)
{
    // While a process that counts its handler's calls is connected, how often the wait for an invocation's end looks
    // again whether one still is (a runtime that was killed ends its connection).
    private static readonly TimeSpan RecheckInterval = TimeSpan.FromMilliseconds(250);

    private readonly TimeProvider _time = time ?? TimeProvider.System;
    private long _invocations;
    private bool _saidNoEnd, _waitedForFirstProcess;

    /// <summary>
    /// Runs until SHUTDOWN (exit code 0) or until the Extensions API fails (1). Registration is the caller's, and so may be
    /// the first /event/next: <paramref name="firstEvent"/>, when the caller asked already.
    /// </summary>
    public async Task<int> RunAsync(Task<ExtensionEvent>? firstEvent, CancellationToken cancel)
    {
        while (true)
        {
            ExtensionEvent next;
            try
            {
                next = await (firstEvent ?? api.NextEventAsync(cancel)).ConfigureAwait(false);
                firstEvent = null;
            }
            catch (Exception e) when (e is ExtensionsApiException or HttpRequestException or IOException or System.Net.Sockets.SocketException)
            {
                log.LogError("the Lambda Extensions API failed: {Reason}; exporting what is left and exiting", e.Message);
                await ShutdownAsync(_time.GetUtcNow() + settings.FlushTimeout).ConfigureAwait(false);
                return 1;
            }
            switch (next.Type)
            {
                case ExtensionEvent.Invoke:
                    await AfterInvokeAsync(next, cancel).ConfigureAwait(false);
                    break;
                case ExtensionEvent.Shutdown:
                    log.LogInformation("SHUTDOWN ({Reason}): exporting what is left", next.ShutdownReason);
                    await ShutdownAsync(next.Deadline - settings.ShutdownMargin).ConfigureAwait(false);
                    return 0;
                default:
                    log.LogWarning("ignored an event of unknown type {Type}", next.Type);
                    break;
            }
        }
    }

    private async Task AfterInvokeAsync(ExtensionEvent invoke, CancellationToken cancel)
    {
        var number = ++_invocations;
        await WaitForHandlerEndAsync(number, invoke.Deadline, cancel).ConfigureAwait(false);
        var flushed = Stopwatch.StartNew();
        var deadline = settings.FlushTimeout;
        using (var checkpointTimeout = new CancellationTokenSource(deadline))
        {
            try
            {
                await host.CheckpointAllAsync().WaitAsync(checkpointTimeout.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                // A session busy with a large frame: its checkpoint goes out with the next invocation.
            }
        }
        var left = deadline - flushed.Elapsed;
        var sent = await export.FlushAsync(left > TimeSpan.Zero ? left : TimeSpan.Zero).ConfigureAwait(false);
        // One line per invocation would cost every function its log volume: only a slow export is said.
        if (!sent)
            log.LogWarning("invocation {Number} ({RequestId}): not all of its export was sent within {Seconds:0.#} s; the rest goes out later",
                number, invoke.RequestId, deadline.TotalSeconds);
    }

    /// <summary>
    /// Waits until the shims have reported <paramref name="number"/> handler calls ended in all, while one that counts them
    /// is connected, until the invocation's deadline.
    /// </summary>
    private async Task WaitForHandlerEndAsync(long number, DateTimeOffset deadline, CancellationToken cancel)
    {
        var invocations = host.Invocations;
        if (!_waitedForFirstProcess)
            await WaitForFirstProcessAsync(deadline, cancel).ConfigureAwait(false);
        while (invocations.Ended < number && host.AnyCountsInvocations)
        {
            var left = deadline - _time.GetUtcNow();
            if (left <= TimeSpan.Zero) break;
            using var wait = CancellationTokenSource.CreateLinkedTokenSource(cancel);
            wait.CancelAfter(left < RecheckInterval ? left : RecheckInterval);
            try
            {
                await invocations.WaitForAsync(number, wait.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (!cancel.IsCancellationRequested)
            {
            }
        }
        if (invocations.Ended >= number) return;
        if (host.AnyCountsInvocations && !_saidNoEnd)
        {
            _saidNoEnd = true;
            log.LogWarning("invocation {Number}: no process reported its handler's end before the invocation's deadline; exported what had arrived", number);
        }
        // Counted from what the shims have said from here on: one missed end must not delay every later invocation.
        _invocations = Math.Max(invocations.Ended, number - 1);
    }

    private async Task WaitForFirstProcessAsync(DateTimeOffset deadline, CancellationToken cancel)
    {
        _waitedForFirstProcess = true;
        var left = deadline - _time.GetUtcNow();
        using var wait = CancellationTokenSource.CreateLinkedTokenSource(cancel);
        wait.CancelAfter(left < settings.FirstProcessWait ? (left > TimeSpan.Zero ? left : TimeSpan.Zero) : settings.FirstProcessWait);
        try
        {
            await host.Invocations.WaitForCountingProcessAsync(wait.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancel.IsCancellationRequested)
        {
            log.LogWarning("no process that counts its handler's calls connected within {Seconds:0.#} s of the first invocation (is the function's " +
                           "AWS_LAMBDA_EXEC_WRAPPER /opt/telemetry-agent/exec-wrapper?): invocations are exported without waiting for their end",
                settings.FirstProcessWait.TotalSeconds);
        }
    }

    private async Task ShutdownAsync(DateTimeOffset deadline)
    {
        await host.DisposeAsync().ConfigureAwait(false);
        var left = deadline - _time.GetUtcNow();
        await export.ShutdownAsync(left > TimeSpan.Zero ? left : TimeSpan.Zero).ConfigureAwait(false);
    }
}

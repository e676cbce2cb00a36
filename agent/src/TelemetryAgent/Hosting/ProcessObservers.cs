using Microsoft.Extensions.Logging;
using TelemetryAgent.Profiling;

namespace TelemetryAgent.Hosting;

/// <summary>
/// Hands each process event to every observer in turn. An observer that throws (a bug of ours) is logged and
/// costs that one call only: neither the connection nor the other observers notice.
/// </summary>
public sealed class ProcessObservers(ILogger log, IReadOnlyList<IProcessObserver> observers) : IProcessObserver
{
    public void OnStarted(ProcessProfile running) => Each(running, "starting", static (o, p) => o.OnStarted(p));

    public void OnCheckpoint(ProcessProfile checkpoint) => Each(checkpoint, "checkpoint", static (o, p) => o.OnCheckpoint(p));

    public void OnCompleted(ProcessProfile completed) => Each(completed, "completion", static (o, p) => o.OnCompleted(p));

    private void Each(ProcessProfile profile, string what, Action<IProcessObserver, ProcessProfile> call)
    {
        foreach (var observer in observers)
        {
            try
            {
                call(observer, profile);
            }
            catch (Exception e)
            {
                log.LogError("{Observer} failed on the {What} of pid {Pid}: {Reason}", observer.GetType().Name, what, profile.Identity.Pid, e.Message);
            }
        }
    }
}

using TelemetryAgent.Profiling;

namespace TelemetryAgent.Hosting;

/// <summary>
/// Hands each process event to every observer in turn. An observer that throws (a bug of ours) is logged and
/// costs that one call only: neither the connection nor the other observers notice.
/// </summary>
public sealed class ProcessObservers(TextWriter log, IReadOnlyList<IProcessObserver> observers) : IProcessObserver
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
                lock (log) log.WriteLine($"telemetry-agent: {observer.GetType().Name} failed on the {what} of pid {profile.Identity.Pid}: {e.Message}");
            }
        }
    }
}

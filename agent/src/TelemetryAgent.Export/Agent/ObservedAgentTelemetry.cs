using TelemetryAgent.Aggregation;
using TelemetryAgent.Sessions;

namespace TelemetryAgent.Export.Agent;

/// <summary>
/// The agent's counters as process observers see them: a connection counts from its HELLO (connections that never
/// sent one, such as a stray client that sent garbage, are not seen here), events when a checkpoint or the
/// completed profile reports them.
/// </summary>
public sealed class ObservedAgentTelemetry : IProcessObserver, IAgentTelemetrySource
{
    private readonly Lock _gate = new();
    private readonly Dictionary<string, long> _ends = new(StringComparer.Ordinal);
    private readonly Dictionary<string, long> _protocolErrors = new(StringComparer.Ordinal);
    // Per live process (its identity object is shared by its checkpoints): events counted so far.
    private readonly Dictionary<ProcessIdentity, long> _eventsCounted = new(ReferenceEqualityComparer.Instance);
    private long _accepted;
    private long _events;

    public void OnStarted(ProcessProfile running)
    {
        lock (_gate)
        {
            _accepted++;
            _eventsCounted[running.Identity] = 0;
        }
    }

    public void OnCheckpoint(ProcessProfile checkpoint)
    {
        lock (_gate) CountEvents(checkpoint);
    }

    public void OnCompleted(ProcessProfile completed)
    {
        lock (_gate)
        {
            CountEvents(completed);
            _eventsCounted.Remove(completed.Identity);
            if (completed.End is not { } end) return;
            var reason = end.Reason.ToString();
            _ends[reason] = _ends.GetValueOrDefault(reason) + 1;
            if (end.Violation is { } violation)
            {
                var name = violation.ToString();
                _protocolErrors[name] = _protocolErrors.GetValueOrDefault(name) + 1;
            }
        }
    }

    public AgentTelemetrySnapshot Snapshot()
    {
        lock (_gate)
        {
            return new AgentTelemetrySnapshot(_eventsCounted.Count, _accepted, new Dictionary<string, long>(_ends),
                new Dictionary<string, long>(_protocolErrors), _events);
        }
    }

    private void CountEvents(ProcessProfile profile)
    {
        var counted = _eventsCounted.GetValueOrDefault(profile.Identity);
        if (profile.EventsReceived <= counted) return;
        _events += profile.EventsReceived - counted;
        _eventsCounted[profile.Identity] = profile.EventsReceived;
    }
}

namespace TelemetryAgent.Profiling;

/// <summary>
/// Hears about one process's life from the session that builds its profile: exporters and file writers plug in here.
/// </summary>
/// <remarks>
/// Called on the session's read loop: an implementation returns quickly (hand work to its own queue) and never
/// throws. The profiles it is given are frozen (<see cref="ProcessProfile.IsFrozen"/>) and safe to keep and read
/// from any thread, except in <see cref="OnStarted"/>, where only the identity, clock and connection time may be read.
/// </remarks>
public interface IProcessObserver
{
    /// <summary>HELLO arrived: the process is known.</summary>
    void OnStarted(ProcessProfile running);

    /// <summary>A checkpoint the host asked for: everything so far, cumulative since HELLO.</summary>
    void OnCheckpoint(ProcessProfile checkpoint);

    /// <summary>The connection ended; the profile is completed.</summary>
    void OnCompleted(ProcessProfile completed);
}

namespace TelemetryAgent.Export.Otlp;

/// <summary>
/// What an exporter did, counted in profiles (OTLP's unit for partial success) and requests; cumulative, safe to read
/// from any thread. The agent's own telemetry reports these.
/// </summary>
public sealed class ExportCounters
{
    private long _requestsSent;
    private long _profilesSent;
    private long _bytesSent;
    private long _retries;
    private long _profilesDropped;
    private long _profilesFailed;
    private long _profilesRejected;

    /// <summary>Requests the server accepted.</summary>
    public long RequestsSent => Interlocked.Read(ref _requestsSent);
    /// <summary>Profiles in accepted requests (those the server rejected in a partial success included).</summary>
    public long ProfilesSent => Interlocked.Read(ref _profilesSent);
    /// <summary>Encoded bytes of accepted requests, before compression.</summary>
    public long BytesSent => Interlocked.Read(ref _bytesSent);
    /// <summary>Attempts repeated after a retryable failure.</summary>
    public long Retries => Interlocked.Read(ref _retries);
    /// <summary>Profiles never sent: of ended processes when the queue was full, or any the agent stopped before they could go.</summary>
    public long ProfilesDropped => Interlocked.Read(ref _profilesDropped);
    /// <summary>Profiles in requests that failed for good (a non-retryable answer, or retries given up).</summary>
    public long ProfilesFailed => Interlocked.Read(ref _profilesFailed);
    /// <summary>Profiles the server reported as rejected in a partial success.</summary>
    public long ProfilesRejected => Interlocked.Read(ref _profilesRejected);

    internal void Sent(int profiles, int bytes)
    {
        Interlocked.Increment(ref _requestsSent);
        Interlocked.Add(ref _profilesSent, profiles);
        Interlocked.Add(ref _bytesSent, bytes);
    }

    internal void Retried() => Interlocked.Increment(ref _retries);
    internal void Dropped(long profiles) => Interlocked.Add(ref _profilesDropped, profiles);
    internal void Failed(long profiles) => Interlocked.Add(ref _profilesFailed, profiles);
    internal void Rejected(long profiles) => Interlocked.Add(ref _profilesRejected, profiles);

    public override string ToString()
        => $"sent {ProfilesSent} profiles in {RequestsSent} requests ({BytesSent} bytes), {Retries} retries, " +
           $"{ProfilesDropped} dropped, {ProfilesFailed} failed, {ProfilesRejected} rejected by the server";
}

namespace TelemetryAgent.Aggregation;

/// <summary>Who is at the other end of a Unix socket, as the kernel says (SO_PEERCRED at connect time).</summary>
public readonly record struct PeerCredentials(int Pid, uint Uid, uint Gid)
{
    public override string ToString() => $"pid {Pid}, uid {Uid}, gid {Gid}";
}

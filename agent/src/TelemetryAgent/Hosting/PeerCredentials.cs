using TelemetryAgent.Profiling;

namespace TelemetryAgent.Hosting;

/// <summary>
/// Who is at the other end of a Unix socket, as the kernel says (SO_PEERCRED at connect time): what admission
/// checks, and what the session records as the profile's <see cref="PeerProcess"/>.
/// </summary>
public readonly record struct PeerCredentials(int Pid, uint Uid, uint Gid)
{
    public PeerProcess ToPeerProcess() => new(Pid, Uid, Gid);

    public override string ToString() => $"pid {Pid}, uid {Uid}, gid {Gid}";
}

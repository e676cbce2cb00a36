namespace TelemetryAgent.Profiling;

/// <summary>The process at the other end of a connection, as the kernel named it when it connected (SO_PEERCRED).</summary>
public readonly record struct PeerProcess(int Pid, uint Uid, uint Gid);

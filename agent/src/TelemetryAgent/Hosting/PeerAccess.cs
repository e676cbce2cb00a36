using TelemetryAgent.Transport;

namespace TelemetryAgent.Hosting;

/// <summary>
/// Who may connect. The socket file's mode decides who can open it (owner-only, or owner and
/// <see cref="SocketGroup"/>); the agent then reads the peer's credentials (SO_PEERCRED) and accepts only the
/// users in <see cref="AllowedUids"/>.
/// </summary>
public sealed record PeerAccess(IReadOnlySet<uint> AllowedUids, uint? SocketGroup)
{
    /// <summary>The agent's own user and root.</summary>
    public static PeerAccess Default { get; } = new(DefaultUids(), null);

    public static IReadOnlySet<uint> DefaultUids() => new SortedSet<uint> { Native.CurrentUserId(), 0 };

    public bool Allows(PeerCredentials peer) => AllowedUids.Contains(peer.Uid);
}

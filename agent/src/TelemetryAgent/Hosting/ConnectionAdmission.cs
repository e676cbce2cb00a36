using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using TelemetryAgent.Sessions;
using TelemetryAgent.Transport;

namespace TelemetryAgent.Hosting;

/// <summary>
/// Decides, before anything is read, whether a new connection is served: its peer must be an allowed user and
/// the agent must have room for another connection. A refused connection is closed, counted by reason and
/// logged (the first ones of each reason, then every hundredth, so a flood cannot fill the log).
/// </summary>
internal static class ConnectionAdmission
{
    private const int LoggedInFull = 20;

    /// <summary>The peer's credentials when it may connect; null when it was refused.</summary>
    public static PeerCredentials? Admit(Socket socket, PeerAccess access, AgentStatistics statistics, ILogger log)
    {
        statistics.ConnectionAccepted();
        if (!Native.TryGetPeerCredentials(socket, out var peer))
        {
            Refuse(statistics, log, AgentStatistics.RejectReasons.NoPeerCredentials, "its peer's credentials cannot be read");
            return null;
        }
        if (!access.Allows(peer))
        {
            Refuse(statistics, log, AgentStatistics.RejectReasons.UidNotAllowed,
                $"uid {peer.Uid} is not allowed ({peer}; allowed uids: {string.Join(", ", access.AllowedUids)})");
            return null;
        }
        return peer;
    }

    /// <summary>Counts the session as active unless <paramref name="maxConnections"/> already are.</summary>
    public static bool TryOpen(ProcessSession session, PeerCredentials peer, int maxConnections, AgentStatistics statistics, ILogger log)
    {
        if (statistics.TryOpen(session, maxConnections)) return true;
        Refuse(statistics, log, AgentStatistics.RejectReasons.TooManyConnections,
            $"{maxConnections} connections are open already (--max-connections; {peer})");
        return false;
    }

    private static void Refuse(AgentStatistics statistics, ILogger log, string reason, string why)
    {
        var count = statistics.ConnectionRejected(reason);
        if (count <= LoggedInFull || count % 100 == 0)
            log.LogWarning("connection refused ({Reason}, {Count:N0} so far): {Why}", reason, count, why);
    }
}

using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http;

namespace TelemetryAgent.OtlpReceiver.Internal;

/// <summary>The injected reset (<see cref="FailurePlan.ResetConnection"/>): the request gets no answer at all.</summary>
internal static class ConnectionReset
{
    /// <summary>
    /// Reads the first byte of the request's body, so that the request is under way, then closes the connection's
    /// socket abortively: the kernel sends RST (not FIN), the client's request fails with a reset connection, and
    /// every other request on that connection (HTTP/2 streams included) fails with it.
    /// </summary>
    public static async Task ResetAsync(HttpContext context)
    {
        var socket = context.Features.Get<IConnectionSocketFeature>()?.Socket
                     ?? throw new InvalidOperationException("the connection exposes no socket to reset");
        try
        {
            _ = await context.Request.Body.ReadAsync(new byte[1], context.RequestAborted);
        }
        catch (Exception error) when (error is IOException or OperationCanceledException or BadHttpRequestException)
        {
            // Gone already: reset it all the same.
        }
        socket.Close(0);
    }
}

using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace TelemetryAgent.OtlpReceiver;

/// <summary>
/// Two loopback TCP ports held for an <see cref="OtlpReceiver"/> that starts later (<see cref="OtlpReceiver.ReservePorts"/>):
/// bound but not listening, so a client connecting meanwhile is refused, as by a collector that is down, and no other
/// socket of this machine can take them (a port merely found free and let go can be taken by anyone's next connection).
/// </summary>
public sealed class ReservedPorts : IDisposable
{
    private readonly Socket _http = Bind();
    private readonly Socket _grpc = Bind();

    public int HttpPort => ((IPEndPoint)_http.LocalEndPoint!).Port;

    public int GrpcPort => ((IPEndPoint)_grpc.LocalEndPoint!).Port;

    /// <summary>The ports as receiver options (both chosen), e.g. to build an endpoint before the receiver exists.</summary>
    public OtlpReceiverOptions Options => new() { HttpPort = HttpPort, GrpcPort = GrpcPort };

    // Kestrel takes ownership of the descriptor it is given: it gets a duplicate, and these sockets close their own.
    internal ulong TakeHttpHandle() => Duplicate(_http);

    internal ulong TakeGrpcHandle() => Duplicate(_grpc);

    public void Dispose()
    {
        _http.Dispose();
        _grpc.Dispose();
    }

    private static Socket Bind()
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return socket;
    }

    private static ulong Duplicate(Socket socket)
    {
        var copy = dup((int)socket.SafeHandle.DangerousGetHandle());
        if (copy < 0) throw new IOException($"dup failed: errno {Marshal.GetLastPInvokeError()}");
        return (ulong)copy;
    }

    [DllImport("libc", SetLastError = true)]
    private static extern int dup(int fd);
}

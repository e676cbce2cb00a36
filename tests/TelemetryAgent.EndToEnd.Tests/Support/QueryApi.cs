using System.Net.Sockets;
using Grpc.Core;
using Grpc.Net.Client;
using TelemetryAgent.Live.Contracts;

namespace TelemetryAgent.EndToEnd.Tests.Support;

/// <summary>A gRPC client of a real agent's query socket, as any tool would open one.</summary>
public static class QueryApi
{
    public static Query.QueryClient Open(string querySocketPath)
    {
        var handler = new SocketsHttpHandler
        {
            ConnectCallback = async (_, cancellation) =>
            {
                var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                await socket.ConnectAsync(new UnixDomainSocketEndPoint(querySocketPath), cancellation);
                return new NetworkStream(socket, ownsSocket: true);
            },
        };
        return new Query.QueryClient(GrpcChannel.ForAddress("http://telemetry-agent", new GrpcChannelOptions { HttpHandler = handler }));
    }

    /// <summary>The whole text of a GetProfile answer.</summary>
    public static async Task<string> ProfileTextAsync(Query.QueryClient client, ProfileRequest request)
    {
        using var call = client.GetProfile(request, deadline: DateTime.UtcNow.AddSeconds(30));
        using var content = new MemoryStream();
        await foreach (var chunk in call.ResponseStream.ReadAllAsync()) chunk.Data.WriteTo(content);
        return System.Text.Encoding.UTF8.GetString(content.ToArray());
    }
}

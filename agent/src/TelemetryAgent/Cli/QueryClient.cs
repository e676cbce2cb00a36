using System.CommandLine;
using System.Net;
using System.Net.Sockets;
using Grpc.Core;
using Grpc.Net.Client;
using TelemetryAgent.Hosting;
using TelemetryAgent.Live.Contracts;

namespace TelemetryAgent.Cli;

/// <summary>How `top`, `snapshot` and `status` reach a running `serve`: its query socket (found from its ingest socket), or loopback TCP.</summary>
internal static class QueryClient
{
    private static readonly Option<string?> Socket = new("--socket")
    {
        Description = "The agent's socket, as given to `serve --socket`; its query socket is beside it (.sock becomes .query.sock). " +
                      "Default: serve's default.",
    };

    private static readonly Option<string?> QuerySocket = new("--query-socket")
    {
        Description = "The agent's query socket, when `serve --query-socket` put it elsewhere.",
    };

    private static readonly Option<string?> QueryTcp = new("--query-tcp")
    {
        Description = "Reach the agent on loopback TCP instead (HOST:PORT, as given to `serve --query-tcp`).",
    };

    private static readonly Option<string?> TokenFile = new("--token-file")
    {
        Description = "The file holding the token `serve --token-file` requires on TCP.",
    };

    public static void AddTo(Command command)
    {
        foreach (var option in new Option[] { Socket, QuerySocket, QueryTcp, TokenFile }) command.Options.Add(option);
    }

    /// <summary>Where the agent is, in words, for messages.</summary>
    public static string Describe(ParseResult result)
        => result.GetValue(QueryTcp) is { Length: > 0 } tcp ? tcp : QuerySocketPath(result);

    private static string QuerySocketPath(ParseResult result)
        => result.GetValue(QuerySocket) ?? LiveViews.QuerySocketPathFor(Path.GetFullPath(result.GetValue(Socket) ?? ServeCommand.DefaultSocketPath()));

    /// <summary>A client of the agent's query API, or an error message.</summary>
    public static Query.QueryClient? Open(ParseResult result, out string? error)
    {
        error = null;
        var handler = new SocketsHttpHandler { ConnectTimeout = TimeSpan.FromSeconds(5) };
        string address;
        var headers = new Metadata();
        if (result.GetValue(QueryTcp) is { Length: > 0 } tcp)
        {
            if (!IPEndPoint.TryParse(tcp, out var endpoint))
            {
                error = $"--query-tcp: '{tcp}' is not HOST:PORT";
                return null;
            }
            address = $"http://{endpoint}";
            if (result.GetValue(TokenFile) is { Length: > 0 } file)
            {
                try
                {
                    var token = File.ReadAllText(file).Trim();
                    handler.PooledConnectionLifetime = Timeout.InfiniteTimeSpan;
                    var credentials = CallCredentials.FromInterceptor((_, metadata) =>
                    {
                        metadata.Add("authorization", $"Bearer {token}");
                        return Task.CompletedTask;
                    });
                    var channel = GrpcChannel.ForAddress(address, new GrpcChannelOptions
                    {
                        HttpHandler = handler, UnsafeUseInsecureChannelCallCredentials = true, MaxReceiveMessageSize = null,
                        Credentials = ChannelCredentials.Create(ChannelCredentials.Insecure, credentials),
                    });
                    return new Query.QueryClient(channel);
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    error = $"--token-file: {e.Message}";
                    return null;
                }
            }
        }
        else
        {
            var path = QuerySocketPath(result);
            address = "http://telemetry-agent";
            handler.ConnectCallback = async (_, cancellation) =>
            {
                var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                try
                {
                    await socket.ConnectAsync(new UnixDomainSocketEndPoint(path), cancellation).ConfigureAwait(false);
                    return new NetworkStream(socket, ownsSocket: true);
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            };
        }
        return new Query.QueryClient(GrpcChannel.ForAddress(address, new GrpcChannelOptions { HttpHandler = handler, MaxReceiveMessageSize = null }));
    }

    /// <summary>Why a call failed, for the user: the agent's own message when it answered, else why it could not be reached.</summary>
    public static string Explain(RpcException e, ParseResult result) => e.StatusCode switch
    {
        StatusCode.Unavailable => $"cannot reach the agent at {Describe(result)}: {Inner(e)} (is `telemetry-agent serve` running, and may this user use it?)",
        StatusCode.DeadlineExceeded => $"the agent at {Describe(result)} did not answer in time",
        StatusCode.Unauthenticated => $"the agent at {Describe(result)} wants its token (--token-file)",
        _ => e.Status.Detail,
    };

    /// <summary>The agent could not be reached (as opposed to answering with an error).</summary>
    public static bool IsUnreachable(RpcException e)
        => e.StatusCode is StatusCode.Unavailable or StatusCode.DeadlineExceeded or StatusCode.Unauthenticated or StatusCode.Internal
           || (e.StatusCode == StatusCode.Unknown && e.Status.Detail.Contains("401", StringComparison.Ordinal));

    private static string Inner(RpcException e)
    {
        Exception? inner = e.Status.DebugException;
        while (inner?.InnerException is not null) inner = inner.InnerException;
        return inner?.Message ?? e.Status.Detail;
    }
}

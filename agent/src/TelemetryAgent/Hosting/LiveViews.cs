using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using TelemetryAgent.Live;
using TelemetryAgent.Live.Contracts;
using TelemetryAgent.Transport;

namespace TelemetryAgent.Hosting;

/// <summary>Where the live views of `serve` listen.</summary>
/// <param name="QuerySocketPath">The query API's Unix socket.</param>
/// <param name="QueryTcp">The query API on loopback TCP too; null: not.</param>
/// <param name="Http">The web UI; null: off.</param>
/// <param name="Token">Required by the web UI and TCP queries when set.</param>
public sealed record LiveViewsOptions(string QuerySocketPath, IPEndPoint? QueryTcp = null, IPEndPoint? Http = null, string? Token = null);

/// <summary>
/// The live views of one agent as the component `serve` starts and stops: binds the query socket beside the ingest
/// socket under the same rules (owner-only or the socket group, SO_PEERCRED against the allowed uids), and runs the
/// <see cref="LiveServer"/> over the host's catalog.
/// </summary>
public sealed class LiveViews : IAsyncDisposable
{
    private const int LoggedInFull = 20;

    private readonly AgentHost _host;
    private readonly LiveViewsOptions _options;
    private readonly Func<string> _export;
    private readonly ILogger _log;
    private readonly DateTimeOffset _started = DateTimeOffset.UtcNow;
    private LiveServer? _server;
    // Kept open while Kestrel serves a duplicate of its descriptor: disposing a bound Unix socket removes its file.
    private Socket? _listening;
    private string? _socketPath;
    private ulong _socketInode;
    private long _refused;

    /// <param name="export">What export is doing, in a few words ("off", or its counts).</param>
    public LiveViews(AgentHost host, LiveViewsOptions options, Func<string> export, ILogger log)
    {
        ArgumentNullException.ThrowIfNull(host.Catalog);
        _host = host;
        _options = options;
        _export = export;
        _log = log;
    }

    /// <summary>The query socket beside an ingest socket: <c>x.sock</c> gives <c>x.query.sock</c>, anything else <c>x.query</c>.</summary>
    public static string QuerySocketPathFor(string ingestSocket)
        => ingestSocket.EndsWith(".sock", StringComparison.Ordinal) ? ingestSocket[..^".sock".Length] + ".query.sock" : ingestSocket + ".query";

    public string QuerySocketPath => _socketPath ?? throw new InvalidOperationException("The live views are not started.");

    public Uri? HttpAddress => _server?.HttpAddress;

    /// <summary>The query API's loopback TCP address, when it has one.</summary>
    public IPEndPoint? QueryTcp => _options.QueryTcp;

    public async Task StartAsync(CancellationToken cancellation)
    {
        var path = _options.QuerySocketPath;
        var socket = UnixSocketListener.BindListening(ref path, backlog: 64, socketGroup: _host.Access.SocketGroup);
        _listening = socket;
        _socketPath = path;
        Native.TryGetInode(path, out _socketInode);
        // Kestrel takes a descriptor over and closes it at the end: it gets its own copy of ours.
        var descriptor = Native.DuplicateDescriptor((int)socket.Handle);
        if (descriptor < 0) throw new IOException($"cannot duplicate the query socket's descriptor (errno {System.Runtime.InteropServices.Marshal.GetLastPInvokeError()})");
        _server = new LiveServer(new LiveQueries(_host.Catalog!), Status, new LiveServerOptions
        {
            QuerySocketHandle = (ulong)descriptor,
            Admit = Admit,
            QueryTcp = _options.QueryTcp,
            Http = _options.Http,
            Token = _options.Token,
            // The web server reports only warnings and errors, in lines of its own.
            Log = new LogLineWriter(_log, LogLevel.Warning),
        });
        try
        {
            await _server.StartAsync(cancellation).ConfigureAwait(false);
        }
        catch
        {
            UnixSocketListener.RemoveIfUnchanged(path, _socketInode);
            throw;
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_server is not null) await _server.DisposeAsync().ConfigureAwait(false);
        _listening?.Dispose();
        if (_socketPath is not null) UnixSocketListener.RemoveIfUnchanged(_socketPath, _socketInode);
    }

    /// <summary>The query socket serves the ingest socket's users: refused peers are closed and logged (the first ones, then every hundredth).</summary>
    private string? Admit(Socket socket)
    {
        string? refusal = null;
        if (!Native.TryGetPeerCredentials(socket, out var peer)) refusal = "its peer's credentials cannot be read";
        else if (!_host.Access.Allows(peer)) refusal = $"uid {peer.Uid} is not allowed ({peer}; allowed uids: {string.Join(", ", _host.Access.AllowedUids)})";
        if (refusal is null) return null;
        var count = Interlocked.Increment(ref _refused);
        if (count <= LoggedInFull || count % 100 == 0)
            _log.LogWarning("query connection refused ({Count:N0} so far): {Refusal}", count, refusal);
        return refusal;
    }

    /// <summary>What `status` reports; its checks decide the exit code (docs/operations.md).</summary>
    private StatusResponse Status()
    {
        var statistics = _host.Statistics.Snapshot();
        var response = new StatusResponse
        {
            Ready = _host.IsAccepting,
            Version = typeof(LiveViews).Assembly.GetName().Version?.ToString() ?? "",
            StartedUnixNs = LiveQueries.UnixNs(_started),
            ConnectionsActive = statistics.ConnectionsActive,
            ConnectionsAccepted = statistics.ConnectionsAccepted,
            EventsReceived = statistics.EventsReceived,
            MemoryReservedBytes = _host.AggregateMemoryBytes,
            MemoryLimitBytes = _host.AggregateMemoryLimitBytes,
            Export = _export(),
        };
        foreach (var (reason, count) in statistics.ConnectionsRejected) response.ConnectionsRejected[reason] = count;
        response.Checks.Add(new HealthCheck
        {
            Name = "ingest",
            State = response.Ready ? "ok" : "fail",
            Detail = response.Ready ? $"accepting on {_host.SocketPath}" : "not accepting connections",
        });
        var share = response.MemoryLimitBytes > 0 ? (double)response.MemoryReservedBytes / response.MemoryLimitBytes : 0;
        response.Checks.Add(new HealthCheck
        {
            Name = "memory",
            State = share >= 0.9 ? "warn" : "ok",
            Detail = $"{response.MemoryReservedBytes >> 20} MiB of {response.MemoryLimitBytes >> 20} MiB for aggregates ({share:P0})",
        });
        response.State = response.Checks.Any(check => check.State != "ok") ? "degraded" : "ok";
        return response;
    }
}

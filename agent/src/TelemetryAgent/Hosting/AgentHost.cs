using System.IO.Pipelines;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using TelemetryAgent.Live;
using TelemetryAgent.Profiling;
using TelemetryAgent.Sessions;
using TelemetryAgent.Transport;

namespace TelemetryAgent.Hosting;

/// <summary>
/// The agent's pipeline for every connection: socket -> pipe -> wire parser -> process session -> store.
/// One connection's failure, whatever it is, ends that connection only and is recorded with its reason.
/// </summary>
public sealed class AgentHost : IAsyncDisposable
{
    // A frame is consumed only whole, so the pipe must hold one maximal frame plus a read's worth.
    private const int ReadBufferSize = 64 * 1024;

    private readonly ILogger _log;
    private readonly AgentLimits _limits;
    private readonly AggregateMemoryBudget _memory;
    private readonly ProcessObservers _observers;
    private readonly CancellationTokenSource _stopping = new();
    private Task _checkpoints = Task.CompletedTask;
    private UnixSocketListener? _listener;
    private int _disposed;

    /// <param name="observers">Told about every process's start, checkpoints and completion (exporters, writers).</param>
    /// <param name="statistics">The agent's counters (shared with its own telemetry); a new set when null.</param>
    public AgentHost(ILogger log, AgentLimits? limits = null, IReadOnlyList<IProcessObserver>? observers = null,
        AgentStatistics? statistics = null)
    {
        _log = log;
        Statistics = statistics ?? new AgentStatistics();
        _limits = limits ?? AgentLimits.Default;
        _memory = new AggregateMemoryBudget(_limits.MaxAggregateMemoryBytes);
        _observers = new ProcessObservers(log, observers ?? []);
    }

    /// <summary>
    /// The live views' catalog (serve): every connection is added when it opens, and an ended one stays there, its
    /// memory reserved, until the catalog lets it go (retention, or the budget needs room for running processes).
    /// </summary>
    public ProcessCatalog? Catalog
    {
        get => _catalog;
        init
        {
            _catalog = value;
            if (value is not null) _memory.Reclaim = value.EvictOldestEnded;
        }
    }

    private readonly ProcessCatalog? _catalog;

    /// <summary>Keep every process's timeline with these settings (serve); null: none.</summary>
    public TimelineSettings? Timeline { get; init; }

    /// <summary>True while the socket accepts connections and the host is not stopping.</summary>
    public bool IsAccepting => _listener is not null && !Accepting.IsCompleted && _disposed == 0;

    /// <summary>The memory budget's limit.</summary>
    public long AggregateMemoryLimitBytes => _memory.LimitBytes;

    /// <summary>How often every running process gets a checkpoint (interval exports); null for none.</summary>
    public TimeSpan? CheckpointInterval { get; init; }

    /// <summary>The agent's own counters (connections, events, how connections ended).</summary>
    public AgentStatistics Statistics { get; }

    /// <summary>Who may connect (socket group, allowed uids).</summary>
    public PeerAccess Access { get; init; } = PeerAccess.Default;

    /// <summary>Applied to exception messages and notes before anything keeps them.</summary>
    public Redactor Redactor { get; init; } = Redactor.Default;

    /// <summary>Estimated memory held by aggregates now, over all sessions.</summary>
    public long AggregateMemoryBytes => _memory.ReservedBytes;

    public ProfileStore Store { get; } = new();

    /// <summary>Logs each connection's start and end (serve); `run` keeps quiet unless one fails.</summary>
    public bool Verbose { get; init; }

    public string SocketPath => _listener?.Path ?? throw new InvalidOperationException("The agent is not listening.");

    public void Listen(string socketPath) => Listen(UnixSocketListener.Bind(socketPath, HandleConnectionAsync, socketGroup: Access.SocketGroup));

    /// <summary>Listens on a socket bound earlier (<see cref="UnixSocketListener.BindListening"/>): its waiting connections are served now.</summary>
    public void Listen(System.Net.Sockets.Socket listening, string socketPath) => Listen(UnixSocketListener.Adopt(listening, socketPath, HandleConnectionAsync));

    private void Listen(UnixSocketListener listener)
    {
        _listener = listener;
        _listener.Start();
        if (CheckpointInterval is { } interval) _checkpoints = RequestCheckpointsEveryAsync(interval, _stopping.Token);
    }

    /// <summary>The AWS Lambda handler calls that ended, over every process (the Lambda extension waits on it).</summary>
    public InvocationCounter Invocations { get; } = new();

    /// <summary>True while some connection's shim counts the handler's calls as they end (AWS Lambda).</summary>
    public bool AnyCountsInvocations => Statistics.OpenSessions.Any(session => session.CountsInvocations);

    /// <summary>
    /// A checkpoint of every running process, handed to the observers (exporters); completes once each has been taken
    /// (or its connection ended). A connection that has not said HELLO has nothing to checkpoint.
    /// </summary>
    public Task CheckpointAllAsync() => Task.WhenAll(Statistics.OpenSessions.Where(session => session.Profile is not null).Select(async session =>
    {
        try
        {
            await session.CheckpointNowAsync().ConfigureAwait(false);
        }
        catch (InvalidOperationException)
        {
            // Ended without a profile meanwhile.
        }
    }));

    /// <summary>Asks every running process's session for a checkpoint after its next frame.</summary>
    public void RequestCheckpoints()
    {
        foreach (var session in Statistics.OpenSessions) session.RequestCheckpoint();
    }

    private async Task RequestCheckpointsEveryAsync(TimeSpan interval, CancellationToken stopping)
    {
        using var timer = new PeriodicTimer(interval);
        try
        {
            while (await timer.WaitForNextTickAsync(stopping).ConfigureAwait(false)) RequestCheckpoints();
        }
        catch (OperationCanceledException)
        {
        }
    }

    /// <summary>
    /// Waits until no connection has been open for a short quiet period (a child process may still be
    /// starting), or the timeout passes; true when it ended quiet.
    /// </summary>
    public Task<bool> WaitForConnectionsAsync(TimeSpan timeout) =>
        _listener?.WaitForConnectionsAsync(timeout, TimeSpan.FromMilliseconds(500)) ?? Task.FromResult(true);

    /// <summary>Completes when the agent stops accepting: at disposal, or faulted if the socket failed.</summary>
    public Task Accepting => _listener?.Accepting ?? Task.CompletedTask;

    /// <summary>
    /// Keeps every finished process in <see cref="Store"/> (run writes them all at the end). A daemon hands
    /// each one to its callback instead and keeps nothing, so its memory does not grow with every process.
    /// </summary>
    public bool RetainProfiles { get; init; } = true;

    private async Task HandleConnectionAsync(Socket socket, CancellationToken stopping)
    {
        if (ConnectionAdmission.Admit(socket, Access, Statistics, _log) is not { } credentials) return;
        var session = new ProcessSession(RetainProfiles ? Store : null, _limits.Session, observer: _observers)
        {
            Peer = credentials.ToPeerProcess(), Redactor = Redactor, MemoryBudget = _memory, Timeline = Timeline,
            Invocations = Invocations,
        };
        if (!ConnectionAdmission.TryOpen(session, credentials, _limits.MaxConnections, Statistics, _log)) return;
        var live = _catalog?.Add(new SessionConnection(session), () => _memory.Release(session.ReservedBytes));
        await using var stream = new NetworkStream(socket, ownsSocket: false);
        var input = PipeReader.Create(stream, new StreamPipeReaderOptions(bufferSize: ReadBufferSize, leaveOpen: true));
        ConnectionEnd end;
        try
        {
            end = await session.RunAsync(input, stopping).ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException)
        {
            // The socket failed (reset by the peer, closed under the read): the transport's end, not the protocol's.
            end = ConnectionEnd.TransportError(e.Message);
            session.Complete(end);
        }
        catch (Exception e)
        {
            // A bug of ours must cost this connection only; say so loudly rather than lose it.
            end = ConnectionEnd.TransportError($"internal error: {e}");
            session.Complete(end);
        }
        await input.CompleteAsync().ConfigureAwait(false);
        Statistics.ConnectionEnded(session, end);
        Report(session, credentials, end);
        if (live is not null) _catalog!.Ended(live, session.Profile is { IsCompleted: true } completed ? completed : null);
        else if (!RetainProfiles) _memory.Release(session.ReservedBytes);
    }

    /// <summary>A session as the live views see it.</summary>
    private sealed class SessionConnection(ProcessSession session) : ILiveConnection
    {
        public ProcessProfile? Profile => session.Profile;

        public Task<ProcessProfile> SnapshotAsync() => session.RequestSnapshotAsync();

        public Task<IReadOnlyList<FunctionStats>> FunctionStatisticsAsync() => session.RequestFunctionStatisticsAsync();
    }

    private void Report(ProcessSession session, PeerCredentials credentials, ConnectionEnd end)
    {
        var profile = session.Profile;
        var who = profile is null ? "a connection without HELLO" : $"pid {profile.Identity.Pid} ({profile.Identity.ServiceName})";
        var failed = end.Reason is ConnectionEndReason.ProtocolError or ConnectionEndReason.TransportError;
        if (failed) _log.LogWarning("{Connection} ended: {End}", who, end);
        else if (Verbose) _log.LogInformation("{Connection} ended: {End}", who, end);
        if (profile is { PeerPidMatches: false })
            _log.LogWarning("flagged: pid {Pid} in HELLO is not the peer's ({Peer})", profile.Identity.Pid, credentials);
    }

    /// <summary>Stops accepting and ends every connection (each is completed and reported); calling it again does nothing.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        await _stopping.CancelAsync().ConfigureAwait(false);
        await _checkpoints.ConfigureAwait(false);
        if (_listener is not null) await _listener.DisposeAsync().ConfigureAwait(false);
        _stopping.Dispose();
    }
}

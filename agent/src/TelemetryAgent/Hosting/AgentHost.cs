using System.Collections.Concurrent;
using System.IO.Pipelines;
using System.Net.Sockets;
using TelemetryAgent.Aggregation;
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

    private readonly TextWriter _log;
    private readonly SessionLimits _limits;
    private readonly ProcessObservers _observers;
    private readonly ConcurrentDictionary<ProcessSession, byte> _liveSessions = new();
    private readonly CancellationTokenSource _stopping = new();
    private Task _checkpoints = Task.CompletedTask;
    private UnixSocketListener? _listener;
    private int _disposed;

    /// <param name="observers">Told about every process's start, checkpoints and completion (exporters, writers).</param>
    public AgentHost(TextWriter log, SessionLimits? limits = null, IReadOnlyList<IProcessObserver>? observers = null)
    {
        _log = log;
        _limits = limits ?? SessionLimits.Default;
        _observers = new ProcessObservers(log, observers ?? []);
    }

    /// <summary>How often every running process gets a checkpoint (interval exports); null for none.</summary>
    public TimeSpan? CheckpointInterval { get; init; }

    public ProfileStore Store { get; } = new();

    /// <summary>Logs each connection's start and end (serve); `run` keeps quiet unless one fails.</summary>
    public bool Verbose { get; init; }

    public string SocketPath => _listener?.Path ?? throw new InvalidOperationException("The agent is not listening.");

    public void Listen(string socketPath)
    {
        _listener = UnixSocketListener.Bind(socketPath, HandleConnectionAsync);
        _listener.Start();
        if (CheckpointInterval is { } interval) _checkpoints = RequestCheckpointsEveryAsync(interval, _stopping.Token);
    }

    /// <summary>Asks every running process's session for a checkpoint after its next frame.</summary>
    public void RequestCheckpoints()
    {
        foreach (var session in _liveSessions.Keys) session.RequestCheckpoint();
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
        var session = new ProcessSession(RetainProfiles ? Store : null, _limits, observer: _observers);
        _liveSessions.TryAdd(session, 0);
        await using var stream = new NetworkStream(socket, ownsSocket: false);
        var input = PipeReader.Create(stream, new StreamPipeReaderOptions(bufferSize: ReadBufferSize, leaveOpen: true));
        ConnectionEnd end;
        try
        {
            end = await session.RunAsync(input, stopping).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            // A bug of ours must cost this connection only; say so loudly rather than lose it.
            end = ConnectionEnd.TransportError($"internal error: {e}");
            session.Complete(end);
        }
        _liveSessions.TryRemove(session, out _);
        await input.CompleteAsync().ConfigureAwait(false);
        Report(session, end);
    }

    private void Report(ProcessSession session, ConnectionEnd end)
    {
        var profile = session.Profile;
        var who = profile is null ? "a connection without HELLO" : $"pid {profile.Identity.Pid} ({profile.Identity.ServiceName})";
        var failed = end.Reason is ConnectionEndReason.ProtocolError or ConnectionEndReason.TransportError;
        if (failed || Verbose)
        {
            lock (_log) _log.WriteLine($"telemetry-agent: {who} ended: {end}");
        }
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

using System.Diagnostics;
using System.Net.Sockets;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using TelemetryAgent.Export;

namespace TelemetryAgent.Hosting;

/// <summary>What `serve` says about itself once it listens.</summary>
/// <param name="OutputRoot">Where each finished process's folder goes.</param>
/// <param name="Export">The OTLP export's state, in one sentence.</param>
public sealed record ServeAnnouncement(string OutputRoot, string Export);

/// <summary>Why `serve` could not start; already logged.</summary>
public sealed class AgentStartException(string message, Exception inner) : Exception(message, inner);

/// <summary>
/// `serve`'s parts as the Generic Host's one hosted service. Starting binds the ingest socket and then starts the live
/// views, so the host is "started" (and systemd hears READY=1) only when both accept connections. Stopping ends the
/// connections still open, writes their outputs and sends pending exports, all within the host's shutdown timeout
/// (--shutdown-timeout): what is not done by then is lost, and the exit code says so.
/// </summary>
public sealed class AgentService(AgentHost host, string socketPath, LiveViews live, ExportPipeline export, ServeAnnouncement announcement,
    TimeSpan shutdownTimeout, IHostApplicationLifetime lifetime, ILogger log) : IHostedService
{
    private volatile bool _acceptingFailed;

    /// <summary>0 after an orderly stop; 1 when the socket failed or stopping ran out of time.</summary>
    public int ExitCode { get; private set; }

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        try
        {
            host.Listen(socketPath);
        }
        catch (Exception e) when (e is IOException or SocketException or UnauthorizedAccessException or ArgumentException)
        {
            log.LogError("cannot listen on {Socket}: {Reason}", socketPath, e.Message);
            throw new AgentStartException($"cannot listen on {socketPath}", e);
        }
        try
        {
            // Not cancelled by a signal during the start: the stop it asks for comes right after, in the usual order.
            await live.StartAsync(CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or SocketException or UnauthorizedAccessException or ArgumentException
                                      or InvalidOperationException)
        {
            log.LogError("cannot start the live views: {Reason}", e.Message);
            throw new AgentStartException("cannot start the live views", e);
        }
        _ = WatchAcceptingAsync();
        log.LogInformation("listening on {Socket}; outputs under {Output}. Stop with Ctrl-C or SIGTERM.", host.SocketPath, announcement.OutputRoot);
        log.LogInformation("queries (top, snapshot, status) on {QuerySocket}{Tcp}{Ui}", live.QuerySocketPath,
            live.QueryTcp is { } tcp ? $" and {tcp}" : "", live.HttpAddress is { } ui ? $"; web UI at {ui}" : "");
        log.LogInformation("{Export}", announcement.Export);
    }

    /// <summary>A socket that stops accepting on its own is a failure of the agent: it stops, with exit code 1.</summary>
    private async Task WatchAcceptingAsync()
    {
        try
        {
            await host.Accepting.ConfigureAwait(false);
        }
        catch (Exception e)
        {
            _acceptingFailed = true;
            ExitCode = 1;
            log.LogError("the socket stopped accepting connections: {Reason}", e.Message);
            lifetime.StopApplication();
        }
    }

    /// <summary>After a failed start: closes what was opened (no stop to announce, no outputs to write).</summary>
    public async Task AbandonAsync()
    {
        await live.DisposeAsync().ConfigureAwait(false);
        await host.DisposeAsync().ConfigureAwait(false);
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        // The host's deadline (HostOptions.ShutdownTimeout) is this one: it started when stopping did.
        var stopping = Stopwatch.StartNew();
        if (!_acceptingFailed) log.LogInformation("stopping; connections still open are closed and written.");
        // The query socket goes last: until then `status` answers "not ready" (exit code 4) rather than "cannot reach
        // the agent".
        var disposed = host.DisposeAsync().AsTask();
        if (await Task.WhenAny(disposed, Task.Delay(Timeout.Infinite, cancellationToken)).ConfigureAwait(false) != disposed)
        {
            log.LogError("stopping took longer than {Seconds:0.#} s (--shutdown-timeout); outputs not written by now are lost.",
                shutdownTimeout.TotalSeconds);
            ExitCode = 1;
        }
        var left = shutdownTimeout - stopping.Elapsed;
        await export.ShutdownAsync(left > TimeSpan.Zero ? left : TimeSpan.Zero).ConfigureAwait(false);
        await live.DisposeAsync().ConfigureAwait(false);
        log.LogInformation("statistics: {Statistics}", host.Statistics.Snapshot());
    }
}

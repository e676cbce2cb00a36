using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using TelemetryAgent.Live.Contracts;

namespace TelemetryAgent.Live;

/// <summary>Where the live views listen and who may use them.</summary>
public sealed record LiveServerOptions
{
    /// <summary>
    /// A bound, listening Unix socket's descriptor (the host binds it owner-only, or for its socket group, beside the
    /// ingest socket); Kestrel takes it over. The query API is served there.
    /// </summary>
    public required ulong QuerySocketHandle { get; init; }

    /// <summary>Decides each query-socket connection from its socket (SO_PEERCRED): null to serve it, else why not.</summary>
    public required Func<Socket, string?> Admit { get; init; }

    /// <summary>The query API on loopback TCP too (off unless asked); any local user reaches it, so a token is advised.</summary>
    public IPEndPoint? QueryTcp { get; init; }

    /// <summary>The web UI (off unless asked).</summary>
    public IPEndPoint? Http { get; init; }

    /// <summary>Required on the web UI and on TCP queries when set (a bearer token, or the UI's cookie).</summary>
    public string? Token { get; init; }

    public TextWriter Log { get; init; } = TextWriter.Null;
}

/// <summary>
/// The live views as one component that `serve` starts and stops: the gRPC query API on its Unix socket (and on
/// loopback TCP when asked) and the web UI on HTTP when asked, each a Kestrel server of its own, so that the UI's
/// endpoint never serves the query API and the other way round.
/// </summary>
public sealed class LiveServer : IAsyncDisposable
{
    private readonly LiveQueries _queries;
    private readonly LiveServerOptions _options;
    private readonly StatusRates _rates;
    private WebApplication? _query;
    private WebApplication? _ui;

    public LiveServer(LiveQueries queries, Func<StatusResponse> status, LiveServerOptions options)
    {
        _queries = queries;
        _options = options;
        _rates = new StatusRates(status, queries.Catalog, queries.Time);
    }

    /// <summary>The status the query API and the UI report (with rates over the last minute).</summary>
    public StatusResponse Status() => _rates.Current();

    /// <summary>Where the web UI listens, once started (the port is the one bound, also when 0 was asked).</summary>
    public Uri? HttpAddress { get; private set; }

    public async Task StartAsync(CancellationToken cancellation)
    {
        _query = BuildQueryServer();
        await _query.StartAsync(cancellation).ConfigureAwait(false);
        if (_options.Http is { } http)
        {
            _ui = BuildUi(http);
            await _ui.StartAsync(cancellation).ConfigureAwait(false);
            var address = _ui.Urls.FirstOrDefault() ?? $"http://{http}";
            HttpAddress = new Uri(address);
        }
        _rates.Start();
    }

    public async Task StopAsync(CancellationToken cancellation)
    {
        await _rates.StopAsync().ConfigureAwait(false);
        if (_ui is not null) await _ui.StopAsync(cancellation).ConfigureAwait(false);
        if (_query is not null) await _query.StopAsync(cancellation).ConfigureAwait(false);
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync(CancellationToken.None).ConfigureAwait(false);
        if (_ui is not null) await _ui.DisposeAsync().ConfigureAwait(false);
        if (_query is not null) await _query.DisposeAsync().ConfigureAwait(false);
    }

    private WebApplication BuildQueryServer()
    {
        var builder = WebApplication.CreateSlimBuilder();
        Quiet(builder);
        builder.Services.AddGrpc(grpc =>
        {
            grpc.EnableDetailedErrors = true;
            grpc.MaxReceiveMessageSize = 1 << 20;
        });
        builder.Services.AddSingleton(new QueryService(_queries, Status));
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.ListenHandle(_options.QuerySocketHandle, listen =>
            {
                listen.Protocols = HttpProtocols.Http2;
                listen.Use(next => async connection =>
                {
                    var socket = connection.Features.Get<IConnectionSocketFeature>()?.Socket;
                    if ((socket is null ? "no socket to read the peer's credentials from" : _options.Admit(socket)) is not null) return;
                    await next(connection).ConfigureAwait(false);
                });
            });
            if (_options.QueryTcp is { } tcp) kestrel.Listen(tcp, listen => listen.Protocols = HttpProtocols.Http2);
        });
        var app = builder.Build();
        if (_options.QueryTcp is not null && _options.Token is { } token)
        {
            // The Unix socket is guarded by SO_PEERCRED; TCP has no peer credentials: the token stands in.
            app.Use(async (context, next) =>
            {
                if (context.Connection.LocalPort != 0 && !WebUi.HasToken(context, token))
                {
                    context.Response.StatusCode = StatusCodes.Status401Unauthorized;
                    return;
                }
                await next(context).ConfigureAwait(false);
            });
        }
        app.MapGrpcService<QueryService>();
        return app;
    }

    private WebApplication BuildUi(IPEndPoint http)
    {
        var builder = WebApplication.CreateSlimBuilder();
        Quiet(builder);
        builder.WebHost.ConfigureKestrel(kestrel => kestrel.Listen(http));
        var app = builder.Build();
        WebUi.Map(app, _queries, Status, _options.Token, http);
        return app;
    }

    private void Quiet(WebApplicationBuilder builder)
    {
        builder.Logging.ClearProviders();
        builder.Logging.AddProvider(new LogLineProvider(_options.Log));
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        // Kestrel must not watch the agent's working directory or read appsettings files of wherever it runs.
        builder.Configuration.Sources.Clear();
        // The agent owns its signals: `serve` stops the live views in its own order. The default console lifetime would
        // take SIGINT, SIGTERM and SIGQUIT too, and stop these servers on its own, even while they start.
        builder.Services.AddSingleton<IHostLifetime, AgentOwnsSignals>();
    }

    /// <summary>Samples the agent's counters every few seconds, so that status can say events/s and drops/s over a minute.</summary>
    private sealed class StatusRates(Func<StatusResponse> status, ProcessCatalog catalog, TimeProvider time)
    {
        private static readonly TimeSpan Every = TimeSpan.FromSeconds(5);
        private static readonly TimeSpan Over = TimeSpan.FromMinutes(1);
        private readonly Lock _lock = new();
        private readonly Queue<(long At, long Events, ulong Dropped)> _samples = new();
        private readonly CancellationTokenSource _stop = new();
        private Task _sampling = Task.CompletedTask;

        public void Start()
        {
            // From nothing: what shims report dropped when they (re)connect to a new agent counts as recent.
            lock (_lock) _samples.Enqueue((time.GetTimestamp(), 0, 0));
            _sampling = SampleAsync(_stop.Token);
        }

        public async Task StopAsync()
        {
            await _stop.CancelAsync().ConfigureAwait(false);
            await _sampling.ConfigureAwait(false);
        }

        public StatusResponse Current()
        {
            var response = status();
            var processes = catalog.Processes();
            response.ProcessesRunning = processes.Count(process => process.IsRunning);
            response.ProcessesEnded = processes.Count - response.ProcessesRunning;
            response.SetEventsDroppedByShims(processes);
            lock (_lock)
            {
                if (_samples.Count > 0)
                {
                    var (at, events, dropped) = _samples.Peek();
                    var seconds = time.GetElapsedTime(at).TotalSeconds;
                    if (seconds > 0.5)
                    {
                        response.EventsPerSecond = Math.Max(0, response.EventsReceived - events) / seconds;
                        response.DropsPerSecond = (response.EventsDroppedByShims >= dropped ? response.EventsDroppedByShims - dropped : 0) / seconds;
                    }
                }
            }
            response.Checks.Add(new HealthCheck
            {
                Name = "drops",
                State = response.DropsPerSecond > 0 ? "warn" : "ok",
                Detail = $"shims dropped {response.DropsPerSecond:0.#} events/s over the last minute ({response.EventsDroppedByShims:N0} in all)",
            });
            if (response.Checks.Any(check => check.State != "ok") && response.State == "ok") response.State = "degraded";
            return response;
        }

        private async Task SampleAsync(CancellationToken stopping)
        {
            using var timer = new PeriodicTimer(Every, time);
            try
            {
                while (await timer.WaitForNextTickAsync(stopping).ConfigureAwait(false))
                {
                    catalog.Trim();
                    var now = Current();
                    lock (_lock)
                    {
                        _samples.Enqueue((time.GetTimestamp(), now.EventsReceived, now.EventsDroppedByShims));
                        while (_samples.Count > Over / Every + 1) _samples.Dequeue();
                    }
                }
            }
            catch (OperationCanceledException)
            {
            }
        }
    }

    /// <summary>A host lifetime that handles no signal and waits for nothing.</summary>
    private sealed class AgentOwnsSignals : IHostLifetime
    {
        public Task WaitForStartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }

    /// <summary>Kestrel's warnings and errors as the agent's own log lines.</summary>
    private sealed class LogLineProvider(TextWriter log) : ILoggerProvider
    {
        public ILogger CreateLogger(string categoryName) => new LogLine(log, categoryName);

        public void Dispose()
        {
        }

        private sealed class LogLine(TextWriter log, string category) : ILogger
        {
            public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

            public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Warning;

            public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
            {
                if (!IsEnabled(logLevel)) return;
                lock (log) log.WriteLine($"telemetry-agent: live views ({category}): {formatter(state, exception)}");
            }
        }
    }
}

internal static class StatusExtensions
{
    /// <summary>Events the shims of the processes kept say they dropped.</summary>
    public static void SetEventsDroppedByShims(this StatusResponse response, IReadOnlyList<LiveProcess> processes)
    {
        ulong dropped = 0;
        foreach (var process in processes) dropped += process.Profile?.EventsDropped ?? 0;
        response.EventsDroppedByShims = dropped;
    }
}

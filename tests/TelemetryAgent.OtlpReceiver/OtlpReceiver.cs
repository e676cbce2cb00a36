using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Logging;
using OpenTelemetry.Proto.Collector.Logs.V1;
using OpenTelemetry.Proto.Collector.Metrics.V1;
using OpenTelemetry.Proto.Collector.Profiles.V1Development;
using TelemetryAgent.OtlpReceiver.Internal;

namespace TelemetryAgent.OtlpReceiver;

/// <summary>
/// A real OTLP receiver for tests, on Kestrel bound to 127.0.0.1: OTLP/HTTP (binary protobuf, HTTP/1.1)
/// on <see cref="HttpEndpoint"/> and OTLP/gRPC (cleartext HTTP/2 only) on <see cref="GrpcEndpoint"/>,
/// for metrics, logs and profiles (v1development). Every accepted request is decoded and kept in
/// <see cref="Metrics"/>, <see cref="Logs"/> or <see cref="Profiles"/>; every answer, accepted or not, in
/// <see cref="Attempts"/>. <see cref="Failures"/> makes it answer "unavailable" on demand.
/// </summary>
public sealed class OtlpReceiver : IAsyncDisposable
{
    public const string HttpMetricsPath = "/v1/metrics";
    public const string HttpLogsPath = "/v1/logs";
    public const string HttpProfilesPath = "/v1development/profiles";
    public const string GrpcMetricsPath = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
    public const string GrpcLogsPath = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";
    public const string GrpcProfilesPath = "/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export";

    private readonly WebApplication _app;
    private readonly Lock _attemptsGate = new();
    private readonly List<ReceiverAttempt> _attempts = [];
    private int _disposed;
    private PartialSuccessReply? _partialSuccess;

    private OtlpReceiver(WebApplication app, FailureInjector failures)
    {
        _app = app;
        Failures = failures;
    }

    /// <summary>OTLP/HTTP base address, e.g. <c>http://127.0.0.1:40123</c>; append <c>/v1/metrics</c> etc.</summary>
    public Uri HttpEndpoint { get; private set; } = null!;

    /// <summary>OTLP/gRPC address (h2c), e.g. <c>http://127.0.0.1:40124</c>.</summary>
    public Uri GrpcEndpoint { get; private set; } = null!;

    public RequestLog<ExportMetricsServiceRequest> Metrics { get; } = new(OtlpSignal.Metrics);

    public RequestLog<ExportLogsServiceRequest> Logs { get; } = new(OtlpSignal.Logs);

    public RequestLog<ExportProfilesServiceRequest> Profiles { get; } = new(OtlpSignal.Profiles);

    /// <summary>Injected "unavailable" answers; change them at any time.</summary>
    public FailureInjector Failures { get; }

    /// <summary>
    /// When set, accepted requests (of its signal, or of all) are answered with this partial success instead of an
    /// empty response; the request is still stored.
    /// </summary>
    public PartialSuccessReply? PartialSuccess
    {
        get => Volatile.Read(ref _partialSuccess);
        set => Volatile.Write(ref _partialSuccess, value);
    }

    /// <summary>Every answer given so far, in order.</summary>
    public IReadOnlyList<ReceiverAttempt> Attempts
    {
        get
        {
            lock (_attemptsGate)
            {
                return _attempts.ToArray();
            }
        }
    }

    /// <summary>Starts a receiver; the endpoints carry the real ports once this returns.</summary>
    public static async Task<OtlpReceiver> StartAsync(OtlpReceiverOptions? options = null, CancellationToken cancellationToken = default)
    {
        options ??= new OtlpReceiverOptions();
        options.Validate();

        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = [] });
        builder.Logging.ClearProviders();
        ListenOptions? httpListen = null;
        ListenOptions? grpcListen = null;
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.Limits.MaxRequestBodySize = null; // the handlers enforce MaxRequestBytes themselves
            kestrel.Listen(IPAddress.Loopback, options.HttpPort, listen =>
            {
                // Cleartext: Kestrel offers HTTP/2 only via TLS ALPN or on an HTTP/2-only endpoint, so
                // OTLP/HTTP here is HTTP/1.1 (what OTLP/HTTP exporters use); h2c lives on the gRPC port.
                listen.Protocols = HttpProtocols.Http1;
                httpListen = listen;
            });
            kestrel.Listen(IPAddress.Loopback, options.GrpcPort, listen =>
            {
                listen.Protocols = HttpProtocols.Http2;
                grpcListen = listen;
            });
        });

        var app = builder.Build();
        var receiver = new OtlpReceiver(app, new FailureInjector(options.InitialFailures));
        var routes = new[]
        {
            SignalRoute.Create<ExportMetricsServiceRequest, ExportMetricsServiceResponse>(
                OtlpSignal.Metrics, HttpMetricsPath, GrpcMetricsPath, ExportMetricsServiceRequest.Parser, receiver.Metrics),
            SignalRoute.Create<ExportLogsServiceRequest, ExportLogsServiceResponse>(
                OtlpSignal.Logs, HttpLogsPath, GrpcLogsPath, ExportLogsServiceRequest.Parser, receiver.Logs),
            SignalRoute.Create<ExportProfilesServiceRequest, ExportProfilesServiceResponse>(
                OtlpSignal.Profiles, HttpProfilesPath, GrpcProfilesPath, ExportProfilesServiceRequest.Parser, receiver.Profiles),
        };
        var http = new OtlpHttpHandler(
            routes.ToDictionary(r => r.HttpPath, StringComparer.Ordinal), receiver.Failures, options.MaxRequestBytes, receiver.Record,
            () => receiver.PartialSuccess);
        var grpc = new OtlpGrpcHandler(
            routes.ToDictionary(r => r.GrpcPath, StringComparer.Ordinal), receiver.Failures, options.MaxRequestBytes, receiver.Record,
            () => receiver.PartialSuccess);

        app.Run(context =>
        {
            // Both listeners share one pipeline; the local endpoint decides the protocol.
            bool onGrpcPort = context.Connection.LocalPort == ((IPEndPoint)grpcListen!.EndPoint).Port;
            return onGrpcPort ? grpc.HandleAsync(context) : http.HandleAsync(context);
        });

        await app.StartAsync(cancellationToken).ConfigureAwait(false);
        receiver.HttpEndpoint = new Uri($"http://127.0.0.1:{((IPEndPoint)httpListen!.EndPoint).Port}");
        receiver.GrpcEndpoint = new Uri($"http://127.0.0.1:{((IPEndPoint)grpcListen!.EndPoint).Port}");
        return receiver;
    }

    /// <summary>
    /// Starts a receiver after <paramref name="delay"/>, for tests of a late collector: pass ports chosen
    /// in advance with <see cref="ReserveFreePort"/> so the client can be pointed at them first.
    /// </summary>
    public static async Task<OtlpReceiver> StartAfterAsync(TimeSpan delay, OtlpReceiverOptions options, CancellationToken cancellationToken = default)
    {
        if (options.HttpPort == 0 || options.GrpcPort == 0)
        {
            throw new ArgumentException("A late receiver needs both ports chosen in advance (see ReserveFreePort).", nameof(options));
        }
        await Task.Delay(delay, cancellationToken).ConfigureAwait(false);
        return await StartAsync(options, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// A loopback TCP port that was free a moment ago (the OS chose it and it was released at once).
    /// Another process could take it before use; acceptable for tests.
    /// </summary>
    public static int ReserveFreePort() => ReserveFreePorts(1)[0];

    /// <summary>
    /// Options with an HTTP and a gRPC port that were free a moment ago, for <see cref="StartAfterAsync"/>: two
    /// different ports (both are held while the OS chooses, so it cannot hand out the same one twice).
    /// </summary>
    public static OtlpReceiverOptions OptionsOnFreePorts()
    {
        var ports = ReserveFreePorts(2);
        return new OtlpReceiverOptions { HttpPort = ports[0], GrpcPort = ports[1] };
    }

    private static int[] ReserveFreePorts(int count)
    {
        var probes = new List<Socket>();
        try
        {
            for (var i = 0; i < count; i++)
            {
                var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                probes.Add(probe);
                probe.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            }
            return probes.Select(probe => ((IPEndPoint)probe.LocalEndPoint!).Port).ToArray();
        }
        finally
        {
            foreach (var probe in probes) probe.Dispose();
        }
    }

    /// <summary>Waits until <paramref name="count"/> requests of <paramref name="signal"/> have been accepted.</summary>
    /// <exception cref="TimeoutException">Fewer arrived within <paramref name="timeout"/>.</exception>
    public Task WaitForAsync(OtlpSignal signal, int count, TimeSpan timeout, CancellationToken cancellationToken = default) =>
        signal switch
        {
            OtlpSignal.Metrics => Metrics.WaitForAsync(count, timeout, cancellationToken),
            OtlpSignal.Logs => Logs.WaitForAsync(count, timeout, cancellationToken),
            OtlpSignal.Profiles => Profiles.WaitForAsync(count, timeout, cancellationToken),
            _ => throw new ArgumentOutOfRangeException(nameof(signal), signal, "unknown signal"),
        };

    /// <summary>Stops listening; requests already stored stay readable.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        using var shutdown = new CancellationTokenSource(TimeSpan.FromSeconds(5));
        try
        {
            await _app.StopAsync(shutdown.Token).ConfigureAwait(false);
        }
        finally
        {
            await _app.DisposeAsync().ConfigureAwait(false);
        }
    }

    private void Record(ReceiverAttempt attempt)
    {
        lock (_attemptsGate)
        {
            _attempts.Add(attempt);
        }
    }
}

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

    private int GrpcPort { get; set; } = -1;

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
    public static Task<OtlpReceiver> StartAsync(OtlpReceiverOptions? options = null, CancellationToken cancellationToken = default)
        => StartAsync(options ?? new OtlpReceiverOptions(), reserved: null, cancellationToken);

    /// <summary>
    /// Starts a receiver on ports held since <see cref="ReservePorts"/>, for tests of a collector that comes up late:
    /// until now, connecting to them was refused. The reservation's sockets pass to the receiver (dispose it anyway).
    /// </summary>
    public static Task<OtlpReceiver> StartAsync(ReservedPorts ports, OtlpReceiverOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(ports);
        return StartAsync((options ?? new OtlpReceiverOptions()) with { HttpPort = ports.HttpPort, GrpcPort = ports.GrpcPort }, ports,
            cancellationToken);
    }

    private static async Task<OtlpReceiver> StartAsync(OtlpReceiverOptions options, ReservedPorts? reserved, CancellationToken cancellationToken)
    {
        options.Validate();

        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = [] });
        builder.Logging.ClearProviders();
        ListenOptions? httpListen = null;
        ListenOptions? grpcListen = null;
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.Limits.MaxRequestBodySize = null; // the handlers enforce MaxRequestBytes themselves
            // Cleartext: Kestrel offers HTTP/2 only via TLS ALPN or on an HTTP/2-only endpoint, so
            // OTLP/HTTP here is HTTP/1.1 (what OTLP/HTTP exporters use); h2c lives on the gRPC port.
            void Http(ListenOptions listen)
            {
                listen.Protocols = HttpProtocols.Http1;
                httpListen = listen;
            }
            void Grpc(ListenOptions listen)
            {
                listen.Protocols = HttpProtocols.Http2;
                grpcListen = listen;
            }
            if (reserved is not null)
            {
                // Kestrel listens on the bound sockets themselves: no moment when another socket could take the ports.
                kestrel.ListenHandle(reserved.TakeHttpHandle(), Http);
                kestrel.ListenHandle(reserved.TakeGrpcHandle(), Grpc);
            }
            else
            {
                kestrel.Listen(IPAddress.Loopback, options.HttpPort, Http);
                kestrel.Listen(IPAddress.Loopback, options.GrpcPort, Grpc);
            }
        });

        var app = builder.Build();
        var receiver = new OtlpReceiver(app, new FailureInjector(options.InitialFailures, options.Time));
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
            return context.Connection.LocalPort == receiver.GrpcPort ? grpc.HandleAsync(context) : http.HandleAsync(context);
        });

        await app.StartAsync(cancellationToken).ConfigureAwait(false);
        var httpPort = reserved?.HttpPort ?? ((IPEndPoint)httpListen!.EndPoint).Port;
        var grpcPort = reserved?.GrpcPort ?? ((IPEndPoint)grpcListen!.EndPoint).Port;
        receiver.GrpcPort = grpcPort;
        receiver.HttpEndpoint = new Uri($"http://127.0.0.1:{httpPort}");
        receiver.GrpcEndpoint = new Uri($"http://127.0.0.1:{grpcPort}");
        return receiver;
    }

    /// <summary>
    /// Two loopback ports, bound and held but not listening: connecting to them is refused, as to a collector that is
    /// down, and no other socket can take them until <see cref="StartAsync(ReservedPorts, OtlpReceiverOptions?, CancellationToken)"/>
    /// listens on them.
    /// </summary>
    public static ReservedPorts ReservePorts() => new();

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

using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using OpenTelemetry.Proto.Collector.Logs.V1;
using OpenTelemetry.Proto.Collector.Metrics.V1;
using OpenTelemetry.Proto.Collector.Profiles.V1Development;
using OpenTelemetry.Proto.Collector.Trace.V1;
using TelemetryAgent.OtlpReceiver.Internal;

namespace TelemetryAgent.OtlpReceiver;

/// <summary>
/// A real OTLP receiver for tests, on Kestrel bound to 127.0.0.1: OTLP/HTTP (binary protobuf, HTTP/1.1)
/// on <see cref="HttpEndpoint"/> and OTLP/gRPC (cleartext HTTP/2 only) on <see cref="GrpcEndpoint"/>, served by the
/// reference gRPC server (Grpc.AspNetCore), for metrics, logs, traces and profiles (v1development). Every accepted
/// request is decoded and kept in <see cref="Metrics"/>, <see cref="Logs"/>, <see cref="Traces"/> or
/// <see cref="Profiles"/>; every answer, accepted or not, in <see cref="Attempts"/>. <see cref="Failures"/> makes it
/// turn requests away on demand (an error status, or a reset connection).
/// </summary>
public sealed class OtlpReceiver : IAsyncDisposable
{
    public const string HttpMetricsPath = "/v1/metrics";
    public const string HttpLogsPath = "/v1/logs";
    public const string HttpProfilesPath = "/v1development/profiles";
    public const string HttpTracesPath = "/v1/traces";
    public const string GrpcMetricsPath = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
    public const string GrpcLogsPath = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";
    public const string GrpcProfilesPath = "/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export";
    public const string GrpcTracesPath = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

    private readonly WebApplication _app;
    private readonly Lock _attemptsGate = new();
    private readonly List<ReceiverAttempt> _attempts = [];
    private int _disposed;
    private PartialSuccessReply? _partialSuccess;

    private OtlpReceiver(WebApplication app, FailureInjector failures, RequestLog<ExportMetricsServiceRequest> metrics,
        RequestLog<ExportLogsServiceRequest> logs, RequestLog<ExportProfilesServiceRequest> profiles,
        RequestLog<ExportTraceServiceRequest> traces)
    {
        _app = app;
        Failures = failures;
        Metrics = metrics;
        Logs = logs;
        Profiles = profiles;
        Traces = traces;
    }

    /// <summary>OTLP/HTTP base address, e.g. <c>http://127.0.0.1:40123</c>; append <c>/v1/metrics</c> etc.</summary>
    public Uri HttpEndpoint { get; private set; } = null!;

    /// <summary>OTLP/gRPC address (h2c), e.g. <c>http://127.0.0.1:40124</c>.</summary>
    public Uri GrpcEndpoint { get; private set; } = null!;

    private int GrpcPort { get; set; } = -1;

    public RequestLog<ExportMetricsServiceRequest> Metrics { get; }

    public RequestLog<ExportLogsServiceRequest> Logs { get; }

    public RequestLog<ExportProfilesServiceRequest> Profiles { get; }

    public RequestLog<ExportTraceServiceRequest> Traces { get; }

    /// <summary>Injected failures (error answers or reset connections); change them at any time.</summary>
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
            kestrel.Limits.MaxRequestBodySize = null; // the HTTP handler and the gRPC server enforce MaxRequestBytes themselves
            // Cleartext: Kestrel offers HTTP/2 only via TLS ALPN or on an HTTP/2-only endpoint, so
            // OTLP/HTTP here is HTTP/1.1 (what OTLP/HTTP exporters use); h2c lives on the gRPC port.
            void Http(ListenOptions listen)
            {
                listen.Protocols = HttpProtocols.Http1;
                Secure(listen);
                httpListen = listen;
            }
            void Grpc(ListenOptions listen)
            {
                listen.Protocols = HttpProtocols.Http2;
                Secure(listen);
                grpcListen = listen;
            }
            void Secure(ListenOptions listen)
            {
                if (options.Certificate is not { } certificate) return;
                listen.UseHttps(https =>
                {
                    https.ServerCertificate = certificate;
                    if (options.ClientCertificateAuthority is not { } authority) return;
                    https.ClientCertificateMode = Microsoft.AspNetCore.Server.Kestrel.Https.ClientCertificateMode.RequireCertificate;
                    https.ClientCertificateValidation = (client, _, _) =>
                    {
                        using var chain = new System.Security.Cryptography.X509Certificates.X509Chain();
                        chain.ChainPolicy.TrustMode = System.Security.Cryptography.X509Certificates.X509ChainTrustMode.CustomRootTrust;
                        chain.ChainPolicy.CustomTrustStore.Add(authority);
                        chain.ChainPolicy.RevocationMode = System.Security.Cryptography.X509Certificates.X509RevocationMode.NoCheck;
                        return chain.Build(client);
                    };
                });
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

        var failures = new FailureInjector(options.InitialFailures, options.Time);
        var metrics = new RequestLog<ExportMetricsServiceRequest>(OtlpSignal.Metrics);
        var logs = new RequestLog<ExportLogsServiceRequest>(OtlpSignal.Logs);
        var profiles = new RequestLog<ExportProfilesServiceRequest>(OtlpSignal.Profiles);
        var traces = new RequestLog<ExportTraceServiceRequest>(OtlpSignal.Traces);
        OtlpReceiver? receiver = null;
        var state = new ReceiverState(
            new(OtlpSignal.Metrics, HttpMetricsPath, GrpcMetricsPath, ExportMetricsServiceRequest.Parser, metrics,
                partial => new() { PartialSuccess = new() { RejectedDataPoints = partial.Rejected, ErrorMessage = partial.Message } }),
            new(OtlpSignal.Logs, HttpLogsPath, GrpcLogsPath, ExportLogsServiceRequest.Parser, logs,
                partial => new() { PartialSuccess = new() { RejectedLogRecords = partial.Rejected, ErrorMessage = partial.Message } }),
            new(OtlpSignal.Profiles, HttpProfilesPath, GrpcProfilesPath, ExportProfilesServiceRequest.Parser, profiles,
                partial => new() { PartialSuccess = new() { RejectedProfiles = partial.Rejected, ErrorMessage = partial.Message } }),
            new(OtlpSignal.Traces, HttpTracesPath, GrpcTracesPath, ExportTraceServiceRequest.Parser, traces,
                partial => new() { PartialSuccess = new() { RejectedSpans = partial.Rejected, ErrorMessage = partial.Message } }),
            failures, () => receiver!.PartialSuccess, options.Time);
        builder.Services.AddSingleton(state);
        builder.Services.AddGrpc(grpc =>
        {
            grpc.MaxReceiveMessageSize = options.MaxRequestBytes; // before and after decompression
            grpc.EnableDetailedErrors = true;
        });

        var app = builder.Build();
        receiver = new OtlpReceiver(app, failures, metrics, logs, profiles, traces);
        var http = new OtlpHttpHandler(
            state.All.ToDictionary(r => r.HttpPath, StringComparer.Ordinal), failures, options.MaxRequestBytes, receiver.Record,
            () => receiver.PartialSuccess, options.Time);

        app.Use(async (context, next) =>
        {
            var path = context.Request.Path.Value ?? "";
            var grpc = context.Connection.LocalPort == receiver.GrpcPort;
            var route = state.All.FirstOrDefault(r => (grpc ? r.GrpcPath : r.HttpPath) == path);
            if (route is not null && failures.Decide(route.Signal, reset: true) is not null)
            {
                receiver.Record(new ReceiverAttempt(route.Signal, grpc ? OtlpTransport.Grpc : OtlpTransport.Http, path, 0, null,
                    "connection reset mid-request (injected)", options.Time.GetUtcNow()));
                await ConnectionReset.ResetAsync(context);
                return;
            }
            // Both listeners share one pipeline; the local endpoint decides the protocol.
            if (grpc) await GrpcAnswers.RecordAsync(context, next, state, receiver.Record);
            else await http.HandleAsync(context);
        });
        app.MapGrpcService<MetricsReceiverService>();
        app.MapGrpcService<LogsReceiverService>();
        app.MapGrpcService<ProfilesReceiverService>();
        app.MapGrpcService<TraceReceiverService>();

        await app.StartAsync(cancellationToken).ConfigureAwait(false);
        var httpPort = reserved?.HttpPort ?? ((IPEndPoint)httpListen!.EndPoint).Port;
        var grpcPort = reserved?.GrpcPort ?? ((IPEndPoint)grpcListen!.EndPoint).Port;
        receiver.GrpcPort = grpcPort;
        var scheme = options.Certificate is null ? "http" : "https";
        receiver.HttpEndpoint = new Uri($"{scheme}://127.0.0.1:{httpPort}");
        receiver.GrpcEndpoint = new Uri($"{scheme}://127.0.0.1:{grpcPort}");
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
            OtlpSignal.Traces => Traces.WaitForAsync(count, timeout, cancellationToken),
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

using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using Google.Rpc;
using Grpc.Core;
using OpenTelemetry.Proto.Collector.Logs.V1;
using OpenTelemetry.Proto.Collector.Metrics.V1;
using OpenTelemetry.Proto.Collector.Profiles.V1Development;
using OpenTelemetry.Proto.Collector.Trace.V1;

namespace TelemetryAgent.OtlpReceiver.Internal;

/// <summary>What the gRPC services share with the rest of the receiver (one instance per receiver, from its services).</summary>
internal sealed class ReceiverState(
    SignalRoute<ExportMetricsServiceRequest, ExportMetricsServiceResponse> metrics,
    SignalRoute<ExportLogsServiceRequest, ExportLogsServiceResponse> logs,
    SignalRoute<ExportProfilesServiceRequest, ExportProfilesServiceResponse> profiles,
    SignalRoute<ExportTraceServiceRequest, ExportTraceServiceResponse> traces,
    FailureInjector failures, Func<PartialSuccessReply?> partialSuccess, TimeProvider time)
{
    public SignalRoute<ExportMetricsServiceRequest, ExportMetricsServiceResponse> Metrics { get; } = metrics;
    public SignalRoute<ExportLogsServiceRequest, ExportLogsServiceResponse> Logs { get; } = logs;
    public SignalRoute<ExportProfilesServiceRequest, ExportProfilesServiceResponse> Profiles { get; } = profiles;
    public SignalRoute<ExportTraceServiceRequest, ExportTraceServiceResponse> Traces { get; } = traces;
    public IReadOnlyList<SignalRoute> All => [Metrics, Logs, Profiles, Traces];
    public FailureInjector Failures { get; } = failures;
    public TimeProvider Time { get; } = time;

    /// <summary>The key under which the gRPC middleware leaves the count of request body bytes for the service.</summary>
    public const string WireBytesItem = "otlp-receiver.wire-bytes";

    /// <summary>
    /// One unary Export as the receiver answers it: an injected failure (thrown as the status it names, with
    /// <c>RetryInfo</c> when the plan advertises a delay), else stored and answered.
    /// </summary>
    public TResponse Export<TRequest, TResponse>(SignalRoute<TRequest, TResponse> route, TRequest request, ServerCallContext context)
        where TRequest : IMessage<TRequest>
        where TResponse : IMessage<TResponse>, new()
    {
        if (Failures.Decide(route.Signal, reset: false) is { } plan)
        {
            var status = new Google.Rpc.Status { Code = (int)plan.Code, Message = $"receiver turned the request away (injected {plan.Code})" };
            if (plan.RetryAfter is { } delay) status.Details.Add(Any.Pack(new RetryInfo { RetryDelay = Duration.FromTimeSpan(delay) }));
            throw status.ToRpcException();
        }
        var http = context.GetHttpContext();
        var encoding = http.Request.Headers["grpc-encoding"].ToString();
        var compressed = encoding.Length > 0 && !encoding.Equals("identity", StringComparison.OrdinalIgnoreCase);
        // The request body held one message behind its 5-byte gRPC header.
        var wireBytes = http.Items[WireBytesItem] is Func<long> read ? (int)Math.Max(0, read() - 5) : 0;
        return route.Accept(request, OtlpTransport.Grpc, compressed, wireBytes, http.Request, partialSuccess(), Time.GetUtcNow());
    }
}

internal sealed class MetricsReceiverService(ReceiverState state) : MetricsService.MetricsServiceBase
{
    public override Task<ExportMetricsServiceResponse> Export(ExportMetricsServiceRequest request, ServerCallContext context) =>
        Task.FromResult(state.Export(state.Metrics, request, context));
}

internal sealed class LogsReceiverService(ReceiverState state) : LogsService.LogsServiceBase
{
    public override Task<ExportLogsServiceResponse> Export(ExportLogsServiceRequest request, ServerCallContext context) =>
        Task.FromResult(state.Export(state.Logs, request, context));
}

internal sealed class ProfilesReceiverService(ReceiverState state) : ProfilesService.ProfilesServiceBase
{
    public override Task<ExportProfilesServiceResponse> Export(ExportProfilesServiceRequest request, ServerCallContext context) =>
        Task.FromResult(state.Export(state.Profiles, request, context));
}

internal sealed class TraceReceiverService(ReceiverState state) : TraceService.TraceServiceBase
{
    public override Task<ExportTraceServiceResponse> Export(ExportTraceServiceRequest request, ServerCallContext context) =>
        Task.FromResult(state.Export(state.Traces, request, context));
}

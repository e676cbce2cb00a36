using Google.Protobuf;
using Microsoft.AspNetCore.Http;

namespace TelemetryAgent.OtlpReceiver.Internal;

/// <summary>Where one signal is served, how its requests are stored and how an accepted one is answered.</summary>
internal abstract class SignalRoute(OtlpSignal signal, string httpPath, string grpcPath)
{
    public OtlpSignal Signal { get; } = signal;

    public string HttpPath { get; } = httpPath;

    /// <summary>The gRPC method path, <c>/package.Service/Export</c>.</summary>
    public string GrpcPath { get; } = grpcPath;

    public abstract string RequestTypeName { get; }

    /// <summary>Decodes and stores one OTLP/HTTP request body; returns the serialized answer.</summary>
    /// <exception cref="InvalidProtocolBufferException">The payload is not a valid request message.</exception>
    public abstract byte[] AcceptHttp(ReadOnlyMemory<byte> payload, bool compressed, int wireBytes, HttpRequest request, PartialSuccessReply? partial,
        DateTimeOffset at);

    /// <summary>The request's headers (gRPC: its metadata), names in lower case, repeated values joined by commas.</summary>
    public static IReadOnlyDictionary<string, string> HeadersOf(HttpRequest request) =>
        request.Headers.ToDictionary(header => header.Key.ToLowerInvariant(), header => header.Value.ToString(), StringComparer.Ordinal);
}

/// <summary>A signal whose requests are <typeparamref name="TRequest"/> and answers <typeparamref name="TResponse"/>.</summary>
internal sealed class SignalRoute<TRequest, TResponse>(
    OtlpSignal signal, string httpPath, string grpcPath, MessageParser<TRequest> parser, RequestLog<TRequest> log,
    Func<PartialSuccessReply, TResponse> partialSuccess)
    : SignalRoute(signal, httpPath, grpcPath)
    where TRequest : IMessage<TRequest>
    where TResponse : IMessage<TResponse>, new()
{
    public override string RequestTypeName => typeof(TRequest).Name;

    /// <summary>
    /// Stores an accepted request and returns the answer: empty (full success), or the partial success set for this
    /// signal.
    /// </summary>
    public TResponse Accept(TRequest message, OtlpTransport transport, bool compressed, int wireBytes, HttpRequest request,
        PartialSuccessReply? partial, DateTimeOffset at)
    {
        log.Add(new ReceivedRequest<TRequest>(message, transport, compressed, wireBytes, at) { Headers = HeadersOf(request) });
        return partial is not null && (partial.Signal is not { } only || only == Signal) ? partialSuccess(partial) : new TResponse();
    }

    public override byte[] AcceptHttp(ReadOnlyMemory<byte> payload, bool compressed, int wireBytes, HttpRequest request,
        PartialSuccessReply? partial, DateTimeOffset at) =>
        Accept(parser.ParseFrom(payload.Span), OtlpTransport.Http, compressed, wireBytes, request, partial, at).ToByteArray();
}

using Google.Protobuf;

namespace TelemetryAgent.OtlpReceiver.Internal;

/// <summary>Where one signal is served and how its request is decoded and stored.</summary>
internal sealed class SignalRoute
{
    private readonly Action<ReadOnlyMemory<byte>, OtlpTransport, bool, int, IReadOnlyDictionary<string, string>> _decodeAndStore;

    private SignalRoute(
        OtlpSignal signal, string httpPath, string grpcPath, string requestTypeName, byte[] emptyResponse,
        Action<ReadOnlyMemory<byte>, OtlpTransport, bool, int, IReadOnlyDictionary<string, string>> decodeAndStore)
    {
        Signal = signal;
        HttpPath = httpPath;
        GrpcPath = grpcPath;
        RequestTypeName = requestTypeName;
        EmptyResponse = emptyResponse;
        _decodeAndStore = decodeAndStore;
    }

    public OtlpSignal Signal { get; }

    public string HttpPath { get; }

    public string GrpcPath { get; }

    public string RequestTypeName { get; }

    /// <summary>The serialized empty Export*ServiceResponse (full success, no partial_success).</summary>
    public byte[] EmptyResponse { get; }

    /// <summary>
    /// The answer to an accepted request: <see cref="EmptyResponse"/>, or a partial success when one is set for this
    /// signal. Every Export*ServiceResponse has <c>partial_success = 1</c> holding <c>rejected_* = 1</c> (int64) and
    /// <c>error_message = 2</c>, so one encoding serves all signals.
    /// </summary>
    public byte[] SuccessResponse(PartialSuccessReply? partial)
    {
        if (partial is null || (partial.Signal is { } only && only != Signal)) return EmptyResponse;
        using var inner = new MemoryStream();
        var innerOutput = new CodedOutputStream(inner);
        innerOutput.WriteTag(1, WireFormat.WireType.Varint);
        innerOutput.WriteInt64(partial.Rejected);
        innerOutput.WriteTag(2, WireFormat.WireType.LengthDelimited);
        innerOutput.WriteString(partial.Message);
        innerOutput.Flush();
        using var outer = new MemoryStream();
        var output = new CodedOutputStream(outer);
        output.WriteTag(1, WireFormat.WireType.LengthDelimited);
        output.WriteBytes(ByteString.CopyFrom(inner.ToArray()));
        output.Flush();
        return outer.ToArray();
    }

    public static SignalRoute Create<TRequest, TResponse>(
        OtlpSignal signal, string httpPath, string grpcPath, MessageParser<TRequest> parser, RequestLog<TRequest> log)
        where TRequest : IMessage<TRequest>
        where TResponse : IMessage<TResponse>, new()
    {
        return new SignalRoute(
            signal, httpPath, grpcPath, typeof(TRequest).Name, new TResponse().ToByteArray(),
            (payload, transport, compressed, wireBytes, headers) =>
            {
                var message = parser.ParseFrom(payload.Span);
                log.Add(new ReceivedRequest<TRequest>(message, transport, compressed, wireBytes, DateTimeOffset.UtcNow) { Headers = headers });
            });
    }

    /// <summary>Decodes and stores one request.</summary>
    /// <exception cref="InvalidProtocolBufferException">The payload is not a valid request message.</exception>
    public void DecodeAndStore(ReadOnlyMemory<byte> payload, OtlpTransport transport, bool compressed, int wireBytes,
        Microsoft.AspNetCore.Http.IHeaderDictionary headers) =>
        _decodeAndStore(payload, transport, compressed, wireBytes,
            headers.ToDictionary(header => header.Key.ToLowerInvariant(), header => header.Value.ToString(), StringComparer.Ordinal));
}

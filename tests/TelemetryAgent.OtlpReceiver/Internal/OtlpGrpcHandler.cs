using System.Buffers.Binary;
using Google.Protobuf;
using Microsoft.AspNetCore.Http;

namespace TelemetryAgent.OtlpReceiver.Internal;

/// <summary>
/// OTLP/gRPC unary Export over cleartext HTTP/2, without a gRPC library: reads the one length-prefixed
/// message (1-byte compressed flag, u32 big-endian length), honours <c>grpc-encoding: gzip</c>, and answers
/// with an empty framed response plus <c>grpc-status</c>/<c>grpc-message</c> trailers.
/// </summary>
internal sealed class OtlpGrpcHandler(
    IReadOnlyDictionary<string, SignalRoute> routesByPath, FailureInjector failures, int maxMessageBytes, Action<ReceiverAttempt> record,
    Func<PartialSuccessReply?> partialSuccess)
{
    private const int FrameHeaderBytes = 5;
    private const string GrpcContentType = "application/grpc";

    public async Task HandleAsync(HttpContext context)
    {
        var request = context.Request;
        var response = context.Response;
        var path = request.Path.Value ?? "";
        routesByPath.TryGetValue(path, out var route);

        // Non-gRPC callers get plain HTTP errors, as the gRPC HTTP/2 protocol prescribes.
        if (!HttpMethods.IsPost(request.Method))
        {
            record(new ReceiverAttempt(route?.Signal, OtlpTransport.Grpc, path, StatusCodes.Status405MethodNotAllowed, null,
                $"method {request.Method} is not allowed; gRPC uses POST", DateTimeOffset.UtcNow));
            response.StatusCode = StatusCodes.Status405MethodNotAllowed;
            response.Headers.Allow = "POST";
            return;
        }
        if (!IsGrpcContentType(request.ContentType))
        {
            record(new ReceiverAttempt(route?.Signal, OtlpTransport.Grpc, path, StatusCodes.Status415UnsupportedMediaType, null,
                $"content type '{request.ContentType}' is not gRPC", DateTimeOffset.UtcNow));
            response.StatusCode = StatusCodes.Status415UnsupportedMediaType;
            return;
        }

        response.StatusCode = StatusCodes.Status200OK;
        response.ContentType = GrpcContentType;
        response.Headers["grpc-accept-encoding"] = "gzip,identity";

        if (route is null)
        {
            Finish(context, null, GrpcStatusCode.Unimplemented, $"unknown method '{path}'");
            return;
        }

        var header = new byte[FrameHeaderBytes];
        int headerRead = await request.Body.ReadAtLeastAsync(header, FrameHeaderBytes, throwOnEndOfStream: false, context.RequestAborted);
        if (headerRead < FrameHeaderBytes)
        {
            Finish(context, route, GrpcStatusCode.Internal,
                $"request ended after {headerRead} bytes, inside the 5-byte gRPC message header");
            return;
        }
        byte compressedFlag = header[0];
        uint declaredLength = BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(1));
        if (compressedFlag > 1)
        {
            Finish(context, route, GrpcStatusCode.Internal, $"invalid gRPC compressed flag {compressedFlag}; expected 0 or 1");
            return;
        }
        if (declaredLength > (uint)maxMessageBytes)
        {
            Finish(context, route, GrpcStatusCode.ResourceExhausted,
                $"message of {declaredLength} bytes exceeds the {maxMessageBytes}-byte limit");
            return;
        }

        var message = new byte[declaredLength];
        int messageRead = await request.Body.ReadAtLeastAsync(message, message.Length, throwOnEndOfStream: false, context.RequestAborted);
        if (messageRead < message.Length)
        {
            Finish(context, route, GrpcStatusCode.Internal,
                $"request ended after {messageRead} of the {declaredLength} message bytes the gRPC header declared");
            return;
        }
        if (await request.Body.ReadAsync(new byte[1], context.RequestAborted) != 0)
        {
            Finish(context, route, GrpcStatusCode.Unimplemented, "unary Export carries exactly one message; more data followed it");
            return;
        }

        bool compressed = compressedFlag == 1;
        ReadOnlyMemory<byte> payload = message;
        if (compressed)
        {
            var encoding = request.Headers["grpc-encoding"].ToString().Trim();
            if (encoding.Length == 0 || encoding.Equals("identity", StringComparison.OrdinalIgnoreCase))
            {
                Finish(context, route, GrpcStatusCode.Internal, "message is flagged compressed but grpc-encoding names no compression");
                return;
            }
            if (!encoding.Equals("gzip", StringComparison.OrdinalIgnoreCase))
            {
                Finish(context, route, GrpcStatusCode.Unimplemented, $"grpc-encoding '{encoding}' is not supported; use gzip or identity");
                return;
            }
            byte[]? inflated;
            try
            {
                inflated = Payload.Gunzip(message, maxMessageBytes);
            }
            catch (InvalidDataException e)
            {
                Finish(context, route, GrpcStatusCode.Internal, $"gzip message cannot be decompressed: {e.Message}");
                return;
            }
            if (inflated is null)
            {
                Finish(context, route, GrpcStatusCode.ResourceExhausted, $"decompressed message exceeds the {maxMessageBytes}-byte limit");
                return;
            }
            payload = inflated;
        }

        if (failures.ShouldReject(route.Signal, out var retryAfter))
        {
            Finish(context, route, GrpcStatusCode.Unavailable, "receiver is temporarily unavailable (injected failure)", retryAfter);
            return;
        }

        try
        {
            route.DecodeAndStore(payload, OtlpTransport.Grpc, compressed, message.Length, context.Request.Headers);
        }
        catch (InvalidProtocolBufferException e)
        {
            Finish(context, route, GrpcStatusCode.InvalidArgument, $"message is not a valid {route.RequestTypeName}: {e.Message}");
            return;
        }

        var answer = route.SuccessResponse(partialSuccess());
        var frame = new byte[FrameHeaderBytes + answer.Length];
        BinaryPrimitives.WriteUInt32BigEndian(frame.AsSpan(1), (uint)answer.Length);
        answer.CopyTo(frame, FrameHeaderBytes);
        await response.Body.WriteAsync(frame, context.RequestAborted);
        Finish(context, route, GrpcStatusCode.Ok, null);
    }

    private void Finish(HttpContext context, SignalRoute? route, GrpcStatusCode code, string? message, TimeSpan? retryAfter = null)
    {
        record(new ReceiverAttempt(route?.Signal, OtlpTransport.Grpc, context.Request.Path.Value ?? "", StatusCodes.Status200OK,
            (int)code, code == GrpcStatusCode.Ok ? null : message ?? code.ToString(), DateTimeOffset.UtcNow));
        var response = context.Response;
        response.AppendTrailer("grpc-status", ((int)code).ToString(System.Globalization.CultureInfo.InvariantCulture));
        if (message is not null)
        {
            response.AppendTrailer("grpc-message", RpcStatus.PercentEncode(message));
        }
        if (retryAfter is { } delay)
        {
            var details = RpcStatus.Encode(code, message ?? "", delay);
            response.AppendTrailer("grpc-status-details-bin", Convert.ToBase64String(details).TrimEnd('='));
        }
    }

    private static bool IsGrpcContentType(string? contentType) =>
        contentType is not null
        && contentType.StartsWith(GrpcContentType, StringComparison.OrdinalIgnoreCase)
        && (contentType.Length == GrpcContentType.Length || contentType[GrpcContentType.Length] is '+' or ';');
}

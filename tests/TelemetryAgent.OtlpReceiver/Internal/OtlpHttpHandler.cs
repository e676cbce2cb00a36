using System.Globalization;
using Google.Protobuf;
using Grpc.Core;
using Microsoft.AspNetCore.Http;
using Microsoft.Net.Http.Headers;

namespace TelemetryAgent.OtlpReceiver.Internal;

/// <summary>
/// OTLP/HTTP with binary protobuf bodies: POST, <c>Content-Type: application/x-protobuf</c>, optional
/// <c>Content-Encoding: gzip</c>; 200 with an empty Export*ServiceResponse, or an error status with a
/// <c>google.rpc.Status</c> body.
/// </summary>
internal sealed class OtlpHttpHandler(
    IReadOnlyDictionary<string, SignalRoute> routesByPath, FailureInjector failures, int maxRequestBytes, Action<ReceiverAttempt> record,
    Func<PartialSuccessReply?> partialSuccess, TimeProvider time)
{
    private const string ProtobufMediaType = "application/x-protobuf";

    public async Task HandleAsync(HttpContext context)
    {
        var request = context.Request;
        var path = request.Path.Value ?? "";
        if (!routesByPath.TryGetValue(path, out var route))
        {
            await RejectAsync(context, null, StatusCodes.Status404NotFound, StatusCode.Unimplemented,
                $"no OTLP signal is served at '{path}'; expected one of {string.Join(", ", routesByPath.Keys)}");
            return;
        }
        if (!HttpMethods.IsPost(request.Method))
        {
            context.Response.Headers.Allow = "POST";
            await RejectAsync(context, route, StatusCodes.Status405MethodNotAllowed, StatusCode.Unimplemented,
                $"method {request.Method} is not allowed; OTLP/HTTP uses POST");
            return;
        }
        if (!MediaTypeHeaderValue.TryParse(request.ContentType, out var mediaType)
            || !mediaType.MediaType.Equals(ProtobufMediaType, StringComparison.OrdinalIgnoreCase))
        {
            await RejectAsync(context, route, StatusCodes.Status415UnsupportedMediaType, StatusCode.InvalidArgument,
                $"content type '{request.ContentType}' is not supported; this receiver accepts {ProtobufMediaType} only");
            return;
        }
        var encoding = request.Headers.ContentEncoding.ToString().Trim();
        bool compressed = encoding.Equals("gzip", StringComparison.OrdinalIgnoreCase);
        if (!compressed && encoding.Length > 0 && !encoding.Equals("identity", StringComparison.OrdinalIgnoreCase))
        {
            await RejectAsync(context, route, StatusCodes.Status415UnsupportedMediaType, StatusCode.InvalidArgument,
                $"content encoding '{encoding}' is not supported; use gzip or none");
            return;
        }
        if (request.ContentLength > maxRequestBytes)
        {
            await RejectAsync(context, route, StatusCodes.Status413PayloadTooLarge, StatusCode.ResourceExhausted,
                $"body of {request.ContentLength} bytes exceeds the {maxRequestBytes}-byte limit");
            return;
        }

        var body = await Payload.ReadToEndAsync(request.Body, maxRequestBytes, context.RequestAborted);
        if (body is null)
        {
            await RejectAsync(context, route, StatusCodes.Status413PayloadTooLarge, StatusCode.ResourceExhausted,
                $"body exceeds the {maxRequestBytes}-byte limit");
            return;
        }
        var payload = body;
        if (compressed)
        {
            try
            {
                payload = Payload.Gunzip(body, maxRequestBytes);
            }
            catch (InvalidDataException e)
            {
                await RejectAsync(context, route, StatusCodes.Status400BadRequest, StatusCode.InvalidArgument,
                    $"gzip body cannot be decompressed: {e.Message}");
                return;
            }
            if (payload is null)
            {
                await RejectAsync(context, route, StatusCodes.Status413PayloadTooLarge, StatusCode.ResourceExhausted,
                    $"decompressed body exceeds the {maxRequestBytes}-byte limit");
                return;
            }
        }

        if (failures.Decide(route.Signal, reset: false) is { } plan)
        {
            if (plan.RetryAfter is { } delay)
            {
                var seconds = (long)Math.Ceiling(delay.TotalSeconds);
                context.Response.Headers.RetryAfter = plan.RetryAfterAsDate
                    ? (time.GetUtcNow() + TimeSpan.FromSeconds(seconds)).ToString("R", CultureInfo.InvariantCulture)
                    : seconds.ToString(CultureInfo.InvariantCulture);
            }
            await RejectAsync(context, route, HttpStatusOf(plan.Code), plan.Code, $"receiver turned the request away (injected {plan.Code})");
            return;
        }

        byte[] answer;
        try
        {
            answer = route.AcceptHttp(payload, compressed, body.Length, request, partialSuccess(), time.GetUtcNow());
        }
        catch (InvalidProtocolBufferException e)
        {
            await RejectAsync(context, route, StatusCodes.Status400BadRequest, StatusCode.InvalidArgument,
                $"body is not a valid {route.RequestTypeName}: {e.Message}");
            return;
        }

        record(new ReceiverAttempt(route.Signal, OtlpTransport.Http, path, StatusCodes.Status200OK, null, null, time.GetUtcNow()));
        context.Response.StatusCode = StatusCodes.Status200OK;
        context.Response.ContentType = ProtobufMediaType;
        context.Response.ContentLength = answer.Length;
        await context.Response.Body.WriteAsync(answer, context.RequestAborted);
    }

    /// <summary>The HTTP status that the gRPC HTTP mapping pairs with a gRPC status.</summary>
    private static int HttpStatusOf(StatusCode code) => code switch
    {
        StatusCode.Unavailable => StatusCodes.Status503ServiceUnavailable,
        StatusCode.ResourceExhausted => StatusCodes.Status429TooManyRequests,
        StatusCode.DeadlineExceeded => StatusCodes.Status504GatewayTimeout,
        StatusCode.InvalidArgument => StatusCodes.Status400BadRequest,
        StatusCode.Unauthenticated => StatusCodes.Status401Unauthorized,
        StatusCode.PermissionDenied => StatusCodes.Status403Forbidden,
        StatusCode.NotFound or StatusCode.Unimplemented => StatusCodes.Status404NotFound,
        _ => StatusCodes.Status500InternalServerError,
    };

    private async Task RejectAsync(HttpContext context, SignalRoute? route, int httpStatus, StatusCode code, string message)
    {
        record(new ReceiverAttempt(route?.Signal, OtlpTransport.Http, context.Request.Path.Value ?? "", httpStatus, null, message, time.GetUtcNow()));
        var status = new Google.Rpc.Status { Code = (int)code, Message = message }.ToByteArray();
        context.Response.StatusCode = httpStatus;
        context.Response.ContentType = ProtobufMediaType;
        context.Response.ContentLength = status.Length;
        await context.Response.Body.WriteAsync(status, context.RequestAborted);
    }
}

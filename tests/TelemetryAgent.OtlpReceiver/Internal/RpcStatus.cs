using System.Text;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;

namespace TelemetryAgent.OtlpReceiver.Internal;

/// <summary>
/// Encodes <c>google.rpc.Status</c> (code = 1, message = 2, details = 3 as Any), optionally carrying a
/// <c>google.rpc.RetryInfo</c> (retry_delay = 1, a Duration): the error body of OTLP/HTTP and the
/// <c>grpc-status-details-bin</c> trailer of gRPC. Hand-encoded because only these two messages are needed.
/// </summary>
internal static class RpcStatus
{
    private const string RetryInfoTypeUrl = "type.googleapis.com/google.rpc.RetryInfo";

    public static byte[] Encode(GrpcStatusCode code, string message, TimeSpan? retryDelay)
    {
        using var buffer = new MemoryStream();
        var output = new CodedOutputStream(buffer);
        if (code != GrpcStatusCode.Ok)
        {
            output.WriteTag(1, WireFormat.WireType.Varint);
            output.WriteInt32((int)code);
        }
        if (message.Length > 0)
        {
            output.WriteTag(2, WireFormat.WireType.LengthDelimited);
            output.WriteString(message);
        }
        if (retryDelay is { } delay)
        {
            var details = new Any { TypeUrl = RetryInfoTypeUrl, Value = EncodeRetryInfo(delay) };
            output.WriteTag(3, WireFormat.WireType.LengthDelimited);
            output.WriteMessage(details);
        }
        output.Flush();
        return buffer.ToArray();
    }

    private static ByteString EncodeRetryInfo(TimeSpan delay)
    {
        using var buffer = new MemoryStream();
        var output = new CodedOutputStream(buffer);
        output.WriteTag(1, WireFormat.WireType.LengthDelimited);
        output.WriteMessage(Duration.FromTimeSpan(delay));
        output.Flush();
        return ByteString.CopyFrom(buffer.ToArray());
    }

    /// <summary>Percent-encodes a grpc-message value as the gRPC HTTP/2 spec requires (UTF-8, outside 0x20..0x7E and '%').</summary>
    public static string PercentEncode(string message)
    {
        var builder = new StringBuilder(message.Length);
        foreach (var b in Encoding.UTF8.GetBytes(message))
        {
            if (b is >= 0x20 and <= 0x7E && b != (byte)'%')
            {
                builder.Append((char)b);
            }
            else
            {
                builder.Append('%').Append(b.ToString("X2"));
            }
        }
        return builder.ToString();
    }
}

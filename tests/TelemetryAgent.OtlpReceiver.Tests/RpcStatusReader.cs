using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;

namespace TelemetryAgent.OtlpReceiver.Tests;

/// <summary>A decoded <c>google.rpc.Status</c> with its optional <c>google.rpc.RetryInfo</c> delay.</summary>
internal sealed record DecodedRpcStatus(int Code, string Message, TimeSpan? RetryDelay);

/// <summary>Test-side decoder of google.rpc.Status (code 1, message 2, details 3) and RetryInfo (retry_delay 1).</summary>
internal static class RpcStatusReader
{
    public static DecodedRpcStatus Decode(byte[] bytes)
    {
        int code = 0;
        string message = "";
        TimeSpan? retryDelay = null;
        var input = new CodedInputStream(bytes);
        for (uint tag; (tag = input.ReadTag()) != 0;)
        {
            switch (WireFormat.GetTagFieldNumber(tag))
            {
                case 1:
                    code = input.ReadInt32();
                    break;
                case 2:
                    message = input.ReadString();
                    break;
                case 3:
                    var any = new Any();
                    input.ReadMessage(any);
                    Assert.Equal("type.googleapis.com/google.rpc.RetryInfo", any.TypeUrl);
                    retryDelay = ReadRetryDelay(any.Value.ToByteArray());
                    break;
                default:
                    input.SkipLastField();
                    break;
            }
        }
        return new DecodedRpcStatus(code, message, retryDelay);
    }

    private static TimeSpan ReadRetryDelay(byte[] retryInfo)
    {
        var input = new CodedInputStream(retryInfo);
        var duration = new Duration();
        Assert.Equal(WireFormat.MakeTag(1, WireFormat.WireType.LengthDelimited), input.ReadTag());
        input.ReadMessage(duration);
        return duration.ToTimeSpan();
    }
}

using System.IO.Compression;
using System.Net.Http.Headers;
using Grpc.Core;
using Grpc.Net.Client;
using OpenTelemetry.Proto.Collector.Logs.V1;
using OpenTelemetry.Proto.Collector.Metrics.V1;
using OpenTelemetry.Proto.Collector.Profiles.V1Development;

namespace TelemetryAgent.OtlpReceiver.Tests;

/// <summary>
/// Clients of one receiver: the generated OTLP gRPC clients on the reference gRPC client (Grpc.Net.Client), and
/// OTLP/HTTP posts of bodies given byte for byte (for malformed ones too).
/// </summary>
internal sealed class Clients : IDisposable
{
    private readonly OtlpReceiver _receiver;
    private readonly GrpcChannel _channel;
    private readonly HttpClient _http = new() { Timeout = TimeSpan.FromSeconds(20) };

    public Clients(OtlpReceiver receiver)
    {
        _receiver = receiver;
        _channel = GrpcChannel.ForAddress(receiver.GrpcEndpoint);
        Metrics = new MetricsService.MetricsServiceClient(_channel);
        Logs = new LogsService.LogsServiceClient(_channel);
        Profiles = new ProfilesService.ProfilesServiceClient(_channel);
    }

    public MetricsService.MetricsServiceClient Metrics { get; }
    public LogsService.LogsServiceClient Logs { get; }
    public ProfilesService.ProfilesServiceClient Profiles { get; }
    public CallInvoker Invoker => _channel.CreateCallInvoker();

    /// <summary>Call options of a unary Export: a deadline, and gzip when asked (the client then compresses the message).</summary>
    public static CallOptions Call(bool gzip = false) =>
        new(headers: gzip ? new Metadata { { "grpc-internal-encoding-request", "gzip" } } : null, deadline: DateTime.UtcNow.AddSeconds(20));

    public static byte[] Gzip(byte[] data)
    {
        using var output = new MemoryStream();
        using (var gzip = new GZipStream(output, CompressionLevel.Fastest, leaveOpen: true))
        {
            gzip.Write(data);
        }
        return output.ToArray();
    }

    public Task<HttpResponseMessage> PostAsync(string path, byte[] body, bool gzip = false, string contentType = "application/x-protobuf")
    {
        var content = new ByteArrayContent(gzip ? Gzip(body) : body);
        content.Headers.ContentType = MediaTypeHeaderValue.Parse(contentType);
        if (gzip)
        {
            content.Headers.ContentEncoding.Add("gzip");
        }
        return _http.PostAsync(new Uri(_receiver.HttpEndpoint, path), content);
    }

    public void Dispose()
    {
        _channel.Dispose();
        _http.Dispose();
    }
}

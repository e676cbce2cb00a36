using Google.Protobuf;
using System.Net;
using OpenTelemetry.Proto.Collector.Profiles.V1Development;

namespace TelemetryAgent.OtlpReceiver.Tests;

/// <summary>
/// No OTLP profiles SDK exists, so a request built with our generated classes is sent over HTTP (HttpClient) and
/// through the generated gRPC client, and must come back from the receiver unchanged, over every transport and
/// encoding.
/// </summary>
public sealed class ProfilesRoundTripTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Profiles_over_http_arrive_unchanged(bool gzip)
    {
        await using var receiver = await OtlpReceiver.StartAsync();
        using var clients = new Clients(receiver);
        var sent = ProfilesFixture.CpuProfile();

        using var response = await clients.PostAsync(OtlpReceiver.HttpProfilesPath, sent.ToByteArray(), gzip);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("application/x-protobuf", response.Content.Headers.ContentType?.MediaType);
        var reply = ExportProfilesServiceResponse.Parser.ParseFrom(await response.Content.ReadAsByteArrayAsync());
        Assert.Null(reply.PartialSuccess);
        var received = Assert.Single(await receiver.Profiles.WaitForAsync(1, Timeout));
        Assert.Equal(sent, received.Message);
        Assert.Equal(OtlpTransport.Http, received.Transport);
        Assert.Equal(gzip, received.Compressed);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Profiles_over_grpc_arrive_unchanged(bool gzip)
    {
        await using var receiver = await OtlpReceiver.StartAsync();
        using var clients = new Clients(receiver);
        var sent = ProfilesFixture.CpuProfile();

        var reply = await clients.Profiles.ExportAsync(sent, Clients.Call(gzip));

        Assert.Null(reply.PartialSuccess);
        var received = Assert.Single(await receiver.Profiles.WaitForAsync(1, Timeout));
        Assert.Equal(sent, received.Message);
        Assert.Equal(OtlpTransport.Grpc, received.Transport);
        Assert.Equal(gzip, received.Compressed);
    }
}

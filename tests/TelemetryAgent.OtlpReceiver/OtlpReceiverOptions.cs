namespace TelemetryAgent.OtlpReceiver;

/// <summary>Configuration of an <see cref="OtlpReceiver"/>. Both endpoints bind to 127.0.0.1.</summary>
public sealed record OtlpReceiverOptions
{
    /// <summary>Port of the OTLP/HTTP endpoint (HTTP/1.1); 0 picks a free port.</summary>
    public int HttpPort { get; init; }

    /// <summary>Port of the OTLP/gRPC endpoint (HTTP/2 only, cleartext); 0 picks a free port.</summary>
    public int GrpcPort { get; init; }

    /// <summary>Largest accepted body, before and after decompression (gRPC: one message).</summary>
    public int MaxRequestBytes { get; init; } = 16 * 1024 * 1024;

    /// <summary>Rejections to apply from the first request on (see <see cref="OtlpReceiver.Failures"/>).</summary>
    public FailurePlan? InitialFailures { get; init; }

    /// <summary>TLS on both endpoints with this certificate (and its private key); null: cleartext.</summary>
    public System.Security.Cryptography.X509Certificates.X509Certificate2? Certificate { get; init; }

    /// <summary>With <see cref="Certificate"/>: mutual TLS, clients must present a certificate issued by this CA.</summary>
    public System.Security.Cryptography.X509Certificates.X509Certificate2? ClientCertificateAuthority { get; init; }

    /// <summary>The clock <see cref="FailurePlan.Until"/> is read by (a fake one lets a test end a window at will).</summary>
    public TimeProvider Time { get; init; } = TimeProvider.System;

    internal void Validate()
    {
        var errors = new List<string>();
        if (HttpPort is < 0 or > 65535)
        {
            errors.Add($"HttpPort must be 0..65535 (was {HttpPort})");
        }
        if (GrpcPort is < 0 or > 65535)
        {
            errors.Add($"GrpcPort must be 0..65535 (was {GrpcPort})");
        }
        if (HttpPort != 0 && HttpPort == GrpcPort)
        {
            errors.Add($"HttpPort and GrpcPort must differ (both {HttpPort})");
        }
        if (ClientCertificateAuthority is not null && Certificate is null)
        {
            errors.Add("ClientCertificateAuthority needs a Certificate (mutual TLS is TLS)");
        }
        if (MaxRequestBytes <= 0)
        {
            errors.Add($"MaxRequestBytes must be positive (was {MaxRequestBytes})");
        }
        if (errors.Count > 0)
        {
            throw new ArgumentException("Invalid OtlpReceiverOptions: " + string.Join("; ", errors));
        }
    }
}

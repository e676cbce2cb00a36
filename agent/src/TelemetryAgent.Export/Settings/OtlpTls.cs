using System.Net.Security;
using System.Security.Cryptography.X509Certificates;

namespace TelemetryAgent.Export.Settings;

/// <summary>
/// TLS of one signal's endpoint, from <c>OTEL_EXPORTER_OTLP_CERTIFICATE</c> (the CA that signs the collector's
/// certificate, PEM), <c>..._CLIENT_CERTIFICATE</c> and <c>..._CLIENT_KEY</c> (the agent's own, PEM, for mutual TLS),
/// each with its per-signal form. The certificates are read once, when the settings are resolved.
/// </summary>
public sealed class OtlpTls
{
    private readonly X509Certificate2Collection? _trusted;
    private readonly X509Certificate2? _client;

    private OtlpTls(X509Certificate2Collection? trusted, X509Certificate2? client)
    {
        _trusted = trusted;
        _client = client;
    }

    /// <summary>Null when nothing is configured (the system's trust store, no client certificate).</summary>
    internal static OtlpTls? Resolve(
        (string Value, string Source)? certificate, (string Value, string Source)? clientCertificate, (string Value, string Source)? clientKey)
    {
        if (certificate is null && clientCertificate is null && clientKey is null) return null;
        if ((clientCertificate is null) != (clientKey is null))
        {
            var (given, missing) = clientCertificate is { } c ? (c.Source, "CLIENT_KEY") : (clientKey!.Value.Source, "CLIENT_CERTIFICATE");
            throw new FormatException($"{given} is set but no {missing} goes with it: mutual TLS needs both.");
        }
        X509Certificate2Collection? trusted = null;
        if (certificate is { } ca)
        {
            trusted = [];
            try
            {
                trusted.ImportFromPemFile(ca.Value);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or System.Security.Cryptography.CryptographicException)
            {
                throw new FormatException($"{ca.Source}: cannot read the certificate {ca.Value}: {e.Message}");
            }
            if (trusted.Count == 0) throw new FormatException($"{ca.Source}: {ca.Value} holds no PEM certificate.");
        }
        X509Certificate2? client = null;
        if (clientCertificate is { } cert && clientKey is { } key)
        {
            try
            {
                client = X509Certificate2.CreateFromPemFile(cert.Value, key.Value);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or System.Security.Cryptography.CryptographicException or ArgumentException)
            {
                throw new FormatException($"{cert.Source} / {key.Source}: cannot read the client certificate {cert.Value} with its key {key.Value}: {e.Message}");
            }
        }
        return new OtlpTls(trusted, client);
    }

    /// <summary>Sets <paramref name="handler"/>'s TLS: trust only the configured CA (when one is), present the client certificate.</summary>
    public void Apply(SocketsHttpHandler handler)
    {
        ArgumentNullException.ThrowIfNull(handler);
        if (_client is not null) handler.SslOptions.ClientCertificates = [_client];
        if (_trusted is not null) handler.SslOptions.RemoteCertificateValidationCallback = Validate;
    }

    // The collector's certificate must chain to the configured CA (and only to it) and name the host.
    private bool Validate(object sender, X509Certificate? certificate, X509Chain? _, SslPolicyErrors errors)
    {
        if (certificate is null || (errors & (SslPolicyErrors.RemoteCertificateNotAvailable | SslPolicyErrors.RemoteCertificateNameMismatch)) != 0)
            return false;
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.AddRange(_trusted!);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        return chain.Build(certificate as X509Certificate2 ?? X509CertificateLoader.LoadCertificate(certificate.GetRawCertData()));
    }

    public override string ToString() => (_trusted is null ? "" : "CA from settings") + (_client is null ? "" : (_trusted is null ? "" : ", ") + "client certificate");
}

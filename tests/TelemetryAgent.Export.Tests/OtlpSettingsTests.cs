using TelemetryAgent.Export.Settings;

namespace TelemetryAgent.Export.Tests;

public sealed class OtlpSettingsTests
{
    private static OtlpSettings Resolve(Dictionary<string, string?> environment, string? endpoint = null, string? protocol = null,
        bool force = false) => OtlpSettings.Resolve(environment, endpoint, protocol, force);

    [Fact]
    public void Without_an_endpoint_export_is_off_unless_asked_for_then_it_uses_the_collector_ports()
    {
        Assert.False(Resolve([]).Enabled);
        Assert.False(Resolve(new() { ["OTEL_EXPORTER_OTLP_ENDPOINT"] = " " }).Enabled);

        var defaults = Resolve([], force: true);
        Assert.Equal("http://localhost:4318/v1/metrics", defaults.For(OtlpSignal.Metrics).Url.AbsoluteUri);
        Assert.Equal("http://localhost:4318/v1/logs", defaults.For(OtlpSignal.Logs).Url.AbsoluteUri);
        Assert.Equal("http://localhost:4318/v1development/profiles", defaults.For(OtlpSignal.Profiles).Url.AbsoluteUri);
        Assert.Equal(OtlpProtocol.HttpProtobuf, defaults.For(OtlpSignal.Logs).Protocol);
        Assert.Equal(TimeSpan.FromSeconds(10), defaults.For(OtlpSignal.Logs).Timeout);

        var grpc = Resolve([], protocol: "grpc", force: true);
        Assert.Equal("http://localhost:4317/", grpc.For(OtlpSignal.Profiles).Url.AbsoluteUri);
    }

    [Fact]
    public void OTEL_SDK_DISABLED_wins_over_every_endpoint_and_an_exporter_set_to_none_switches_its_signal_off()
    {
        var disabled = Resolve(new() { ["OTEL_SDK_DISABLED"] = "TRUE" }, endpoint: "http://collector:4318");
        Assert.False(disabled.Enabled);
        Assert.Equal("OTEL_SDK_DISABLED=true", disabled.OffBecause);
        Assert.True(Resolve(new() { ["OTEL_SDK_DISABLED"] = "false" }, endpoint: "http://collector:4318").Enabled);

        var noLogs = Resolve(new() { ["OTEL_LOGS_EXPORTER"] = "none", ["OTEL_METRICS_EXPORTER"] = "otlp, console" }, endpoint: "http://c:4318");
        Assert.True(noLogs.IsOn(OtlpSignal.Metrics));
        Assert.False(noLogs.IsOn(OtlpSignal.Logs));
        Assert.True(noLogs.IsOn(OtlpSignal.Profiles));
        Assert.True(noLogs.IsOn(OtlpSignal.Traces));
        Assert.Throws<InvalidOperationException>(() => noLogs.For(OtlpSignal.Logs));

        var tracesOnly = Resolve(new() { ["OTEL_LOGS_EXPORTER"] = "none", ["OTEL_METRICS_EXPORTER"] = "none", ["OTEL_PROFILES_EXPORTER"] = "none" },
            endpoint: "http://c:4318");
        Assert.True(tracesOnly.Enabled);
        Assert.True(tracesOnly.IsOn(OtlpSignal.Traces));

        var none = Resolve(new()
        {
            ["OTEL_LOGS_EXPORTER"] = "none", ["OTEL_METRICS_EXPORTER"] = "none", ["OTEL_PROFILES_EXPORTER"] = "none",
            ["OTEL_TRACES_EXPORTER"] = "none",
        }, endpoint: "http://c:4318");
        Assert.False(none.Enabled);
        Assert.Equal("OTEL_METRICS_EXPORTER=none, OTEL_LOGS_EXPORTER=none, OTEL_PROFILES_EXPORTER=none, OTEL_TRACES_EXPORTER=none",
            none.OffBecause);
    }

    [Fact]
    public void TLS_settings_that_cannot_work_are_errors_naming_the_variable()
    {
        using var temp = new TelemetryAgent.Testing.TemporaryFolder();
        var notPemFile = temp.File("not.pem");
        File.WriteAllText(notPemFile, "not a certificate\n");
        var halfMutual = Assert.Throws<FormatException>(() =>
            Resolve(new() { ["OTEL_EXPORTER_OTLP_LOGS_CLIENT_CERTIFICATE"] = notPemFile }, endpoint: "https://c:4318"));
        Assert.Equal("OTEL_EXPORTER_OTLP_LOGS_CLIENT_CERTIFICATE is set but no CLIENT_KEY goes with it: mutual TLS needs both.", halfMutual.Message);
        var missing = Assert.Throws<FormatException>(() =>
            Resolve(new() { ["OTEL_EXPORTER_OTLP_CERTIFICATE"] = "/nonexistent/ca.pem" }, endpoint: "https://c:4318"));
        Assert.StartsWith("OTEL_EXPORTER_OTLP_CERTIFICATE: cannot read the certificate /nonexistent/ca.pem", missing.Message);
        var notPem = Assert.Throws<FormatException>(() =>
            Resolve(new() { ["OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE"] = notPemFile }, endpoint: "https://c:4318"));
        Assert.Equal($"OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE: {notPemFile} holds no PEM certificate.", notPem.Message);
        Assert.Null(Resolve([], endpoint: "https://c:4318").For(OtlpSignal.Metrics).Tls);
    }

    [Theory]
    [InlineData(null, MetricsTemporality.Cumulative)]
    [InlineData("cumulative", MetricsTemporality.Cumulative)]
    [InlineData("Delta", MetricsTemporality.Delta)]
    [InlineData("lowmemory", MetricsTemporality.LowMemory)]
    public void The_temporality_preference_is_read(string? value, MetricsTemporality expected)
        => Assert.Equal(expected, Resolve(new() { ["OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"] = value }, endpoint: "http://c:4318").Temporality);

    [Fact]
    public void A_wrong_temporality_or_protocol_option_is_an_error_naming_it()
    {
        var error = Assert.Throws<FormatException>(() =>
            Resolve(new() { ["OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"] = "sometimes" }, endpoint: "http://c:4318"));
        Assert.Equal("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE: 'sometimes' is not cumulative, delta or lowmemory.", error.Message);
        // Even with export off.
        Assert.StartsWith("--otlp-protocol: 'bogus'", Assert.Throws<FormatException>(() => Resolve([], protocol: "bogus")).Message);
    }

    [Fact]
    public void Signal_variables_override_the_general_ones_and_a_signal_endpoint_is_used_as_given()
    {
        var settings = Resolve(new()
        {
            ["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://collector:4318/base/",
            ["OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT"] = "http://pyroscope:4040/ingest",
            ["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/protobuf",
            ["OTEL_EXPORTER_OTLP_LOGS_PROTOCOL"] = "grpc",
            ["OTEL_EXPORTER_OTLP_HEADERS"] = "api-key=s%3Dcret, tenant=a",
            ["OTEL_EXPORTER_OTLP_METRICS_HEADERS"] = "x=1",
            ["OTEL_EXPORTER_OTLP_TIMEOUT"] = "2500",
            ["OTEL_EXPORTER_OTLP_COMPRESSION"] = "gzip",
            ["OTEL_EXPORTER_OTLP_PROFILES_COMPRESSION"] = "none",
        });
        Assert.True(settings.Enabled);
        var metrics = settings.For(OtlpSignal.Metrics);
        Assert.Equal("http://collector:4318/base/v1/metrics", metrics.Url.AbsoluteUri);
        Assert.Equal([new("x", "1")], metrics.Headers);
        Assert.True(metrics.Gzip);
        var logs = settings.For(OtlpSignal.Logs);
        Assert.Equal((OtlpProtocol.Grpc, "http://collector:4318/base/"), (logs.Protocol, logs.Url.AbsoluteUri));
        Assert.Equal([new("api-key", "s=cret"), new("tenant", "a")], logs.Headers);
        Assert.Equal(TimeSpan.FromMilliseconds(2500), logs.Timeout);
        var profiles = settings.For(OtlpSignal.Profiles);
        Assert.Equal("http://pyroscope:4040/ingest", profiles.Url.AbsoluteUri);
        Assert.False(profiles.Gzip);
    }

    [Fact]
    public void The_command_line_wins_over_the_variables()
    {
        var settings = Resolve(new()
        {
            ["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://collector:4318",
            ["OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"] = "http://elsewhere:1/logs",
            ["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/protobuf",
        }, endpoint: "http://127.0.0.1:9999", protocol: "grpc");
        Assert.All(Enum.GetValues<OtlpSignal>(), signal =>
        {
            Assert.Equal("http://127.0.0.1:9999/", settings.For(signal).Url.AbsoluteUri);
            Assert.Equal(OtlpProtocol.Grpc, settings.For(signal).Protocol);
        });
    }

    [Theory]
    [InlineData("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", "http/json is not supported")]
    [InlineData("OTEL_EXPORTER_OTLP_PROTOCOL", "thrift", "'thrift' is not an OTLP protocol")]
    [InlineData("OTEL_EXPORTER_OTLP_HEADERS", "novalue", "'novalue' is not key=value")]
    [InlineData("OTEL_EXPORTER_OTLP_TIMEOUT", "10s", "'10s' is not a positive number of milliseconds")]
    [InlineData("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd", "'zstd' is not a compression")]
    [InlineData("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "collector:4318", "is not an http:// or https:// URL")]
    public void A_bad_value_is_an_error_that_names_its_variable(string name, string value, string message)
    {
        var environment = new Dictionary<string, string?> { ["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://collector:4318", [name] = value };
        var error = Assert.Throws<FormatException>(() => Resolve(environment));
        Assert.Contains(name, error.Message);
        Assert.Contains(message, error.Message);
    }

    [Fact]
    public void Retry_is_in_memory_unless_disk_or_none_is_asked_for()
    {
        var endpoint = new Dictionary<string, string?> { ["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://collector:4318" };
        Assert.Equal(OtlpRetry.Default, Resolve(endpoint).Retry);
        Assert.Equal(new Dictionary<string, string?> { [OtlpRetry.ModeVariable] = "in_memory" }, Resolve(endpoint).Retry.SdkConfiguration());

        var disk = Resolve(new(endpoint) { [OtlpRetry.DirectoryVariable] = "/var/lib/telemetry-agent/retry" }).Retry;
        Assert.Equal(new OtlpRetry(OtlpRetryMode.Disk, "/var/lib/telemetry-agent/retry"), disk);
        Assert.Equal("disk", disk.SdkConfiguration()[OtlpRetry.ModeVariable]);
        Assert.Equal("/var/lib/telemetry-agent/retry", disk.SdkConfiguration()[OtlpRetry.DirectoryVariable]);

        var none = OtlpSettings.Resolve(new Dictionary<string, string?>(endpoint) { [OtlpRetry.ModeVariable] = "in_memory" }, retryOption: "none").Retry;
        Assert.Equal(OtlpRetryMode.None, none.Mode);
        Assert.Empty(none.SdkConfiguration());

        var option = OtlpSettings.Resolve(endpoint, retryDirectoryOption: "/tmp/agent-retry").Retry;
        Assert.Equal(new OtlpRetry(OtlpRetryMode.Disk, "/tmp/agent-retry"), option);
        // A blank variable is unset, like every OTEL_* variable; a blank option is a mistake.
        Assert.Equal(OtlpRetry.Default, Resolve(new(endpoint) { [OtlpRetry.DirectoryVariable] = " " }).Retry);
        Assert.Contains("the directory is empty",
            Assert.Throws<FormatException>(() => OtlpSettings.Resolve(endpoint, retryDirectoryOption: " ")).Message);
    }

    [Theory]
    [InlineData("disk", null, "disk retry needs a directory")]
    [InlineData("forever", null, "'forever' is not a retry mode")]
    public void A_bad_retry_setting_is_an_error_that_names_its_variable(string? mode, string? directory, string message)
    {
        var environment = new Dictionary<string, string?>
        {
            ["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://collector:4318", [OtlpRetry.ModeVariable] = mode, [OtlpRetry.DirectoryVariable] = directory,
        };
        var error = Assert.Throws<FormatException>(() => Resolve(environment));
        Assert.Contains("OTEL_DOTNET_EXPERIMENTAL_OTLP_", error.Message);
        Assert.Contains(message, error.Message);
    }
}

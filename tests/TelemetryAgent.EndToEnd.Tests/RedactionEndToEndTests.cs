using TelemetryAgent.EndToEnd.Tests.Support;
using TelemetryAgent.Testing;

namespace TelemetryAgent.EndToEnd.Tests;

/// <summary>A real program whose exception messages and notes carry secrets: no output file holds them.</summary>
public sealed class RedactionEndToEndTests : IDisposable
{
    private readonly TemporaryFolder _temp = new();

    public void Dispose() => _temp.Dispose();

    private const string Password = "s3cr3t-Pa55w0rd";
    private const string GitHubToken = "ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8";
    private const string Email = "ops-oncall@example.com";
    private const string CustomerId = "cust-778899";

    [Fact]
    public async Task Secrets_in_messages_and_notes_reach_no_output()
    {
        var script = _temp.File("leaky.py");
        File.WriteAllText(script, $$"""
            def connect():
                raise ConnectionError("cannot reach postgres://app:{{Password}}@db.internal/orders with token {{GitHubToken}}")

            for attempt in range(3):
                try:
                    connect()
                except ConnectionError as error:
                    error.add_note("retry with password={{Password}}; page {{Email}} about {{CustomerId}}")
            print("handled")
            raise RuntimeError("fatal: api_key={{Password}}")
            """);
        var output = _temp.File("out");
        var result = await Processes.RunAgentAsync(["run", "-o", output, "--redact", @"cust-\d+", script]);
        Assert.True(result.ExitCode == 1 && result.Stdout == "handled\n", result.ToString());
        Assert.Contains(Password, result.Stderr); // the program's own traceback is the program's business

        var files = Directory.GetFiles(output);
        Assert.Contains(files, file => file.EndsWith("exceptions.json"));
        foreach (var file in files)
        {
            var text = File.ReadAllText(file);
            foreach (var secret in new[] { Password, GitHubToken, Email, CustomerId })
                Assert.False(text.Contains(secret), $"{Path.GetFileName(file)} contains {secret}");
        }
        var exceptions = File.ReadAllText(Path.Combine(output, "exceptions.json"));
        Assert.Contains("cannot reach postgres://app:[REDACTED:url-password]@db.internal/orders with token [REDACTED:github-token]", exceptions);
        Assert.Contains("retry with password=[REDACTED:secret]; page [REDACTED:email] about [REDACTED]", exceptions);
        Assert.Contains("fatal: api_key=[REDACTED:secret]", exceptions);
        Assert.Contains("fatal: api_key=[REDACTED:secret]", File.ReadAllText(Path.Combine(output, "summary.json")));
    }
}

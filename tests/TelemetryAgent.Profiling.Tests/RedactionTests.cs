using TelemetryAgent.Sessions;
using TelemetryAgent.Testing;
using static TelemetryAgent.Testing.ExceptionRecords;

namespace TelemetryAgent.Profiling.Tests;

/// <summary>Secrets in exception messages and notes are replaced before the agent keeps anything.</summary>
public sealed class RedactionTests
{
    [Theory]
    [InlineData("auth failed: Authorization: Bearer abcDEF123456.xyz-_~+/789=", "auth failed: Authorization: Bearer [REDACTED:bearer-token]")]
    [InlineData("key AKIAIOSFODNN7EXAMPLE rejected", "key [REDACTED:aws-access-key-id] rejected")]
    [InlineData("bad token ghp_0123456789abcdefghijABCDEFGHIJ012345", "bad token [REDACTED:github-token]")]
    [InlineData("pat github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz", "pat [REDACTED:github-token]")]
    [InlineData("slack xoxb-1234567890-abcdefghij", "slack [REDACTED:slack-token]")]
    [InlineData("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U end",
        "jwt [REDACTED:jwt] end")]
    [InlineData("cannot connect to postgres://app:s3cr3t-pw@db.internal:5432/orders",
        "cannot connect to postgres://app:[REDACTED:url-password]@db.internal:5432/orders")]
    [InlineData("config: password=hunter2, api_key: 'k-123', user=bob", "config: password=[REDACTED:secret], api_key: '[REDACTED:secret]', user=bob")]
    [InlineData("{\"client_secret\": \"abc123\"}", "{\"client_secret\": \"[REDACTED:secret]\"}")]
    [InlineData("no user alice.smith+tag@example.co.uk here", "no user [REDACTED:email] here")]
    [InlineData("-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----", "[REDACTED:private-key]")]
    [InlineData("division by zero", "division by zero")]
    [InlineData("KeyError: 'user_id' at line 3 of orders.py", "KeyError: 'user_id' at line 3 of orders.py")]
    public void Built_in_patterns_replace_the_secret_and_keep_what_it_was(string text, string expected)
        => Assert.Equal(expected, Redactor.Default.Redact(text));

    [Fact]
    public void User_patterns_run_after_the_built_in_ones_and_can_stand_alone()
    {
        var both = Redactor.Create([@"acct-\d{6}"]);
        Assert.Equal("account [REDACTED] of [REDACTED:email]", both.Redact("account acct-123456 of a@b.io"));
        var userOnly = Redactor.Create([@"acct-\d{6}"], includeBuiltIn: false);
        Assert.Equal("account [REDACTED] of a@b.io", userOnly.Redact("account acct-123456 of a@b.io"));
        Assert.True(Redactor.None.IsEmpty);
        Assert.Equal("a@b.io", Redactor.None.Redact("a@b.io"));
    }

    [Fact]
    public void A_pattern_that_does_not_compile_is_named_in_the_error()
    {
        var error = Assert.Throws<ArgumentException>(() => Redactor.Create(["ok", "(unclosed"]));
        Assert.Contains("(unclosed", error.Message);
    }

    [Fact]
    public void A_pattern_that_backtracks_too_long_replaces_the_whole_text()
    {
        var redactor = Redactor.Create([@"^(a+)+$"], includeBuiltIn: false);
        Assert.Equal(Redactor.TimedOutText, redactor.Redact(new string('a', 40) + "!"));
    }

    [Fact]
    public void Pattern_files_skip_blank_lines_and_comments()
    {
        var file = Path.GetTempFileName();
        try
        {
            File.WriteAllText(file, "# internal ids\ncust-\\d+\n\n   \n  # indented comment\norder-[0-9a-f]{8}\n");
            Assert.Equal([@"cust-\d+", "order-[0-9a-f]{8}"], Redactor.ReadPatternFile(file));
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Fact]
    public void Messages_and_notes_are_redacted_where_records_enter_the_session()
    {
        var script = new SessionScript(redactor: Redactor.Create([@"tenant-\d+"]))
            .Thread(1, "MainThread", isMain: true)
            .Code(1, "main")
            .Raise(Record("builtins.PermissionError", "token ghp_0123456789abcdefghijABCDEFGHIJ012345 denied for tenant-42", [(1, 3)],
                notes: ["retry with password=hunter2", "contact ops@example.com"]));
        var group = Assert.Single(script.Profile.Exceptions.Groups);
        Assert.Equal(["token [REDACTED:github-token] denied for [REDACTED]"], group.SampleMessages);
        Assert.Equal(["retry with password=[REDACTED:secret]", "contact [REDACTED:email]"], group.Notes);
        var latest = group.Latest!.Detail!;
        Assert.Equal("token [REDACTED:github-token] denied for [REDACTED]", latest.Message);
        Assert.Equal(group.Notes, latest.Notes);
    }
}

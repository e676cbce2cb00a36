using TelemetryAgent.Profiling.Formats;
using TelemetryAgent.Testing;

namespace TelemetryAgent.Profiling.Tests;

/// <summary>How files, services, processes, threads and durations are shown to people.</summary>
public sealed class NamingTests
{
    [Theory]
    [InlineData("/srv/app/handlers/users.py", "/srv/app", "handlers/users.py")]
    [InlineData("/srv/app/handlers/users.py", "/srv/app/", "handlers/users.py")]
    [InlineData("/srv/application/x.py", "/srv/app", "/srv/application/x.py")]
    [InlineData("/srv/app", "/srv/app", "/srv/app")]
    [InlineData("/usr/lib/python3.12/json/decoder.py", "/srv/app", "json/decoder.py")]
    [InlineData("/usr/local/lib/python3.13t/threading.py", "/srv/app", "threading.py")]
    [InlineData("/usr/lib64/python3.12/socket.py", "/srv/app", "socket.py")]
    [InlineData("/opt/venv/lib/python3.12/site-packages/requests/api.py", "/srv/app", "requests/api.py")]
    [InlineData("/root/.pyenv/versions/3.12.1/lib/python3.12/asyncio/events.py", "/", "asyncio/events.py")]
    [InlineData("/srv/app/app.py", "/", "/srv/app/app.py")]
    [InlineData("/root/.pyenv/versions/3.12.1/lib/python3.12/asyncio/events.py", "", "asyncio/events.py")]
    [InlineData("/home/me/lib/python3.12/site-packages/lib/python3.12/x.py", "/srv", "x.py")]
    [InlineData("<frozen importlib._bootstrap>", "/srv/app", "<frozen importlib._bootstrap>")]
    [InlineData("<string>", "/srv/app", "<string>")]
    [InlineData("relative/script.py", "/srv/app", "relative/script.py")]
    [InlineData("", "/srv/app", "")]
    public void Display_file_is_relative_to_the_working_directory_or_the_python_library(
        string fileName, string workingDirectory, string expected)
        => Assert.Equal(expected, FunctionInfo.ToDisplayFile(fileName, workingDirectory));

    [Fact]
    public void Label_is_qualified_name_and_display_location()
    {
        var function = FunctionInfo.Create("Parser.parse", "/srv/app/parser.py", 12, "parser", 0, "/srv/app");
        Assert.Equal("Parser.parse (parser.py:12)", function.Label);
    }

    [Theory]
    [InlineData("checkout", new[] { "/srv/app/app.py" }, "checkout")]
    [InlineData("  ", new[] { "/srv/app/app.py", "--port", "1" }, "app")]
    [InlineData("", new[] { "/usr/lib/python3.12/http/server.py" }, "server")]
    [InlineData("", new[] { "/srv/app/mypkg/__main__.py" }, "mypkg")]
    [InlineData("", new[] { "manage" }, "manage")]
    [InlineData("", new[] { "-c" }, "python3.12")]
    [InlineData("", new[] { "" }, "python3.12")]
    [InlineData("", new string[0], "python3.12")]
    public void Service_name_is_configured_else_derived_from_argv(string configured, string[] argv, string expected)
        => Assert.Equal(expected, ProcessIdentity.ServiceNameOf(configured, argv, "/usr/bin/python3.12"));

    [Fact]
    public void Service_name_falls_back_to_python_without_an_executable()
        => Assert.Equal("python", ProcessIdentity.ServiceNameOf("", ["-c"], ""));

    [Fact]
    public void Process_and_thread_labels()
    {
        var script = new SessionScript(pid: 77, serviceName: "billing").Thread(1, "MainThread").Thread(2, "");
        var profile = script.Complete();
        Assert.Equal("billing (pid 77)", ProfileLabels.Process(profile));
        Assert.Equal("thread MainThread", ProfileLabels.Thread(profile.Threads[0]));
        Assert.Equal("thread #2", ProfileLabels.Thread(profile.Threads[1]));
    }

    [Theory]
    [InlineData("a;b (x.py:1)", "a,b (x.py:1)")]
    [InlineData("a\nb", "a b")]
    [InlineData("plain (x.py:1)", "plain (x.py:1)")]
    public void Folded_frame_names_cannot_break_the_format(string label, string expected)
        => Assert.Equal(expected, ProfileLabels.ForFoldedStack(label));

    [Theory]
    [InlineData(0, "0 ns")]
    [InlineData(812, "812 ns")]
    [InlineData(999, "999 ns")]
    [InlineData(1_000, "1.00 us")]
    [InlineData(12_345, "12.3 us")]
    [InlineData(999_499, "999 us")]
    [InlineData(999_500, "1.00 ms")]
    [InlineData(1_500_000, "1.50 ms")]
    [InlineData(2_345_000_000, "2.35 s")]
    [InlineData(3_600_000_000_000, "3600 s")]
    [InlineData(-1_500, "-1.50 us")]
    public void Durations_are_shown_with_three_significant_digits(long nanoseconds, string expected)
        => Assert.Equal(expected, TimeFormat.Nanoseconds(nanoseconds));

    [Fact]
    public void Clock_mapping_turns_monotonic_time_into_wall_time()
    {
        var clock = new ClockMapping(MonotonicNs: 5_000, UnixNs: 1_700_000_000_000_000_000);
        Assert.Equal(1_700_000_000_000_001_000, clock.ToUnixNs(6_000));
        Assert.Equal(new DateTimeOffset(2023, 11, 14, 22, 13, 20, TimeSpan.Zero).AddTicks(10), clock.ToWallTime(6_000));
    }
}

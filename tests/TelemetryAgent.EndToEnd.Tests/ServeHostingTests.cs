using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using TelemetryAgent.EndToEnd.Tests.Support;
using TelemetryAgent.Testing;

namespace TelemetryAgent.EndToEnd.Tests;

/// <summary>`serve` as a Generic Host: systemd's readiness protocol, its signals, and its log formats.</summary>
public sealed class ServeHostingTests : IDisposable
{
    private readonly TemporaryFolder _temp = new();

    public void Dispose() => _temp.Dispose();

    private string SocketPath => _temp.File("agent.sock");
    private string OutputRoot => _temp.File("out");

    private Process StartServe(IReadOnlyDictionary<string, string?>? environment = null, params string[] options) =>
        Processes.Start("dotnet", [Processes.AgentDll, "serve", "--socket", SocketPath, "-o", OutputRoot, .. options], environment: environment);

    [Fact]
    public async Task Ready_is_notified_once_the_sockets_accept_and_stopping_when_SIGTERM_arrives()
    {
        using var notify = NotifySocket(out var notifyPath);
        using var agent = StartServe(new Dictionary<string, string?> { ["NOTIFY_SOCKET"] = notifyPath });

        Assert.Equal("READY=1", await ReceiveAsync(notify, agent));
        // Ready means both sockets accept: a connection made now is accepted, with no retry.
        using (var ingest = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
            ingest.Connect(new UnixDomainSocketEndPoint(SocketPath));
        using (var query = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
            query.Connect(new UnixDomainSocketEndPoint(_temp.File("agent.query.sock")));

        Assert.True(Transport.Native.SendSignal(agent.Id, 15));
        Assert.Equal("STOPPING=1", await ReceiveAsync(notify, agent));
        var finished = await Processes.WaitAsync(agent, TimeSpan.FromSeconds(30));
        Assert.True(finished.ExitCode == 0, finished.ToString());
        Assert.Equal(0, notify.Available);
        Assert.Contains("telemetry-agent: statistics:", finished.Stderr);
    }

    [Fact]
    public async Task An_agent_that_cannot_listen_never_says_ready()
    {
        using var notify = NotifySocket(out var notifyPath);
        // A socket path under a regular file cannot be bound.
        File.WriteAllText(_temp.File("a-file"), "");
        using var agent = Processes.Start("dotnet",
            [Processes.AgentDll, "serve", "--socket", _temp.File("a-file/agent.sock"), "-o", OutputRoot],
            environment: new Dictionary<string, string?> { ["NOTIFY_SOCKET"] = notifyPath });

        var finished = await Processes.WaitAsync(agent, TimeSpan.FromSeconds(30));
        Assert.True(finished.ExitCode == 2, finished.ToString());
        Assert.Contains("telemetry-agent: cannot listen on ", finished.Stderr);
        // Whatever it sent is queued by now: nothing.
        Assert.Equal(0, notify.Available);
    }

    /// <summary>SIGTERM early in the start (while the live views start), just after it, and later: always an orderly stop.</summary>
    [Theory]
    [InlineData(0)]
    [InlineData(500)]
    [InlineData(1000)]
    [InlineData(2000)]
    public async Task Sigterm_at_any_time_after_the_socket_appears_stops_with_exit_0(int afterMilliseconds)
    {
        using var agent = StartServe();
        await ServeAgent.WaitUntilAsync(() => File.Exists(SocketPath) || agent.HasExited, "the socket");
        await Task.Delay(afterMilliseconds); // the moment of the signal is what this test varies: no state to wait on
        Assert.True(Transport.Native.SendSignal(agent.Id, 15));
        var finished = await Processes.WaitAsync(agent, TimeSpan.FromSeconds(30));
        Assert.True(finished.ExitCode == 0, finished.ToString());
        Assert.Contains("telemetry-agent: statistics:", finished.Stderr);
        Assert.False(File.Exists(SocketPath), "the socket is removed when the agent stops");
    }

    [Fact]
    public async Task Json_log_is_one_object_per_line_with_level_and_message()
    {
        var stderr = await ServeWithABadPeerAsync("json", runAProgram: true);
        var entries = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(line =>
        {
            using var entry = JsonDocument.Parse(line);
            return (Level: entry.RootElement.GetProperty("LogLevel").GetString(), Message: entry.RootElement.GetProperty("Message").GetString()!);
        }).ToList();
        Assert.Contains(("Information", $"listening on {SocketPath}; outputs under {OutputRoot}. Stop with Ctrl-C or SIGTERM."), entries);
        var badPeer = Assert.Single(entries, entry => entry.Message.StartsWith("a connection without HELLO ended:", StringComparison.Ordinal));
        Assert.Equal("Warning", badPeer.Level);
        Assert.Contains("BadMagic", badPeer.Message);
        Assert.Equal("Information", Assert.Single(entries, entry => entry.Message.StartsWith("statistics: ", StringComparison.Ordinal)).Level);
        // What the output folders report on their TextWriter arrives as entries too, without the plain format's prefix.
        var folder = Assert.Single(ServeAgent.CompletedFolders(OutputRoot));
        Assert.Contains(("Information", $"wrote {folder}/"), entries);
    }

    [Fact]
    public async Task Systemd_log_lines_start_with_their_priority()
    {
        var lines = (await ServeWithABadPeerAsync("systemd")).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.All(lines, line => Assert.Matches(@"^<[0-7]>", line));
        Assert.Contains(lines, line => line.StartsWith("<6>", StringComparison.Ordinal) && line.Contains($"listening on {SocketPath};"));
        Assert.Contains(lines, line => line.StartsWith("<4>", StringComparison.Ordinal) && line.Contains("a connection without HELLO ended:"));
    }

    [Fact]
    public async Task Plain_log_is_the_lines_people_read()
    {
        var lines = (await ServeWithABadPeerAsync("plain")).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.All(lines, line => Assert.StartsWith("telemetry-agent: ", line));
        Assert.Contains($"telemetry-agent: listening on {SocketPath}; outputs under {OutputRoot}. Stop with Ctrl-C or SIGTERM.", lines);
        Assert.Contains(lines, line => line.StartsWith("telemetry-agent: a connection without HELLO ended:", StringComparison.Ordinal));
    }

    /// <summary>
    /// serve in a log format, a peer that sends no HELLO (a warning), a real shimmed program when asked (its folder
    /// written), then SIGTERM: what the agent wrote on stderr.
    /// </summary>
    private async Task<string> ServeWithABadPeerAsync(string format, bool runAProgram = false)
    {
        using var agent = StartServe(options: ["--log-format", format]);
        await ServeAgent.WaitUntilAsync(() => File.Exists(SocketPath) || agent.HasExited, "the socket");
        using (var garbage = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
        {
            garbage.Connect(new UnixDomainSocketEndPoint(SocketPath));
            garbage.Send("GET / HTTP/1.1\r\n\r\n"u8);
            // The agent closes a connection it gave up on: the end of the stream says it is done with this one.
            garbage.ReceiveTimeout = 30_000;
            Assert.Equal(0, garbage.Receive(new byte[16]));
        }
        if (runAProgram)
        {
            var script = _temp.File("work.py");
            File.WriteAllText(script, "print(sum(range(10)))\n");
            var run = await Processes.RunPythonAsync(["-m", "telemetry_shim", "--socket", SocketPath, script],
                environment: new Dictionary<string, string?> { ["PYTHONPATH"] = Repo.Path("python-shim") });
            Assert.True(run.ExitCode == 0 && run.Stdout == "45\n", run.ToString());
            await ServeAgent.WaitUntilAsync(() => ServeAgent.CompletedFolders(OutputRoot).Length == 1, "the program's output folder");
        }
        Assert.True(Transport.Native.SendSignal(agent.Id, 15));
        var finished = await Processes.WaitAsync(agent, TimeSpan.FromSeconds(30));
        Assert.True(finished.ExitCode == 0, finished.ToString());
        Assert.Equal("", finished.Stdout);
        return finished.Stderr;
    }

    /// <summary>A Unix datagram socket of this test, where systemd would listen for sd_notify messages.</summary>
    private Socket NotifySocket(out string path)
    {
        path = _temp.File("notify.sock");
        var socket = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
        socket.Bind(new UnixDomainSocketEndPoint(path));
        return socket;
    }

    private static async Task<string> ReceiveAsync(Socket notify, Process agent)
    {
        var buffer = new byte[4096];
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        try
        {
            var received = await notify.ReceiveAsync(buffer, SocketFlags.None, timeout.Token);
            return Encoding.UTF8.GetString(buffer, 0, received);
        }
        catch (OperationCanceledException)
        {
            throw new TimeoutException($"no notification in 30 s; the agent {(agent.HasExited ? $"exited {agent.ExitCode}" : "runs")}");
        }
    }
}

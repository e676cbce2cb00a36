using System.Net.Sockets;
using TelemetryAgent.EndToEnd.Tests.Support;
using TelemetryAgent.Testing;

namespace TelemetryAgent.EndToEnd.Tests;

/// <summary>
/// Who may connect to `serve`: the socket's mode, SO_PEERCRED's uid against the allowed ones, HELLO's pid against
/// the peer's, and the connection limit. The other-user cases run a real second user (created when missing).
/// </summary>
public sealed class AccessTests : IDisposable, IClassFixture<SecondUserFixture>
{
    private readonly TemporaryFolder _temp = new();
    private readonly SecondUserFixture _peer;

    public AccessTests(SecondUserFixture peer)
    {
        _peer = peer;
        // Other users must reach the socket's folder; the socket file's own mode decides the rest.
        File.SetUnixFileMode(_temp.Path, (UnixFileMode)0b111_101_101);
        File.Copy(Repo.Path("tests", "TelemetryAgent.EndToEnd.Tests", "peer_client.py"), Client);
    }

    public void Dispose() => _temp.Dispose();

    private string Client => _temp.File("peer_client.py");
    private string SocketPath => _temp.File("agent.sock");
    private string OutputRoot => _temp.File("out");

    private Task<Finished> ConnectAsync(SecondUser? user = null, long? claimedPid = null)
    {
        string[] client = [Client, SocketPath, .. claimedPid is { } pid ? [pid.ToString()] : Array.Empty<string>()];
        return user is null
            ? Processes.RunAsync(Processes.Python.Path, client, timeout: TimeSpan.FromSeconds(30))
            : Processes.RunAsync("setpriv", [$"--reuid={user.Uid}", $"--regid={user.Gid}", "--clear-groups", SecondUser.Python, .. client],
                timeout: TimeSpan.FromSeconds(30));
    }

    [RootFact]
    public async Task The_default_owner_only_socket_keeps_other_users_out()
    {
        var user = _peer.Ensure();
        using var agent = await ServeAgent.StartAsync(SocketPath, OutputRoot);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(SocketPath));
        var attempt = await ConnectAsync(user);
        Assert.Equal("connect failed: Permission denied\n", attempt.Stdout);
        var stopped = await agent.StopAsync();
        Assert.Contains("statistics: connections accepted 0,", stopped.Stderr);
        Assert.Empty(agent.OutputFolders());
    }

    [RootFact]
    public async Task The_socket_group_may_open_the_socket_but_only_allowed_uids_are_served()
    {
        var user = _peer.Ensure();
        using (var agent = await ServeAgent.StartAsync(SocketPath, OutputRoot, "--socket-group", user.Name))
        {
            Assert.Equal((UnixFileMode)0b110_110_000, await ServeAgent.SocketModeOnceAsync(SocketPath, (UnixFileMode)0b110_110_000));
            Assert.Equal("connected\n", (await ConnectAsync(user)).Stdout);
            var stopped = await agent.StopAsync();
            Assert.True(stopped.ExitCode == 0, stopped.ToString());
            Assert.Contains($"connection refused (UidNotAllowed, 1 so far): uid {user.Uid} is not allowed", stopped.Stderr);
            Assert.Contains("rejected 1 (UidNotAllowed 1)", stopped.Stderr);
            Assert.Empty(agent.OutputFolders());
        }

        using (var agent = await ServeAgent.StartAsync(SocketPath, OutputRoot, "--socket-group", user.Name, "--allow-uid", user.Name))
        {
            Assert.Equal("connected\n", (await ConnectAsync(user)).Stdout);
            await ServeAgent.WaitUntilAsync(() => agent.OutputFolders().Length == 1, "the peer's outputs");
            var stopped = await agent.StopAsync();
            Assert.Contains("rejected 0;", stopped.Stderr);
            var process = ServeAgent.ProcessIn(agent.OutputFolders()[0]);
            var peer = process.GetProperty("connection").GetProperty("peer");
            Assert.Equal(user.Uid, peer.GetProperty("uid").GetUInt32());
            Assert.Equal(user.Gid, peer.GetProperty("gid").GetUInt32());
            Assert.Equal(process.GetProperty("pid").GetInt64(), peer.GetProperty("pid").GetInt64());
            Assert.True(peer.GetProperty("pid_matches_hello").GetBoolean());
            Assert.Equal("Goodbye", process.GetProperty("connection").GetProperty("end_reason").GetString());
        }
    }

    [Fact]
    public async Task A_hello_pid_that_is_not_the_peers_is_flagged_in_the_summary_and_the_log()
    {
        using var agent = await ServeAgent.StartAsync(SocketPath, OutputRoot);
        Assert.Equal("connected\n", (await ConnectAsync(claimedPid: 1)).Stdout);
        await ServeAgent.WaitUntilAsync(() => agent.OutputFolders().Length == 1, "the peer's outputs");
        var stopped = await agent.StopAsync();
        var process = ServeAgent.ProcessIn(agent.OutputFolders()[0]);
        var peer = process.GetProperty("connection").GetProperty("peer");
        Assert.Equal(1, process.GetProperty("pid").GetInt64());
        Assert.NotEqual(1, peer.GetProperty("pid").GetInt64());
        Assert.False(peer.GetProperty("pid_matches_hello").GetBoolean());
        Assert.Contains($"flagged: pid 1 in HELLO is not the peer's (pid {peer.GetProperty("pid").GetInt64()}, uid 0, gid 0)", stopped.Stderr);
        Assert.Contains("HELLO pid mismatches 1", stopped.Stderr);
    }

    [Fact]
    public async Task A_connection_beyond_the_limit_is_closed_at_once_and_the_others_go_on()
    {
        using var agent = await ServeAgent.StartAsync(SocketPath, OutputRoot, "--max-connections", "1");
        using var first = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        first.Connect(new UnixDomainSocketEndPoint(SocketPath));
        // The agent reads a connection only once it counts it open; a send much larger than the socket's buffer
        // returns only when the agent has read most of it: then the first is being served.
        first.SendTimeout = 30_000;
        var served = new WireStream().Preamble().Message(Protocol.FrameType.Hello, new Protocol.Messages.Hello { ProtocolVersion = 1, Pid = 4242 });
        while (served.Length < 1 << 20) served.Stats(new Protocol.Messages.Stats { EventsRecorded = 1 });
        first.Send(served.ToArray());

        using var second = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        second.Connect(new UnixDomainSocketEndPoint(SocketPath));
        var buffer = new byte[1];
        using var wait = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        Assert.Equal(0, await second.ReceiveAsync(buffer, SocketFlags.None, wait.Token)); // closed by the agent

        // The first connection is unharmed: it finishes a valid stream.
        first.Send(new WireStream().Goodbye(new Protocol.Messages.Goodbye()).ToArray());
        first.Shutdown(SocketShutdown.Send);
        await ServeAgent.WaitUntilAsync(() => agent.OutputFolders().Length == 1, "the first connection's outputs");
        var stopped = await agent.StopAsync();
        Assert.Contains("connection refused (TooManyConnections, 1 so far)", stopped.Stderr);
        Assert.Contains("connections accepted 2, active 0, rejected 1 (TooManyConnections 1)", stopped.Stderr);
        Assert.Equal("Goodbye", ServeAgent.ProcessIn(agent.OutputFolders()[0]).GetProperty("connection").GetProperty("end_reason").GetString());
    }

}

/// <summary>A fact that needs root (to create and become a second user); skipped, saying so, otherwise.</summary>
public sealed class RootFactAttribute : FactAttribute
{
    public RootFactAttribute()
    {
        if (Transport.Native.CurrentUserId() != 0)
            Skip = "needs root: it creates a second user (useradd) and connects as that user (setpriv)";
    }
}

/// <summary>The second user of the access tests, with a group of its own of the same name.</summary>
public sealed record SecondUser(string Name, uint Uid, uint Gid)
{
    /// <summary>The system's Python: the pyenv ones live under /root, which other users cannot enter.</summary>
    public static readonly string Python = File.Exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
}

/// <summary>
/// Creates the second user on first use (useradd --system, with its own group), under a name of this test run's own,
/// and removes both (userdel, groupdel) when the class's tests are done: the machine is left as found.
/// </summary>
public sealed class SecondUserFixture : IDisposable
{
    private readonly string _name = $"telemetry-peer-{Environment.ProcessId}";
    private readonly Lock _gate = new();
    private SecondUser? _user;

    public SecondUser Ensure()
    {
        lock (_gate)
        {
            if (_user is not null) return _user;
            var created = Run("useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", _name);
            Assert.True(created.ExitCode == 0, $"useradd {_name} failed: {created}");
            _user = new SecondUser(_name, uint.Parse(Run("id", "-u", _name).Stdout.Trim()), uint.Parse(Run("id", "-g", _name).Stdout.Trim()));
            return _user;
        }
    }

    public void Dispose()
    {
        if (_user is null) return;
        var removed = Run("userdel", _name);
        // userdel removes the user's own group too where USERGROUPS_ENAB is on; elsewhere it is left: remove it.
        if (Run("getent", "group", _name).ExitCode == 0) Run("groupdel", _name);
        if (removed.ExitCode != 0) throw new InvalidOperationException($"userdel {_name} failed: {removed}");
    }

    private static Finished Run(string command, params string[] arguments) => Processes.RunAsync(command, arguments).GetAwaiter().GetResult();
}

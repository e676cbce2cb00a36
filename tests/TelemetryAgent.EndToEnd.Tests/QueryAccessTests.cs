using TelemetryAgent.EndToEnd.Tests.Support;
using TelemetryAgent.Testing;

namespace TelemetryAgent.EndToEnd.Tests;

/// <summary>
/// The query socket is under the ingest socket's rules: owner-only by default; with --socket-group the group may open
/// it, and SO_PEERCRED still refuses every uid that is not allowed. Runs as a real second user, created for the test
/// and removed after it, whatever happens.
/// </summary>
public sealed class QueryAccessTests : IDisposable
{
    private const string UserName = "telemetry-query";
    private readonly TemporaryFolder _temp = new();

    public QueryAccessTests()
    {
        // Other users must reach the socket's folder; the socket file's own mode decides the rest.
        File.SetUnixFileMode(_temp.Path, (UnixFileMode)0b111_101_101);
        File.Copy(Repo.Path("tests", "TelemetryAgent.EndToEnd.Tests", "query_peer.py"), Client);
    }

    public void Dispose() => _temp.Dispose();

    private string Client => _temp.File("query_peer.py");
    private int _agents;
    // Each agent gets sockets of its own: a killed agent's socket files stay behind.
    private string SocketPath => _temp.File($"agent{_agents}.sock");
    private string QuerySocketPath => _temp.File($"agent{_agents}.query.sock");

    private Task<ServeAgent> StartAgentAsync(params string[] options)
    {
        _agents++;
        return ServeAgent.StartAsync(SocketPath, _temp.File("out"), options);
    }

    private async Task<string> PeerAsync(uint? uid = null, uint gid = 0)
    {
        var run = uid is null
            ? await Processes.RunAsync(SecondUser.Python, [Client, QuerySocketPath], timeout: TimeSpan.FromSeconds(30))
            : await Processes.RunAsync("setpriv", [$"--reuid={uid}", $"--regid={gid}", "--clear-groups", SecondUser.Python, Client, QuerySocketPath],
                timeout: TimeSpan.FromSeconds(30));
        Assert.True(run.ExitCode == 0, run.ToString());
        return run.Stdout.Trim();
    }

    [RootFact]
    public async Task A_user_who_is_not_allowed_cannot_query_the_agent_even_through_the_socket_group()
    {
        var created = await Processes.RunAsync("useradd", ["--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", UserName]);
        Assert.True(created.ExitCode == 0, $"useradd {UserName}: {created}");
        try
        {
            var uid = uint.Parse((await Processes.RunAsync("id", ["-u", UserName])).Stdout.Trim());
            var gid = uint.Parse((await Processes.RunAsync("id", ["-g", UserName])).Stdout.Trim());

            using (var agent = await StartAgentAsync())
            {
                await ServeAgent.WaitUntilAsync(() => File.Exists(QuerySocketPath), "the query socket");
                Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(QuerySocketPath));
                Assert.Equal("answered", await PeerAsync());
                Assert.Equal("connect failed: Permission denied", await PeerAsync(uid, gid));
            }

            using (var agent = await StartAgentAsync("--socket-group", UserName))
            {
                await ServeAgent.WaitUntilAsync(() => File.Exists(QuerySocketPath), "the query socket");
                Assert.Equal((UnixFileMode)0b110_110_000, await ServeAgent.SocketModeOnceAsync(QuerySocketPath, (UnixFileMode)0b110_110_000));
                Assert.Equal("closed", await PeerAsync(uid, gid));
                var stopped = await agent.StopAsync();
                Assert.True(stopped.ExitCode == 0, stopped.ToString());
                Assert.Contains($"query connection refused (1 so far): uid {uid} is not allowed", stopped.Stderr);
            }

            using (var agent = await StartAgentAsync("--socket-group", UserName, "--allow-uid", uid.ToString()))
            {
                await ServeAgent.WaitUntilAsync(() => File.Exists(QuerySocketPath), "the query socket");
                Assert.Equal("answered", await PeerAsync(uid, gid));
            }
        }
        finally
        {
            await Processes.RunAsync("userdel", [UserName]);
            if ((await Processes.RunAsync("getent", ["group", UserName])).ExitCode == 0) await Processes.RunAsync("groupdel", [UserName]);
        }
    }
}

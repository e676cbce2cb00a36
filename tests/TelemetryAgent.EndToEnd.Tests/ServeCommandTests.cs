using System.Diagnostics;
using System.Net.Sockets;
using System.Text.Json;
using TelemetryAgent.EndToEnd.Tests.Support;
using TelemetryAgent.Testing;

namespace TelemetryAgent.EndToEnd.Tests;

/// <summary>`telemetry-agent serve` with real shimmed processes started by `python -m telemetry_shim`.</summary>
public sealed class ServeCommandTests : IDisposable
{
    private readonly TemporaryFolder _temp = new();

    public void Dispose() => _temp.Dispose();

    private string SocketPath => _temp.File("agent.sock");
    private string OutputRoot => _temp.File("out");

    private Process StartServe() =>
        Processes.Start("dotnet", [Processes.AgentDll, "serve", "--socket", SocketPath, "-o", OutputRoot]);

    private async Task<Finished> StopAsync(Process agent)
    {
        Assert.True(Transport.Native.SendSignal(agent.Id, 15));
        return await Processes.WaitAsync(agent, TimeSpan.FromSeconds(30));
    }

    private Task<Finished> RunShimmedAsync(string script) =>
        Processes.RunPythonAsync(["-m", "telemetry_shim", "--socket", SocketPath, script],
            environment: new Dictionary<string, string?> { ["PYTHONPATH"] = Repo.Path("python-shim"), ["TELEMETRY_SHIM_MODE"] = "full" });

    [Fact]
    public async Task WritesEachProcessWhenItEndsAndABadConnectionHurtsNoOther()
    {
        using var agent = StartServe();
        await ServeAgent.WaitUntilAsync(() => File.Exists(SocketPath), "the socket");
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(SocketPath));

        // A peer that sends garbage, and one that stops in the middle of a frame, while real programs run.
        using var garbage = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        garbage.Connect(new UnixDomainSocketEndPoint(SocketPath));
        garbage.Send("GET / HTTP/1.1\r\n\r\n"u8);
        using var truncated = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        truncated.Connect(new UnixDomainSocketEndPoint(SocketPath));
        truncated.Send([0x54, 0x41, 0x50, 0x59, 1, 0, 0, 0, 1, 0xFF, 0xFF]);

        var script = _temp.File("work.py");
        File.WriteAllText(script, "def leaf(i):\n    return i + 1\n\nprint(sum(leaf(i) for i in range(1000)))\n");
        var runs = await Task.WhenAll(RunShimmedAsync(script), RunShimmedAsync(script), RunShimmedAsync(script));
        Assert.All(runs, run => Assert.True(run.ExitCode == 0 && run.Stdout == "500500\n", run.ToString()));
        truncated.Shutdown(SocketShutdown.Both);

        await ServeAgent.WaitUntilAsync(() => ServeAgent.CompletedFolders(OutputRoot).Length == 3, "three output folders");
        // A folder that can be seen is already complete: files are written under a hidden name, then renamed.
        string[] everyFile = [.. TelemetryAgent.Output.FolderExporter.StandardFiles().Select(file => file.Name)];
        Assert.All(ServeAgent.CompletedFolders(OutputRoot), folder =>
            Assert.Equal(everyFile.Order(), Directory.GetFiles(folder).Select(Path.GetFileName).Order()));
        var finished = await StopAsync(agent);
        Assert.True(finished.ExitCode == 0, finished.ToString());
        Assert.Contains("BadMagic", finished.Stderr);
        Assert.Contains("TruncatedStream", finished.Stderr);

        var pids = new HashSet<long>();
        Assert.Equal(3, Directory.GetDirectories(OutputRoot).Length);  // no staging folder is left behind
        foreach (var folder in ServeAgent.CompletedFolders(OutputRoot))
        {
            Assert.StartsWith("work-", Path.GetFileName(folder));
            using var summary = JsonDocument.Parse(File.ReadAllText(Path.Combine(folder, "summary.json")));
            var process = summary.RootElement.GetProperty("processes").EnumerateArray().Single();
            pids.Add(process.GetProperty("pid").GetInt64());
            Assert.Equal("Goodbye", process.GetProperty("connection").GetProperty("end_reason").GetString());
            var leaf = summary.RootElement.GetProperty("functions").EnumerateArray()
                .Single(f => f.GetProperty("qualified_name").GetString() == "leaf");
            Assert.Equal(1000, leaf.GetProperty("calls").GetInt64());
            Assert.True(File.Exists(Path.Combine(folder, "flamegraph.html")));
        }
        Assert.Equal(3, pids.Count);
        Assert.False(File.Exists(SocketPath), "the socket file is removed on shutdown");
    }

    [Fact]
    public async Task ReplacesAStaleSocketButNeverAnotherFile()
    {
        // A socket file whose agent is gone: bound by a process that exits without unlinking it (.NET would
        // unlink it on Dispose, Python does not).
        var bound = await Processes.RunPythonAsync(["-c", "import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])", SocketPath]);
        Assert.True(bound.ExitCode == 0 && File.Exists(SocketPath), bound.ToString());
        using (var agent = StartServe())
        {
            await ServeAgent.WaitUntilAsync(() => CanConnect(SocketPath), "the agent to replace the stale socket");
            var second = await Processes.RunAgentAsync(["serve", "--socket", SocketPath, "-o", OutputRoot], timeout: TimeSpan.FromSeconds(30));
            Assert.Equal(2, second.ExitCode);
            Assert.Contains("already listening", second.Stderr);
            Assert.Equal(0, (await StopAsync(agent)).ExitCode);
        }

        var regular = _temp.File("not-a-socket");
        File.WriteAllText(regular, "precious");
        var refused = await Processes.RunAgentAsync(["serve", "--socket", regular, "-o", OutputRoot], timeout: TimeSpan.FromSeconds(30));
        Assert.Equal(2, refused.ExitCode);
        Assert.Contains("not a socket", refused.Stderr);
        Assert.Equal("precious", File.ReadAllText(regular));
    }

    private static bool CanConnect(string path)
    {
        using var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            probe.Connect(new UnixDomainSocketEndPoint(path));
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }

    [Fact]
    public async Task MissingFoldersOfTheSocketPathAreCreatedOwnerOnly()
    {
        var socket = _temp.File("missing/dir/agent.sock");
        using (var agent = await ServeAgent.StartAsync(socket, OutputRoot, "--allow-uid", "nobody"))
        {
            const UnixFileMode OwnerOnly = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;
            Assert.Equal(OwnerOnly, File.GetUnixFileMode(_temp.File("missing")));
            Assert.Equal(OwnerOnly, File.GetUnixFileMode(_temp.File("missing/dir")));
            var stopped = await agent.StopAsync();
            Assert.True(stopped.ExitCode == 0, stopped.ToString());
        }
    }

    [Fact]
    public async Task SaysClearlyWhenTheSocketPathIsTooLong()
    {
        var tooLong = Path.Combine(_temp.Path, new string('s', 120), "agent.sock");
        var result = await Processes.RunAgentAsync(["serve", "--socket", tooLong, "-o", OutputRoot], timeout: TimeSpan.FromSeconds(30));
        Assert.Equal(2, result.ExitCode);
        Assert.Contains("longer than the 107 bytes", result.Stderr);
        Assert.DoesNotContain("Unhandled exception", result.Stderr);
    }
}

using System.Diagnostics;
using System.Text.Json;

namespace TelemetryAgent.EndToEnd.Tests.Support;

/// <summary>A real `telemetry-agent serve` on a socket of its own, stopped with SIGTERM.</summary>
public sealed class ServeAgent : IDisposable
{
    private ServeAgent(Process process, string socketPath, string outputRoot)
    {
        Process = process;
        SocketPath = socketPath;
        OutputRoot = outputRoot;
    }

    public Process Process { get; }
    public string SocketPath { get; }
    public string OutputRoot { get; }

    /// <summary>Starts serve with <paramref name="options"/> and waits until its socket exists.</summary>
    public static async Task<ServeAgent> StartAsync(string socketPath, string outputRoot, params string[] options)
    {
        var process = Processes.Start("dotnet", [Processes.AgentDll, "serve", "--socket", socketPath, "-o", outputRoot, .. options]);
        var agent = new ServeAgent(process, socketPath, outputRoot);
        await WaitUntilAsync(() => File.Exists(socketPath) || process.HasExited, "the agent's socket");
        if (process.HasExited) throw new InvalidOperationException($"serve exited: {await Processes.WaitAsync(process, TimeSpan.FromSeconds(5))}");
        return agent;
    }

    /// <summary>SIGTERM, then the agent's exit code and output.</summary>
    public async Task<Finished> StopAsync(TimeSpan? timeout = null)
    {
        Assert.True(Transport.Native.SendSignal(Process.Id, 15));
        return await Processes.WaitAsync(Process, timeout ?? TimeSpan.FromSeconds(30));
    }

    public string[] OutputFolders() => CompletedFolders(OutputRoot);

    /// <summary>The process folders serve has finished in <paramref name="outputRoot"/> (not its hidden staging folders).</summary>
    public static string[] CompletedFolders(string outputRoot) => Directory.Exists(outputRoot)
        ? Directory.GetDirectories(outputRoot).Where(folder => !Path.GetFileName(folder).StartsWith('.')).ToArray()
        : [];

    /// <summary>The single process of an output folder's summary.json (serve writes one folder per process).</summary>
    public static JsonElement ProcessIn(string folder)
    {
        using var summary = JsonDocument.Parse(File.ReadAllText(Path.Combine(folder, "summary.json")));
        return summary.RootElement.GetProperty("processes").EnumerateArray().Single().Clone();
    }

    /// <summary>The first process of a `run` output folder's summary.json.</summary>
    public static JsonElement ProcessInRun(string folder)
    {
        using var summary = JsonDocument.Parse(File.ReadAllText(Path.Combine(folder, "summary.json")));
        return summary.RootElement.GetProperty("processes")[0].Clone();
    }

    /// <summary>Waits until the agent holds <paramref name="count"/> connections it accepted on its socket.</summary>
    public Task WaitForAcceptedConnectionsAsync(int count)
        => WaitUntilAsync(() => AcceptedConnections() >= count, $"{count} accepted connection(s)");

    /// <summary>
    /// The connections of the socket that the agent process holds: the kernel lists each connected end that has the
    /// socket's path (<c>/proc/net/unix</c>, state 03), and an accepted one is among the agent's file descriptors.
    /// </summary>
    private int AcceptedConnections()
    {
        var connected = File.ReadLines("/proc/net/unix")
            .Select(line => line.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            .Where(fields => fields.Length >= 8 && fields[5] == "03" && fields[7] == SocketPath)
            .Select(fields => $"socket:[{fields[6]}]")
            .ToHashSet();
        var held = 0;
        foreach (var descriptor in Directory.EnumerateFiles($"/proc/{Process.Id}/fd"))
        {
            try
            {
                if (new FileInfo(descriptor).LinkTarget is { } target && connected.Contains(target)) held++;
            }
            catch (IOException)
            {
                // Closed while we looked.
            }
        }
        return held;
    }

    /// <summary>
    /// The mode of a socket once it is <paramref name="expected"/>, or when 30 s have passed: a socket with a group is
    /// created owner-only and gets the group's bits just after it appears.
    /// </summary>
    public static async Task<UnixFileMode> SocketModeOnceAsync(string path, UnixFileMode expected)
    {
        try { await WaitUntilAsync(() => File.GetUnixFileMode(path) == expected, $"{path} to have mode {expected}"); }
        catch (TimeoutException) { }
        return File.GetUnixFileMode(path);
    }

    public static async Task WaitUntilAsync(Func<bool> condition, string what, double seconds = 30)
    {
        var deadline = Stopwatch.StartNew();
        while (!condition())
        {
            if (deadline.Elapsed.TotalSeconds > seconds) throw new TimeoutException($"timed out waiting for {what}");
            await Task.Delay(50);
        }
    }

    public void Dispose()
    {
        if (!Process.HasExited) Process.Kill(entireProcessTree: true);
        Process.Dispose();
    }
}

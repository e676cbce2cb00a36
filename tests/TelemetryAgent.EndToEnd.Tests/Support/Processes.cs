using System.Diagnostics;
using System.Text;
using TelemetryAgent.Cli;

namespace TelemetryAgent.EndToEnd.Tests.Support;

public sealed record Finished(int ExitCode, string Stdout, string Stderr)
{
    public override string ToString() => $"exit {ExitCode}\n--- stdout\n{Stdout}\n--- stderr\n{Stderr}";
}

/// <summary>Real processes: the built agent and a real Python 3.12+, each waited for with a timeout.</summary>
public static class Processes
{
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(120);

    /// <summary>
    /// The agent as its own project built it (the exe project is referenced, so it is built first). Not the copy next
    /// to this assembly: the OTLP receiver brings the ASP.NET Core framework into this folder, whose assemblies
    /// replace packages the agent needs, and the agent runs on the plain .NET runtime.
    /// </summary>
    public static string AgentDll { get; } = System.IO.Path.Combine(
        Repo.Root, "agent", "src", "TelemetryAgent", "bin",
        new DirectoryInfo(AppContext.BaseDirectory).Parent!.Name, // Release or Debug
        new DirectoryInfo(AppContext.BaseDirectory).Name,         // net10.0
        "telemetry-agent.dll");

    /// <summary>The dotnet executable itself, for runs that clear PATH.</summary>
    public static string DotnetHost { get; } =
        Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host ? host
        : PythonLocator.ResolveExecutable("dotnet") ?? throw new InvalidOperationException("dotnet is not on PATH");

    private static readonly Lazy<PythonInterpreter> LazyPython = new(() =>
        PythonLocator.Locate(null, out var problem) ?? throw new InvalidOperationException(problem));

    public static PythonInterpreter Python => LazyPython.Value;

    public static Task<Finished> RunAgentAsync(IEnumerable<string> arguments, string? workingDirectory = null,
        IReadOnlyDictionary<string, string?>? environment = null, TimeSpan? timeout = null)
        => RunAsync("dotnet", [AgentDll, .. arguments], workingDirectory, environment, timeout);

    public static Task<Finished> RunPythonAsync(IEnumerable<string> arguments, string? workingDirectory = null,
        IReadOnlyDictionary<string, string?>? environment = null, TimeSpan? timeout = null)
        => RunAsync(Python.Path, arguments, workingDirectory, environment, timeout);

    public static Process Start(string executable, IEnumerable<string> arguments, string? workingDirectory = null,
        IReadOnlyDictionary<string, string?>? environment = null)
    {
        var start = new ProcessStartInfo(executable)
        {
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            WorkingDirectory = workingDirectory ?? Repo.Root,
            StandardOutputEncoding = Encoding.UTF8,
            StandardErrorEncoding = Encoding.UTF8,
        };
        foreach (var argument in arguments) start.ArgumentList.Add(argument);
        // Tests count calls: full mode unless a test says otherwise (`python -m telemetry_shim` defaults to burst).
        start.Environment["TELEMETRY_SHIM_MODE"] = "full";
        foreach (var (name, value) in environment ?? new Dictionary<string, string?>())
        {
            if (value is null) start.Environment.Remove(name);
            else start.Environment[name] = value;
        }
        return Process.Start(start) ?? throw new InvalidOperationException($"could not start {executable}");
    }

    public static async Task<Finished> RunAsync(string executable, IEnumerable<string> arguments, string? workingDirectory = null,
        IReadOnlyDictionary<string, string?>? environment = null, TimeSpan? timeout = null)
    {
        using var process = Start(executable, arguments, workingDirectory, environment);
        process.StandardInput.Close();
        return await WaitAsync(process, timeout ?? DefaultTimeout);
    }

    /// <summary>
    /// Waits for the process; past the timeout, runs <paramref name="beforeKill"/> (say, to ask for a dump), kills the
    /// tree and fails with everything it wrote to stderr and stdout.
    /// </summary>
    /// <param name="onOutputLine">Called with each line of stdout as it comes (say, to see how far the program got).</param>
    public static async Task<Finished> WaitAsync(Process process, TimeSpan timeout, Action<Process>? beforeKill = null,
        Action<string>? onOutputLine = null)
    {
        var stdout = onOutputLine is null ? process.StandardOutput.ReadToEndAsync() : ReadLinesAsync(process.StandardOutput, onOutputLine);
        var stderr = process.StandardError.ReadToEndAsync();
        using var cancel = new CancellationTokenSource(timeout);
        try
        {
            await process.WaitForExitAsync(cancel.Token);
        }
        catch (OperationCanceledException)
        {
            if (beforeKill is not null)
            {
                beforeKill(process);
                await Task.Delay(TimeSpan.FromSeconds(1)); // the dump's time to be written: diagnostics only, after a failure
            }
            process.Kill(entireProcessTree: true);
            var written = await Task.WhenAll(stderr, stdout).WaitAsync(TimeSpan.FromSeconds(10)).ConfigureAwait(false);
            throw new TimeoutException($"{process.StartInfo.FileName} {string.Join(' ', process.StartInfo.ArgumentList)} " +
                                       $"did not finish in {timeout.TotalSeconds} s; stderr: {written[0]}; stdout: {written[1]}");
        }
        return new Finished(process.ExitCode, await stdout, await stderr);
    }

    private static async Task<string> ReadLinesAsync(StreamReader reader, Action<string> onLine)
    {
        var all = new StringBuilder();
        while (await reader.ReadLineAsync().ConfigureAwait(false) is { } line)
        {
            all.Append(line).Append('\n');
            onLine(line);
        }
        return all.ToString();
    }

    /// <summary>The pids whose parent is <paramref name="pid"/>, from /proc.</summary>
    public static IEnumerable<int> ChildrenOf(int pid)
    {
        foreach (var folder in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(folder), out var candidate)) continue;
            string stat;
            try
            {
                stat = File.ReadAllText(Path.Combine(folder, "stat"));
            }
            catch (Exception error) when (error is IOException or UnauthorizedAccessException)
            {
                continue;  // gone meanwhile
            }
            // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so read after the last ')'.
            var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            if (fields.Length > 1 && int.TryParse(fields[1], out var parent) && parent == pid) yield return candidate;
        }
    }
}

using System.Diagnostics;

namespace TelemetryAgent.Cli;

/// <summary>A Python interpreter and the version it reported about itself.</summary>
public sealed record PythonInterpreter(string Path, Version Version)
{
    public override string ToString() => $"{Path} (Python {Version})";
}

/// <summary>
/// Finds a Python that has sys.monitoring (3.12 or later): an explicit setting first (option, then
/// TELEMETRY_PYTHON), then PATH, then pyenv. Every candidate is asked for its own version: names lie.
/// </summary>
public static class PythonLocator
{
    public static readonly Version Minimum = new(3, 12);
    public const string EnvironmentVariable = "TELEMETRY_PYTHON";

    // Newest first, so a machine with several picks the most recent one.
    private static readonly string[] PathNames =
        ["python3.15", "python3.14", "python3.13", "python3.12", "python3", "python"];

    /// <summary>Returns the interpreter, or null with <paramref name="problem"/> saying what was tried.</summary>
    /// <param name="explicitPath">The interpreter the user chose, if any.</param>
    /// <param name="problem">What went wrong, for the user.</param>
    /// <param name="source">Where <paramref name="explicitPath"/> was named, for the message ("by --python").</param>
    public static PythonInterpreter? Locate(string? explicitPath, out string problem, string source = "by --python")
    {
        var tried = new List<string>();
        var explicitChoice = !string.IsNullOrWhiteSpace(explicitPath) ? (explicitPath, source)
            : Environment.GetEnvironmentVariable(EnvironmentVariable) is { Length: > 0 } fromEnv ? (fromEnv, $"by {EnvironmentVariable}")
            : ((string?)null, "");
        if (explicitChoice.Item1 is { } chosen)
        {
            // An explicit choice is never second-guessed: if it is unusable, say so rather than pick another.
            var resolved = ResolveExecutable(chosen);
            var found = resolved is null ? null : Probe(resolved);
            if (found is null)
            {
                problem = $"'{chosen}', named {explicitChoice.Item2}, is not a Python interpreter that can be run.";
                return null;
            }
            if (found.Version < Minimum)
            {
                problem = $"{found.Path}, named {explicitChoice.Item2}, is Python {found.Version}, but sys.monitoring needs Python {Minimum} or later.";
                return null;
            }
            problem = "";
            return found;
        }

        foreach (var candidate in PathCandidates().Concat(PyenvCandidates()))
        {
            var found = Probe(candidate);
            tried.Add(found is null ? $"{candidate} (did not run)" : found.ToString());
            if (found is not null && found.Version >= Minimum)
            {
                problem = "";
                return found;
            }
        }
        problem = $"No Python {Minimum} or later was found (sys.monitoring, PEP 669, needs it). Tried: "
                  + (tried.Count == 0 ? "nothing on PATH and no pyenv versions" : string.Join(", ", tried))
                  + $". Install one, or name it with --python or {EnvironmentVariable}.";
        return null;
    }

    /// <summary>Asks the interpreter its version; null if it cannot be run or answers nonsense.</summary>
    public static PythonInterpreter? Probe(string path)
    {
        try
        {
            var start = new ProcessStartInfo(path)
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            start.ArgumentList.Add("-I");
            start.ArgumentList.Add("-c");
            start.ArgumentList.Add("import sys; print('%d.%d.%d' % sys.version_info[:3])");
            using var process = Process.Start(start);
            if (process is null) return null;
            var output = process.StandardOutput.ReadToEndAsync();
            if (!process.WaitForExit(TimeSpan.FromSeconds(10)))
            {
                process.Kill(entireProcessTree: true);
                return null;
            }
            return process.ExitCode == 0 && Version.TryParse(output.Result.Trim(), out var version)
                ? new PythonInterpreter(path, version)
                : null;
        }
        catch (Exception e) when (e is System.ComponentModel.Win32Exception or InvalidOperationException or IOException)
        {
            return null;
        }
    }

    /// <summary>A path as given when it has a directory part, else the first match on PATH.</summary>
    public static string? ResolveExecutable(string name)
    {
        if (name.Contains('/')) return File.Exists(name) ? Path.GetFullPath(name) : null;
        foreach (var directory in SearchPath())
        {
            var full = Path.Combine(directory, name);
            if (File.Exists(full)) return full;
        }
        return null;
    }

    private static IEnumerable<string> SearchPath() =>
        (Environment.GetEnvironmentVariable("PATH") ?? "")
        .Split(':', StringSplitOptions.RemoveEmptyEntries);

    private static IEnumerable<string> PathCandidates()
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var name in PathNames)
        {
            var resolved = ResolveExecutable(name);
            if (resolved is null) continue;
            // pyenv shims and symlinks often lead to the same interpreter: ask each real file once.
            var real = new FileInfo(resolved).ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? resolved;
            if (seen.Add(real)) yield return resolved;
        }
    }

    private static IEnumerable<string> PyenvCandidates()
    {
        var root = Environment.GetEnvironmentVariable("PYENV_ROOT");
        if (string.IsNullOrEmpty(root))
            root = Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".pyenv");
        var versions = Path.Combine(root, "versions");
        if (!Directory.Exists(versions)) yield break;
        var installed = Directory.GetDirectories(versions)
            .Select(dir => (dir, version: Version.TryParse(Path.GetFileName(dir), out var v) ? v : null))
            .Where(entry => entry.version is not null && entry.version >= Minimum)
            .OrderByDescending(entry => entry.version);
        foreach (var (dir, _) in installed)
        {
            var python = Path.Combine(dir, "bin", "python3");
            if (File.Exists(python)) yield return python;
        }
    }
}

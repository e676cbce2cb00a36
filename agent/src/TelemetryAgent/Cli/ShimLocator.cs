namespace TelemetryAgent.Cli;

/// <summary>
/// Finds the python-shim folder (the one holding the telemetry_shim package) to put on the program's
/// PYTHONPATH: --shim-path, then TELEMETRY_SHIM_PATH, then the copy shipped next to the agent.
/// </summary>
public static class ShimLocator
{
    public const string EnvironmentVariable = "TELEMETRY_SHIM_PATH";

    public static string? Locate(string? explicitPath, out string problem)
    {
        var candidates = new List<(string Path, string Source)>();
        if (!string.IsNullOrWhiteSpace(explicitPath)) candidates.Add((explicitPath, "--shim-path"));
        else if (Environment.GetEnvironmentVariable(EnvironmentVariable) is { Length: > 0 } fromEnv)
            candidates.Add((fromEnv, EnvironmentVariable));
        else candidates.Add((Path.Combine(AppContext.BaseDirectory, "python-shim"), "the agent's own copy"));

        var (path, source) = candidates[0];
        var full = Path.GetFullPath(path);
        if (File.Exists(Path.Combine(full, "telemetry_shim", "__init__.py")))
        {
            problem = "";
            return full;
        }
        problem = $"{source} ({full}) does not contain the telemetry_shim package.";
        return null;
    }
}

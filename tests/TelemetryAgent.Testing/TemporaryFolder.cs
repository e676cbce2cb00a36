namespace TelemetryAgent.Testing;

/// <summary>A new, empty folder under the system's temporary folder, deleted with everything in it on disposal.</summary>
public sealed class TemporaryFolder(string prefix = "telemetry-agent-test-") : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory(prefix).FullName;

    /// <summary>A path in the folder (nothing is created).</summary>
    public string File(string name) => System.IO.Path.Combine(Path, name);

    /// <summary>Writes a file in the folder (a program under test, a configuration) and returns its path.</summary>
    public string Write(string name, string text)
    {
        var path = File(name);
        System.IO.File.WriteAllText(path, text);
        return path;
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
            // Already gone, or a process under test still writes there: the system's temporary folder keeps the rest.
        }
    }
}

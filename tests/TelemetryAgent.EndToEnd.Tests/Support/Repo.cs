namespace TelemetryAgent.EndToEnd.Tests.Support;

/// <summary>Paths in the repository, found from the test assembly's location.</summary>
public static class Repo
{
    public static string Root { get; } = FindRoot();

    public static string Path(params string[] parts) => System.IO.Path.Combine([Root, .. parts]);

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(System.IO.Path.Combine(dir.FullName, "TelemetryAgent.sln"))) return dir.FullName;
        }
        throw new InvalidOperationException("TelemetryAgent.sln not found above " + AppContext.BaseDirectory);
    }
}

using Xunit.Sdk;

namespace TelemetryAgent.EndToEnd.Tests.Support;

/// <summary>
/// Compares output with a golden file. With UPDATE_GOLDEN=1 it rewrites the file and still fails, so that a
/// rewrite is always looked at and committed on purpose.
/// </summary>
public static class Golden
{
    public static void AssertMatches(string actual, string goldenName)
    {
        var path = Repo.Path("tests", "TelemetryAgent.EndToEnd.Tests", "golden", goldenName);
        var expected = File.Exists(path) ? File.ReadAllText(path) : null;
        if (expected == actual) return;
        if (Environment.GetEnvironmentVariable("UPDATE_GOLDEN") == "1")
        {
            File.WriteAllText(path, actual);
            throw new XunitException($"Golden file {path} was rewritten; review and commit it, then run again.");
        }
        throw new XunitException(expected is null
            ? $"Golden file {path} is missing (UPDATE_GOLDEN=1 writes it). Actual:\n{actual}"
            : $"Output differs from {path} (UPDATE_GOLDEN=1 rewrites it).\n--- expected\n{expected}\n--- actual\n{actual}");
    }
}

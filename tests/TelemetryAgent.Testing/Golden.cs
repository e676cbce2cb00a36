using System.Runtime.CompilerServices;
using System.Text.Encodings.Web;
using System.Text.Json;
using Xunit.Sdk;

namespace TelemetryAgent.Testing;

/// <summary>
/// Compares an output with its golden file in the folder <c>golden/</c> next to the calling test's source file. A
/// missing or different golden fails the test; with UPDATE_GOLDEN=1 the golden is rewritten first, and the test still
/// fails, so that a rewrite is never mistaken for a pass and is always reviewed before it is committed.
/// </summary>
public static class Golden
{
    public static void Verify(string actual, string goldenName, [CallerFilePath] string sourceFile = "")
    {
        var path = Path.Combine(Path.GetDirectoryName(sourceFile)!, "golden", goldenName);
        var expected = File.Exists(path) ? File.ReadAllText(path) : null;
        if (expected == actual) return;

        if (Environment.GetEnvironmentVariable("UPDATE_GOLDEN") == "1")
        {
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            File.WriteAllText(path, actual);
            throw new XunitException($"Rewrote golden file {path}; review the diff and run the tests again.");
        }

        if (expected is null)
            throw new XunitException($"Golden file {path} is missing; run with UPDATE_GOLDEN=1 to create it.");

        var line = FirstDifferentLine(expected, actual);
        throw new XunitException(
            $"Output differs from golden file {path} at line {line.Number}:\n" +
            $"  expected: {line.Expected}\n  actual:   {line.Actual}\nRun with UPDATE_GOLDEN=1 to accept the new output.");
    }

    /// <summary>Compares JSON by content, written indented (one value per line) so that a golden diff shows what changed.</summary>
    public static void VerifyJson(string json, string goldenName, [CallerFilePath] string sourceFile = "")
    {
        using var document = JsonDocument.Parse(json);
        var indented = JsonSerializer.Serialize(document.RootElement,
            new JsonSerializerOptions { WriteIndented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping });
        Verify(indented.ReplaceLineEndings("\n") + "\n", goldenName, sourceFile);
    }

    private static (int Number, string Expected, string Actual) FirstDifferentLine(string expected, string actual)
    {
        var expectedLines = expected.Split('\n');
        var actualLines = actual.Split('\n');
        for (var i = 0; i < Math.Max(expectedLines.Length, actualLines.Length); i++)
        {
            var e = i < expectedLines.Length ? expectedLines[i] : "<end of file>";
            var a = i < actualLines.Length ? actualLines[i] : "<end of file>";
            if (e != a) return (i + 1, Shorten(e), Shorten(a));
        }
        return (0, "", "");
    }

    private static string Shorten(string line) => line.Length <= 300 ? line : line[..300] + "…";
}

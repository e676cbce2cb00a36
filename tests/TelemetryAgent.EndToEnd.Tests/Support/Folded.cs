namespace TelemetryAgent.EndToEnd.Tests.Support;

/// <summary>Reads folded stacks (`a;b;c weight`) and keeps the deterministic part of them.</summary>
public static class Folded
{
    public static IEnumerable<(string[] Frames, long Weight)> Parse(string text)
    {
        foreach (var line in text.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            var space = line.LastIndexOf(' ');
            Assert.True(space > 0, $"not a folded line: '{line}'");
            yield return (line[..space].Split(';'), long.Parse(line[(space + 1)..]));
        }
    }

    /// <summary>
    /// Keeps only the frames of one file (plus the process and thread roots, the process named without its
    /// pid), merges the stacks that become equal, and drops stacks whose leaf is not of that file: what is
    /// left does not depend on the Python version's library code or on the run.
    /// </summary>
    public static string OnlyFramesOf(string text, string fileMarker, string processName)
    {
        var merged = new SortedDictionary<string, long>(StringComparer.Ordinal);
        foreach (var (frames, weight) in Parse(text))
        {
            if (!frames[^1].Contains(fileMarker, StringComparison.Ordinal)) continue;
            var kept = new List<string> { processName, frames[1] };
            kept.AddRange(frames.Skip(2).Where(frame => frame.Contains(fileMarker, StringComparison.Ordinal)));
            var key = string.Join(';', kept);
            merged[key] = merged.GetValueOrDefault(key) + weight;
        }
        return string.Concat(merged.Select(entry => $"{entry.Key} {entry.Value}\n"));
    }
}

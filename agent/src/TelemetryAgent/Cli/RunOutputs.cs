using TelemetryAgent.Aggregation;
using TelemetryAgent.Export;
using TelemetryAgent.Export.Profiles;

namespace TelemetryAgent.Cli;

/// <summary>Writes a finished run's output folder and tells the user what happened and where it went.</summary>
public static class RunOutputs
{
    /// <summary>True when every file was written.</summary>
    /// <param name="stagingFolder">
    /// When set, the files are written there and the folder is then renamed to <paramref name="folder"/>, so that a
    /// folder appears only once it is complete (a watcher of the output root never reads half a folder).
    /// </param>
    public static bool Write(string folder, ProfileStoreSnapshot snapshot, DateTimeOffset startedAt, DateTimeOffset endedAt,
        int top, TextWriter log, bool printSummary = true, int summaryFunctions = 200, string? stagingFolder = null)
    {
        var report = OutputWriter.WriteAll(stagingFolder ?? folder, snapshot.Completed, new OutputOptions
        {
            RunStartedAt = startedAt,
            RunEndedAt = endedAt,
            ConnectionsWithoutHello = snapshot.ConnectionsWithoutProfile,
            TopFunctions = summaryFunctions,
            AdditionalFiles = [new AdditionalOutput(PprofWriter.FileName, PprofWriter.Write)],
        });
        if (printSummary)
        {
            log.WriteLine();
            log.Write(ConsoleSummary.Format(report.Summary, top));
            if (snapshot.Completed.Count == 0)
                log.WriteLine("No process reported to the agent: was the shim able to start? (see the warnings above)");
        }
        foreach (var failed in report.Files.Where(file => !file.Succeeded))
            log.WriteLine($"telemetry-agent: could not write {failed.Path}: {failed.Error}");
        if (stagingFolder is not null && Directory.Exists(stagingFolder))
        {
            try
            {
                Directory.Move(stagingFolder, folder);
            }
            catch (Exception error) when (error is IOException or UnauthorizedAccessException)
            {
                log.WriteLine($"telemetry-agent: could not rename {stagingFolder}/ to {folder}/: {error.Message}; the files stay there");
                return false;
            }
        }
        log.WriteLine(printSummary
            ? $"Outputs: {folder}/ ({string.Join(", ", report.Files.Where(f => f.Succeeded).Select(f => f.Name))})"
            : $"telemetry-agent: wrote {folder}/");
        return report.AllSucceeded;
    }
}

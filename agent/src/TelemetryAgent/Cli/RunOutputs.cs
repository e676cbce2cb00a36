using TelemetryAgent.Aggregation;
using TelemetryAgent.Export;
using TelemetryAgent.Export.Profiles;

namespace TelemetryAgent.Cli;

/// <summary>Writes a finished run's output folder and tells the user what happened and where it went.</summary>
public static class RunOutputs
{
    /// <summary>True when every file was written.</summary>
    public static bool Write(string folder, ProfileStoreSnapshot snapshot, DateTimeOffset startedAt, DateTimeOffset endedAt,
        int top, TextWriter log, bool printSummary = true, int summaryFunctions = 200)
    {
        var report = OutputWriter.WriteAll(folder, snapshot.Completed, new OutputOptions
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
        log.WriteLine(printSummary
            ? $"Outputs: {folder}/ ({string.Join(", ", report.Files.Where(f => f.Succeeded).Select(f => f.Name))})"
            : $"telemetry-agent: wrote {folder}/");
        return report.AllSucceeded;
    }
}

using TelemetryAgent.Profiling;

namespace TelemetryAgent.Output;

/// <summary>One output file: where it went, or why it could not be written.</summary>
public sealed record WrittenFile(string Name, string Path, string? Error)
{
    public bool Succeeded => Error is null;
}

/// <summary>What <see cref="FolderExporter"/> did: every file, written or not, and the run's summary.</summary>
/// <param name="Folder">The folder the files are in when the export is done.</param>
/// <param name="FolderError">Why a staged folder could not be renamed to <paramref name="Folder"/>; its files stay staged.</param>
public sealed record OutputReport(string Folder, IReadOnlyList<WrittenFile> Files, RunSummary Summary, string? FolderError = null)
{
    public bool AllSucceeded => FolderError is null && Files.All(file => file.Succeeded);

    /// <summary>One line per file that could not be written, then the folder's problem, for the agent's log.</summary>
    public void LogProblems(TextWriter log)
    {
        ArgumentNullException.ThrowIfNull(log);
        foreach (var failed in Files.Where(file => !file.Succeeded))
            log.WriteLine($"telemetry-agent: could not write {failed.Path}: {failed.Error}");
        if (FolderError is not null) log.WriteLine($"telemetry-agent: {FolderError}");
    }
}

/// <summary>
/// Writes output folders: every <see cref="IOutputFile"/> it is given, in order, from one <see cref="OutputRun"/>. `run`
/// writes its folder once at the end; `serve` one folder per process (<see cref="ProcessFolders"/>). Never throws for
/// a failing file: each file is written on its own (to a temporary name, then renamed, so a reader never sees half a
/// file) and failures are reported per file.
/// </summary>
public sealed class FolderExporter
{
    public FolderExporter(IReadOnlyList<IOutputFile> files)
    {
        ArgumentNullException.ThrowIfNull(files);
        Files = files;
    }

    /// <summary>Every file of a run's folder, in the order they are written.</summary>
    /// <param name="topFunctions">Functions listed in summary.json.</param>
    public static IReadOnlyList<IOutputFile> StandardFiles(int topFunctions = SummaryJsonFile.DefaultTopFunctions) =>
    [
        FoldedStacksFile.SelfTime, FoldedStacksFile.Calls, new SpeedscopeFile(), new SummaryJsonFile(topFunctions),
        new ExceptionsJsonFile(), new StartupJsonFile(), new FlameGraphHtmlFile(), new PprofFile(),
    ];

    /// <summary>An exporter of <see cref="StandardFiles"/>.</summary>
    public static FolderExporter Standard(int topFunctions = SummaryJsonFile.DefaultTopFunctions) => new(StandardFiles(topFunctions));

    public IReadOnlyList<IOutputFile> Files { get; }

    /// <summary>Writes every file into <paramref name="folder"/>, creating it when missing.</summary>
    public OutputReport Write(string folder, OutputRun run)
    {
        ArgumentNullException.ThrowIfNull(folder);
        ArgumentNullException.ThrowIfNull(run);
        try
        {
            Directory.CreateDirectory(folder);
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            var failed = Files.Select(file => new WrittenFile(file.Name, Path.Combine(folder, file.Name), $"cannot create the folder: {error.Message}"));
            return new OutputReport(folder, [.. failed], run.Summary);
        }
        return new OutputReport(folder, [.. Files.Select(file => WriteFile(folder, file, run))], run.Summary);
    }

    /// <summary>
    /// Writes every file into a hidden staging folder beside <paramref name="folder"/> (<c>.&lt;name&gt;.partial</c>),
    /// then renames it to <paramref name="folder"/>: the folder appears only once it is complete, so a watcher of the
    /// parent (globs such as <c>out/*/summary.json</c>) never reads half a folder.
    /// </summary>
    public OutputReport WriteWhole(string folder, OutputRun run)
    {
        ArgumentNullException.ThrowIfNull(folder);
        var trimmed = Path.TrimEndingDirectorySeparator(folder);
        var staging = Path.Combine(Path.GetDirectoryName(trimmed) ?? "", $".{Path.GetFileName(trimmed)}.partial");
        var report = Write(staging, run);
        if (!Directory.Exists(staging)) return report;
        try
        {
            Directory.Move(staging, folder);
            return report with
            {
                Folder = folder,
                Files = [.. report.Files.Select(file => file with { Path = Path.Combine(folder, file.Name) })],
            };
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException)
        {
            return report with { FolderError = $"could not rename {staging}/ to {folder}/: {error.Message}; the files stay there" };
        }
    }

    private static WrittenFile WriteFile(string folder, IOutputFile file, OutputRun run)
    {
        var path = Path.Combine(folder, file.Name);
        var temporary = path + ".tmp";
        try
        {
            using (var stream = new FileStream(temporary, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16))
            {
                file.Write(stream, run);
            }
            File.Move(temporary, path, overwrite: true);
            return new WrittenFile(file.Name, path, null);
        }
        catch (Exception error)
        {
            // Any failure (disk, permissions, a writer's bug) costs this file only.
            TryDelete(temporary);
            return new WrittenFile(file.Name, path, $"{error.GetType().Name}: {error.Message}");
        }
    }

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException)
        {
            // Best effort: the temporary file is only litter.
        }
    }
}

using System.Text;
using TelemetryAgent.Profiling;
using TelemetryAgent.Profiling.Formats;

namespace TelemetryAgent.Output;

/// <summary>One file of an output folder: its name, and how it is written from a run's frozen profiles.</summary>
/// <remarks>A new format is one class implementing this, added to <see cref="FolderExporter.StandardFiles"/>.</remarks>
public interface IOutputFile
{
    /// <summary>The file's name in the folder, e.g. <c>profile.folded</c>.</summary>
    string Name { get; }

    /// <summary>Writes the whole file. May throw: <see cref="FolderExporter"/> reports it as this file's failure.</summary>
    void Write(Stream output, OutputRun run);
}

/// <summary>What every output file is written from: the run's profiles summarized once, its title and the time.</summary>
/// <param name="Title">The flame graph's and speedscope file's title.</param>
/// <param name="WrittenAt">The clock's time when the outputs are written (fixed in tests).</param>
public sealed record OutputRun(RunSummary Summary, string Title, DateTimeOffset WrittenAt)
{
    /// <summary>The processes of the run in the summary's order (connection time, then pid).</summary>
    public IReadOnlyList<ProcessProfile> Processes => Summary.Processes;

    /// <summary>
    /// The run of the frozen profiles among <paramref name="profiles"/> (see <see cref="RunSummary.Create"/>), titled
    /// after its processes unless <paramref name="title"/> is given.
    /// </summary>
    public static OutputRun Create(IReadOnlyList<ProcessProfile> profiles, TimeProvider? time = null,
        DateTimeOffset? startedAt = null, DateTimeOffset? endedAt = null,
        IReadOnlyDictionary<string, long>? connectionsWithoutHello = null, string? title = null)
    {
        var now = (time ?? TimeProvider.System).GetUtcNow();
        var summary = RunSummary.Create(profiles, now, startedAt, endedAt, connectionsWithoutHello);
        return new OutputRun(summary, title ?? DefaultTitle(summary.Processes), now);
    }

    /// <summary>The run of a store's completed profiles, with its connections that ended before HELLO.</summary>
    public static OutputRun Create(ProfileStoreSnapshot snapshot, DateTimeOffset startedAt, DateTimeOffset endedAt, TimeProvider? time = null)
    {
        ArgumentNullException.ThrowIfNull(snapshot);
        return Create(snapshot.Completed, time, startedAt, endedAt, snapshot.ConnectionsWithoutProfile);
    }

    private static string DefaultTitle(IReadOnlyList<ProcessProfile> processes) => processes.Count switch
    {
        0 => "TelemetryAgent profile (no processes)",
        1 => ProfileLabels.Process(processes[0]),
        2 => $"{ProfileLabels.Process(processes[0])} and 1 other process",
        _ => $"{ProfileLabels.Process(processes[0])} and {processes.Count - 1} other processes",
    };
}

/// <summary>Text files: UTF-8 without a byte order mark.</summary>
internal static class TextOutput
{
    private static readonly UTF8Encoding Utf8NoBom = new(encoderShouldEmitUTF8Identifier: false);

    public static void Write(Stream output, Action<TextWriter> write)
    {
        using var text = new StreamWriter(output, Utf8NoBom, bufferSize: 1 << 16, leaveOpen: true);
        write(text);
    }
}

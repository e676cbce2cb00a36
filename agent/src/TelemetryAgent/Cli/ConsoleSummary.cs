using System.Globalization;
using System.Text;
using TelemetryAgent.Profiling;
using TelemetryAgent.Profiling.Formats;

namespace TelemetryAgent.Cli;

/// <summary>The text <c>telemetry-agent run</c> prints when the program ends: what was recorded, the functions
/// with the most self time, then the largest exception groups that involve the program, as aligned tables.</summary>
public static class ConsoleSummary
{
    public const int DefaultTopFunctions = 20;
    public const int DefaultTopExceptionGroups = 10;

    // A note longer than this is cut in the table (exceptions.json has it whole).
    private const int NoteWidth = 60;

    public static string Format(RunSummary summary, int topFunctions = DefaultTopFunctions, int topExceptionGroups = DefaultTopExceptionGroups)
    {
        ArgumentNullException.ThrowIfNull(summary);
        ArgumentOutOfRangeException.ThrowIfNegative(topFunctions);
        ArgumentOutOfRangeException.ThrowIfNegative(topExceptionGroups);
        var text = new StringBuilder();
        var culture = CultureInfo.InvariantCulture;

        text.Append(culture, $"Profiled {Count(summary.Processes.Count, "process", "processes")}, ")
            .Append(culture, $"{Count(summary.Threads, "thread", "threads")} for {TimeFormat.Nanoseconds(summary.DurationNs)}")
            .Append('\n');
        text.Append(culture, $"Events received: {summary.EventsReceived:N0}; dropped by the shim: {summary.EventsDropped:N0}");
        if (summary.EventsDropped > 0)
        {
            var share = 100.0 * summary.EventsDropped / Math.Max(1.0, summary.EventsReceived + (double)summary.EventsDropped);
            // Not lower bounds: a lost exit leaves its frame open so later calls nest under it, and a lost entry
            // makes exits close the wrong frames. The repairs are counted; point at them.
            text.Append(culture, $" ({share:F2}%: call trees, counts and times are approximate; see implicit_exits and unmatched_exits in summary.json)");
        }
        text.Append('\n');
        if (summary.ImplicitExits > 0 || summary.UnmatchedExits > 0)
        {
            text.Append(culture, $"Exits repaired: {summary.ImplicitExits:N0} implicit, {summary.UnmatchedExits:N0} unmatched (ignored)\n");
        }

        foreach (var process in summary.Processes)
        {
            text.Append(culture, $"  {ProfileLabels.Process(process)}: ")
                .Append(culture, $"{Count(process.Threads.Count, "thread", "threads")}, ")
                .Append(culture, $"{process.EventsReceived:N0} events")
                .Append(process.Recording.Callbacks.Length > 0 ? $" ({process.Recording.Callbacks} callbacks)" : "")
                .Append(culture, $", ended: {EndText(process)}\n");
            foreach (var note in ProfileLabels.RecordingNotes(process)) text.Append("    ").Append(note).Append('\n');
        }
        if (summary.RunningProcessesLeftOut > 0)
        {
            text.Append(culture, $"  ({Count(summary.RunningProcessesLeftOut, "process", "processes")} still connected, not included)\n");
        }

        var top = summary.Functions.Take(topFunctions).ToArray();
        if (top.Length == 0)
        {
            text.Append("No function calls were recorded.\n");
        }
        else
        {
            text.Append('\n').Append(culture, $"Top {top.Length} functions by self time:\n");
            AppendTable(text, ["calls", "self time", "total time", "location", "function"], numericColumns: 3, top.Select(stats => new[]
            {
                stats.Calls.ToString("N0", culture),
                TimeFormat.Nanoseconds(stats.SelfNs),
                TimeFormat.Nanoseconds(stats.TotalNs),
                string.Create(culture, $"{stats.Function.DisplayFile}:{stats.Function.FirstLine}"),
                stats.Function.QualifiedName,
            }).ToArray());
        }

        AppendExceptions(text, summary, topExceptionGroups);
        StartupConsoleLines.Append(text, summary.Processes);
        return text.ToString();
    }

    /// <summary>
    /// Totals by fate, then the largest groups that involve the program (<see cref="ExceptionGroupOrder"/>), then one
    /// line for the groups raised and handled inside library code; nothing when no exception was recorded.
    /// </summary>
    private static void AppendExceptions(StringBuilder text, RunSummary summary, int topGroups)
    {
        var culture = CultureInfo.InvariantCulture;
        var fates = summary.ExceptionFates;
        if (fates.Total == 0) return;
        text.Append('\n').Append(culture, $"Exceptions: {fates.Total:N0} in {Count(summary.ExceptionGroups.Count, "group", "groups")}")
            .Append(culture, $" (handled {fates.Handled:N0}, escaped {fates.Escaped:N0}, unraisable {fates.Unraisable:N0}, ")
            .Append(culture, $"asyncio unhandled {fates.AsyncioUnhandled:N0}, in flight {fates.InFlight:N0})\n");

        var programGroups = summary.ExceptionGroups.Count - summary.LibraryInternalGroups;
        var top = summary.ExceptionGroups.Where(entry => !entry.Group.IsLibraryInternal).Take(topGroups).ToArray();
        if (top.Length > 0)
        {
            AppendTable(text, ["count", "handled", "escaped", "type", "raised at", "first note"], numericColumns: 3, top.Select(entry =>
            {
                var group = entry.Group;
                return new[]
                {
                    group.Count.ToString("N0", culture),
                    group.Fates.Handled.ToString("N0", culture),
                    group.Fates.Escaped.ToString("N0", culture),
                    group.Kind == ExceptionAggregateKind.Other ? ProcessExceptions.OtherGroupName : TracebackText.DisplayTypeName(group.TypeName),
                    group.RaiseSite?.Site ?? "?",
                    group.Notes.Count > 0 ? OneLine(group.Notes[0]) : "",
                };
            }).ToArray());
        }
        if (programGroups > top.Length)
        {
            text.Append(culture, $"  ({programGroups - top.Length:N0} more groups involving the program in exceptions.json)\n");
        }
        if (summary.LibraryInternalGroups > 0)
        {
            var library = summary.LibraryInternalFates;
            text.Append(culture, $"  {Count(summary.LibraryInternalGroups, "group", "groups")}, ")
                .Append(culture, $"{Count(library.Total, "exception", "exceptions")} raised and handled inside library code");
            if (library.InFlight > 0) text.Append(culture, $" ({library.InFlight:N0} still in flight at exit)");
            text.Append(": see exceptions.json\n");
        }
    }

    // The first columns hold numbers (right-aligned), the rest names (left-aligned); the last column is not padded.
    internal static void AppendTable(StringBuilder text, string[] headers, int numericColumns, string[][] rows, string indent = "  ")
    {
        var widths = headers.Select((header, column) => Math.Max(header.Length, rows.Max(row => row[column].Length))).ToArray();
        AppendRow(headers);
        foreach (var row in rows) AppendRow(row);

        void AppendRow(string[] cells)
        {
            var row = new StringBuilder(indent);
            for (var column = 0; column < cells.Length; column++)
            {
                var cell = cells[column];
                if (column == cells.Length - 1) row.Append(cell);
                else row.Append(column < numericColumns ? cell.PadLeft(widths[column]) : cell.PadRight(widths[column])).Append("  ");
            }
            text.Append(row.ToString().TrimEnd(' ')).Append('\n');
        }
    }

    private static string OneLine(string note)
    {
        var line = note.ReplaceLineEndings(" ");
        return line.Length <= NoteWidth ? line : line[..(NoteWidth - 1)] + "…";
    }

    private static string EndText(ProcessProfile process)
    {
        var end = process.End?.ToString() ?? "still running";
        return process.GoodbyeReason is { } reason ? $"{end} ({reason})" : end;
    }

    private static string Count(long count, string singular, string plural)
        => string.Create(CultureInfo.InvariantCulture, $"{count:N0} {(count == 1 ? singular : plural)}");
}

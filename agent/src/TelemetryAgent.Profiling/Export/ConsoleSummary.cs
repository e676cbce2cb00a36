using System.Globalization;
using System.Text;
using TelemetryAgent.Aggregation;

namespace TelemetryAgent.Export;

/// <summary>The text <c>telemetry-agent run</c> prints when the program ends: what was recorded, then the
/// functions with the most self time as an aligned table.</summary>
public static class ConsoleSummary
{
    public const int DefaultTopFunctions = 20;

    public static string Format(RunSummary summary, int topFunctions = DefaultTopFunctions)
    {
        ArgumentNullException.ThrowIfNull(summary);
        ArgumentOutOfRangeException.ThrowIfNegative(topFunctions);
        var text = new StringBuilder();
        var culture = CultureInfo.InvariantCulture;

        text.Append(culture, $"Profiled {Count(summary.Processes.Count, "process", "processes")}, ")
            .Append(culture, $"{Count(summary.Threads, "thread", "threads")} for {TimeFormat.Nanoseconds(summary.DurationNs)}")
            .Append('\n');
        text.Append(culture, $"Events received: {summary.EventsReceived:N0}; dropped by the shim: {summary.EventsDropped:N0}");
        if (summary.EventsDropped > 0)
        {
            var share = 100.0 * summary.EventsDropped / Math.Max(1.0, summary.EventsReceived + (double)summary.EventsDropped);
            text.Append(culture, $" ({share:F2}%: counts and times are lower bounds)");
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
                .Append(culture, $"{process.EventsReceived:N0} events, ended: {EndText(process)}\n");
        }
        if (summary.RunningProcessesLeftOut > 0)
        {
            text.Append(culture, $"  ({Count(summary.RunningProcessesLeftOut, "process", "processes")} still connected, not included)\n");
        }

        var top = summary.Functions.Take(topFunctions).ToArray();
        if (top.Length == 0)
        {
            text.Append("No function calls were recorded.\n");
            return text.ToString();
        }

        text.Append('\n').Append(culture, $"Top {top.Length} functions by self time:\n");
        string[] headers = ["calls", "self time", "total time", "location", "function"];
        var rows = top.Select(stats => new[]
        {
            stats.Calls.ToString("N0", culture),
            TimeFormat.Nanoseconds(stats.SelfNs),
            TimeFormat.Nanoseconds(stats.TotalNs),
            string.Create(culture, $"{stats.Function.DisplayFile}:{stats.Function.FirstLine}"),
            stats.Function.QualifiedName,
        }).ToArray();
        var widths = headers.Select((header, column) => Math.Max(header.Length, rows.Max(row => row[column].Length))).ToArray();

        AppendRow(text, headers, widths);
        foreach (var row in rows) AppendRow(text, row, widths);
        return text.ToString();
    }

    // Numbers right-aligned, names left-aligned; the last column is not padded.
    private static void AppendRow(StringBuilder text, string[] cells, int[] widths)
    {
        text.Append("  ")
            .Append(cells[0].PadLeft(widths[0])).Append("  ")
            .Append(cells[1].PadLeft(widths[1])).Append("  ")
            .Append(cells[2].PadLeft(widths[2])).Append("  ")
            .Append(cells[3].PadRight(widths[3])).Append("  ")
            .Append(cells[4])
            .Append('\n');
    }

    private static string EndText(ProcessProfile process)
    {
        var end = process.End?.ToString() ?? "still running";
        return process.GoodbyeReason is { } reason ? $"{end} ({reason})" : end;
    }

    private static string Count(long count, string singular, string plural)
        => string.Create(CultureInfo.InvariantCulture, $"{count} {(count == 1 ? singular : plural)}");
}

using System.Globalization;

namespace TelemetryAgent.Profiling.Formats;

/// <summary>The names that every output gives to processes and threads, in one place.</summary>
public static class ProfileLabels
{
    /// <summary>
    /// <c>&lt;service&gt; (pid N)</c>; <c>(pid N, sampled)</c> when the call trees are burst mode's scaled estimates and
    /// <c>filtered</c> when code filters left code out, so that every output (folded stacks, flame graphs, speedscope,
    /// summaries) says so.
    /// </summary>
    public static string Process(ProcessProfile profile)
    {
        ArgumentNullException.ThrowIfNull(profile);
        var recording = profile.Recording;
        var notes = (recording.IsSampled ? ", sampled" : "") + (recording.IsFiltered ? ", filtered" : "");
        return string.Create(CultureInfo.InvariantCulture, $"{profile.Identity.ServiceName} (pid {profile.Identity.Pid}{notes})");
    }

    /// <summary>
    /// One line per fact about how the process was recorded that changes how its numbers read: burst windows and
    /// their scale, the shim's overhead against its budget, exceptions only, code filters. Empty for a full recording.
    /// </summary>
    public static IReadOnlyList<string> RecordingNotes(ProcessProfile profile)
    {
        ArgumentNullException.ThrowIfNull(profile);
        var culture = CultureInfo.InvariantCulture;
        var recording = profile.Recording;
        var notes = new List<string>();
        if (recording.IsSampled)
        {
            var windows = profile.Windows;
            notes.Add(string.Create(culture,
                $"burst mode: {windows.Count:N0} windows covered {TimeFormat.Nanoseconds(windows.CoveredNs)} of {TimeFormat.Nanoseconds(windows.RepresentedNs)} ({100 * windows.DutyCycle:F2}%); calls and times are estimates, scaled x{windows.Scale:F1}"));
        }
        else if (!recording.RecordsCalls)
        {
            notes.Add("exceptions mode: no calls recorded");
        }
        if (profile.ShimStats.AchievedOverhead is { } overhead && recording.RecordsCalls)
        {
            var budget = recording.OverheadBudgetPpm > 0
                ? string.Create(culture, $" (budget {recording.OverheadBudgetPpm / 10_000.0:0.##}%)")
                : "";
            notes.Add(string.Create(culture, $"shim overhead: {100 * overhead:F2}% of wall time, its own estimate{budget}"));
        }
        if (recording.IsFiltered)
        {
            var include = recording.Include.Count > 0 ? "include " + string.Join(", ", recording.Include) : "";
            var exclude = recording.Exclude.Count > 0 ? "exclude " + string.Join(", ", recording.Exclude) : "";
            var both = include.Length > 0 && exclude.Length > 0 ? "; " : "";
            notes.Add($"filters: {include}{both}{exclude} (left-out code's time is its nearest recorded caller's self time)");
        }
        return notes;
    }

    /// <summary><c>thread &lt;name&gt;</c>; a thread the shim gave no name is named by its id.</summary>
    public static string Thread(ThreadProfile thread)
    {
        ArgumentNullException.ThrowIfNull(thread);
        return thread.Name.Length > 0
            ? "thread " + thread.Name
            : string.Create(CultureInfo.InvariantCulture, $"thread #{thread.Id}");
    }

    /// <summary>
    /// A frame name made safe for the folded format, where <c>;</c> separates frames and a line ends a stack.
    /// </summary>
    public static string ForFoldedStack(string label)
    {
        if (label.AsSpan().IndexOfAny(";\r\n") < 0) return label;
        return label.Replace(';', ',').Replace('\r', ' ').Replace('\n', ' ');
    }
}

namespace TelemetryAgent.Profiling;

/// <summary>
/// What the shim recorded, as HELLO said (proto/PROTOCOL.md "Modes"): every call, calls in burst windows (scaled
/// estimates), or exceptions only; and the code filters it applied.
/// </summary>
public sealed record RecordingMode(
    string Mode,
    long WindowNs,
    long PeriodNs,
    uint OverheadBudgetPpm,
    IReadOnlyList<string> Include,
    IReadOnlyList<string> Exclude)
{
    public const string Full = "full";
    public const string Burst = "burst";
    public const string ExceptionsOnly = "exceptions";

    public static readonly RecordingMode FullMode = new(Full, 0, 0, 0, [], []);

    /// <summary>Call trees come from windows and are scaled to the whole run.</summary>
    public bool IsSampled => Mode == Burst;

    /// <summary>The shim sent no call events at all.</summary>
    public bool RecordsCalls => Mode != ExceptionsOnly;

    /// <summary>Some code was left out of the call trees (its time is its nearest recorded caller's).</summary>
    public bool IsFiltered => Include.Count > 0 || Exclude.Count > 0;

    /// <summary>
    /// Which of the shim's callbacks recorded: <see cref="NativeCallbacks"/> or <see cref="PythonCallbacks"/> (same
    /// records, different cost); empty when the shim did not say.
    /// </summary>
    public string Callbacks { get; init; } = "";

    public const string NativeCallbacks = "native";
    public const string PythonCallbacks = "python";
}

/// <summary>
/// Burst mode's windows as the agent measured them from the WINDOW_START/WINDOW_END records, and the factor that
/// scaled the call trees (proto/PROTOCOL.md "Burst mode").
/// </summary>
public sealed class SamplingWindows
{
    /// <summary>Windows opened.</summary>
    public long Count { get; internal set; }
    /// <summary>Sum of the windows' lengths: the time the call trees actually saw.</summary>
    public long CoveredNs { get; internal set; }
    /// <summary>The span the windows stand for: from the first window (or HELLO's clock) to the end of the connection.</summary>
    public long RepresentedNs { get; internal set; }
    /// <summary>Times and call counts were multiplied by this (1 until the profile completes, and when nothing was covered).</summary>
    public double Scale { get; internal set; } = 1.0;
    /// <summary>Event records that arrived outside any window, skipped.</summary>
    public long EventsOutsideWindows { get; internal set; }
    /// <summary>Exact call events seen inside windows (START), before scaling.</summary>
    public long CallsInWindows { get; internal set; }

    /// <summary>Share of the represented span the windows covered.</summary>
    public double DutyCycle => RepresentedNs > 0 ? (double)CoveredNs / RepresentedNs : 0.0;

    internal SamplingWindows Copy() => (SamplingWindows)MemberwiseClone();
}

/// <summary>Turns burst windows' exact trees into estimates for the whole run: every count and time times one factor.</summary>
internal static class SampleScaling
{
    /// <summary>
    /// Sets the windows' represented span and scale, counts the exact calls seen, then multiplies every node's calls,
    /// resumes and times (rounded). Runs once, when the session completes, before anyone reads the profile.
    /// </summary>
    public static void Apply(ProcessProfile profile, long representedNs)
    {
        var windows = profile.Windows;
        windows.RepresentedNs = Math.Max(representedNs, windows.CoveredNs);
        windows.Scale = Scale(windows.CoveredNs, representedNs);
        var pending = new Stack<CallNode>();
        foreach (var thread in profile.Threads) pending.Push(thread.Root);
        long calls = 0;
        var scale = windows.Scale;
        while (pending.Count > 0)
        {
            var node = pending.Pop();
            calls += node.Calls;
            node.Calls = Scaled(node.Calls, scale);
            node.Resumes = Scaled(node.Resumes, scale);
            node.SelfNs = Scaled(node.SelfNs, scale);
            node.TotalNs = Scaled(node.TotalNs, scale);
            foreach (var child in node.Children) pending.Push(child);
        }
        windows.CallsInWindows = calls;
    }

    /// <summary>What figures seen in windows covering <paramref name="coveredNs"/> are multiplied by to stand for <paramref name="representedNs"/>.</summary>
    public static double Scale(long coveredNs, long representedNs)
        => coveredNs > 0 ? (double)Math.Max(representedNs, coveredNs) / coveredNs : 1.0;

    public static long Scaled(long value, double scale) => value == 0 ? 0 : (long)Math.Round(value * scale);
}

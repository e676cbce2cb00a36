using TelemetryAgent.Aggregation;

namespace TelemetryAgent.Export;

/// <summary>Writes flamegraph.html: one self-contained interactive page (no network access).</summary>
public static class FlameGraphHtmlWriter
{
    /// <summary>Writes the page for the tree under <paramref name="root"/> (its children are the flame graph's
    /// bottom row, typically one per process).</summary>
    public static void Write(TextWriter output, CallNode root, string title)
        => throw new NotImplementedException("flamegraph.html writer: in progress");
}

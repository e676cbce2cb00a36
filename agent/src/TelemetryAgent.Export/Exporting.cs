namespace TelemetryAgent.Export;

/// <summary>What the exporters share about waiting for their own work.</summary>
internal static class Exporting
{
    /// <summary>
    /// Waits for all of <paramref name="work"/> (or the first of them, when <paramref name="any"/>) until the deadline;
    /// neither its failures nor the deadline throw.
    /// </summary>
    public static async Task WaitQuietlyAsync(IEnumerable<Task> work, CancellationToken deadline, bool any = false)
    {
        try
        {
            await (any ? Task.WhenAny(work) : Task.WhenAll(work)).WaitAsync(deadline).ConfigureAwait(false);
        }
        catch (Exception)
        {
            // Each exporter reports its own failures; the deadline is the caller's to see.
        }
    }
}

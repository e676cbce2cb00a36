namespace TelemetryAgent.Profiling;

/// <summary>
/// Exceptions counted by what finally happened to them. Counts saturate at <see cref="long.MaxValue"/> instead of
/// wrapping: tallies carry counts the peer chose.
/// </summary>
public sealed class FateCounts
{
    public long Handled { get; private set; }
    /// <summary>Uncaught in a thread other than the main one.</summary>
    public long EscapedThread { get; private set; }
    /// <summary>Uncaught in the main thread: the program ended with it.</summary>
    public long EscapedProgram { get; private set; }
    /// <summary>Reported through <c>sys.unraisablehook</c> (raised in <c>__del__</c>, a callback, ...).</summary>
    public long Unraisable { get; private set; }
    /// <summary>Reached an asyncio event loop's exception handler.</summary>
    public long AsyncioUnhandled { get; private set; }
    /// <summary>Still propagating when the process or the shim ended.</summary>
    public long InFlight { get; private set; }
    /// <summary>A fate this agent does not know (unspecified, or from a newer shim).</summary>
    public long Unknown { get; private set; }

    public long Escaped => Saturating(EscapedThread, EscapedProgram);

    public long Total
        => Saturating(Saturating(Saturating(Handled, Escaped), Saturating(Unraisable, AsyncioUnhandled)), Saturating(InFlight, Unknown));

    internal void Add(Fate fate, long count)
    {
        switch (fate)
        {
            case Fate.Handled: Handled = Saturating(Handled, count); break;
            case Fate.EscapedThread: EscapedThread = Saturating(EscapedThread, count); break;
            case Fate.EscapedProgram: EscapedProgram = Saturating(EscapedProgram, count); break;
            case Fate.Unraisable: Unraisable = Saturating(Unraisable, count); break;
            case Fate.AsyncioUnhandled: AsyncioUnhandled = Saturating(AsyncioUnhandled, count); break;
            case Fate.InFlight: InFlight = Saturating(InFlight, count); break;
            default: Unknown = Saturating(Unknown, count); break;
        }
    }

    /// <summary>Every fate with its count, in the order the outputs list them (<see cref="Fate.Unknown"/> last).</summary>
    public IEnumerable<(Fate Fate, long Count)> ByFate()
    {
        yield return (Fate.Handled, Handled);
        yield return (Fate.EscapedThread, EscapedThread);
        yield return (Fate.EscapedProgram, EscapedProgram);
        yield return (Fate.Unraisable, Unraisable);
        yield return (Fate.AsyncioUnhandled, AsyncioUnhandled);
        yield return (Fate.InFlight, InFlight);
        yield return (Fate.Unknown, Unknown);
    }

    internal FateCounts Copy()
    {
        var copy = new FateCounts();
        copy.Add(this);
        return copy;
    }

    /// <summary>What was counted since <paramref name="earlier"/> (a copy taken before): each fate's difference, never below 0.</summary>
    internal FateCounts Since(FateCounts earlier)
    {
        var since = new FateCounts
        {
            Handled = Math.Max(0, Handled - earlier.Handled),
            EscapedThread = Math.Max(0, EscapedThread - earlier.EscapedThread),
            EscapedProgram = Math.Max(0, EscapedProgram - earlier.EscapedProgram),
            Unraisable = Math.Max(0, Unraisable - earlier.Unraisable),
            AsyncioUnhandled = Math.Max(0, AsyncioUnhandled - earlier.AsyncioUnhandled),
            InFlight = Math.Max(0, InFlight - earlier.InFlight),
            Unknown = Math.Max(0, Unknown - earlier.Unknown),
        };
        return since;
    }

    internal void Add(FateCounts other)
    {
        Handled = Saturating(Handled, other.Handled);
        EscapedThread = Saturating(EscapedThread, other.EscapedThread);
        EscapedProgram = Saturating(EscapedProgram, other.EscapedProgram);
        Unraisable = Saturating(Unraisable, other.Unraisable);
        AsyncioUnhandled = Saturating(AsyncioUnhandled, other.AsyncioUnhandled);
        InFlight = Saturating(InFlight, other.InFlight);
        Unknown = Saturating(Unknown, other.Unknown);
    }

    /// <summary>Adds two non-negative counts, stopping at <see cref="long.MaxValue"/>.</summary>
    internal static long Saturating(long a, long b) => a > long.MaxValue - b ? long.MaxValue : a + b;
}

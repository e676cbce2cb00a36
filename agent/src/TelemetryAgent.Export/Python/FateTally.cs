using TelemetryAgent.Profiling;
using TelemetryAgent.Profiling.Formats;

namespace TelemetryAgent.Export.Python;

/// <summary>A copy of a <see cref="FateCounts"/>, to subtract one export's counts from the next one's.</summary>
internal readonly record struct FateTally(
    long Handled, long EscapedThread, long EscapedProgram, long Unraisable, long AsyncioUnhandled, long InFlight, long Unknown)
{
    public static FateTally Of(FateCounts counts) => new(counts.Handled, counts.EscapedThread, counts.EscapedProgram,
        counts.Unraisable, counts.AsyncioUnhandled, counts.InFlight, counts.Unknown);

    public long Total => Saturating(Saturating(Saturating(Handled, EscapedThread), Saturating(EscapedProgram, Unraisable)),
        Saturating(Saturating(AsyncioUnhandled, InFlight), Unknown));

    /// <summary>Exceptions that escaped a thread or the program, or reached a hook (unraisable, asyncio).</summary>
    public long Uncaught => Saturating(Saturating(EscapedThread, EscapedProgram), Saturating(Unraisable, AsyncioUnhandled));

    public FateTally Minus(FateTally earlier) => new(Handled - earlier.Handled, EscapedThread - earlier.EscapedThread,
        EscapedProgram - earlier.EscapedProgram, Unraisable - earlier.Unraisable, AsyncioUnhandled - earlier.AsyncioUnhandled,
        InFlight - earlier.InFlight, Unknown - earlier.Unknown);

    /// <summary>The fates with a count, named as exceptions.json names them.</summary>
    public IEnumerable<(string Fate, long Count)> NonZero()
    {
        (Fate, long)[] all =
        [
            (Fate.Handled, Handled), (Fate.EscapedThread, EscapedThread),
            (Fate.EscapedProgram, EscapedProgram), (Fate.Unraisable, Unraisable),
            (Fate.AsyncioUnhandled, AsyncioUnhandled), (Fate.InFlight, InFlight),
            (Fate.Unknown, Unknown),
        ];
        return all.Where(entry => entry.Item2 != 0).Select(entry => (FateNames.Of(entry.Item1), entry.Item2));
    }

    public static long Saturating(long a, long b) => a > long.MaxValue - b ? long.MaxValue : a + b;
}

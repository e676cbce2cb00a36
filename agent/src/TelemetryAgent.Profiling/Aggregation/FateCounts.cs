using TelemetryAgent.Protocol.Messages;

namespace TelemetryAgent.Aggregation;

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

    internal void Add(ExceptionFate fate, long count)
    {
        switch (fate)
        {
            case ExceptionFate.FateHandled: Handled = Saturating(Handled, count); break;
            case ExceptionFate.FateEscapedThread: EscapedThread = Saturating(EscapedThread, count); break;
            case ExceptionFate.FateEscapedProgram: EscapedProgram = Saturating(EscapedProgram, count); break;
            case ExceptionFate.FateUnraisable: Unraisable = Saturating(Unraisable, count); break;
            case ExceptionFate.FateAsyncioUnhandled: AsyncioUnhandled = Saturating(AsyncioUnhandled, count); break;
            case ExceptionFate.FateInFlight: InFlight = Saturating(InFlight, count); break;
            default: Unknown = Saturating(Unknown, count); break;
        }
    }

    internal FateCounts Copy()
    {
        var copy = new FateCounts();
        copy.Add(this);
        return copy;
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

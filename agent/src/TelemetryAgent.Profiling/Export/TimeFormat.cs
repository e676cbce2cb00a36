using System.Globalization;

namespace TelemetryAgent.Export;

/// <summary>Durations for people: three significant digits in ns, us, ms or s (e.g. <c>812 ns</c>, <c>1.50 ms</c>).</summary>
public static class TimeFormat
{
    public static string Nanoseconds(long nanoseconds)
    {
        if (nanoseconds < 0) return "-" + Nanoseconds(-Math.Max(nanoseconds, -long.MaxValue));
        if (nanoseconds < 1_000) return nanoseconds.ToString(CultureInfo.InvariantCulture) + " ns";
        if (nanoseconds < 999_500) return Scaled(nanoseconds / 1e3, "us");
        if (nanoseconds < 999_500_000) return Scaled(nanoseconds / 1e6, "ms");
        return Scaled(nanoseconds / 1e9, "s");
    }

    private static string Scaled(double value, string unit)
    {
        var format = value < 9.995 ? "F2" : value < 99.95 ? "F1" : "F0";
        return value.ToString(format, CultureInfo.InvariantCulture) + " " + unit;
    }
}

using System.Globalization;

namespace TelemetryAgent.Profiling.Formats;

/// <summary>Times as the outputs write them: durations for people, wall-clock times for tools.</summary>
public static class TimeFormat
{
    /// <summary>Three significant digits in ns, us, ms or s (e.g. <c>812 ns</c>, <c>1.50 ms</c>).</summary>
    public static string Nanoseconds(long nanoseconds)
    {
        if (nanoseconds < 0) return "-" + Nanoseconds(-Math.Max(nanoseconds, -long.MaxValue));
        if (nanoseconds < 1_000) return nanoseconds.ToString(CultureInfo.InvariantCulture) + " ns";
        if (nanoseconds < 999_500) return Scaled(nanoseconds / 1e3, "us");
        if (nanoseconds < 999_500_000) return Scaled(nanoseconds / 1e6, "ms");
        return Scaled(nanoseconds / 1e9, "s");
    }

    /// <summary>ISO 8601 in UTC with seven fractional digits (e.g. <c>2025-03-14T09:26:53.0020000Z</c>).</summary>
    public static string Iso(DateTimeOffset time)
        => time.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss.fffffff'Z'", CultureInfo.InvariantCulture);

    private static string Scaled(double value, string unit)
    {
        var format = value < 9.995 ? "F2" : value < 99.95 ? "F1" : "F0";
        return value.ToString(format, CultureInfo.InvariantCulture) + " " + unit;
    }
}

using System.Globalization;
using TelemetryAgent.Aggregation;

namespace TelemetryAgent.Export;

/// <summary>The names that every output gives to processes and threads, in one place.</summary>
public static class ProfileLabels
{
    /// <summary><c>&lt;service&gt; (pid N)</c>.</summary>
    public static string Process(ProcessProfile profile)
    {
        ArgumentNullException.ThrowIfNull(profile);
        return string.Create(CultureInfo.InvariantCulture, $"{profile.Identity.ServiceName} (pid {profile.Identity.Pid})");
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

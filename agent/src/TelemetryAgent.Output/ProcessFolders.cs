using TelemetryAgent.Profiling;

namespace TelemetryAgent.Output;

/// <summary>
/// One folder per process under a root, <c>&lt;service&gt;-&lt;pid&gt;-&lt;local time&gt;-&lt;sequence&gt;/</c>, each appearing
/// only once complete (<see cref="FolderExporter.WriteWhole"/>). As an observer (`serve`) it writes each process's
/// folder when the process ends, on that connection's task.
/// </summary>
/// <param name="log">Where each written folder is reported.</param>
/// <param name="problems">Where what could not be written is reported (a log that tells levels apart); null: <paramref name="log"/>.</param>
public sealed class ProcessFolders(FolderExporter exporter, string root, TextWriter log, TimeProvider? time = null, TextWriter? problems = null)
    : IProcessObserver
{
    private readonly TimeProvider _time = time ?? TimeProvider.System;
    private long _written;

    public void OnStarted(ProcessProfile running) { }

    public void OnCheckpoint(ProcessProfile checkpoint) { }

    public void OnCompleted(ProcessProfile completed) => Write(completed);

    /// <summary>Writes the folder of one frozen profile (a completed process, or a running one's checkpoint) and logs
    /// what could not be written.</summary>
    public OutputReport Write(ProcessProfile frozen)
    {
        ArgumentNullException.ThrowIfNull(frozen);
        var identity = frozen.Identity;
        // The sequence number keeps two connections of one process (a reconnect) apart.
        var folderName = FolderName(identity, _time.GetLocalNow(), Interlocked.Increment(ref _written).ToString(System.Globalization.CultureInfo.InvariantCulture));
        var run = OutputRun.Create([frozen], _time, frozen.ConnectedAt, frozen.EndedAt ?? frozen.CheckpointTakenAt ?? _time.GetUtcNow());
        var report = exporter.WriteWhole(Path.Combine(root, folderName), run);
        report.LogProblems(problems ?? log);
        if (report.FolderError is null) log.WriteLine($"telemetry-agent: wrote {report.Folder}/");
        return report;
    }

    /// <summary>A process's folder name: <c>&lt;service&gt;-&lt;pid&gt;-&lt;local time&gt;-&lt;suffix&gt;</c>.</summary>
    public static string FolderName(ProcessIdentity identity, DateTimeOffset localTime, string suffix)
    {
        ArgumentNullException.ThrowIfNull(identity);
        return $"{Sanitize(identity.ServiceName)}-{identity.Pid}-{localTime:yyyyMMdd-HHmmss}-{suffix}";
    }

    private static string Sanitize(string name)
    {
        var chars = name.Select(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.' ? c : '_').ToArray();
        return chars.Length == 0 ? "python" : new string(chars);
    }
}

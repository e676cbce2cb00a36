using System.Text;
using TelemetryAgent.Aggregation;

namespace TelemetryAgent.Export;

/// <summary>Settings of <see cref="OutputWriter.WriteAll(string, IReadOnlyList{ProcessProfile}, OutputOptions?)"/>.</summary>
public sealed record OutputOptions
{
    /// <summary>Functions listed in summary.json.</summary>
    public int TopFunctions { get; init; } = 200;
    /// <summary>Exception groups listed in summary.json (exceptions.json lists them all).</summary>
    public int TopExceptionGroups { get; init; } = SummaryJsonWriter.DefaultTopExceptionGroups;
    /// <summary>The flame graph's and speedscope file's title; by default derived from the processes.</summary>
    public string? Title { get; init; }
    /// <summary>The run's span; by default from the first connection to the last disconnection.</summary>
    public DateTimeOffset? RunStartedAt { get; init; }
    public DateTimeOffset? RunEndedAt { get; init; }
    /// <summary>Connections that ended before HELLO, by end label (from <see cref="ProfileStoreSnapshot"/>).</summary>
    public IReadOnlyDictionary<string, long>? ConnectionsWithoutHello { get; init; }
    /// <summary>The clock that stamps outputs (fixed in tests).</summary>
    public TimeProvider Time { get; init; } = TimeProvider.System;
    public string Exporter { get; init; } = "telemetry-agent";
    /// <summary>Files written by other assemblies' writers (profile.pb.gz), after the built-in ones.</summary>
    public IReadOnlyList<AdditionalOutput> AdditionalFiles { get; init; } = [];
}

/// <summary>A file that <see cref="OutputWriter"/> writes with a writer it does not know (same temporary-name rule).</summary>
public sealed record AdditionalOutput(string Name, Action<Stream, IReadOnlyList<ProcessProfile>> Write);

/// <summary>One output file: where it went, or why it could not be written.</summary>
public sealed record OutputFile(string Name, string Path, string? Error)
{
    public bool Succeeded => Error is null;
}

/// <summary>What <see cref="OutputWriter"/> did: every file, written or not, and the run's summary.</summary>
public sealed record OutputReport(IReadOnlyList<OutputFile> Files, RunSummary Summary)
{
    public bool AllSucceeded => Files.All(file => file.Succeeded);
}

/// <summary>
/// Writes every output of a run into one folder: profile.folded, calls.folded, profile.speedscope.json,
/// summary.json, exceptions.json and flamegraph.html, then <see cref="OutputOptions.AdditionalFiles"/>. Never throws
/// for a failing file: each file is written on its own (to a temporary name, then renamed, so a reader never sees half
/// a file) and failures are reported per file.
/// </summary>
public static class OutputWriter
{
    public const string ProfileFolded = "profile.folded";
    public const string CallsFolded = "calls.folded";
    public const string Speedscope = "profile.speedscope.json";
    public const string SummaryJson = "summary.json";
    public const string FlameGraphHtml = "flamegraph.html";
    public const string ExceptionsJson = "exceptions.json";

    /// <summary>Every file <see cref="WriteAll"/> writes, in the order it writes them.</summary>
    public static IReadOnlyList<string> FileNames { get; } = [ProfileFolded, CallsFolded, Speedscope, SummaryJson, ExceptionsJson, FlameGraphHtml];

    private static readonly UTF8Encoding Utf8NoBom = new(encoderShouldEmitUTF8Identifier: false);

    public static OutputReport WriteAll(string folder, IReadOnlyList<ProcessProfile> profiles, OutputOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(folder);
        ArgumentNullException.ThrowIfNull(profiles);
        options ??= new OutputOptions();
        var summary = RunSummary.Create(profiles, options.Time.GetUtcNow(), options.RunStartedAt, options.RunEndedAt);
        var processes = summary.Processes;
        var title = options.Title ?? DefaultTitle(processes);

        var files = new List<OutputFile>();
        try
        {
            Directory.CreateDirectory(folder);
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            foreach (var name in FileNames.Concat(options.AdditionalFiles.Select(file => file.Name)))
            {
                files.Add(new OutputFile(name, Path.Combine(folder, name), $"cannot create the folder: {error.Message}"));
            }
            return new OutputReport(files, summary);
        }

        files.Add(WriteText(folder, ProfileFolded, text => FoldedStacksWriter.Write(text, processes, FoldedWeight.SelfNanoseconds)));
        files.Add(WriteText(folder, CallsFolded, text => FoldedStacksWriter.Write(text, processes, FoldedWeight.Calls)));
        files.Add(WriteBinary(folder, Speedscope, stream => SpeedscopeWriter.Write(stream, processes, title, options.Exporter)));
        files.Add(WriteBinary(folder, SummaryJson,
            stream => SummaryJsonWriter.Write(stream, summary, options.TopFunctions, options.ConnectionsWithoutHello, options.TopExceptionGroups)));
        files.Add(WriteBinary(folder, ExceptionsJson, stream => ExceptionsJsonWriter.Write(stream, summary)));
        files.Add(WriteText(folder, FlameGraphHtml,
            text => FlameGraphHtmlWriter.Write(text, MergedTree(processes), title, options.Time.GetUtcNow())));
        foreach (var additional in options.AdditionalFiles)
        {
            files.Add(WriteBinary(folder, additional.Name, stream => additional.Write(stream, processes)));
        }
        return new OutputReport(files, summary);
    }

    /// <summary>
    /// One tree for all processes: root, then <c>&lt;service&gt; (pid N)</c>, then <c>thread &lt;name&gt;</c>, then
    /// the thread's frames. Equal functions of different processes share nodes; so do processes and threads with
    /// the same label. Group totals are the sums of their children's.
    /// </summary>
    public static CallNode MergedTree(IReadOnlyList<ProcessProfile> processes)
    {
        ArgumentNullException.ThrowIfNull(processes);
        var root = CallNode.CreateRoot("all");
        var canonical = new Dictionary<FunctionInfo, FunctionInfo>();
        FunctionInfo Canonical(FunctionInfo function)
        {
            if (canonical.TryGetValue(function, out var known)) return known;
            canonical.Add(function, function);
            return function;
        }

        foreach (var process in processes)
        {
            var processNode = root.GetOrAddGroup(ProfileLabels.Process(process));
            foreach (var thread in process.Threads)
            {
                processNode.GetOrAddGroup(ProfileLabels.Thread(thread)).MergeFrom(thread.Root, Canonical);
            }
        }
        foreach (var processNode in root.Children)
        {
            processNode.TotalNs = processNode.Children.Sum(thread => thread.TotalNs);
        }
        root.TotalNs = root.Children.Sum(process => process.TotalNs);
        return root;
    }

    private static string DefaultTitle(IReadOnlyList<ProcessProfile> processes) => processes.Count switch
    {
        0 => "TelemetryAgent profile (no processes)",
        1 => ProfileLabels.Process(processes[0]),
        2 => $"{ProfileLabels.Process(processes[0])} and 1 other process",
        _ => $"{ProfileLabels.Process(processes[0])} and {processes.Count - 1} other processes",
    };

    private static OutputFile WriteText(string folder, string name, Action<TextWriter> write)
        => WriteBinary(folder, name, stream =>
        {
            using var text = new StreamWriter(stream, Utf8NoBom, bufferSize: 1 << 16, leaveOpen: true);
            write(text);
        });

    private static OutputFile WriteBinary(string folder, string name, Action<Stream> write)
    {
        var path = Path.Combine(folder, name);
        var temporary = path + ".tmp";
        try
        {
            using (var stream = new FileStream(temporary, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16))
            {
                write(stream);
            }
            File.Move(temporary, path, overwrite: true);
            return new OutputFile(name, path, null);
        }
        catch (Exception error)
        {
            // Any failure (disk, permissions, a writer's bug) costs this file only.
            TryDelete(temporary);
            return new OutputFile(name, path, $"{error.GetType().Name}: {error.Message}");
        }
    }

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException)
        {
            // Best effort: the temporary file is only litter.
        }
    }
}

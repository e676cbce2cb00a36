using System.Globalization;
using System.Text.Json;
using TelemetryAgent.Profiling;
using TelemetryAgent.Profiling.Formats;

namespace TelemetryAgent.Output;

/// <summary>
/// summary.json: the run, each process (identity, threads, counters, how its connection ended), totals
/// and the functions with the most self time. Property names are snake_case and stable: tools read them.
/// Wall-clock times are ISO 8601 UTC strings; durations and times are integer nanoseconds.
/// </summary>
/// <param name="topFunctions">Functions listed, by self time.</param>
/// <param name="topExceptionGroups">Exception groups listed in the "exceptions" section (exceptions.json has them all).</param>
public sealed class SummaryJsonFile(int topFunctions = SummaryJsonFile.DefaultTopFunctions,
    int topExceptionGroups = SummaryJsonFile.DefaultTopExceptionGroups) : IOutputFile
{
    public const string FileName = "summary.json";
    public const int FormatVersion = 1;
    public const int DefaultTopFunctions = 200;
    public const int DefaultTopExceptionGroups = 20;

    public string Name => FileName;

    public void Write(Stream output, OutputRun run)
    {
        ArgumentNullException.ThrowIfNull(output);
        ArgumentOutOfRangeException.ThrowIfNegative(topFunctions);
        ArgumentOutOfRangeException.ThrowIfNegative(topExceptionGroups);
        var summary = run.Summary;
        var connectionsWithoutHello = summary.ConnectionsWithoutHello;

        using var json = new Utf8JsonWriter(output, JsonOutput.Options);
        json.WriteStartObject();
        json.WriteNumber("format_version", FormatVersion);

        json.WriteStartObject("run");
        json.WriteString("started_at", TimeFormat.Iso(summary.StartedAt));
        json.WriteString("ended_at", TimeFormat.Iso(summary.EndedAt));
        json.WriteNumber("duration_ns", summary.DurationNs);
        json.WriteEndObject();

        json.WriteStartObject("totals");
        json.WriteNumber("processes", summary.Processes.Count);
        json.WriteNumber("threads", summary.Threads);
        json.WriteNumber("functions", summary.Functions.Count);
        json.WriteNumber("calls", summary.Calls);
        WriteEventCounters(json, summary.EventsReceived, summary.EventsDropped, summary.ImplicitExits, summary.UnmatchedExits,
            summary.ClampedTimestamps, summary.DepthLimitedPushes);
        json.WriteNumber("running_processes_left_out", summary.RunningProcessesLeftOut);
        json.WriteStartObject("connections_without_hello");
        foreach (var (label, count) in connectionsWithoutHello.OrderBy(pair => pair.Key, StringComparer.Ordinal))
        {
            json.WriteNumber(label, count);
        }
        json.WriteEndObject();
        json.WriteEndObject();

        json.WriteStartArray("processes");
        foreach (var process in summary.Processes) WriteProcess(json, process);
        json.WriteEndArray();

        json.WriteStartArray("functions");
        foreach (var function in summary.Functions.Take(topFunctions)) WriteFunction(json, function);
        json.WriteEndArray();
        json.WriteBoolean("functions_truncated", summary.Functions.Count > topFunctions);

        WriteExceptions(json, summary, topExceptionGroups);
        json.WriteEndObject();
    }

    /// <summary>Totals by fate and the first groups in <see cref="ExceptionGroupOrder"/> (the program's first);
    /// exceptions.json has every group in full.</summary>
    private static void WriteExceptions(Utf8JsonWriter json, RunSummary summary, int topGroups)
    {
        json.WriteStartObject("exceptions");
        json.WriteNumber("total", summary.ExceptionFates.Total);
        json.WriteNumber("groups", summary.ExceptionGroups.Count);
        ExceptionsJsonFile.WriteFates(json, "by_fate", summary.ExceptionFates);
        json.WriteNumber("library_internal_groups", summary.LibraryInternalGroups);
        json.WriteNumber("library_internal_exceptions", summary.LibraryInternalFates.Total);
        json.WriteStartArray("top_groups");
        foreach (var (process, group) in summary.ExceptionGroups.Take(topGroups))
        {
            json.WriteStartObject();
            json.WriteString("process", ProfileLabels.Process(process));
            json.WriteNumber("pid", process.Identity.Pid);
            json.WriteString("fingerprint", group.Fingerprint);
            json.WriteBoolean("library_internal", group.IsLibraryInternal);
            json.WriteString("type", group.Kind == ExceptionAggregateKind.Other ? ProcessExceptions.OtherGroupName : group.TypeName);
            json.WriteString("raise_site", group.RaiseSite?.Site);
            json.WriteString("function", group.RaiseSite?.Function.QualifiedName);
            json.WriteNumber("count", group.Count);
            json.WriteNumber("handled", group.Fates.Handled);
            json.WriteNumber("escaped", group.Fates.Escaped);
            json.WriteString("first_note", group.Notes.Count > 0 ? group.Notes[0] : null);
            json.WriteString("sample_message", group.SampleMessages.Count > 0 ? group.SampleMessages[0] : null);
            json.WriteEndObject();
        }
        json.WriteEndArray();
        json.WriteBoolean("top_groups_truncated", summary.ExceptionGroups.Count > topGroups);
        json.WriteEndObject();
    }

    /// <summary>The mode, burst windows and their scale, the budget and the filters (proto/PROTOCOL.md "Modes").</summary>
    private static void WriteMode(Utf8JsonWriter json, ProcessProfile process)
    {
        var recording = process.Recording;
        json.WriteString("mode", recording.Mode);
        if (recording.Callbacks.Length > 0) json.WriteString("callbacks", recording.Callbacks);
        else json.WriteNull("callbacks");
        json.WriteBoolean("sampled", recording.IsSampled);
        if (recording.IsSampled)
        {
            var windows = process.Windows;
            json.WriteStartObject("windows");
            json.WriteNumber("configured_window_ns", recording.WindowNs);
            json.WriteNumber("configured_period_ns", recording.PeriodNs);
            json.WriteNumber("count", windows.Count);
            json.WriteNumber("covered_ns", windows.CoveredNs);
            json.WriteNumber("represented_ns", windows.RepresentedNs);
            json.WriteNumber("duty_cycle", Math.Round(windows.DutyCycle, 6));
            json.WriteNumber("scale", Math.Round(windows.Scale, 6));
            json.WriteNumber("calls_in_windows", windows.CallsInWindows);
            json.WriteNumber("events_outside_windows", windows.EventsOutsideWindows);
            json.WriteEndObject();
        }
        if (recording.OverheadBudgetPpm > 0) json.WriteNumber("overhead_budget", recording.OverheadBudgetPpm / 1e6);
        else json.WriteNull("overhead_budget");
        json.WriteStartObject("filters");
        json.WriteStartArray("include");
        foreach (var pattern in recording.Include) json.WriteStringValue(pattern);
        json.WriteEndArray();
        json.WriteStartArray("exclude");
        foreach (var pattern in recording.Exclude) json.WriteStringValue(pattern);
        json.WriteEndArray();
        json.WriteEndObject();
        json.WriteStartArray("notes");
        foreach (var note in ProfileLabels.RecordingNotes(process)) json.WriteStringValue(note);
        json.WriteEndArray();
    }

    private static void WriteProcess(Utf8JsonWriter json, ProcessProfile process)
    {
        var identity = process.Identity;
        json.WriteStartObject();
        json.WriteString("label", ProfileLabels.Process(process));
        json.WriteString("service_name", identity.ServiceName);
        json.WriteNumber("pid", identity.Pid);
        json.WriteNumber("parent_pid", identity.ParentPid);
        json.WriteStartArray("argv");
        foreach (var argument in identity.Argv) json.WriteStringValue(argument);
        json.WriteEndArray();
        json.WriteString("executable", identity.Executable);
        json.WriteString("python_implementation", identity.PythonImplementation);
        json.WriteString("python_version", identity.PythonVersion);
        json.WriteString("host_name", identity.HostName);
        json.WriteString("working_directory", identity.WorkingDirectory);
        json.WriteString("resource_attributes", identity.ResourceAttributes);
        json.WriteString("shim_version", identity.ShimVersion);
        if (identity.ProcessStartUnixNs > 0)
        {
            json.WriteString("process_started_at", TimeFormat.Iso(ClockMapping.FromUnixNs(identity.ProcessStartUnixNs)));
        }
        else
        {
            json.WriteNull("process_started_at");
        }

        json.WriteStartObject("connection");
        json.WriteString("connected_at", TimeFormat.Iso(process.ConnectedAt));
        json.WriteString("ended_at", process.EndedAt is { } endedAt ? TimeFormat.Iso(endedAt) : null);
        json.WriteString("end_reason", process.End?.Reason.ToString());
        json.WriteString("violation", process.End?.Violation?.ToString());
        json.WriteString("detail", process.End?.Detail);
        json.WriteString("goodbye_reason", process.GoodbyeReason);
        json.WriteString("goodbye_detail", process.GoodbyeDetail);
        if (process.Peer is { } peer)
        {
            // The kernel's word on who connected (SO_PEERCRED); a HELLO pid that differs is flagged here.
            json.WriteStartObject("peer");
            json.WriteNumber("pid", peer.Pid);
            json.WriteNumber("uid", peer.Uid);
            json.WriteNumber("gid", peer.Gid);
            json.WriteBoolean("pid_matches_hello", process.PeerPidMatches == true);
            json.WriteEndObject();
        }
        else
        {
            json.WriteNull("peer");
        }
        json.WriteEndObject();

        json.WriteStartObject("recording");
        if (process.FirstTimestampNs != 0)
        {
            json.WriteString("first_event_at", TimeFormat.Iso(process.Clock.ToWallTime(process.FirstTimestampNs)));
            json.WriteString("last_event_at", TimeFormat.Iso(process.Clock.ToWallTime(process.LastTimestampNs)));
        }
        else
        {
            json.WriteNull("first_event_at");
            json.WriteNull("last_event_at");
        }
        json.WriteNumber("duration_ns", process.DurationNs);
        WriteEventCounters(json, process.EventsReceived, process.EventsDropped, process.ImplicitExits, process.UnmatchedExits,
            process.ClampedTimestamps, process.DepthLimitedPushes);
        json.WriteNumber("frames_open_at_end", process.FramesOpenAtEnd);
        json.WriteNumber("call_tree_nodes", process.CallTreeNodes);
        json.WriteNumber("truncated_pushes", process.TruncatedPushes);
        json.WriteNumber("functions_defined", process.Functions.Count);
        WriteMode(json, process);
        json.WriteEndObject();

        var shim = process.ShimStats;
        json.WriteStartObject("shim_stats");
        json.WriteNumber("events_recorded", shim.EventsRecorded);
        json.WriteNumber("events_dropped", shim.EventsDropped);
        json.WriteNumber("events_sent", shim.EventsSent);
        json.WriteNumber("frames_sent", shim.FramesSent);
        json.WriteNumber("connects", shim.Connects);
        json.WriteNumber("callback_errors", shim.CallbackErrors);
        json.WriteNumber("overhead_ns", shim.OverheadNs);
        json.WriteNumber("elapsed_ns", shim.ElapsedNs);
        if (shim.AchievedOverhead is { } overhead) json.WriteNumber("overhead_achieved", Math.Round(overhead, 6));
        else json.WriteNull("overhead_achieved");
        json.WriteNumber("event_toggles", shim.EventToggles);
        json.WriteNumber("toggles_refused", shim.TogglesRefused);
        json.WriteEndObject();

        json.WriteStartArray("threads");
        foreach (var thread in process.Threads)
        {
            json.WriteStartObject();
            json.WriteNumber("id", thread.Id);
            json.WriteString("name", thread.Name);
            json.WriteString("label", ProfileLabels.Thread(thread));
            json.WriteNumber("ident", thread.Ident);
            json.WriteNumber("native_id", thread.NativeId);
            json.WriteBoolean("is_main", thread.IsMain);
            json.WriteNumber("events", thread.Events);
            json.WriteNumber("total_ns", thread.Root.TotalNs);
            json.WriteEndObject();
        }
        json.WriteEndArray();
        json.WriteEndObject();
    }

    /// <summary>The counters that say how complete the call trees are, named alike in totals and per process.</summary>
    private static void WriteEventCounters(Utf8JsonWriter json, long eventsReceived, ulong eventsDropped, long implicitExits,
        long unmatchedExits, long clampedTimestamps, long depthLimitedPushes)
    {
        json.WriteNumber("events_received", eventsReceived);
        json.WriteNumber("events_dropped", eventsDropped);
        json.WriteNumber("implicit_exits", implicitExits);
        json.WriteNumber("unmatched_exits", unmatchedExits);
        json.WriteNumber("clamped_timestamps", clampedTimestamps);
        json.WriteNumber("depth_limited_pushes", depthLimitedPushes);
    }

    private static void WriteFunction(Utf8JsonWriter json, FunctionStats stats)
    {
        var function = stats.Function;
        json.WriteStartObject();
        json.WriteString("label", function.Label);
        json.WriteString("qualified_name", function.QualifiedName);
        json.WriteString("module", function.Module);
        json.WriteString("file", function.DisplayFile);
        json.WriteString("path", function.FileName);
        json.WriteNumber("line", function.FirstLine);
        json.WriteNumber("calls", stats.Calls);
        json.WriteNumber("resumes", stats.Resumes);
        json.WriteNumber("self_ns", stats.SelfNs);
        json.WriteNumber("total_ns", stats.TotalNs);
        json.WriteEndObject();
    }
}

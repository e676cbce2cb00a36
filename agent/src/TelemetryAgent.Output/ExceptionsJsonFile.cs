using System.Text.Json;
using TelemetryAgent.Profiling;
using TelemetryAgent.Profiling.Formats;

namespace TelemetryAgent.Output;

/// <summary>
/// exceptions.json: every exception group of every process with its counts by fate, times, notes, sample
/// messages, handler locations and its latest exception in full (chain, group members, resolved tracebacks and
/// the Python-style traceback text). docs/exceptions.md documents every field; names are snake_case and stable.
/// </summary>
public sealed class ExceptionsJsonFile : IOutputFile
{
    public const string FileName = "exceptions.json";
    public const int FormatVersion = 1;

    public string Name => FileName;

    public void Write(Stream output, OutputRun run)
    {
        ArgumentNullException.ThrowIfNull(output);
        var summary = run.Summary;
        using var json = new Utf8JsonWriter(output, JsonOutput.Options);
        json.WriteStartObject();
        json.WriteNumber("format_version", FormatVersion);
        json.WriteStartObject("totals");
        json.WriteNumber("exceptions", summary.ExceptionFates.Total);
        json.WriteNumber("groups", summary.ExceptionGroups.Count);
        WriteFates(json, "by_fate", summary.ExceptionFates);
        json.WriteEndObject();

        json.WriteStartArray("processes");
        foreach (var process in summary.Processes)
        {
            json.WriteStartObject();
            json.WriteString("label", ProfileLabels.Process(process));
            json.WriteString("service_name", process.Identity.ServiceName);
            json.WriteNumber("pid", process.Identity.Pid);
            json.WriteNumber("exceptions", process.Exceptions.Count);
            WriteFates(json, "by_fate", process.Exceptions.Fates);
            json.WriteStartArray("groups");
            foreach (var group in ExceptionGroupOrder.Sorted(process.Exceptions.Groups)) WriteGroup(json, process, group);
            json.WriteEndArray();
            json.WriteEndObject();
        }
        json.WriteEndArray();
        json.WriteEndObject();
    }

    internal static void WriteFates(Utf8JsonWriter json, string name, FateCounts fates)
    {
        json.WriteStartObject(name);
        foreach (var (fate, count) in fates.ByFate()) json.WriteNumber(FateNames.Of(fate), count);
        json.WriteEndObject();
    }

    private static void WriteGroup(Utf8JsonWriter json, ProcessProfile process, ExceptionAggregate group)
    {
        json.WriteStartObject();
        json.WriteString("fingerprint", group.Fingerprint);
        json.WriteString("kind", group.Kind switch
        {
            ExceptionAggregateKind.TallyOnly => "tally_only",
            ExceptionAggregateKind.Other => "other",
            _ => "fingerprint",
        });
        json.WriteBoolean("library_internal", group.IsLibraryInternal);
        json.WriteString("type", group.Kind == ExceptionAggregateKind.Other ? ProcessExceptions.OtherGroupName : group.TypeName);
        WriteLocation(json, "raise_site", group.RaiseSite);
        json.WriteStartArray("program_frames");
        foreach (var function in group.ProgramFrames)
        {
            json.WriteStartObject();
            json.WriteString("function", function.QualifiedName);
            json.WriteString("file", function.DisplayFile);
            json.WriteString("path", function.FileName);
            json.WriteNumber("first_line", function.FirstLine);
            json.WriteEndObject();
        }
        json.WriteEndArray();

        json.WriteNumber("count", group.Count);
        WriteFates(json, "by_fate", group.Fates);
        json.WriteNumber("detailed", group.Detailed);
        json.WriteNumber("tallied", group.Tallied);
        WriteTime(json, "first_seen_at", process, group.FirstRaisedNs);
        WriteTime(json, "last_seen_at", process, group.LastRaisedNs);

        WriteStrings(json, "notes", group.Notes);
        json.WriteNumber("notes_omitted", group.NotesOmitted);
        WriteStrings(json, "sample_messages", group.SampleMessages);
        json.WriteStartArray("handled_at");
        foreach (var handler in group.HandledAt)
        {
            json.WriteStartObject();
            WriteLocationFields(json, handler.Location);
            json.WriteNumber("count", handler.Count);
            json.WriteEndObject();
        }
        json.WriteEndArray();
        json.WriteNumber("handled_at_omitted", group.HandledAtOmitted);

        if (group.Latest is { } latest)
        {
            WriteOccurrence(json, process, latest);
            json.WriteString("traceback_text", latest.Detail is { } detail ? TracebackText.Format(detail) : null);
        }
        else
        {
            json.WriteNull("latest");
            json.WriteNull("traceback_text");
        }
        json.WriteEndObject();
    }

    private static void WriteOccurrence(Utf8JsonWriter json, ProcessProfile process, ExceptionOccurrence occurrence)
    {
        json.WriteStartObject("latest");
        json.WriteStartObject("thread");
        json.WriteNumber("id", occurrence.ThreadId);
        var thread = process.Threads.FirstOrDefault(candidate => candidate.Id == occurrence.ThreadId);
        json.WriteString("name", thread?.Name);
        json.WriteEndObject();
        WriteTime(json, "raised_at", process, occurrence.RaisedNs);
        WriteTime(json, "fate_decided_at", process, occurrence.FateNs);
        json.WriteString("fate", FateNames.Of(occurrence.Fate));
        WriteLocation(json, "handled_at", occurrence.HandledAt);
        WriteFrames(json, "stack", occurrence.Stack);
        json.WriteBoolean("stack_truncated", occurrence.StackTruncated);
        json.WriteNumber("frames_unwound", occurrence.FramesUnwound);
        json.WriteNumber("reraises", occurrence.Reraises);
        if (occurrence.Detail is { } detail) WriteDetail(json, "exception", detail);
        else json.WriteNull("exception");
        json.WriteEndObject();
    }

    private static void WriteDetail(Utf8JsonWriter json, string? name, ExceptionInfo detail)
    {
        if (name is null) json.WriteStartObject();
        else json.WriteStartObject(name);
        json.WriteString("type", detail.TypeName);
        json.WriteString("message", detail.Message);
        json.WriteString("message_status", detail.MessageStatus switch
        {
            ExceptionMessageStatus.Truncated => "truncated",
            ExceptionMessageStatus.Unavailable => "unavailable",
            _ => "ok",
        });
        WriteStrings(json, "notes", detail.Notes);
        json.WriteNumber("notes_omitted", detail.NotesOmitted);
        WriteFrames(json, "traceback", detail.Traceback);
        json.WriteNumber("traceback_frames_omitted", detail.TracebackFramesOmitted);
        if (detail.Cause is { } cause) WriteDetail(json, "cause", cause);
        else json.WriteNull("cause");
        if (detail.Context is { } context) WriteDetail(json, "context", context);
        else json.WriteNull("context");
        json.WriteBoolean("suppress_context", detail.SuppressContext);
        json.WriteStartArray("members");
        foreach (var member in detail.Members) WriteDetail(json, null, member);
        json.WriteEndArray();
        json.WriteNumber("members_omitted", detail.MembersOmitted);
        json.WriteBoolean("nesting_truncated", detail.NestingTruncated);
        json.WriteEndObject();
    }

    private static void WriteFrames(Utf8JsonWriter json, string name, IReadOnlyList<CodeLocation> frames)
    {
        json.WriteStartArray(name);
        foreach (var frame in frames)
        {
            json.WriteStartObject();
            WriteLocationFields(json, frame);
            json.WriteEndObject();
        }
        json.WriteEndArray();
    }

    private static void WriteLocation(Utf8JsonWriter json, string name, CodeLocation? location)
    {
        if (location is not { } value)
        {
            json.WriteNull(name);
            return;
        }
        json.WriteStartObject(name);
        WriteLocationFields(json, value);
        json.WriteEndObject();
    }

    /// <summary>A resolved location: <c>file:line</c> as shown to people, then its parts.</summary>
    private static void WriteLocationFields(Utf8JsonWriter json, CodeLocation location)
    {
        json.WriteString("site", location.Site);
        json.WriteString("function", location.Function.QualifiedName);
        json.WriteString("file", location.Function.DisplayFile);
        json.WriteString("path", location.Function.FileName);
        json.WriteNumber("line", location.Line);
    }

    private static void WriteStrings(Utf8JsonWriter json, string name, IReadOnlyList<string> values)
    {
        json.WriteStartArray(name);
        foreach (var value in values) json.WriteStringValue(value);
        json.WriteEndArray();
    }

    private static void WriteTime(Utf8JsonWriter json, string name, ProcessProfile process, long monotonicNs)
    {
        if (monotonicNs == 0) json.WriteNull(name);
        else json.WriteString(name, TimeFormat.Iso(process.Clock.ToWallTime(monotonicNs)));
    }
}

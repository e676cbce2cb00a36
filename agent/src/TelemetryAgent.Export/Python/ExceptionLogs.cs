using System.Globalization;
using Microsoft.Extensions.Logging;
using TelemetryAgent.Profiling;
using TelemetryAgent.Profiling.Formats;
using static TelemetryAgent.Export.Python.PythonTelemetryNames;

namespace TelemetryAgent.Export.Python;

/// <summary>
/// The exception log records of one Python process: at each export, one record per exception group whose counts
/// changed since the previous export (never one per raise), with the group's latest exception in full.
/// </summary>
/// <remarks>
/// Severity says what happened in the interval: ERROR when an exception of the group escaped a thread or the
/// program, was unraisable or reached an asyncio handler; WARN when one was still in flight at exit or had an
/// unknown fate; INFO when all were handled. The body is the <c>Type: message</c> line. Every attribute is listed in
/// proto/OTLP.md. Called from one thread at a time (the process's export queue).
/// </remarks>
internal sealed class ExceptionLogs(ILogger logger)
{
    private static readonly EventId ExceptionGroupEvent = new(1, "python.exception.group");

    // Fingerprint -> the group's counts at the export that last logged it.
    private readonly Dictionary<string, FateTally> _logged = new(StringComparer.Ordinal);

    /// <summary>A copy that remembers what this one has logged so far: go back to it when those records were not sent.</summary>
    public ExceptionLogs Snapshot() => WithLogger(logger);

    /// <summary>The same memory of what was logged, writing to another logger (a fresh SDK instance's).</summary>
    public ExceptionLogs WithLogger(ILogger other)
    {
        var copy = new ExceptionLogs(other);
        foreach (var (fingerprint, tally) in _logged) copy._logged[fingerprint] = tally;
        return copy;
    }

    /// <summary>Logs the groups that changed; returns how many records were written.</summary>
    public int Log(ProcessProfile frozen)
    {
        var written = 0;
        foreach (var group in frozen.Exceptions.Groups)
        {
            var total = FateTally.Of(group.Fates);
            var previous = _logged.GetValueOrDefault(group.Fingerprint);
            if (total == previous) continue;
            _logged[group.Fingerprint] = total;
            var interval = total.Minus(previous);
            var level = interval.Uncaught > 0 ? LogLevel.Error
                : interval.InFlight > 0 || interval.Unknown > 0 ? LogLevel.Warning
                : LogLevel.Information;
            var record = Record(frozen, group, interval, total);
            logger.Log(level, ExceptionGroupEvent, record, null, static (state, _) => (string)state[0].Value!);
            written++;
        }
        return written;
    }

    /// <summary>The group's type as exported: <c>module.QualName</c>, or a bracketed name when there is none.</summary>
    public static string TypeOf(ExceptionAggregate group) => group.Kind switch
    {
        ExceptionAggregateKind.Other => ProcessExceptions.OtherGroupName,
        _ when group.TypeName.Length == 0 => "[unknown type]",
        _ => group.TypeName,
    };

    private static List<KeyValuePair<string, object?>> Record(ProcessProfile process, ExceptionAggregate group, FateTally interval, FateTally total)
    {
        var detail = group.Latest?.Detail;
        var body = detail is not null ? TracebackText.ExceptionLine(detail) : TracebackText.DisplayTypeName(TypeOf(group));
        // The SDK takes "{OriginalFormat}" as the body and every other pair as an attribute.
        var record = new List<KeyValuePair<string, object?>>(40)
        {
            new("{OriginalFormat}", body),
            new(ExceptionType, TypeOf(group)),
            new(ExceptionFingerprint, group.Fingerprint),
            new(ExceptionLibraryInternal, group.IsLibraryInternal),
            new(ExceptionCount, interval.Total),
            new(ExceptionCountTotal, total.Total),
        };
        foreach (var (fate, count) in interval.NonZero()) record.Add(new(ExceptionIntervalFatePrefix + fate, count));
        foreach (var (fate, count) in total.NonZero()) record.Add(new(ExceptionTotalFatePrefix + fate, count));
        if (group.RaiseSite is { } site)
        {
            record.Add(new(CodeFunctionName, ProcessMetrics.QualifiedName(site.Function)));
            record.Add(new(CodeFilePath, site.Function.FileName));
            record.Add(new(CodeLineNumber, (long)site.Line));
        }
        if (group.Notes.Count > 0) record.Add(new(ExceptionNotes, group.Notes.ToArray()));
        if (group.NotesOmitted > 0) record.Add(new(ExceptionNotesOmitted, group.NotesOmitted));
        if (group.SampleMessages.Count > 0) record.Add(new(ExceptionSampleMessages, group.SampleMessages.ToArray()));
        if (group.HandledAt.Count > 0) record.Add(new(ExceptionHandledAt, group.HandledAt.Select(handler => handler.Location.Site).ToArray()));
        AddTime(record, ExceptionFirstSeen, process, group.FirstRaisedNs);
        AddTime(record, ExceptionLastSeen, process, group.LastRaisedNs);

        if (group.Latest is { } latest)
        {
            record.Add(new(ExceptionFate, FateNames.Of(latest.Fate)));
            record.Add(new(ThreadId, (long)latest.ThreadId));
            if (process.Threads.FirstOrDefault(thread => thread.Id == latest.ThreadId)?.Name is { Length: > 0 } threadName)
            {
                record.Add(new(ThreadName, threadName));
            }
        }
        if (detail is not null)
        {
            if (detail.MessageStatus != ExceptionMessageStatus.Unavailable) record.Add(new(ExceptionMessage, detail.Message));
            record.Add(new(MessageStatus, detail.MessageStatus switch
            {
                ExceptionMessageStatus.Truncated => "truncated",
                ExceptionMessageStatus.Unavailable => "unavailable",
                _ => "ok",
            }));
            record.Add(new(ExceptionStacktrace, TracebackText.Format(detail)));
            AddChain(record, detail);
            AddMembers(record, detail);
        }
        return record;
    }

    /// <summary>
    /// The chain from the latest exception outwards, in parallel lists: <c>cause</c> or <c>context</c> (how each
    /// one relates to the one before it, as <c>__cause__</c> and <c>__context__</c>), its type and its message.
    /// </summary>
    private static void AddChain(List<KeyValuePair<string, object?>> record, ExceptionInfo exception)
    {
        var relations = new List<string>();
        var types = new List<string>();
        var messages = new List<string>();
        for (var current = exception; relations.Count < 64;)
        {
            (string Relation, ExceptionInfo Next)? link = current.Cause is { } cause ? ("cause", cause)
                : current.Context is { } context && !current.SuppressContext ? ("context", context)
                : null;
            if (link is not { } next) break;
            relations.Add(next.Relation);
            types.Add(next.Next.TypeName);
            messages.Add(MessageOf(next.Next));
            current = next.Next;
        }
        if (relations.Count == 0) return;
        record.Add(new(ExceptionChainRelation, relations.ToArray()));
        record.Add(new(ExceptionChainType, types.ToArray()));
        record.Add(new(ExceptionChainMessage, messages.ToArray()));
    }

    /// <summary>
    /// An exception group's members, depth first, in parallel lists: the member's path (<c>2</c> is the second
    /// member, <c>2.1</c> the first member of that nested group), its type and its message.
    /// </summary>
    private static void AddMembers(List<KeyValuePair<string, object?>> record, ExceptionInfo exception)
    {
        if (!exception.IsGroup) return;
        var paths = new List<string>();
        var types = new List<string>();
        var messages = new List<string>();
        long omitted = 0;
        void Walk(ExceptionInfo group, string prefix)
        {
            omitted += group.MembersOmitted;
            for (var i = 0; i < group.Members.Count; i++)
            {
                var member = group.Members[i];
                var path = prefix + (i + 1).ToString(CultureInfo.InvariantCulture);
                paths.Add(path);
                types.Add(member.TypeName);
                messages.Add(MessageOf(member));
                if (member.IsGroup) Walk(member, path + ".");
            }
        }
        Walk(exception, "");
        record.Add(new(ExceptionMembersPath, paths.ToArray()));
        record.Add(new(ExceptionMembersType, types.ToArray()));
        record.Add(new(ExceptionMembersMessage, messages.ToArray()));
        if (omitted > 0) record.Add(new(ExceptionMembersOmitted, omitted));
    }

    private static string MessageOf(ExceptionInfo exception)
        => exception.MessageStatus == ExceptionMessageStatus.Unavailable ? "" : exception.Message;

    private static void AddTime(List<KeyValuePair<string, object?>> record, string name, ProcessProfile process, long monotonicNs)
    {
        if (monotonicNs != 0) record.Add(new(name, TimeFormat.Iso(process.Clock.ToWallTime(monotonicNs))));
    }
}

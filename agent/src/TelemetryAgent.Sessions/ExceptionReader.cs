using TelemetryAgent.Profiling;
using TelemetryAgent.Protocol;
using TelemetryAgent.Protocol.Messages;

namespace TelemetryAgent.Sessions;

/// <summary>
/// Translates the messages of an EXCEPTIONS frame into the model's <see cref="ExceptionOccurrence"/>s and
/// <see cref="ExceptionTallyEntry"/>s: checks every code id they use (also in the parts it does not keep) and
/// keeps them within <see cref="ExceptionLimits"/>. A record is read whole before anything of it is applied, so a
/// violation leaves no half-applied record behind. This is where the program's text enters the agent: messages and
/// notes pass through the <see cref="Redactor"/> here, before they are cut, kept or exported.
/// </summary>
internal sealed class ExceptionReader(ExceptionLimits limits, Func<uint, FunctionInfo?> functionOf, Redactor redactor)
{
    private int _textLeft;
    private int _exceptionsLeft;

    public ExceptionOccurrence Read(ExceptionRecord record)
    {
        _textLeft = limits.MaxTextPerRecord;
        _exceptionsLeft = limits.MaxExceptionsPerRecord;
        var (stack, stackOmitted) = ReadFrames(record.Stack, "stack");
        CodeLocation? handledAt = record.HandledAt is { } handler ? Resolve(handler, "handled_at") : null;
        var detail = record.Detail is { } message ? ReadDetail(message, depth: 0) : null;
        return new ExceptionOccurrence(
            record.ThreadId,
            Math.Max(0, record.RaisedNs),
            Math.Max(0, record.FateNs),
            record.Fate.ToFate(),
            handledAt,
            stack,
            record.StackTruncated || stackOmitted > 0,
            record.FramesUnwound,
            record.Reraises,
            detail);
    }

    public ExceptionTallyEntry Read(ExceptionTally tally)
    {
        CodeLocation? raisedAt = tally.RaisedAt is { } location ? Resolve(location, "tally's raised_at") : null;
        var count = tally.Count > long.MaxValue ? long.MaxValue : (long)tally.Count;
        return new ExceptionTallyEntry(Cut(tally.TypeName, limits.MaxTextLength), raisedAt, tally.Fate.ToFate(), count);
    }

    private ExceptionInfo ReadDetail(ExceptionDetail detail, int depth)
    {
        _exceptionsLeft--;
        var status = detail.MessageStatus switch
        {
            ExceptionDetail.Types.MessageStatus.MessageTruncated => ExceptionMessageStatus.Truncated,
            ExceptionDetail.Types.MessageStatus.MessageUnavailable => ExceptionMessageStatus.Unavailable,
            _ => ExceptionMessageStatus.Ok,
        };
        var message = Budgeted(detail.Message, out var messageCut);
        if (messageCut && status == ExceptionMessageStatus.Ok) status = ExceptionMessageStatus.Truncated;

        var notes = new List<string>();
        long notesOmitted = detail.NotesOmitted;
        foreach (var note in detail.Notes)
        {
            if (notes.Count < limits.MaxNotesPerException) notes.Add(Budgeted(note, out _));
            else notesOmitted++;
        }

        var (traceback, tracebackOmitted) = ReadFrames(detail.Traceback, "traceback");

        // Children beyond the depth or the record's budget are checked, then left out.
        var nestingTruncated = detail.NestingTruncated;
        ExceptionInfo? Child(ExceptionDetail? child)
        {
            if (child is null) return null;
            if (depth < limits.MaxNesting && _exceptionsLeft > 0) return ReadDetail(child, depth + 1);
            CheckIds(child);
            nestingTruncated = true;
            return null;
        }

        var cause = Child(detail.Cause);
        var context = Child(detail.Context);
        var members = new List<ExceptionInfo>();
        long membersOmitted = detail.MembersOmitted;
        foreach (var member in detail.Members)
        {
            if (depth < limits.MaxNesting && _exceptionsLeft > 0)
            {
                members.Add(ReadDetail(member, depth + 1));
            }
            else
            {
                CheckIds(member);
                membersOmitted++;
            }
        }

        return new ExceptionInfo(
            Cut(detail.TypeName, limits.MaxTextLength), message, status, notes, notesOmitted, traceback, tracebackOmitted,
            cause, context, detail.SuppressContext, members, membersOmitted, nestingTruncated);
    }

    /// <summary>Every location resolved; only the innermost <see cref="ExceptionLimits.MaxFrames"/> kept.</summary>
    private (IReadOnlyList<CodeLocation> Frames, int Omitted) ReadFrames(IReadOnlyList<Location> locations, string what)
    {
        var omitted = Math.Max(0, locations.Count - limits.MaxFrames);
        var frames = new List<CodeLocation>(Math.Min(locations.Count, limits.MaxFrames));
        for (var i = 0; i < locations.Count; i++)
        {
            var location = Resolve(locations[i], what);
            if (i >= omitted) frames.Add(location);
        }
        return (frames, omitted);
    }

    private void CheckIds(ExceptionDetail detail)
    {
        foreach (var location in detail.Traceback) Resolve(location, "traceback");
        if (detail.Cause is { } cause) CheckIds(cause);
        if (detail.Context is { } context) CheckIds(context);
        foreach (var member in detail.Members) CheckIds(member);
    }

    private CodeLocation Resolve(Location location, string what)
    {
        var id = location.CodeId;
        if (id == 0) throw new ProtocolException(ProtocolViolation.InvalidRecord, $"an exception's {what} has code id 0");
        var function = functionOf(id)
            ?? throw new ProtocolException(ProtocolViolation.UndefinedId,
                $"an exception's {what} refers to code id {id}, which is not defined");
        return new CodeLocation(function, (int)Math.Min(location.Line, int.MaxValue));
    }

    /// <summary>The text redacted, then cut to the per-string limit and to what is left of the record's budget.</summary>
    private string Budgeted(string text, out bool cut)
    {
        text = redactor.Redact(text);
        var kept = Cut(text, Math.Min(limits.MaxTextLength, _textLeft));
        _textLeft -= kept.Length;
        cut = kept.Length < text.Length;
        return kept;
    }

    /// <summary>At most <paramref name="length"/> UTF-16 units, never splitting a surrogate pair.</summary>
    internal static string Cut(string text, int length)
    {
        if (text.Length <= length) return text;
        if (length <= 0) return "";
        if (char.IsHighSurrogate(text[length - 1])) length--;
        return text[..length];
    }
}

namespace TelemetryAgent.Profiling;

/// <summary>What an <see cref="ExceptionAggregate"/> stands for.</summary>
public enum ExceptionAggregateKind
{
    /// <summary>Exceptions of one fingerprint, with detail.</summary>
    Fingerprint,
    /// <summary>Exceptions only counted (tallies) whose type and raise site matched no group with detail.</summary>
    TallyOnly,
    /// <summary>"[other exceptions]": everything beyond <see cref="ExceptionLimits.MaxGroups"/>.</summary>
    Other,
}

/// <summary>
/// The exceptions of one process that share a fingerprint (type, raise site and the program's own frames of the
/// stack, see docs/exceptions.md): how many, their fates, when, what they said, and the latest one in full.
/// </summary>
/// <remarks>Written only by the owning session, like the rest of <see cref="ProcessProfile"/>.</remarks>
public sealed class ExceptionAggregate
{
    private readonly ExceptionLimits _limits;
    private readonly List<string> _notes = [];
    private readonly List<string> _sampleMessages = [];
    private readonly List<HandlerCount> _handledAt = [];

    internal ExceptionAggregate(
        ExceptionAggregateKind kind, string fingerprint, string typeName, CodeLocation? raiseSite,
        IReadOnlyList<FunctionInfo> programFrames, ExceptionLimits limits)
    {
        Kind = kind;
        Fingerprint = fingerprint;
        TypeName = typeName;
        RaiseSite = raiseSite;
        ProgramFrames = programFrames;
        _limits = limits;
    }

    public ExceptionAggregateKind Kind { get; }

    /// <summary>16 hex digits, stable across processes and runs for the same type, raise site and program frames.</summary>
    public string Fingerprint { get; }

    /// <summary><c>module.QualName</c>; <c>""</c> for the "[other exceptions]" group and for records without detail.</summary>
    public string TypeName { get; }

    /// <summary>Where they were raised; null for "[other exceptions]" and when the shim did not know.</summary>
    public CodeLocation? RaiseSite { get; }

    /// <summary>The program's own functions on the stack, outermost first, repeats in a row collapsed.</summary>
    public IReadOnlyList<FunctionInfo> ProgramFrames { get; }

    /// <summary>Exceptions counted: records plus tallies.</summary>
    public long Count => Fates.Total;

    public FateCounts Fates { get; private init; } = new();

    /// <summary>Exceptions that arrived with detail (records).</summary>
    public long Detailed { get; private set; }

    /// <summary>Exceptions that arrived as counts only (tallies).</summary>
    public long Tallied { get; private set; }

    /// <summary>Shim monotonic time of the first and last raise among the records (tallies carry no time); 0 when none.</summary>
    public long FirstRaisedNs { get; private set; }
    public long LastRaisedNs { get; private set; }

    /// <summary>Distinct notes in the order first seen, at most <see cref="ExceptionLimits.MaxNotesPerGroup"/>.</summary>
    public IReadOnlyList<string> Notes => _notes;

    /// <summary>Notes that found no room (each time one was seen), plus those the shim or the record's bounds left out.</summary>
    public long NotesOmitted { get; private set; }

    /// <summary>Distinct messages in the order first seen, at most <see cref="ExceptionLimits.MaxSampleMessages"/>.</summary>
    public IReadOnlyList<string> SampleMessages => _sampleMessages;

    /// <summary>Where handled exceptions were kept, with how many each, in the order first seen.</summary>
    public IReadOnlyList<HandlerCount> HandledAt => _handledAt;

    /// <summary>Handled exceptions whose handler location found no room in <see cref="HandledAt"/>.</summary>
    public long HandledAtOmitted { get; private set; }

    /// <summary>Handled records whose handler is the program's own code (or unknown: not known to be library
    /// code), however many handler locations <see cref="HandledAt"/> had room for.</summary>
    public long HandledInProgram { get; private set; }

    /// <summary>
    /// True when the program had no part in these exceptions, as far as the records tell: raised in library code
    /// (<see cref="FunctionInfo.IsLibrary"/>), never handled in the program's code, and none escaped (a thread or
    /// the program), was unraisable, reached an asyncio handler or had a fate this agent does not know. Exceptions
    /// still in flight at exit do not count against it. Tally-only groups and "[other exceptions]" are never
    /// library-internal: nothing says where they were handled. Outputs list these groups after the program's.
    /// </summary>
    public bool IsLibraryInternal
        => Kind == ExceptionAggregateKind.Fingerprint
           && RaiseSite is { Function.IsLibrary: true }
           && HandledInProgram == 0
           && Fates.Escaped == 0 && Fates.Unraisable == 0 && Fates.AsyncioUnhandled == 0 && Fates.Unknown == 0;

    /// <summary>The record that arrived last, in full; null when there was none (tallies only).</summary>
    public ExceptionOccurrence? Latest { get; private set; }

    internal void Add(ExceptionOccurrence occurrence)
    {
        Fates.Add(occurrence.Fate, 1);
        Detailed = FateCounts.Saturating(Detailed, 1);
        if (occurrence.RaisedNs != 0)
        {
            if (FirstRaisedNs == 0 || occurrence.RaisedNs < FirstRaisedNs) FirstRaisedNs = occurrence.RaisedNs;
            if (occurrence.RaisedNs > LastRaisedNs) LastRaisedNs = occurrence.RaisedNs;
        }
        if (Kind == ExceptionAggregateKind.Other) return;

        Latest = occurrence;
        if (occurrence.Detail is { } detail)
        {
            NotesOmitted = FateCounts.Saturating(NotesOmitted, detail.NotesOmitted);
            foreach (var note in detail.Notes)
            {
                if (!AddDistinct(_notes, note, _limits.MaxNotesPerGroup)) NotesOmitted = FateCounts.Saturating(NotesOmitted, 1);
            }
            if (detail.MessageStatus != ExceptionMessageStatus.Unavailable)
            {
                AddDistinct(_sampleMessages, detail.Message, _limits.MaxSampleMessages);
            }
        }
        if (occurrence.Fate == Fate.Handled)
        {
            if (occurrence.HandledAt is { } handler) CountHandler(handler);
            if (occurrence.HandledAt is not { Function.IsLibrary: true }) HandledInProgram = FateCounts.Saturating(HandledInProgram, 1);
        }
    }

    internal ExceptionAggregate Copy()
    {
        var copy = new ExceptionAggregate(Kind, Fingerprint, TypeName, RaiseSite, ProgramFrames, _limits)
        {
            Fates = Fates.Copy(),
            Detailed = Detailed, Tallied = Tallied,
            FirstRaisedNs = FirstRaisedNs, LastRaisedNs = LastRaisedNs,
            NotesOmitted = NotesOmitted, HandledAtOmitted = HandledAtOmitted, HandledInProgram = HandledInProgram,
            Latest = Latest,
        };
        copy._notes.AddRange(_notes);
        copy._sampleMessages.AddRange(_sampleMessages);
        copy._handledAt.AddRange(_handledAt);
        return copy;
    }

    /// <summary>
    /// This group as seen over part of the process's life: the counts of that span, the notes and messages first seen
    /// in it, and its latest record by then. Never added to.
    /// </summary>
    internal ExceptionAggregate ForSpan(FateCounts fates, long detailed, long handledInProgram, IEnumerable<string> notes,
        IEnumerable<string> sampleMessages, ExceptionOccurrence? latest)
    {
        var copy = new ExceptionAggregate(Kind, Fingerprint, TypeName, RaiseSite, ProgramFrames, _limits)
        {
            Fates = fates,
            Detailed = detailed,
            Tallied = Math.Max(0, fates.Total - detailed),
            HandledInProgram = handledInProgram,
            Latest = latest,
            FirstRaisedNs = latest?.RaisedNs ?? 0,
            LastRaisedNs = latest?.RaisedNs ?? 0,
        };
        foreach (var note in notes) AddDistinct(copy._notes, note, _limits.MaxNotesPerGroup);
        foreach (var message in sampleMessages) AddDistinct(copy._sampleMessages, message, _limits.MaxSampleMessages);
        return copy;
    }

    internal void AddTally(Fate fate, long count)
    {
        Fates.Add(fate, count);
        Tallied = FateCounts.Saturating(Tallied, count);
    }

    /// <summary>The group that took this tally-only group's counts over (see <see cref="AbsorbTallies"/>); null otherwise.</summary>
    internal ExceptionAggregate? AbsorbedInto { get; private set; }

    /// <summary>Takes over the counts of a tally-only group (which has nothing else: no detail, no times).</summary>
    internal void AbsorbTallies(ExceptionAggregate tallyOnly)
    {
        tallyOnly.AbsorbedInto = this;
        Fates.Add(tallyOnly.Fates);
        Tallied = FateCounts.Saturating(Tallied, tallyOnly.Tallied);
    }

    private void CountHandler(CodeLocation handler)
    {
        for (var i = 0; i < _handledAt.Count; i++)
        {
            if (_handledAt[i].Location == handler)
            {
                _handledAt[i] = _handledAt[i] with { Count = _handledAt[i].Count + 1 };
                return;
            }
        }
        if (_handledAt.Count < _limits.MaxHandledAtLocations) _handledAt.Add(new HandlerCount(handler, 1));
        else HandledAtOmitted++;
    }

    /// <summary>True when <paramref name="value"/> is in the list afterwards.</summary>
    private static bool AddDistinct(List<string> list, string value, int capacity)
    {
        if (list.Contains(value)) return true;
        if (list.Count >= capacity) return false;
        list.Add(value);
        return true;
    }
}

/// <summary>A handler location and how many exceptions it kept.</summary>
public readonly record struct HandlerCount(CodeLocation Location, long Count);

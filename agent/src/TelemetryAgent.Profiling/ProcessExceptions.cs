using System.Globalization;
using System.Security.Cryptography;
using System.Text;

namespace TelemetryAgent.Profiling;

/// <summary>
/// The exceptions of one process, grouped by fingerprint (docs/exceptions.md): at most
/// <see cref="ExceptionLimits.MaxGroups"/> groups, then one "[other exceptions]" group for the rest.
/// </summary>
/// <remarks>Written only by the owning session, like the rest of <see cref="ProcessProfile"/>.</remarks>
public sealed class ProcessExceptions
{
    /// <summary>The type name shown for the group that counts exceptions beyond the group limit.</summary>
    public const string OtherGroupName = "[other exceptions]";

    private readonly ExceptionLimits _limits;
    private readonly List<ExceptionAggregate> _groups = [];
    private readonly Dictionary<string, ExceptionAggregate> _byFingerprint = new(StringComparer.Ordinal);
    // Type and raise site -> the group a record of them joined last: where tallies of them are counted.
    private readonly Dictionary<SiteKey, ExceptionAggregate> _latestBySite = [];
    private ExceptionAggregate? _other;

    internal ProcessExceptions(ExceptionLimits limits)
    {
        _limits = limits;
    }

    internal ExceptionLimits Limits => _limits;

    /// <summary>Exceptions made of groups built elsewhere (a time range's): never added to.</summary>
    internal static ProcessExceptions Of(ExceptionLimits limits, IEnumerable<ExceptionAggregate> groups)
    {
        var exceptions = new ProcessExceptions(limits);
        foreach (var group in groups)
        {
            if (group.Kind == ExceptionAggregateKind.Other) exceptions._other = group;
            else exceptions._groups.Add(group);
            exceptions.Fates.Add(group.Fates);
        }
        return exceptions;
    }

    /// <summary>A copy for a checkpoint: the same groups as they are now, never added to.</summary>
    internal ProcessExceptions CopyFrozen()
    {
        var copy = new ProcessExceptions(_limits) { Fates = Fates.Copy() };
        foreach (var group in _groups) copy._groups.Add(group.Copy());
        copy._other = _other?.Copy();
        return copy;
    }

    /// <summary>Groups in the order they were created; "[other exceptions]", once needed, is last.</summary>
    public IReadOnlyList<ExceptionAggregate> Groups => _other is null ? _groups : [.. _groups, _other];

    /// <summary>All exceptions of the process by fate.</summary>
    public FateCounts Fates { get; private init; } = new();

    public long Count => Fates.Total;

    /// <summary>Adds one record to the group of its fingerprint, creating the group if there is room.</summary>
    internal void Add(ExceptionOccurrence occurrence)
    {
        ArgumentNullException.ThrowIfNull(occurrence);
        var site = occurrence.RaiseSite;
        var programFrames = ProgramFramesOf(occurrence.Stack);
        var fingerprint = Fingerprint(occurrence.TypeName, site, programFrames, tallyOnly: false);
        if (!_byFingerprint.TryGetValue(fingerprint, out var group))
        {
            group = TryCreate(ExceptionAggregateKind.Fingerprint, fingerprint, occurrence.TypeName, site, programFrames);
        }
        group.Add(occurrence);
        Fates.Add(occurrence.Fate, 1);
        if (group.Kind == ExceptionAggregateKind.Other) return;
        var key = new SiteKey(occurrence.TypeName, site);
        if (!_latestBySite.ContainsKey(key)) AbsorbTallyOnlyGroup(occurrence.TypeName, site, group);
        _latestBySite[key] = group;
    }

    /// <summary>
    /// The first record of a type and raise site takes over the tally-only group of them, if tallies came first
    /// (the shim may send the counted exceptions of a site before its detailed ones): one group, whatever the order.
    /// </summary>
    private void AbsorbTallyOnlyGroup(string typeName, CodeLocation? site, ExceptionAggregate group)
    {
        var fingerprint = Fingerprint(typeName, site, [], tallyOnly: true);
        if (!_byFingerprint.Remove(fingerprint, out var tallyOnly)) return;
        _groups.Remove(tallyOnly);
        group.AbsorbTallies(tallyOnly);
    }

    /// <summary>
    /// Counts a tally in the group that a record of the same type and raise site joined last; without one, in a
    /// tally-only group of that type and site.
    /// </summary>
    internal void AddTally(ExceptionTallyEntry tally)
    {
        ArgumentNullException.ThrowIfNull(tally);
        if (tally.Count <= 0) return;
        var key = new SiteKey(tally.TypeName, tally.RaisedAt);
        if (!_latestBySite.TryGetValue(key, out var group))
        {
            var fingerprint = Fingerprint(tally.TypeName, tally.RaisedAt, [], tallyOnly: true);
            if (!_byFingerprint.TryGetValue(fingerprint, out group))
            {
                group = TryCreate(ExceptionAggregateKind.TallyOnly, fingerprint, tally.TypeName, tally.RaisedAt, []);
            }
        }
        group.AddTally(tally.Fate, tally.Count);
        Fates.Add(tally.Fate, tally.Count);
    }

    private ExceptionAggregate TryCreate(
        ExceptionAggregateKind kind, string fingerprint, string typeName, CodeLocation? site, IReadOnlyList<FunctionInfo> programFrames)
    {
        if (_groups.Count >= _limits.MaxGroups)
        {
            return _other ??= new ExceptionAggregate(ExceptionAggregateKind.Other, Fingerprint("", null, [], tallyOnly: false, other: true),
                "", null, [], _limits);
        }
        var group = new ExceptionAggregate(kind, fingerprint, typeName, site, programFrames, _limits);
        _groups.Add(group);
        _byFingerprint.Add(fingerprint, group);
        return group;
    }

    /// <summary>The stack's frames that are not library code, outermost first, with repeats in a row collapsed
    /// (so that the depth of a recursion does not make a new group).</summary>
    public static IReadOnlyList<FunctionInfo> ProgramFramesOf(IReadOnlyList<CodeLocation> stack)
    {
        ArgumentNullException.ThrowIfNull(stack);
        var frames = new List<FunctionInfo>();
        foreach (var location in stack)
        {
            var function = location.Function;
            if (function.IsLibrary) continue;
            if (frames.Count > 0 && frames[^1].Equals(function)) continue;
            frames.Add(function);
        }
        return frames;
    }

    /// <summary>
    /// The first 8 bytes of SHA-256, in hex, over the type, the raise site (file as displayed, function, line) and
    /// the program frames (file as displayed, function): stable across processes, hosts and runs. Paths are the
    /// displayed ones so that the same program installed in two places gives the same fingerprints.
    /// </summary>
    public static string Fingerprint(string typeName, CodeLocation? raiseSite, IReadOnlyList<FunctionInfo> programFrames,
        bool tallyOnly, bool other = false)
    {
        ArgumentNullException.ThrowIfNull(typeName);
        ArgumentNullException.ThrowIfNull(programFrames);
        var text = new StringBuilder();
        text.Append(other ? "other" : tallyOnly ? "tally" : "exception").Append('\0').Append(typeName).Append('\0');
        if (raiseSite is { } site)
        {
            text.Append(site.Function.DisplayFile).Append('\0').Append(site.Function.QualifiedName).Append('\0')
                .Append(site.Line.ToString(CultureInfo.InvariantCulture)).Append('\0');
        }
        else
        {
            text.Append("?\0");
        }
        foreach (var frame in programFrames)
        {
            text.Append(frame.DisplayFile).Append('\0').Append(frame.QualifiedName).Append('\0');
        }
        var hash = SHA256.HashData(Encoding.UTF8.GetBytes(text.ToString()));
        return Convert.ToHexStringLower(hash.AsSpan(0, 8));
    }

    private readonly record struct SiteKey(string TypeName, CodeLocation? Site);
}

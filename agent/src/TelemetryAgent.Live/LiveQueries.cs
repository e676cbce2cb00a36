using System.Runtime.CompilerServices;
using TelemetryAgent.Live.Contracts;
using TelemetryAgent.Output;
using TelemetryAgent.Profiling;
using TelemetryAgent.Profiling.Formats;

namespace TelemetryAgent.Live;

/// <summary>A question the live views cannot answer as asked (an unknown process, a bad range): the caller's mistake.</summary>
public sealed class LiveQueryException(string message, bool notFound = false) : Exception(message)
{
    /// <summary>Nothing matched (as opposed to a malformed question).</summary>
    public bool NotFound { get; } = notFound;
}

/// <summary>Frozen profiles of some processes over one span, ready for any output file.</summary>
public sealed record ProfileAnswer(IReadOnlyList<ProcessProfile> Profiles, IReadOnlyList<LiveProcess> Processes, ProfileSpan? Span)
{
    public Coverage Coverage()
    {
        var coverage = new Coverage
        {
            StartUnixNs = Span?.StartUnixNs ?? 0,
            EndUnixNs = Span?.EndUnixNs ?? 0,
        };
        coverage.ConnectionIds.Add(Processes.Select(process => process.Id));
        return coverage;
    }
}

/// <summary>
/// What the query API and the web UI answer, in one place: which processes a selector means, their profiles over a
/// time range (since start: a checkpoint, exact; a range: the timeline's buckets), exceptions, snapshots and the
/// top functions. Every answer is computed from frozen copies: nothing here touches a tree a session writes.
/// </summary>
public sealed class LiveQueries(ProcessCatalog catalog, TimeProvider? time = null)
{
    /// <summary>How long a running process's checkpoint may take: it comes after the session's next frame, and the
    /// shim sends STATS about once a second.</summary>
    public static readonly TimeSpan SnapshotTimeout = TimeSpan.FromSeconds(5);

    private readonly TimeProvider _time = time ?? TimeProvider.System;

    public ProcessCatalog Catalog => catalog;

    public TimeProvider Time => _time;

    /// <summary>The processes a selector means (a pid: its latest connection, running first); throws when none.</summary>
    public IReadOnlyList<LiveProcess> Select(ProcessSelector? selector)
    {
        var all = catalog.Processes();
        IReadOnlyList<LiveProcess> chosen = (selector?.TargetCase ?? ProcessSelector.TargetOneofCase.None) switch
        {
            ProcessSelector.TargetOneofCase.Pid =>
                all.Where(process => process.Profile!.Identity.Pid == selector!.Pid)
                    .OrderBy(process => process.IsRunning).ThenBy(process => process.Id).TakeLast(1).ToArray(),
            ProcessSelector.TargetOneofCase.Service =>
                all.Where(process => process.Profile!.Identity.ServiceName == selector!.Service).ToArray(),
            ProcessSelector.TargetOneofCase.ConnectionId => all.Where(process => process.Id == selector!.ConnectionId).ToArray(),
            _ => all,
        };
        if (chosen.Count == 0 && selector is { TargetCase: not (ProcessSelector.TargetOneofCase.None or ProcessSelector.TargetOneofCase.All) })
            throw new LiveQueryException($"no process matches {Describe(selector)}", notFound: true);
        return chosen;
    }

    public static string Describe(ProcessSelector? selector) => (selector?.TargetCase ?? ProcessSelector.TargetOneofCase.None) switch
    {
        ProcessSelector.TargetOneofCase.Pid => $"pid {selector!.Pid}",
        ProcessSelector.TargetOneofCase.Service => $"service {selector!.Service}",
        ProcessSelector.TargetOneofCase.ConnectionId => $"connection {selector!.ConnectionId}",
        _ => "all processes",
    };

    /// <summary>[from, to) in Unix nanoseconds for a range; null for since start.</summary>
    public ProfileSpan? Resolve(TimeRange? range)
    {
        var now = UnixNs(_time.GetUtcNow());
        switch (range?.RangeCase ?? TimeRange.RangeOneofCase.None)
        {
            case TimeRange.RangeOneofCase.LastSeconds:
                if (range!.LastSeconds <= 0) throw new LiveQueryException("last_seconds must be positive");
                return new ProfileSpan(now - Math.Min(range.LastSeconds, 10L * 365 * 86400) * 1_000_000_000, now);
            case TimeRange.RangeOneofCase.Between:
                if (range!.Between.EndUnixNs <= range.Between.StartUnixNs) throw new LiveQueryException("between: the end must be after the start");
                return new ProfileSpan(range.Between.StartUnixNs, range.Between.EndUnixNs);
            default:
                return null;
        }
    }

    /// <summary>The profiles of the selected processes over a range (since start when none is given).</summary>
    public async Task<ProfileAnswer> ProfilesAsync(ProcessSelector? selector, TimeRange? range, CancellationToken cancellation)
    {
        var processes = Select(selector);
        var span = Resolve(range);
        var profiles = new List<ProcessProfile>();
        var covered = new List<LiveProcess>();
        if (span is not { } wanted)
        {
            var snapshots = processes.Select(process => (process, Snapshot(process, cancellation))).ToArray();
            foreach (var (process, snapshot) in snapshots)
            {
                try
                {
                    profiles.Add(await snapshot.ConfigureAwait(false));
                    covered.Add(process);
                }
                catch (Exception e) when (e is TimeoutException or InvalidOperationException)
                {
                    // A process that ended before HELLO or did not answer in time has nothing to show.
                }
            }
            ProfileSpan? whole = profiles.Count == 0 ? null
                : new ProfileSpan(profiles.Min(profile => UnixNs(profile.ConnectedAt)), profiles.Max(profile => profile.LastEventUnixNs));
            return new ProfileAnswer(profiles, covered, whole);
        }

        long start = long.MaxValue, end = long.MinValue;
        var now = _time.GetUtcNow();
        foreach (var process in processes)
        {
            var profile = process.Profile!;
            if (profile.Timeline?.Select(wanted.StartUnixNs, wanted.EndUnixNs) is not { Span: { } got } selection) continue;
            if (selection.ToProfile(profile, now) is not { } part) continue;
            profiles.Add(part);
            covered.Add(process);
            start = Math.Min(start, got.StartUnixNs);
            end = Math.Max(end, got.EndUnixNs);
        }
        return new ProfileAnswer(profiles, covered, profiles.Count == 0 ? wanted : new ProfileSpan(start, end));
    }

    private static async Task<ProcessProfile> Snapshot(LiveProcess process, CancellationToken cancellation)
        => await process.SnapshotAsync().WaitAsync(SnapshotTimeout, cancellation).ConfigureAwait(false);

    /// <summary>A checkpoint of one running process (or the final profile of an ended one).</summary>
    public async Task<(LiveProcess Process, ProcessProfile Profile)> SnapshotAsync(ProcessSelector? selector, CancellationToken cancellation)
    {
        if (selector is null or { TargetCase: ProcessSelector.TargetOneofCase.None or ProcessSelector.TargetOneofCase.All })
            throw new LiveQueryException("a snapshot is of one process: give its pid or connection id");
        var processes = Select(selector);
        if (processes.Count != 1) throw new LiveQueryException($"{Describe(selector)} matches {processes.Count} processes; give one pid");
        try
        {
            return (processes[0], await Snapshot(processes[0], cancellation).ConfigureAwait(false));
        }
        catch (TimeoutException)
        {
            throw new LiveQueryException($"{Describe(selector)} sent nothing for {SnapshotTimeout.TotalSeconds:0} s: no snapshot could be taken");
        }
    }

    /// <summary>The output file of a format.</summary>
    public static IOutputFile FileOf(ProfileFormat format) => format switch
    {
        ProfileFormat.Folded => FoldedStacksFile.SelfTime,
        ProfileFormat.FoldedCalls => FoldedStacksFile.Calls,
        ProfileFormat.Speedscope => new SpeedscopeFile(),
        _ => new PprofFile(),
    };

    /// <summary>The output run of some frozen profiles, titled with what they cover.</summary>
    public OutputRun RunOf(ProfileAnswer answer, string? title = null)
    {
        var start = answer.Span?.Start;
        var end = answer.Span?.End;
        return OutputRun.Create(answer.Profiles, _time, start, end, title: title ?? Title(answer));
    }

    public static string Title(ProfileAnswer answer)
    {
        var who = answer.Profiles.Count switch
        {
            0 => "no processes",
            1 => ProfileLabels.Process(answer.Profiles[0]),
            _ => $"{answer.Profiles.Count} processes",
        };
        return answer.Span is { } span ? $"{who}, {TimeFormat.Iso(span.Start)} to {TimeFormat.Iso(span.End)}" : who;
    }

    /// <summary>The exception groups of the selected processes over a range, the program's first.</summary>
    public async Task<ExceptionsResponse> ExceptionsAsync(ProcessSelector? selector, TimeRange? range, int limit, CancellationToken cancellation)
    {
        var span = Resolve(range);
        var response = new ExceptionsResponse();
        var groups = new List<(LiveProcess Process, ExceptionAggregate Group)>();
        if (span is null)
        {
            var answer = await ProfilesAsync(selector, range, cancellation).ConfigureAwait(false);
            for (var i = 0; i < answer.Profiles.Count; i++)
                groups.AddRange(answer.Profiles[i].Exceptions.Groups.Select(group => (answer.Processes[i], group)));
            response.Coverage = answer.Coverage();
        }
        else
        {
            var coverage = new Coverage { StartUnixNs = span.Value.StartUnixNs, EndUnixNs = span.Value.EndUnixNs };
            foreach (var process in Select(selector))
            {
                var profile = process.Profile!;
                if (profile.Timeline is not { } timeline) continue;
                var selection = timeline.Select(span.Value.StartUnixNs, span.Value.EndUnixNs);
                if (selection.Span is not { } got) continue;
                coverage.StartUnixNs = Math.Min(coverage.StartUnixNs, got.StartUnixNs);
                coverage.EndUnixNs = Math.Max(coverage.EndUnixNs, got.EndUnixNs);
                coverage.ConnectionIds.Add(process.Id);
                groups.AddRange(selection.ExceptionGroups(ExceptionLimits.Default).Select(group => (process, group)));
            }
            response.Coverage = coverage;
        }
        groups.Sort((a, b) => ExceptionGroupOrder.Compare(a.Group, b.Group));
        foreach (var (process, group) in limit > 0 ? groups.Take(limit) : groups) response.Groups.Add(Describe(process, group));
        return response;
    }

    private static ExceptionGroupInfo Describe(LiveProcess process, ExceptionAggregate group)
    {
        var identity = process.Profile!.Identity;
        var info = new ExceptionGroupInfo
        {
            ConnectionId = process.Id,
            Pid = identity.Pid,
            ServiceName = identity.ServiceName,
            Fingerprint = group.Fingerprint,
            TypeName = group.Kind == ExceptionAggregateKind.Other ? ProcessExceptions.OtherGroupName : group.TypeName,
            RaisedAt = group.RaiseSite is { } site ? $"{site.Site} ({site.Function.QualifiedName})" : "",
            Count = group.Count,
            LibraryInternal = group.IsLibraryInternal,
            Kind = group.Kind switch
            {
                ExceptionAggregateKind.TallyOnly => "tally_only",
                ExceptionAggregateKind.Other => "other",
                _ => "fingerprint",
            },
            Traceback = group.Latest?.Detail is { } detail ? TracebackText.Format(detail) : "",
        };
        foreach (var (fate, count) in group.Fates.ByFate())
        {
            if (count > 0) info.Fates[FateNames.Of(fate)] = count;
        }
        info.Notes.Add(group.Notes);
        info.SampleMessages.Add(group.SampleMessages);
        return info;
    }

    /// <summary>
    /// The hottest functions of the selected running processes, one update per interval: what each function added
    /// in the interval (from two takes of the processes' function statistics, which cost what changed, not a copy of
    /// the trees) and its figures since the process started. The first update comes after one interval.
    /// </summary>
    public async IAsyncEnumerable<TopUpdate> WatchTopAsync(TopRequest request, [EnumeratorCancellation] CancellationToken cancellation)
    {
        var interval = TimeSpan.FromMilliseconds(request.IntervalMs <= 0 ? 1000 : Math.Max(200, request.IntervalMs));
        var limit = request.Limit <= 0 ? 50 : request.Limit;
        Select(request.Process); // fails now when nothing matches
        var previous = new Dictionary<ulong, Dictionary<FunctionInfo, FunctionStats>>();
        var previousAt = _time.GetTimestamp();
        await TakeAsync(previous, cancellation).ConfigureAwait(false);
        using var timer = new PeriodicTimer(interval, _time);
        while (await timer.WaitForNextTickAsync(cancellation).ConfigureAwait(false))
        {
            var current = new Dictionary<ulong, Dictionary<FunctionInfo, FunctionStats>>();
            await TakeAsync(current, cancellation).ConfigureAwait(false);
            var now = _time.GetTimestamp();
            var seconds = _time.GetElapsedTime(previousAt, now).TotalSeconds;
            previousAt = now;

            var rows = new Dictionary<FunctionInfo, TopRow>();
            foreach (var (process, functions) in current)
            {
                previous.TryGetValue(process, out var before);
                foreach (var (function, stats) in functions)
                {
                    var earlier = before?.GetValueOrDefault(function);
                    if (!rows.TryGetValue(function, out var row))
                    {
                        rows[function] = row = new TopRow
                        {
                            QualifiedName = function.QualifiedName, File = function.DisplayFile, Line = function.FirstLine,
                        };
                    }
                    row.SelfNs += Math.Max(0, stats.SelfNs - (earlier?.SelfNs ?? stats.SelfNs));
                    row.TotalNs += Math.Max(0, stats.TotalNs - (earlier?.TotalNs ?? stats.TotalNs));
                    row.Calls += Math.Max(0, stats.Calls - (earlier?.Calls ?? stats.Calls));
                    row.SelfNsSinceStart += stats.SelfNs;
                    row.TotalNsSinceStart += stats.TotalNs;
                    row.CallsSinceStart += stats.Calls;
                }
            }
            previous = current;
            var update = new TopUpdate
            {
                UnixNs = UnixNs(_time.GetUtcNow()), IntervalSeconds = seconds, Processes = current.Count, Functions = rows.Count,
            };
            update.Rows.Add(rows.Values.OrderByDescending(row => Key(row, request.Order))
                .ThenByDescending(row => row.SelfNsSinceStart).ThenBy(row => row.QualifiedName, StringComparer.Ordinal).Take(limit));
            yield return update;
        }

        async Task TakeAsync(Dictionary<ulong, Dictionary<FunctionInfo, FunctionStats>> into, CancellationToken token)
        {
            IReadOnlyList<LiveProcess> running;
            try
            {
                running = Select(request.Process).Where(process => process.IsRunning).ToArray();
            }
            catch (LiveQueryException)
            {
                return; // all of them ended (and were let go): updates go on, empty
            }
            var taken = await Task.WhenAll(running.Select(async process =>
            {
                try
                {
                    var stats = await process.FunctionStatisticsAsync().WaitAsync(interval * 2, token).ConfigureAwait(false);
                    return (process.Id, Stats: stats);
                }
                catch (Exception e) when (e is TimeoutException or InvalidOperationException)
                {
                    return (process.Id, Stats: (IReadOnlyList<FunctionStats>?)null);
                }
            })).ConfigureAwait(false);
            foreach (var (id, stats) in taken)
            {
                if (stats is not null) into[id] = stats.ToDictionary(stat => stat.Function);
            }
        }
    }

    private static long Key(TopRow row, TopOrder order) => order switch
    {
        TopOrder.Total => row.TotalNs,
        TopOrder.Calls => row.Calls,
        TopOrder.SelfSinceStart => row.SelfNsSinceStart,
        TopOrder.TotalSinceStart => row.TotalNsSinceStart,
        TopOrder.CallsSinceStart => row.CallsSinceStart,
        _ => row.SelfNs,
    };

    public static ProcessInfo Describe(LiveProcess process)
    {
        var profile = process.Profile!;
        var identity = profile.Identity;
        var info = new ProcessInfo
        {
            ConnectionId = process.Id,
            Pid = identity.Pid,
            ServiceName = identity.ServiceName,
            HostName = identity.HostName,
            PythonVersion = identity.PythonVersion,
            Mode = profile.Recording.Mode,
            Filtered = profile.Recording.IsFiltered,
            Running = process.IsRunning,
            EndReason = profile.End?.Label ?? "",
            ConnectedUnixNs = UnixNs(profile.ConnectedAt),
            EndedUnixNs = profile.EndedAt is { } ended ? UnixNs(ended) : 0,
            EventsReceived = profile.EventsReceived,
            EventsRecorded = profile.ShimStats.EventsRecorded,
            EventsSent = profile.ShimStats.EventsSent,
            EventsDropped = profile.ShimStats.EventsDropped,
            Overhead = profile.ShimStats.AchievedOverhead ?? -1,
            CallTreeNodes = profile.CallTreeNodes,
            Exceptions = profile.Exceptions.Count,
            PeerUid = profile.Peer?.Uid ?? 0,
            PeerPid = profile.Peer?.Pid ?? 0,
        };
        info.Argv.Add(identity.Argv);
        if (profile.Timeline?.Covered is { } history)
        {
            info.HistoryStartUnixNs = history.StartUnixNs;
            info.HistoryEndUnixNs = history.EndUnixNs;
        }
        return info;
    }

    public static long UnixNs(DateTimeOffset time) => (time - DateTimeOffset.UnixEpoch).Ticks * TimeSpan.NanosecondsPerTick;
}

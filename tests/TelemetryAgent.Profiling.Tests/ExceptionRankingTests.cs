using System.Text.Json;
using TelemetryAgent.Cli;
using TelemetryAgent.Output;
using TelemetryAgent.Protocol.Messages;
using TelemetryAgent.Sessions;
using TelemetryAgent.Testing;
using static TelemetryAgent.Testing.ExceptionRecords;

namespace TelemetryAgent.Profiling.Tests;

/// <summary>
/// Which groups are library-internal (raised and handled inside library code) and how every output ranks them
/// after the groups that involve the program.
/// </summary>
public sealed class ExceptionRankingTests
{
    private const uint Main = 1, Handle = 2, JsonLoads = 3, JsonDecode = 4, Frozen = 5;

    private static SessionScript Ready(SessionLimits? limits = null) => new SessionScript(limits: limits)
        .Thread(1, "MainThread", isMain: true)
        .Thread(2, "worker")
        .Code(Main, "main", "/srv/app/app.py", 1)
        .Code(Handle, "handle", "/srv/app/handlers.py", 10)
        .Code(JsonLoads, "loads", "/usr/lib/python3.12/json/__init__.py", 299)
        .Code(JsonDecode, "JSONDecoder.raw_decode", "/usr/lib/python3.12/json/decoder.py", 343)
        .Code(Frozen, "_find_and_load", "<frozen importlib._bootstrap>", 1349);

    /// <summary>main -> handle -> loads -> raw_decode raises: a library raise site under program frames.</summary>
    private static readonly (uint, uint)[] LibraryStack = [(Main, 3), (Handle, 12), (JsonLoads, 346), (JsonDecode, 355)];

    private static ExceptionAggregate OnlyGroup(SessionScript script) => Assert.Single(script.Profile.Exceptions.Groups);

    [Fact]
    public void Raised_and_handled_in_library_code_is_library_internal_even_under_program_frames()
    {
        var group = OnlyGroup(Ready()
            .Raise(Record("builtins.StopIteration", "", LibraryStack, handledAt: At(JsonLoads, 347)))
            .Raise(Record("builtins.StopIteration", "", LibraryStack, handledAt: At(Frozen, 1360)))
            .Tally("builtins.StopIteration", JsonDecode, 355, ExceptionFate.FateHandled, 500));
        Assert.True(group.IsLibraryInternal);
        Assert.Equal((502L, 0L), (group.Count, group.HandledInProgram));
    }

    [Fact]
    public void In_flight_at_exit_does_not_make_a_library_group_involve_the_program()
    {
        var group = OnlyGroup(Ready()
            .Raise(Record("builtins.StopIteration", "", LibraryStack, ExceptionFate.FateInFlight))
            .Raise(Record("builtins.StopIteration", "", LibraryStack, handledAt: At(JsonLoads, 347))));
        Assert.True(group.IsLibraryInternal);
    }

    [Fact]
    public void Raised_in_program_code_involves_the_program_wherever_it_was_handled()
    {
        var group = OnlyGroup(Ready().Raise(Record("builtins.KeyError", "", [(Main, 3), (Handle, 14)], handledAt: At(JsonLoads, 350))));
        Assert.False(group.IsLibraryInternal);
    }

    [Theory]
    [InlineData("handled in program code")]
    [InlineData("handled where the shim did not say")]
    [InlineData("escaped a thread")]
    [InlineData("escaped the program")]
    [InlineData("unraisable")]
    [InlineData("reached an asyncio handler")]
    [InlineData("a fate this agent does not know")]
    public void One_exception_that_involves_the_program_makes_its_library_group_involve_it(string how)
    {
        var script = Ready().Raise(Record("builtins.KeyError", "", LibraryStack, handledAt: At(JsonLoads, 347)));
        Assert.True(OnlyGroup(script).IsLibraryInternal);

        script.Raise(how switch
        {
            "handled in program code" => Record("builtins.KeyError", "", LibraryStack, handledAt: At(Handle, 13)),
            "handled where the shim did not say" => Record("builtins.KeyError", "", LibraryStack),
            "escaped a thread" => Record("builtins.KeyError", "", LibraryStack, ExceptionFate.FateEscapedThread, thread: 2),
            "escaped the program" => Record("builtins.KeyError", "", LibraryStack, ExceptionFate.FateEscapedProgram),
            "unraisable" => Record("builtins.KeyError", "", LibraryStack, ExceptionFate.FateUnraisable),
            "reached an asyncio handler" => Record("builtins.KeyError", "", LibraryStack, ExceptionFate.FateAsyncioUnhandled),
            _ => Record("builtins.KeyError", "", LibraryStack, (ExceptionFate)42),
        });
        Assert.Equal(2, OnlyGroup(script).Count);
        Assert.False(OnlyGroup(script).IsLibraryInternal);
    }

    [Fact]
    public void A_handler_in_program_code_counts_even_when_the_handler_list_is_full()
    {
        var limits = new SessionLimits { Exceptions = new ExceptionLimits { MaxHandledAtLocations = 2 } };
        var group = OnlyGroup(Ready(limits)
            .Raise(Record("builtins.KeyError", "", LibraryStack, handledAt: At(JsonLoads, 347)))
            .Raise(Record("builtins.KeyError", "", LibraryStack, handledAt: At(JsonLoads, 348)))
            .Raise(Record("builtins.KeyError", "", LibraryStack, handledAt: At(Handle, 13))));
        Assert.Equal((2, 1L), (group.HandledAt.Count, group.HandledAtOmitted));
        Assert.Equal(1, group.HandledInProgram);
        Assert.False(group.IsLibraryInternal);
    }

    [Fact]
    public void Tally_only_and_other_groups_are_never_library_internal()
    {
        var limits = new SessionLimits { Exceptions = new ExceptionLimits { MaxGroups = 1 } };
        var groups = Ready(limits)
            .Tally("builtins.StopIteration", JsonDecode, 355, ExceptionFate.FateHandled, 9)
            .Raise(Record("builtins.StopIteration", "", LibraryStack, handledAt: At(JsonLoads, 347)))
            .Profile.Exceptions.Groups;
        Assert.Equal([ExceptionAggregateKind.TallyOnly, ExceptionAggregateKind.Other], groups.Select(group => group.Kind));
        Assert.All(groups, group => Assert.False(group.IsLibraryInternal));
    }

    /// <summary>A process with 3 library-internal groups (the largest groups) and 3 that involve the program.</summary>
    private static RunSummary Mixed()
    {
        var script = Ready()
            .Raise(Record("builtins.StopIteration", "", LibraryStack, raisedNs: 100, handledAt: At(JsonLoads, 347)))
            .Tally("builtins.StopIteration", JsonDecode, 355, ExceptionFate.FateHandled, 999)
            .Raise(Record("builtins.KeyError", "", [(Main, 3), (Frozen, 1351)], raisedNs: 200, handledAt: At(Frozen, 1352)))
            .Tally("builtins.KeyError", Frozen, 1351, ExceptionFate.FateHandled, 99)
            .Raise(Record("builtins.IndexError", "", LibraryStack, ExceptionFate.FateInFlight, raisedNs: 300))
            .Raise(Record("app.Invalid", "bad order", [(Main, 3), (Handle, 14)], raisedNs: 400, handledAt: At(Main, 4)))
            .Raise(Record("app.Invalid", "bad order", [(Main, 3), (Handle, 14)], raisedNs: 500, handledAt: At(Main, 4)))
            .Raise(Record("json.JSONDecodeError", "Expecting value", LibraryStack, raisedNs: 600, handledAt: At(Handle, 13)))
            .Raise(Record("builtins.OSError", "disk full", [(Main, 3), (JsonLoads, 360)], ExceptionFate.FateEscapedProgram, raisedNs: 700));
        script.Complete();
        return RunSummary.Create([script.Profile], SampleRun.Start);
    }

    [Fact]
    public void The_program_groups_come_first_by_count_then_the_library_internal_ones()
    {
        var summary = Mixed();
        Assert.Equal(
            ["app.Invalid", "json.JSONDecodeError", "builtins.OSError", "builtins.StopIteration", "builtins.KeyError", "builtins.IndexError"],
            summary.ExceptionGroups.Select(entry => entry.Group.TypeName));
        Assert.Equal(3, summary.LibraryInternalGroups);
        Assert.Equal((1_101L, 1_100L, 1L), (summary.LibraryInternalFates.Total, summary.LibraryInternalFates.Handled, summary.LibraryInternalFates.InFlight));

        var process = summary.Processes[0];
        Assert.Equal(summary.ExceptionGroups.Select(entry => entry.Group), ExceptionGroupOrder.Sorted(process.Exceptions.Groups));
    }

    [Fact]
    public void The_console_lists_the_program_groups_and_sums_up_the_library_ones_in_one_line()
    {
        var text = ConsoleSummary.Format(Mixed(), topExceptionGroups: 2);
        var lines = text[text.IndexOf("Exceptions:", StringComparison.Ordinal)..].Split('\n');

        Assert.Equal("Exceptions: 1,105 in 6 groups (handled 1,103, escaped 1, unraisable 0, asyncio unhandled 0, in flight 1)", lines[0]);
        Assert.Matches(@"^\s+count\s+handled\s+escaped\s+type\s+raised at\s+first note$", lines[1]);
        Assert.Matches(@"^\s+2\s+2\s+0\s+app\.Invalid\s+handlers\.py:14$", lines[2]);
        Assert.Matches(@"^\s+1\s+1\s+0\s+json\.JSONDecodeError\s+json/decoder\.py:355$", lines[3]);
        Assert.Equal("  (1 more groups involving the program in exceptions.json)", lines[4]);
        Assert.Equal("  3 groups, 1,101 exceptions raised and handled inside library code (1 still in flight at exit): see exceptions.json", lines[5]);
        Assert.Equal("", lines[6]);
    }

    [Fact]
    public void With_only_library_internal_groups_the_console_prints_no_table()
    {
        var script = Ready().Raise(Record("builtins.StopIteration", "", LibraryStack, handledAt: At(JsonLoads, 347)));
        script.Complete();
        var text = ConsoleSummary.Format(RunSummary.Create([script.Profile], SampleRun.Start));
        var exceptions = text[text.IndexOf("Exceptions:", StringComparison.Ordinal)..];
        Assert.Equal(
            "Exceptions: 1 in 1 group (handled 1, escaped 0, unraisable 0, asyncio unhandled 0, in flight 0)\n" +
            "  1 group, 1 exception raised and handled inside library code: see exceptions.json\n",
            exceptions);
    }

    [Fact]
    public void Both_json_files_flag_library_internal_groups_in_the_same_order_and_keep_every_group()
    {
        var summary = Mixed();
        var run = new OutputRun(summary, "mixed", SampleRun.Start);
        using var summaryJson = Json(stream => new SummaryJsonFile(topFunctions: 5, topExceptionGroups: 4).Write(stream, run));
        using var exceptionsJson = Json(stream => new ExceptionsJsonFile().Write(stream, run));

        var section = summaryJson.RootElement.GetProperty("exceptions");
        Assert.Equal((3, 1_101L), (section.GetProperty("library_internal_groups").GetInt32(), section.GetProperty("library_internal_exceptions").GetInt64()));
        var top = section.GetProperty("top_groups").EnumerateArray().ToArray();
        Assert.Equal([false, false, false, true], top.Select(group => group.GetProperty("library_internal").GetBoolean()));
        Assert.True(section.GetProperty("top_groups_truncated").GetBoolean());

        var groups = exceptionsJson.RootElement.GetProperty("processes")[0].GetProperty("groups").EnumerateArray().ToArray();
        Assert.Equal(6, groups.Length);
        Assert.Equal([false, false, false, true, true, true], groups.Select(group => group.GetProperty("library_internal").GetBoolean()));
        Assert.Equal(top.Select(group => group.GetProperty("fingerprint").GetString()),
            groups.Take(4).Select(group => group.GetProperty("fingerprint").GetString()));
        Assert.Equal(1_105, groups.Sum(group => group.GetProperty("count").GetInt64()));
    }

    private static JsonDocument Json(Action<Stream> write)
    {
        using var stream = new MemoryStream();
        write(stream);
        return JsonDocument.Parse(stream.ToArray());
    }
}

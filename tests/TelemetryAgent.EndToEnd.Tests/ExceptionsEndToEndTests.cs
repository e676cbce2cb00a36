using System.Text.Json;
using System.Text.RegularExpressions;
using TelemetryAgent.EndToEnd.Tests.Support;
using TelemetryAgent.Testing;

namespace TelemetryAgent.EndToEnd.Tests;

/// <summary>
/// examples/exceptions_app.py through the real `telemetry-agent run` (a real Python 3.12+, the real shim and socket):
/// exceptions.json checked field by field for every case the program makes, and the console table. Lines are found
/// in the program's source by their text, so that editing the example does not silently shift what is checked.
/// </summary>
public sealed partial class ExceptionsEndToEndTests : IClassFixture<ExceptionsEndToEndTests.ExceptionsRuns>
{
    private const string App = "examples/exceptions_app.py";
    private static readonly string AppPath = Repo.Path("examples", "exceptions_app.py");
    private static readonly string[] AppSource = File.ReadAllLines(AppPath);

    private readonly ExceptionsRuns _runs;

    public ExceptionsEndToEndTests(ExceptionsRuns runs) => _runs = runs;

    /// <summary>One run as is (exit 0) and one with --escape (exit 1), shared by the tests of this class.</summary>
    public sealed class ExceptionsRuns : IAsyncLifetime
    {
        private readonly TemporaryFolder _temp = new();
        public Finished Plain { get; private set; } = null!;
        public Finished Escape { get; private set; } = null!;
        public JsonDocument Exceptions { get; private set; } = null!;
        public JsonDocument EscapeExceptions { get; private set; } = null!;
        public JsonDocument Summary { get; private set; } = null!;

        public async Task InitializeAsync()
        {
            var plain = Processes.RunAgentAsync(["run", "-o", _temp.File("plain"), App]);
            var escape = Processes.RunAgentAsync(["run", "-o", _temp.File("escape"), App, "--escape"]);
            (Plain, Escape) = (await plain, await escape);
            Assert.True(Plain.ExitCode == 0, Plain.ToString());
            Assert.True(Escape.ExitCode == 1, Escape.ToString());
            Exceptions = JsonDocument.Parse(File.ReadAllText(_temp.File("plain/exceptions.json")));
            EscapeExceptions = JsonDocument.Parse(File.ReadAllText(_temp.File("escape/exceptions.json")));
            Summary = JsonDocument.Parse(File.ReadAllText(_temp.File("plain/summary.json")));
        }

        public Task DisposeAsync()
        {
            Exceptions?.Dispose();
            EscapeExceptions?.Dispose();
            Summary?.Dispose();
            _temp.Dispose();
            return Task.CompletedTask;
        }
    }

    [Fact]
    public void NoteAddedInAHandlerThenReRaisedIsOneHandledExceptionWithItsNote()
    {
        const string note = "while reading settings.toml, key 'port'";
        var group = AppGroup("builtins.ValueError", Line("return int(text)"));
        AssertCounts(group, count: 1, handled: 1);
        Assert.Equal([note], Strings(group.GetProperty("notes")));
        Assert.Equal(0, group.GetProperty("notes_omitted").GetInt64());
        Assert.Equal(["invalid literal for int() with base 10: 'eighty'"], Strings(group.GetProperty("sample_messages")));
        var handler = Line("except ValueError:", after: "load_settings(\"eighty\")");
        AssertHandledAt(group, (handler, 1));
        Assert.Equal(["<module>", "main", "note_and_reraise", "load_settings", "parse_port"], ProgramFrames(group));

        var latest = group.GetProperty("latest");
        Assert.Equal("handled", latest.GetProperty("fate").GetString());
        Assert.Equal(handler, latest.GetProperty("handled_at").GetProperty("line").GetInt32());
        Assert.Equal((2, 1), (latest.GetProperty("frames_unwound").GetInt32(), latest.GetProperty("reraises").GetInt32()));
        Assert.Equal(
            [$"<module>:{Line("main(sys.argv[1:])")}", $"main:{Line("print(step())")}", $"note_and_reraise:{Line("load_settings(\"eighty\")")}",
             $"load_settings:{Line("return parse_port(text)")}", $"parse_port:{Line("return int(text)")}"],
            Frames(latest.GetProperty("stack")));
        Assert.False(latest.GetProperty("stack_truncated").GetBoolean());
        var exception = latest.GetProperty("exception");
        Assert.Equal([note], Strings(exception.GetProperty("notes")));
        Assert.Equal("ok", exception.GetProperty("message_status").GetString());
        AssertTraceback(group,
            "Traceback (most recent call last):",
            FileLine("load_settings(\"eighty\")", "note_and_reraise"),
            FileLine("return parse_port(text)", "load_settings"),
            FileLine("return int(text)", "parse_port"),
            "ValueError: invalid literal for int() with base 10: 'eighty'",
            note);
    }

    [Fact]
    public void RaiseFromKeepsTheCauseAndSuppressesTheContext()
    {
        var group = AppGroup("__main__.SettingsError", Line("raise SettingsError(\"database not configured\") from missing"));
        AssertCounts(group, count: 1, handled: 1);
        AssertHandledAt(group, (Line("except SettingsError:"), 1));
        var exception = group.GetProperty("latest").GetProperty("exception");
        Assert.True(exception.GetProperty("suppress_context").GetBoolean());
        Assert.Equal(JsonValueKind.Null, exception.GetProperty("context").ValueKind);
        var cause = exception.GetProperty("cause");
        Assert.Equal(("builtins.KeyError", "'database'"), TypeAndMessage(cause));
        Assert.Equal([$"chains:{Line("{}[\"database\"]")}"], Frames(cause.GetProperty("traceback")));
        AssertTraceback(group,
            "Traceback (most recent call last):",
            FileLine("{}[\"database\"]", "chains"),
            "KeyError: 'database'",
            "",
            "The above exception was the direct cause of the following exception:",
            "",
            "Traceback (most recent call last):",
            FileLine("raise SettingsError(\"database not configured\") from missing", "chains"),
            "SettingsError: database not configured");

        // The KeyError itself was handled where the SettingsError was raised.
        var missing = AppGroup("builtins.KeyError", Line("{}[\"database\"]"));
        AssertCounts(missing, count: 1, handled: 1);
        AssertHandledAt(missing, (Line("except KeyError as missing:"), 1));
    }

    [Fact]
    public void AnExceptionRaisedInAHandlerHasTheHandledOneAsItsContext()
    {
        var group = AppGroup("builtins.IndexError", Line("[][0]"));
        AssertCounts(group, count: 1, handled: 1);
        AssertHandledAt(group, (Line("except IndexError:"), 1));
        var exception = group.GetProperty("latest").GetProperty("exception");
        Assert.False(exception.GetProperty("suppress_context").GetBoolean());
        Assert.Equal(JsonValueKind.Null, exception.GetProperty("cause").ValueKind);
        Assert.Equal(("builtins.ZeroDivisionError", "division by zero"), TypeAndMessage(exception.GetProperty("context")));
        AssertTraceback(group,
            "Traceback (most recent call last):",
            FileLine("1 / 0", "chains"),
            "ZeroDivisionError: division by zero",
            "",
            "During handling of the above exception, another exception occurred:",
            "",
            "Traceback (most recent call last):",
            FileLine("[][0]", "chains"),
            "IndexError: list index out of range");
        AssertCounts(AppGroup("builtins.ZeroDivisionError", Line("1 / 0")), count: 1, handled: 1);
    }

    [Fact]
    public void RaiseFromNoneHidesTheContext()
    {
        var group = AppGroup("builtins.LookupError", Line("raise LookupError(\"hidden cause\") from None"));
        AssertCounts(group, count: 1, handled: 1);
        AssertHandledAt(group, (Line("except LookupError:"), 1));
        var exception = group.GetProperty("latest").GetProperty("exception");
        Assert.True(exception.GetProperty("suppress_context").GetBoolean());
        Assert.Equal(JsonValueKind.Null, exception.GetProperty("cause").ValueKind);
        Assert.Equal(JsonValueKind.Null, exception.GetProperty("context").ValueKind);
        AssertTraceback(group,
            "Traceback (most recent call last):",
            FileLine("raise LookupError(\"hidden cause\") from None", "chains"),
            "LookupError: hidden cause");
        AssertCounts(AppGroup("builtins.ValueError", Line("int(\"x\")")), count: 1, handled: 1);
    }

    [Fact]
    public void AnExceptionGroupSplitByExceptStarKeepsItsMembersAndItsRemainder()
    {
        var raised = AppGroup("builtins.ExceptionGroup", Line("raise ExceptionGroup(\"2 fields invalid\""));
        AssertCounts(raised, count: 1, handled: 1);
        AssertHandledAt(raised, (Line("except* ValueError:"), 1));
        Assert.Equal(["<module>", "main", "groups", "groups.<locals>.check", "groups.<locals>.validate"], ProgramFrames(raised));
        var exception = raised.GetProperty("latest").GetProperty("exception");
        Assert.Equal(("builtins.ExceptionGroup", "2 fields invalid (3 sub-exceptions)"), TypeAndMessage(exception));
        Assert.Equal(
            ["builtins.ValueError: name", "builtins.TypeError: age", "builtins.ExceptionGroup: address (1 sub-exception)"],
            Members(exception));
        Assert.Equal(["builtins.KeyError: 'zip'"], Members(exception.GetProperty("members")[2]));
        Assert.Equal(0, exception.GetProperty("members_omitted").GetInt64());
        Assert.False(exception.GetProperty("nesting_truncated").GetBoolean());
        AssertTraceback(raised,
            "  + Exception Group Traceback (most recent call last):",
            "  | " + FileLine("validate()", "groups.<locals>.check", after: "def check():"),
            "  | " + FileLine("raise ExceptionGroup(\"2 fields invalid\"", "groups.<locals>.validate"),
            "  | ExceptionGroup: 2 fields invalid (3 sub-exceptions)",
            "  +-+---------------- 1 ----------------",
            "    | ValueError: name",
            "    +---------------- 2 ----------------",
            "    | TypeError: age",
            "    +---------------- 3 ----------------",
            "    | ExceptionGroup: address (1 sub-exception)",
            "    +-+---------------- 1 ----------------",
            "      | KeyError: 'zip'",
            "      +------------------------------------");

        // What except* ValueError did not match is a new group, raised again from the try in check().
        var remainder = AppGroup("builtins.ExceptionGroup", Line("validate()", after: "def check():"));
        AssertCounts(remainder, count: 1, handled: 1);
        AssertHandledAt(remainder, (Line("except* TypeError:"), 1));
        var rest = remainder.GetProperty("latest").GetProperty("exception");
        Assert.Equal(("builtins.ExceptionGroup", "2 fields invalid (2 sub-exceptions)"), TypeAndMessage(rest));
        Assert.Equal(["builtins.TypeError: age", "builtins.ExceptionGroup: address (1 sub-exception)"], Members(rest));
        Assert.Equal(["builtins.KeyError: 'zip'"], Members(rest.GetProperty("members")[1]));
        Assert.Equal([$"groups:{Line("check()", after: "def check():")}", $"groups.<locals>.check:{Line("validate()", after: "def check():")}",
                      $"groups.<locals>.validate:{Line("raise ExceptionGroup(\"2 fields invalid\"")}"],
            Frames(rest.GetProperty("traceback")));
    }

    [Fact]
    public void ExceptionsThrownIntoAGeneratorAndACoroutineAreHandledInside()
    {
        var thrown = AppGroup("builtins.KeyError", Line("yield 1"));
        AssertCounts(thrown, count: 1, handled: 1);
        AssertHandledAt(thrown, (Line("except KeyError:", after: "yield 1"), 1));
        Assert.Equal(["<module>", "main", "thrown_in", "thrown_in.<locals>.worker"], ProgramFrames(thrown));
        Assert.Equal($"thrown_in:{Line("generator.throw(KeyError(\"stop\"))")}",
            Frames(thrown.GetProperty("latest").GetProperty("stack"))[^2]);

        // close() throws GeneratorExit into the generator, suspended in its handler: the KeyError is its context.
        var closed = AppGroup("builtins.GeneratorExit", Line("yield 2"));
        AssertCounts(closed, count: 1, handled: 1);
        AssertHandledAt(closed, (Line("generator.close()"), 1));
        var exit = closed.GetProperty("latest").GetProperty("exception");
        Assert.Equal(("builtins.KeyError", "'stop'"), TypeAndMessage(exit.GetProperty("context")));
        AssertTraceback(closed,
            "Traceback (most recent call last):",
            FileLine("yield 1", "thrown_in.<locals>.worker"),
            "KeyError: 'stop'",
            "",
            "During handling of the above exception, another exception occurred:",
            "",
            "Traceback (most recent call last):",
            FileLine("yield 2", "thrown_in.<locals>.worker"),
            "GeneratorExit");

        var timeout = AppGroup("builtins.TimeoutError", Line("yield", after: "def __await__(self):"));
        AssertCounts(timeout, count: 1, handled: 1);
        AssertHandledAt(timeout, (Line("except TimeoutError:"), 1));
        Assert.Equal(["<module>", "main", "thrown_in", "thrown_in.<locals>.waiting", "thrown_in.<locals>.Suspend.__await__"],
            ProgramFrames(timeout));
        Assert.Equal(1, timeout.GetProperty("latest").GetProperty("frames_unwound").GetInt32());
        AssertTraceback(timeout,
            "Traceback (most recent call last):",
            FileLine("await Suspend()", "thrown_in.<locals>.waiting"),
            FileLine("yield", "thrown_in.<locals>.Suspend.__await__", after: "def __await__(self):"),
            "TimeoutError: slow upstream");

        var finished = AppGroup("builtins.StopIteration", Line("coroutine.throw(TimeoutError(\"slow upstream\"))"));
        AssertCounts(finished, count: 1, handled: 1);
        Assert.Equal(["coroutine recovered"], Strings(finished.GetProperty("sample_messages")));
    }

    [Fact]
    public void UnwindingThroughFiftyFramesIsOneGroupWithEveryFrame()
    {
        var raise = Line("raise RecursionError(\"bottom of 50 frames\")");
        var recurse = Line("return dive(depth - 1)");
        var group = AppGroup("builtins.RecursionError", raise);
        AssertCounts(group, count: 1, handled: 1);
        AssertHandledAt(group, (Line("except RecursionError:"), 1));
        Assert.Equal(["<module>", "main", "deep", "dive"], ProgramFrames(group));

        var latest = group.GetProperty("latest");
        Assert.Equal(50, latest.GetProperty("frames_unwound").GetInt32());
        var dives = Enumerable.Repeat($"dive:{recurse}", 49).Append($"dive:{raise}");
        Assert.Equal([$"<module>:{Line("main(sys.argv[1:])")}", $"main:{Line("print(step())")}", $"deep:{Line("dive(50)")}", .. dives],
            Frames(latest.GetProperty("stack")));
        Assert.Equal([$"deep:{Line("dive(50)")}", .. dives], Frames(latest.GetProperty("exception").GetProperty("traceback")));
        Assert.Equal(0, latest.GetProperty("exception").GetProperty("traceback_frames_omitted").GetInt32());

        var text = TracebackLines(group);
        Assert.Equal(53, text.Length);
        Assert.Equal(49, text.Count(line => line == FileLine("return dive(depth - 1)", "dive")));
        Assert.Equal("RecursionError: bottom of 50 frames", text[^1]);
    }

    [Fact]
    public void ExceptionsSwallowedByWithBlocksAndHasattrAreHandledWhereTheProgramSwallowedThem()
    {
        var exited = AppGroup("builtins.ConnectionError", Line("raise ConnectionError(\"swallowed by __exit__\")"));
        AssertCounts(exited, count: 1, handled: 1);
        AssertHandledAt(exited, (Line("with Quiet():"), 1));

        var suppressed = AppGroup("builtins.FileNotFoundError", Line("open(\"/nonexistent/telemetry-example\")"));
        AssertCounts(suppressed, count: 1, handled: 1);
        AssertHandledAt(suppressed, (Line("with contextlib.suppress(FileNotFoundError):"), 1));

        var property = AppGroup("builtins.AttributeError", Line("raise AttributeError(\"not loaded\")"));
        AssertCounts(property, count: 1, handled: 1);
        AssertHandledAt(property, (Line("hasattr(Lazy(), \"value\")"), 1));
    }

    [Fact]
    public void EscapesAreCountedByFate()
    {
        var thread = AppGroup("builtins.BrokenPipeError", Line("raise BrokenPipeError(\"uploader lost its connection\")"));
        AssertCounts(thread, count: 1, handled: 0, escapedThread: 1);
        Assert.Empty(thread.GetProperty("handled_at").EnumerateArray());
        Assert.Equal(["thread_escape.<locals>.crash"], ProgramFrames(thread));
        var latest = thread.GetProperty("latest");
        Assert.Equal(("escaped_thread", "uploader"), (latest.GetProperty("fate").GetString(), latest.GetProperty("thread").GetProperty("name").GetString()));
        Assert.Equal(JsonValueKind.Null, latest.GetProperty("handled_at").ValueKind);
        var threadText = TracebackLines(thread);
        Assert.Equal(FileLine("raise BrokenPipeError(\"uploader lost its connection\")", "thread_escape.<locals>.crash"), threadText[^2]);
        Assert.Equal("BrokenPipeError: uploader lost its connection", threadText[^1]);

        var unraisable = AppGroup("builtins.BufferError", Line("raise BufferError(\"ledger not flushed\")"));
        AssertCounts(unraisable, count: 1, handled: 0, unraisable: 1);
        Assert.Equal(["<module>", "main", "unraisable", "Ledger.__del__"], ProgramFrames(unraisable));

        var callback = AppGroup("builtins.ArithmeticError", Line("raise ArithmeticError(\"in a loop callback\")"));
        AssertCounts(callback, count: 1, handled: 0, asyncioUnhandled: 1);

        var totals = _runs.Exceptions.RootElement.GetProperty("totals").GetProperty("by_fate");
        Assert.Equal((1, 0, 1, 1), (totals.GetProperty("escaped_thread").GetInt64(), totals.GetProperty("escaped_program").GetInt64(),
            totals.GetProperty("unraisable").GetInt64(), totals.GetProperty("asyncio_unhandled").GetInt64()));
    }

    [Fact]
    public void AnExceptionEscapingTheProgramIsReportedAndTheExitStatusKept()
    {
        Assert.Contains("SettingsError: escaping the program on purpose", _runs.Escape.Stderr);
        var raise = Line("raise SettingsError(\"escaping the program on purpose\")");
        var group = AppGroup("__main__.SettingsError", raise, _runs.EscapeExceptions);
        AssertCounts(group, count: 1, handled: 0, escapedProgram: 1);
        var latest = group.GetProperty("latest");
        Assert.Equal("escaped_program", latest.GetProperty("fate").GetString());
        Assert.Equal(2, latest.GetProperty("frames_unwound").GetInt32());
        AssertTraceback(group,
            "Traceback (most recent call last):",
            FileLine("main(sys.argv[1:])", "<module>"),
            FileLine("raise SettingsError(\"escaping the program on purpose\")", "main"),
            "SettingsError: escaping the program on purpose");

        // The rest of the run is the same as without --escape.
        var totals = _runs.EscapeExceptions.RootElement.GetProperty("totals").GetProperty("by_fate");
        Assert.Equal(1, totals.GetProperty("escaped_program").GetInt64());
        Assert.DoesNotContain(AllGroups(_runs.Exceptions), g => g.GetProperty("by_fate").GetProperty("escaped_program").GetInt64() > 0);
        AssertCounts(AppGroup("builtins.KeyError", Line("raise KeyError(\"session-%d\" % i)"), _runs.EscapeExceptions), count: 10_000, handled: 10_000);
    }

    [Fact]
    public void AHostileStrIsNeverCalledAndTheMessageIsMarkedUnavailable()
    {
        var raise = Line("raise cls(\"payload\")");
        foreach (var type in new[] { "RaisingStr", "SleepingStr" })
        {
            var group = AppGroup("__main__." + type, raise);
            AssertCounts(group, count: 1, handled: 1);
            AssertHandledAt(group, (Line("except cls:"), 1));
            Assert.Empty(group.GetProperty("sample_messages").EnumerateArray());
            var exception = group.GetProperty("latest").GetProperty("exception");
            Assert.Equal(("unavailable", ""), (exception.GetProperty("message_status").GetString(), exception.GetProperty("message").GetString()));
            Assert.Equal($"{type}: <message not captured>", TracebackLines(group)[^1]);
        }
        Assert.Contains("hostile __str__ never called", _runs.Plain.Stdout);
    }

    [Fact]
    public void TenThousandDistinctMessagesAreOneGroupWithAnExactCountAndBoundedSamples()
    {
        var group = AppGroup("builtins.KeyError", Line("raise KeyError(\"session-%d\" % i)"));
        AssertCounts(group, count: 10_000, handled: 10_000);
        var detailed = group.GetProperty("detailed").GetInt64();
        Assert.Equal(10_000, detailed + group.GetProperty("tallied").GetInt64());
        Assert.InRange(detailed, 5, 10_000);
        Assert.Equal(["'session-0'", "'session-1'", "'session-2'", "'session-3'", "'session-4'"], Strings(group.GetProperty("sample_messages")));
        AssertHandledAt(group, (Line("except KeyError:", after: "raise KeyError(\"session-%d\" % i)"), detailed));
        Assert.Equal(["<module>", "main", "many"], ProgramFrames(group));
    }

    [Fact]
    public void EveryGroupRaisedInTheProgramInvolvesItAndTheTotalsAddUp()
    {
        var groups = AllGroups(_runs.Exceptions);
        var totals = _runs.Exceptions.RootElement.GetProperty("totals");
        Assert.Equal(totals.GetProperty("groups").GetInt32(), groups.Length);
        Assert.Equal(totals.GetProperty("exceptions").GetInt64(), groups.Sum(group => group.GetProperty("count").GetInt64()));

        var fromApp = groups.Where(RaisedInApp).ToArray();
        Assert.Equal(23, fromApp.Length);   // one group per case the program makes
        Assert.All(fromApp, group => Assert.False(group.GetProperty("library_internal").GetBoolean()));
        foreach (var group in groups.Where(group => group.GetProperty("library_internal").GetBoolean()))
        {
            var fates = group.GetProperty("by_fate");
            Assert.Equal(0, fates.GetProperty("escaped_thread").GetInt64() + fates.GetProperty("escaped_program").GetInt64()
                            + fates.GetProperty("unraisable").GetInt64() + fates.GetProperty("asyncio_unhandled").GetInt64());
            Assert.All(group.GetProperty("handled_at").EnumerateArray(),
                handler => Assert.DoesNotContain("exceptions_app.py", handler.GetProperty("path").GetString()));
        }

        // The program's groups first, then the library-internal ones.
        var flags = groups.Select(group => group.GetProperty("library_internal").GetBoolean()).ToArray();
        Assert.Equal(flags.OrderBy(flag => flag), flags);
        var section = _runs.Summary.RootElement.GetProperty("exceptions");
        Assert.Equal(flags.Count(flag => flag), section.GetProperty("library_internal_groups").GetInt32());
        Assert.Equal(
            groups.Take(section.GetProperty("top_groups").GetArrayLength()).Select(group => group.GetProperty("fingerprint").GetString()),
            section.GetProperty("top_groups").EnumerateArray().Select(group => group.GetProperty("fingerprint").GetString()));
    }

    [Fact]
    public void TheConsoleTableListsTheProgramsGroupsAndOneLineForTheLibrarys()
    {
        var console = _runs.Plain.Stderr;
        var groups = AllGroups(_runs.Exceptions);
        var program = groups.Where(group => !group.GetProperty("library_internal").GetBoolean()).ToArray();
        var start = console.IndexOf("\nExceptions: ", StringComparison.Ordinal);
        Assert.True(start >= 0, console);
        var lines = console[(start + 1)..].Split('\n');

        Assert.Matches(@"^\s+count\s+handled\s+escaped\s+type\s+raised at\s+first note$", lines[1]);
        var rows = lines.Skip(2).Take(10).ToArray();
        for (var i = 0; i < rows.Length; i++)
        {
            var group = program[i];
            var cells = TableRow().Match(rows[i]);
            Assert.True(cells.Success, rows[i]);
            Assert.Equal(group.GetProperty("count").GetInt64().ToString("N0", System.Globalization.CultureInfo.InvariantCulture), cells.Groups["count"].Value);
            Assert.Equal(group.GetProperty("raise_site").GetProperty("site").GetString(), cells.Groups["site"].Value);
            Assert.EndsWith(cells.Groups["type"].Value, group.GetProperty("type").GetString());
        }
        Assert.StartsWith("10,000", rows[0].TrimStart());
        Assert.EndsWith("  while reading settings.toml, key 'port'", Assert.Single(rows, row => row.Contains($" {App}:{Line("return int(text)")} ", StringComparison.Ordinal)));
        Assert.Equal($"  ({program.Length - 10} more groups involving the program in exceptions.json)", lines[12]);

        var section = _runs.Summary.RootElement.GetProperty("exceptions");
        var libraryLine = string.Create(System.Globalization.CultureInfo.InvariantCulture,
            $"  {section.GetProperty("library_internal_groups").GetInt32()} groups, {section.GetProperty("library_internal_exceptions").GetInt64():N0} exceptions raised and handled inside library code");
        Assert.StartsWith(libraryLine, lines[13]);
        Assert.EndsWith(": see exceptions.json", lines[13]);
    }

    // ---- helpers -------------------------------------------------------------------------------------------

    [GeneratedRegex(@"^\s+(?<count>[\d,]+)\s+[\d,]+\s+[\d,]+\s+(?<type>\S+)\s+(?<site>\S+)")]
    private static partial Regex TableRow();

    /// <summary>The line number of the one line of the program that contains <paramref name="text"/> (after the
    /// first line containing <paramref name="after"/>, when given).</summary>
    private static int Line(string text, string? after = null)
    {
        var from = after is null ? 0 : Line(after);
        var matches = AppSource.Select((line, index) => (line, number: index + 1))
            .Where(entry => entry.number > from && entry.line.Contains(text, StringComparison.Ordinal))
            .Select(entry => entry.number).ToArray();
        Assert.True(after is not null ? matches.Length > 0 : matches.Length == 1,
            $"expected {(after is null ? "one line" : "a line")} of {App} containing {text}, found {matches.Length}");
        return matches[0];
    }

    private static string FileLine(string text, string function, string? after = null)
        => $"  File \"{AppPath}\", line {Line(text, after)}, in {function}";

    private static JsonElement[] AllGroups(JsonDocument document)
    {
        var process = Assert.Single(document.RootElement.GetProperty("processes").EnumerateArray());
        return process.GetProperty("groups").EnumerateArray().ToArray();
    }

    private static bool RaisedInApp(JsonElement group)
        => group.GetProperty("raise_site") is { ValueKind: JsonValueKind.Object } site && site.GetProperty("path").GetString() == AppPath;

    /// <summary>The one group of <paramref name="type"/> raised at <paramref name="line"/> of the program.</summary>
    private JsonElement AppGroup(string type, int line, JsonDocument? document = null)
    {
        var groups = AllGroups(document ?? _runs.Exceptions);
        var matches = groups.Where(group => RaisedInApp(group) && group.GetProperty("type").GetString() == type
                                            && group.GetProperty("raise_site").GetProperty("line").GetInt32() == line).ToArray();
        Assert.True(matches.Length == 1, $"expected one group {type} raised at line {line}, found {matches.Length}; groups raised in the program: " +
            string.Join(", ", groups.Where(RaisedInApp).Select(g => $"{g.GetProperty("type")}@{g.GetProperty("raise_site").GetProperty("line")}")));
        var match = matches[0];
        Assert.Equal("fingerprint", match.GetProperty("kind").GetString());
        Assert.False(match.GetProperty("library_internal").GetBoolean());
        return match;
    }

    private static void AssertCounts(JsonElement group, long count, long handled, long escapedThread = 0, long escapedProgram = 0,
        long unraisable = 0, long asyncioUnhandled = 0)
    {
        var fates = group.GetProperty("by_fate");
        Assert.Equal(
            (count, handled, escapedThread, escapedProgram, unraisable, asyncioUnhandled, 0L, 0L),
            (group.GetProperty("count").GetInt64(), fates.GetProperty("handled").GetInt64(), fates.GetProperty("escaped_thread").GetInt64(),
             fates.GetProperty("escaped_program").GetInt64(), fates.GetProperty("unraisable").GetInt64(),
             fates.GetProperty("asyncio_unhandled").GetInt64(), fates.GetProperty("in_flight").GetInt64(), fates.GetProperty("unknown").GetInt64()));
        Assert.Equal(count, group.GetProperty("detailed").GetInt64() + group.GetProperty("tallied").GetInt64());
        Assert.Equal(0, group.GetProperty("handled_at_omitted").GetInt64());
    }

    private static void AssertHandledAt(JsonElement group, params (int Line, long Count)[] expected)
        => Assert.Equal(
            expected.Select(handler => ($"{App}:{handler.Line}", handler.Count)),
            group.GetProperty("handled_at").EnumerateArray().Select(handler => (handler.GetProperty("site").GetString()!, handler.GetProperty("count").GetInt64())));

    private static string[] Strings(JsonElement array) => array.EnumerateArray().Select(item => item.GetString()!).ToArray();

    private static string[] ProgramFrames(JsonElement group)
        => group.GetProperty("program_frames").EnumerateArray().Select(frame => frame.GetProperty("function").GetString()!).ToArray();

    /// <summary>Locations as <c>function:line</c>.</summary>
    private static string[] Frames(JsonElement locations)
        => locations.EnumerateArray().Select(location => $"{location.GetProperty("function").GetString()}:{location.GetProperty("line").GetInt32()}").ToArray();

    private static (string?, string?) TypeAndMessage(JsonElement exception)
        => (exception.GetProperty("type").GetString(), exception.GetProperty("message").GetString());

    private static string[] Members(JsonElement exception)
        => exception.GetProperty("members").EnumerateArray()
            .Select(member => $"{member.GetProperty("type").GetString()}: {member.GetProperty("message").GetString()}").ToArray();

    private static string[] TracebackLines(JsonElement group)
    {
        var text = group.GetProperty("traceback_text").GetString();
        Assert.NotNull(text);
        return text.TrimEnd('\n').Split('\n');
    }

    private static void AssertTraceback(JsonElement group, params string[] expected) => Assert.Equal(expected, TracebackLines(group));
}

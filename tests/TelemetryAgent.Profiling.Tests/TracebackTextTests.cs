using TelemetryAgent.Profiling.Formats;
using TelemetryAgent.Testing;

namespace TelemetryAgent.Profiling.Tests;

/// <summary>The Python-style traceback text, against a golden file and against what CPython prints.</summary>
public sealed class TracebackTextTests
{
    private static readonly FunctionInfo Module = Function("<module>", 1);
    private static readonly FunctionInfo Load = Function("load", 1);
    private static readonly FunctionInfo Parse = Function("parse", 3);
    private static readonly FunctionInfo Batch = Function("batch", 8);
    private static readonly FunctionInfo Lambda = Function("batch.<locals>.<lambda>", 10);
    private static readonly FunctionInfo Main = Function("main", 20);

    private static FunctionInfo Function(string name, int line) => FunctionInfo.Create(name, "/tmp/tb.py", line, "__main__", 0, "/tmp");

    private static ExceptionInfo Exception(string type, string message, (FunctionInfo Function, int Line)[] traceback,
        ExceptionInfo? cause = null, ExceptionInfo? context = null, ExceptionInfo[]? members = null, string[]? notes = null,
        ExceptionMessageStatus status = ExceptionMessageStatus.Ok, long membersOmitted = 0, long notesOmitted = 0, bool nestingTruncated = false)
        => new(type, message, status, notes ?? [], notesOmitted, [.. traceback.Select(frame => new CodeLocation(frame.Function, frame.Line))], 0,
            cause, context, SuppressContext: cause is not null, members ?? [], membersOmitted, nestingTruncated);

    /// <summary>
    /// The exception that this program ends with (CPython 3.12), which golden/traceback.txt prints as CPython
    /// does minus its source lines:
    /// <code>
    /// def load(k): return {}[k]
    /// def parse():
    ///     try: load("x")
    ///     except KeyError as e: raise ValueError("bad row 3") from e
    /// def batch():  # collects parse's and a lambda's errors and an inner group into ExceptionGroup("batch failed")
    /// def main():
    ///     try: batch()
    ///     except* ZeroDivisionError: raise RuntimeError("boom")
    /// main()
    /// </code>
    /// </summary>
    internal static ExceptionInfo CPythonSample()
    {
        var zeroDivision = Exception("builtins.ZeroDivisionError", "division by zero", [(Batch, 12), (Lambda, 10)]);
        var matched = Exception("builtins.ExceptionGroup", "batch failed (1 sub-exception)", [(Main, 22), (Batch, 19)],
            members: [zeroDivision], notes: ["while loading orders.csv"]);
        var boom = Exception("builtins.RuntimeError", "boom", [(Main, 24)], context: matched);
        var keyError = Exception("builtins.KeyError", "'x'", [(Parse, 5), (Load, 2)]);
        var valueError = Exception("builtins.ValueError", "bad row 3", [(Batch, 12), (Parse, 7)], cause: keyError);
        var inner = Exception("builtins.ExceptionGroup", "inner (1 sub-exception)", [], members: [Exception("builtins.TypeError", "t", [])]);
        var rest = Exception("builtins.ExceptionGroup", "batch failed (2 sub-exceptions)", [(Main, 22), (Batch, 19)],
            members: [valueError, inner], notes: ["while loading orders.csv"]);
        return Exception("builtins.ExceptionGroup", " (2 sub-exceptions)", [(Module, 25)], members: [boom, rest]);
    }

    [Fact]
    public void A_chained_nested_exception_group_prints_as_CPython_prints_it()
        => Golden.Verify(TracebackText.Format(CPythonSample()), "traceback.txt");

    [Fact]
    public void A_plain_exception_without_traceback_is_its_line_and_notes()
    {
        var exception = Exception("app.errors.Invalid", "", [], notes: ["first", "two\nlines"], notesOmitted: 3);
        Assert.Equal("app.errors.Invalid\nfirst\ntwo\nlines\n[3 more notes not captured]\n", TracebackText.Format(exception));
    }

    [Theory]
    [InlineData("builtins.ValueError", "ValueError")]
    [InlineData("__main__.Invalid", "Invalid")]
    [InlineData("app.errors.Invalid", "app.errors.Invalid")]
    [InlineData("builtins.", "builtins.")]
    [InlineData("", "<unknown exception type>")]
    public void Type_names_drop_the_builtins_and_main_modules_as_Python_does(string typeName, string shown)
        => Assert.Equal(shown, TracebackText.DisplayTypeName(typeName));

    [Fact]
    public void What_was_not_captured_is_said()
    {
        var exception = Exception("builtins.ExceptionGroup", "many", [(Main, 3)], status: ExceptionMessageStatus.Truncated,
            members: [Exception("builtins.OSError", "", [], status: ExceptionMessageStatus.Unavailable)], membersOmitted: 14,
            nestingTruncated: true);
        Assert.Equal(
            """
              + Exception Group Traceback (most recent call last):
              |   File "/tmp/tb.py", line 3, in main
              | ExceptionGroup: many [truncated]
              | [deeper chained or grouped exceptions not captured]
              +-+---------------- 1 ----------------
                | OSError: <message not captured>
                +---------------- ... ----------------
                | and 14 more exceptions
                +------------------------------------

            """.Replace("\r\n", "\n"),
            TracebackText.Format(exception));
    }
}

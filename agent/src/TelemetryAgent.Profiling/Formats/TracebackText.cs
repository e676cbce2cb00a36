using System.Globalization;
using System.Text;

namespace TelemetryAgent.Profiling.Formats;

/// <summary>
/// An exception as Python's <c>traceback.format_exception</c> prints it: chained exceptions first with their
/// separators, "Traceback (most recent call last):" and one <c>File "...", line N, in function</c> line per frame,
/// the <c>Type: message</c> line and the notes; exception groups with their members in boxes
/// (<c>+-+---- 1 ----</c>). Simplified: no source lines, and functions are named by their qualified name. What
/// the shim or the agent left out is said in brackets. Used for exceptions.json and for OTLP's
/// <c>exception.stacktrace</c>.
/// </summary>
public static class TracebackText
{
    public const string CauseSeparator = "\nThe above exception was the direct cause of the following exception:\n\n";
    public const string ContextSeparator = "\nDuring handling of the above exception, another exception occurred:\n\n";

    public static string Format(ExceptionInfo exception)
    {
        ArgumentNullException.ThrowIfNull(exception);
        var printer = new Printer();
        printer.Exception(exception);
        return printer.ToString();
    }

    /// <summary><c>module.QualName</c> as Python prints it: without <c>builtins.</c> or <c>__main__.</c>.</summary>
    public static string DisplayTypeName(string typeName)
    {
        ArgumentNullException.ThrowIfNull(typeName);
        if (typeName.Length == 0) return "<unknown exception type>";
        foreach (var prefix in (ReadOnlySpan<string>)["builtins.", "__main__."])
        {
            if (typeName.StartsWith(prefix, StringComparison.Ordinal) && typeName.Length > prefix.Length) return typeName[prefix.Length..];
        }
        return typeName;
    }

    /// <summary>The <c>Type: message</c> line (without notes), as <c>traceback.format_exception_only</c> starts.</summary>
    public static string ExceptionLine(ExceptionInfo exception)
    {
        ArgumentNullException.ThrowIfNull(exception);
        var type = DisplayTypeName(exception.TypeName);
        var message = exception.MessageStatus switch
        {
            ExceptionMessageStatus.Unavailable => "<message not captured>",
            ExceptionMessageStatus.Truncated => exception.Message + " [truncated]",
            _ => exception.Message,
        };
        return message.Length == 0 ? type : $"{type}: {message}";
    }

    // Follows CPython's TracebackException.format and _ExceptionPrintContext: the box of a group is drawn with
    // a margin indented two spaces per level, and the last member's closing line is shared with its own last box.
    private sealed class Printer
    {
        private readonly StringBuilder _text = new();
        private int _groupDepth;
        private bool _needClose;

        public override string ToString() => _text.ToString();

        public void Exception(ExceptionInfo exception)
        {
            // Oldest first: the cause or context of an exception is printed before it.
            var chain = new List<(string? Separator, ExceptionInfo Exception)>();
            for (ExceptionInfo? current = exception; current is not null;)
            {
                if (current.Cause is { } cause)
                {
                    chain.Add((CauseSeparator, current));
                    current = cause;
                }
                else if (current.Context is { } context && !current.SuppressContext)
                {
                    chain.Add((ContextSeparator, current));
                    current = context;
                }
                else
                {
                    chain.Add((null, current));
                    current = null;
                }
            }

            for (var i = chain.Count - 1; i >= 0; i--)
            {
                // The separator recorded with an exception goes between its cause (printed just before) and it.
                if (i < chain.Count - 1 && chain[i].Separator is { } separator) Emit(separator);
                One(chain[i].Exception);
            }
        }

        private void One(ExceptionInfo exception)
        {
            if (!exception.IsGroup)
            {
                if (exception.Traceback.Count > 0)
                {
                    Emit("Traceback (most recent call last):\n");
                    Frames(exception);
                }
                ExceptionOnly(exception);
                return;
            }

            var isTopLevel = _groupDepth == 0;
            if (isTopLevel) _groupDepth++;
            if (exception.Traceback.Count > 0)
            {
                Emit("Exception Group Traceback (most recent call last):\n", isTopLevel ? '+' : '|');
                Frames(exception);
            }
            ExceptionOnly(exception);

            var boxes = exception.Members.Count + (exception.MembersOmitted > 0 ? 1 : 0);
            _needClose = false;
            for (var i = 0; i < boxes; i++)
            {
                var last = i == boxes - 1;
                if (last) _needClose = true;
                var omitted = i >= exception.Members.Count;
                var title = omitted ? "..." : (i + 1).ToString(CultureInfo.InvariantCulture);
                _text.Append(Indent()).Append(i == 0 ? "+-" : "  ").Append("+---------------- ").Append(title).Append(" ----------------\n");
                _groupDepth++;
                if (omitted)
                {
                    var count = exception.MembersOmitted;
                    Emit(string.Create(CultureInfo.InvariantCulture, $"and {count} more exception{(count == 1 ? "" : "s")}\n"));
                }
                else
                {
                    Exception(exception.Members[i]);
                }
                if (last && _needClose)
                {
                    _text.Append(Indent()).Append("+------------------------------------\n");
                    _needClose = false;
                }
                _groupDepth--;
            }
            if (isTopLevel) _groupDepth = 0;
        }

        private void Frames(ExceptionInfo exception)
        {
            var text = new StringBuilder();
            if (exception.TracebackFramesOmitted > 0)
            {
                text.Append(CultureInfo.InvariantCulture, $"  [{exception.TracebackFramesOmitted} outer frames not captured]\n");
            }
            foreach (var frame in exception.Traceback)
            {
                text.Append("  File \"").Append(frame.Function.FileName).Append("\", line ")
                    .Append(frame.Line.ToString(CultureInfo.InvariantCulture)).Append(", in ").Append(frame.Function.QualifiedName).Append('\n');
            }
            Emit(text.ToString());
        }

        private void ExceptionOnly(ExceptionInfo exception)
        {
            var text = new StringBuilder(ExceptionLine(exception)).Append('\n');
            foreach (var note in exception.Notes) text.Append(note).Append('\n');
            if (exception.NotesOmitted > 0)
            {
                text.Append(CultureInfo.InvariantCulture, $"[{exception.NotesOmitted} more note{(exception.NotesOmitted == 1 ? "" : "s")} not captured]\n");
            }
            if (exception.NestingTruncated) text.Append("[deeper chained or grouped exceptions not captured]\n");
            Emit(text.ToString());
        }

        private string Indent() => new(' ', 2 * _groupDepth);

        /// <summary>Appends each line of <paramref name="text"/> behind the current margin (none outside a group).</summary>
        private void Emit(string text, char margin = '|')
        {
            var prefix = _groupDepth > 0 ? Indent() + margin + " " : "";
            var start = 0;
            while (start < text.Length)
            {
                var end = text.IndexOf('\n', start);
                end = end < 0 ? text.Length : end + 1;
                _text.Append(prefix).Append(text, start, end - start);
                start = end;
            }
            if (text.Length > 0 && text[^1] != '\n') _text.Append('\n');
        }
    }
}

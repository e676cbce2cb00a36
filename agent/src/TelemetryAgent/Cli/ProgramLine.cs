namespace TelemetryAgent.Cli;

/// <summary>
/// What `run` is asked to start: a script or a module with its arguments, and optionally the interpreter
/// named in front of it (`run -- python3.12 -m module`).
/// </summary>
public sealed record ProgramLine(string? Interpreter, IReadOnlyList<string> Arguments)
{
    /// <summary>
    /// Parses the program part of `run`'s command line: `script.py args`, `-m module args`, or
    /// `python -m module args` / `python script.py args` (an interpreter first).
    /// </summary>
    public static ProgramLine Parse(IReadOnlyList<string> tokens, out string? error)
    {
        error = null;
        if (tokens.Count == 0)
        {
            error = "Name a script or -m module to run.";
            return new ProgramLine(null, []);
        }
        string? interpreter = null;
        var rest = tokens;
        if (LooksLikeInterpreter(tokens[0]))
        {
            interpreter = tokens[0];
            rest = tokens.Skip(1).ToArray();
        }
        if (rest.Count == 0 || (rest[0] == "-m" && rest.Count < 2))
        {
            error = rest.Count == 0 ? "Name a script or -m module after the interpreter." : "-m needs a module name.";
            return new ProgramLine(interpreter, rest);
        }
        if (rest[0].StartsWith('-') && rest[0] != "-m")
        {
            error = $"Interpreter options such as '{rest[0]}' are not supported here; name a script or -m module.";
            return new ProgramLine(interpreter, rest);
        }
        return new ProgramLine(interpreter, rest);
    }

    /// <summary>The program's own name for outputs: the script's file name or the module.</summary>
    public string DisplayName => Arguments[0] == "-m" ? Arguments[1] : Path.GetFileName(Arguments[0]);

    private static bool LooksLikeInterpreter(string token)
    {
        var name = Path.GetFileName(token);
        return !name.EndsWith(".py", StringComparison.Ordinal)
               && (name.StartsWith("python", StringComparison.Ordinal) || name.StartsWith("pypy", StringComparison.Ordinal));
    }

    /// <summary>
    /// Splits `run`'s raw arguments into the agent's own options and the program, so that the program's
    /// options (`app.py --verbose`) are never taken for the agent's. The program starts at `--`, at `-m`,
    /// or at the first token that is neither an agent option nor an option's value.
    /// </summary>
    public static (string[] AgentArguments, string[] ProgramTokens) Split(
        IReadOnlyList<string> arguments, IReadOnlySet<string> optionsWithValue)
    {
        for (var i = 0; i < arguments.Count; i++)
        {
            var token = arguments[i];
            if (token == "--") return (arguments.Take(i).ToArray(), arguments.Skip(i + 1).ToArray());
            if (token == "-m") return (arguments.Take(i).ToArray(), arguments.Skip(i).ToArray());
            if (!token.StartsWith('-')) return (arguments.Take(i).ToArray(), arguments.Skip(i).ToArray());
            if (optionsWithValue.Contains(token)) i++;
        }
        return (arguments.ToArray(), []);
    }
}

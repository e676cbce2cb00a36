using System.Text.RegularExpressions;

namespace TelemetryAgent.Sessions;

/// <summary>
/// Replaces secrets in text the program produced (exception messages and notes) before the agent keeps it, so
/// that no output file and no export ever sees them. Built-in patterns cover common credentials; users add
/// their own regular expressions. Thread-safe and immutable.
/// </summary>
/// <remarks>
/// A built-in pattern keeps what says what the secret was (<c>Bearer </c>, <c>password=</c>, a URL's user) and
/// replaces the secret with <c>[REDACTED:name]</c>; a user pattern's whole match becomes <c>[REDACTED]</c>. Every
/// match runs under a timeout: a text on which a pattern takes too long is replaced whole, never kept.
/// </remarks>
public sealed class Redactor
{
    public const string TimedOutText = "[REDACTED: redaction timed out]";

    // Generous enough for a loaded host (a timeout replaces the whole text), short enough to stop a pattern that
    // backtracks catastrophically.
    private static readonly TimeSpan MatchTimeout = TimeSpan.FromSeconds(1);
    private const RegexOptions Options = RegexOptions.CultureInvariant | RegexOptions.Compiled;

    private readonly (string Name, Regex Pattern, string Replacement)[] _rules;

    private Redactor((string, Regex, string)[] rules) => _rules = rules;

    // Declared before the instances below, which are built from it. The most specific patterns run first, so a
    // GitHub token after "token " is named as what it is.
    private static readonly (string Name, string Pattern, string Replacement)[] BuiltIn =
    [
        ("private-key", @"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(-----END [A-Z ]*PRIVATE KEY-----|$)", "[REDACTED:private-key]"),
        ("url-password", @"(?<=[A-Za-z][A-Za-z0-9+.\-]*://[^\s/:@]*:)[^\s/@]+(?=@)", "[REDACTED:url-password]"),
        ("aws-access-key-id", @"\b(AKIA|ASIA|AGPA|AIDA|AROA|ANPA)[0-9A-Z]{16}\b", "[REDACTED:aws-access-key-id]"),
        ("github-token", @"\b(gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})", "[REDACTED:github-token]"),
        ("slack-token", @"\bxox[abposr]-[A-Za-z0-9\-]{10,}", "[REDACTED:slack-token]"),
        ("jwt", @"\beyJ[A-Za-z0-9_\-]{4,}\.eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*", "[REDACTED:jwt]"),
        ("bearer-token", @"(?i)(?<=\b(bearer|token|basic)\s+)[A-Za-z0-9\-._~+/]{8,}=*", "[REDACTED:bearer-token]"),
        ("secret",
            @"(?i)(?<=\b[A-Za-z0-9_\-]*(password|passwd|pwd|secret|api[_\-]?key|access[_\-]?key|auth[_\-]?token|access[_\-]?token|private[_\-]?key|client[_\-]?secret)['""]?\s*[=:]\s*['""]?)[^\s'"",;&}]+",
            "[REDACTED:secret]"),
        ("email", @"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}\b", "[REDACTED:email]"),
    ];

    /// <summary>The built-in patterns only.</summary>
    public static Redactor Default { get; } = Create([], includeBuiltIn: true);

    /// <summary>Redacts nothing (for tests of what the shim sent, byte for byte).</summary>
    public static Redactor None { get; } = Create([], includeBuiltIn: false);

    /// <summary>
    /// A redactor with the built-in patterns (unless <paramref name="includeBuiltIn"/> is false) followed by
    /// <paramref name="userPatterns"/>. Throws <see cref="ArgumentException"/> naming a pattern that does not
    /// compile.
    /// </summary>
    public static Redactor Create(IEnumerable<string> userPatterns, bool includeBuiltIn = true)
    {
        var rules = new List<(string, Regex, string)>();
        if (includeBuiltIn)
        {
            foreach (var (name, pattern, replacement) in BuiltIn) rules.Add((name, new Regex(pattern, Options, MatchTimeout), replacement));
        }
        foreach (var pattern in userPatterns)
        {
            try
            {
                rules.Add(("user", new Regex(pattern, Options, MatchTimeout), "[REDACTED]"));
            }
            catch (ArgumentException e)
            {
                throw new ArgumentException($"the redaction pattern {pattern} is not a valid regular expression: {e.Message}", e);
            }
        }
        // Each compiled pattern is JIT-compiled on its first match: do that now, not inside a timed match.
        foreach (var (_, pattern, _) in rules) pattern.IsMatch(string.Empty);
        return new Redactor([.. rules]);
    }

    /// <summary>Reads one pattern per line; blank lines and lines starting with '#' are skipped.</summary>
    public static IReadOnlyList<string> ReadPatternFile(string path) =>
        File.ReadAllLines(path).Where(line => line.Trim().Length > 0 && !line.TrimStart().StartsWith('#')).ToArray();

    public bool IsEmpty => _rules.Length == 0;

    /// <summary>The text with every secret replaced.</summary>
    public string Redact(string text)
    {
        if (string.IsNullOrEmpty(text)) return text;
        try
        {
            foreach (var (_, pattern, replacement) in _rules) text = pattern.Replace(text, replacement);
            return text;
        }
        catch (RegexMatchTimeoutException)
        {
            return TimedOutText;
        }
    }
}

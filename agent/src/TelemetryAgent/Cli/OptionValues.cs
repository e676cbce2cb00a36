using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;

namespace TelemetryAgent.Cli;

/// <summary>
/// Options whose wrong value is one line naming the option and what it takes ("--top takes a whole number, 0 or
/// more, not 'x'"), not System.CommandLine's type names and lists: see <see cref="AgentCommandLine"/>.
/// </summary>
internal static class OptionValues
{
    /// <summary>A whole number from <paramref name="minimum"/> to <paramref name="maximum"/>.</summary>
    public static Option<int> WholeNumber(string name, int defaultValue, int minimum, int maximum, string description)
    {
        var range = maximum == int.MaxValue ? $", {minimum} or more" : $" from {minimum} to {maximum}";
        return new Option<int>(name)
        {
            Description = description,
            DefaultValueFactory = _ => defaultValue,
            CustomParser = result => Parse(result, defaultValue, $"{name} takes a whole number{range}",
                text => int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out var value) && value >= minimum && value <= maximum
                    ? value : null),
        };
    }

    /// <summary>A number of seconds from <paramref name="minimum"/> to <paramref name="maximum"/>.</summary>
    public static Option<double> Seconds(string name, double defaultValue, double minimum, double maximum, string description)
        => new(name)
        {
            Description = description,
            DefaultValueFactory = _ => defaultValue,
            CustomParser = result => Parse(result, defaultValue,
                string.Create(CultureInfo.InvariantCulture, $"{name} takes a number of seconds from {minimum} to {maximum}"),
                text => double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var value)
                        && double.IsFinite(value) && value >= minimum && value <= maximum
                    ? value : null),
        };

    /// <summary>
    /// Restricts <paramref name="option"/> to <paramref name="values"/> (compared ignoring case and surrounding blanks,
    /// as OTEL_* values are).
    /// </summary>
    public static void OneOf(Option option, params string[] values)
    {
        option.Validators.Add(result =>
        {
            foreach (var token in result.Tokens)
            {
                if (!values.Contains(token.Value.Trim(), StringComparer.OrdinalIgnoreCase))
                    result.AddError($"{option.Name} takes {Alternatives(values)}, not '{token.Value}'.");
            }
        });
    }

    /// <summary>"a, b or c".</summary>
    public static string Alternatives(IReadOnlyList<string> values)
        => values.Count == 1 ? values[0] : $"{string.Join(", ", values.Take(values.Count - 1))} or {values[^1]}";

    private static T Parse<T>(ArgumentResult result, T defaultValue, string takes, Func<string, T?> parse) where T : struct
    {
        if (result.Tokens.Count == 0) return defaultValue;
        var text = result.Tokens[^1].Value;
        if (parse(text) is { } value) return value;
        result.AddError($"{takes}, not '{text}'.");
        return defaultValue;
    }
}

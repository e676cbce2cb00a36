using System.Buffers;
using System.Globalization;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.RegularExpressions;
using System.Text.Unicode;
using TelemetryAgent.Profiling;
using TelemetryAgent.Profiling.Startup;

namespace TelemetryAgent.Output;

/// <summary>flamegraph.html: one self-contained interactive page (no network access) of the processes' merged tree.</summary>
/// <remarks>
/// The page is the embedded template <c>flamegraph.html</c> with three placeholders filled in: the title and
/// the header line (HTML-escaped) and the profile data (JSON, escaped so that it cannot end its script
/// element). The data layout, version <see cref="DataFormat"/>, is flat so that neither this writer nor the
/// page recurses over deep stacks:
/// <code>
/// { "format": "...", "strings": [ ... ],
///   "functions": [ qualifiedName, displayFile, firstLine, module, category, kindFlags, ... ],
///   "nodes":     [ name, calls, resumes, selfNs, totalNs, childCount, ... ] }
/// </code>
/// A differential page adds <c>"baseline": [ calls, selfNs, totalNs, ... ]</c>, one triple per node: the figures
/// it is compared against. Names and files are indexes into <c>strings</c>. A node's <c>name</c> is a function index when it is 0 or
/// more, and <c>-(string index + 1)</c> for a function-less node (the root, a process, a thread). Nodes are
/// in pre-order, so a node's children follow it, each followed by its own subtree. <c>totalNs</c> is the
/// display total: max(TotalNs, SelfNs + children's display totals), so roots without a TotalNs still span
/// their children.
/// </remarks>
public sealed partial class FlameGraphHtmlFile : IOutputFile
{
    public const string FileName = "flamegraph.html";
    public const string DataFormat = "telemetry-agent-flamegraph/1";

    private const int NodeFields = 6;
    private const string TemplateResourceName = "TelemetryAgent.Output.flamegraph.html";
    private static readonly Lazy<TemplatePart[]> Template = new(LoadTemplate);

    // Ranges.All keeps non-ASCII names readable; the encoder still escapes '<', '>', '&', quotes and the
    // JavaScript line terminators U+2028/U+2029, so "</script" can never close the data element.
    private static readonly JsonWriterOptions JsonOptions = new()
    {
        Encoder = JavaScriptEncoder.Create(UnicodeRanges.All),
        Indented = false,
        SkipValidation = false,
    };

    public string Name => FileName;

    /// <summary>The page of <see cref="MergedCallTree"/>: one bottom-row frame per process, and one per process's
    /// start-up (<see cref="StartupCallTree"/>: its import tree) when the shim sent one.</summary>
    public void Write(Stream output, OutputRun run)
        => TextOutput.Write(output, text => Write(text, StartupCallTree.AddTo(MergedCallTree.Of(run.Processes), run.Processes),
            run.Title, run.WrittenAt));

    /// <summary>Writes the page for the tree under <paramref name="root"/> (its children are the flame graph's
    /// bottom row, typically one per process).</summary>
    public static void Write(TextWriter output, CallNode root, string title)
        => Write(output, root, title, DateTimeOffset.UtcNow);

    /// <summary>Writes the page, stamping it as generated at <paramref name="generatedAt"/> (fixed in tests so
    /// that the output is byte-for-byte reproducible).</summary>
    public static void Write(TextWriter output, CallNode root, string title, DateTimeOffset generatedAt)
    {
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(root);
        var nodes = Flatten(root);
        WritePage(output, nodes, null, title ?? "", DescribeProfile(nodes, generatedAt));
    }

    /// <summary>
    /// The page in its differential mode: the frames of both trees, sized and weighted by both (the baseline scaled to
    /// the comparison's total), coloured by how each frame's share of the time changed from
    /// <paramref name="baseline"/> to <paramref name="comparison"/>: grew, shrank, new (only in the comparison) or
    /// gone. Nodes match by path (processes by label, threads by name, functions by value).
    /// </summary>
    public static void WriteDifference(TextWriter output, CallNode baseline, CallNode comparison, string title, DateTimeOffset generatedAt)
    {
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(baseline);
        ArgumentNullException.ThrowIfNull(comparison);
        var canonical = new CanonicalFunctions();
        var union = CallNode.CreateRoot(comparison.Name);
        union.MergeFrom(comparison, canonical.Of);

        // The baseline's figures per node of the union (creating the nodes only it has), with its display totals.
        var baselineTotals = new Dictionary<CallNode, long>(ReferenceEqualityComparer.Instance);
        foreach (var flat in Flatten(baseline)) baselineTotals[flat.Node] = flat.DisplayTotalNs;
        var before = new Dictionary<CallNode, (long Calls, long SelfNs, long TotalNs)>(ReferenceEqualityComparer.Instance);
        var pending = new Stack<(CallNode Source, CallNode Target)>();
        pending.Push((baseline, union));
        while (pending.TryPop(out var pair))
        {
            before[pair.Target] = (pair.Source.Calls, pair.Source.SelfNs, baselineTotals[pair.Source]);
            foreach (var child in pair.Source.Children)
            {
                var target = child.Function is null ? pair.Target.GetOrAddGroup(child.Name) : pair.Target.GetOrAddChild(canonical.Of(child.Function));
                pending.Push((child, target));
            }
        }
        var nodes = Flatten(union);
        var header = "differential · " + DescribeProfile(nodes, generatedAt);
        WritePage(output, nodes, before, title ?? "", header);
    }

    private static void WritePage(TextWriter output, FlatNode[] nodes, Dictionary<CallNode, (long Calls, long SelfNs, long TotalNs)>? baseline,
        string title, string header)
    {
        foreach (var part in Template.Value)
        {
            switch (part.Placeholder)
            {
                case Placeholder.None: output.Write(part.Text); break;
                case Placeholder.Title: output.Write(HtmlEscape(title)); break;
                case Placeholder.Header: output.Write(HtmlEscape(header)); break;
                case Placeholder.Data: WriteData(output, nodes, baseline); break;
            }
        }
    }

    /// <summary>Escapes the characters that are markup in text and attribute values; everything else, including
    /// non-ASCII text, is written as it is (the page is UTF-8).</summary>
    private static string HtmlEscape(string text)
    {
        if (text.AsSpan().IndexOfAny("&<>\"'") < 0) return text;
        var escaped = new StringBuilder(text.Length + 16);
        foreach (var ch in text)
        {
            switch (ch)
            {
                case '&': escaped.Append("&amp;"); break;
                case '<': escaped.Append("&lt;"); break;
                case '>': escaped.Append("&gt;"); break;
                case '"': escaped.Append("&quot;"); break;
                case '\'': escaped.Append("&#39;"); break;
                default: escaped.Append(ch); break;
            }
        }
        return escaped.ToString();
    }

    /// <summary>One node in pre-order with its display total (computed bottom-up without recursion).</summary>
    private readonly record struct FlatNode(CallNode Node, int Depth, long DisplayTotalNs);

    private static FlatNode[] Flatten(CallNode root)
    {
        var order = new List<(CallNode Node, int Depth)>();
        var pending = new Stack<(CallNode Node, int Depth)>();
        pending.Push((root, 0));
        while (pending.Count > 0)
        {
            var (node, depth) = pending.Pop();
            order.Add((node, depth));
            var children = node.Children;
            for (var i = children.Count - 1; i >= 0; i--) pending.Push((children[i], depth + 1));
        }

        // Walking pre-order backwards visits every child before its parent.
        var totals = new Dictionary<CallNode, long>(order.Count, ReferenceEqualityComparer.Instance);
        for (var i = order.Count - 1; i >= 0; i--)
        {
            var node = order[i].Node;
            var childrenTotal = 0L;
            foreach (var child in node.Children) childrenTotal = SaturatingAdd(childrenTotal, totals[child]);
            totals[node] = Math.Max(Math.Max(node.TotalNs, 0), SaturatingAdd(Math.Max(node.SelfNs, 0), childrenTotal));
        }

        var flat = new FlatNode[order.Count];
        for (var i = 0; i < flat.Length; i++) flat[i] = new FlatNode(order[i].Node, order[i].Depth, totals[order[i].Node]);
        return flat;
    }

    private static long SaturatingAdd(long a, long b) => a > long.MaxValue - b ? long.MaxValue : a + b;

    /// <summary>"2 processes · 5 threads · 1.52 s on stack · generated 2025-01-01 12:00:00 UTC". Processes are the
    /// function-less nodes just under the root, threads the function-less nodes under those.</summary>
    private static string DescribeProfile(FlatNode[] nodes, DateTimeOffset generatedAt)
    {
        int processes = 0, threads = 0, startups = 0;
        foreach (var flat in nodes)
        {
            if (flat.Node.Function is not null) continue;
            if (StartupCallTree.IsStartupFrame(flat.Node, out var importTree))
            {
                if (importTree) startups++;
            }
            else if (flat.Depth == 1) processes++;
            else if (flat.Depth == 2 && !StartupCallTree.IsStartupFrame(flat.Node.Parent!, out _)) threads++;
        }

        var text = new StringBuilder();
        text.Append(Plural(processes, "process", "processes")).Append(" · ");
        text.Append(Plural(threads, "thread", "threads")).Append(" · ");
        if (startups > 0) text.Append(Plural(startups, "start-up", "start-ups")).Append(" (import trees) · ");
        text.Append(FormatDuration(nodes[0].DisplayTotalNs)).Append(" on stack (all threads) · ");
        text.Append("generated ")
            .Append(generatedAt.ToUniversalTime().ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture))
            .Append(" UTC");
        return text.ToString();
    }

    private static string Plural(int count, string one, string many)
        => count.ToString(CultureInfo.InvariantCulture) + " " + (count == 1 ? one : many);

    private static string FormatDuration(long ns) => ns switch
    {
        < 1_000 => $"{ns} ns",
        < 1_000_000 => (ns / 1e3).ToString("0.##", CultureInfo.InvariantCulture) + " µs",
        < 1_000_000_000 => (ns / 1e6).ToString("0.##", CultureInfo.InvariantCulture) + " ms",
        _ => (ns / 1e9).ToString("0.##", CultureInfo.InvariantCulture) + " s",
    };

    private static void WriteData(TextWriter output, FlatNode[] nodes, Dictionary<CallNode, (long Calls, long SelfNs, long TotalNs)>? baseline)
    {
        var strings = new StringTable();
        var functionIndex = new Dictionary<FunctionInfo, int>(ReferenceEqualityComparer.Instance);
        var functions = new List<FunctionInfo>();
        var names = new int[nodes.Length];
        for (var i = 0; i < nodes.Length; i++)
        {
            var node = nodes[i].Node;
            if (node.Function is { } function)
            {
                if (!functionIndex.TryGetValue(function, out var index))
                {
                    index = functions.Count;
                    functionIndex.Add(function, index);
                    functions.Add(function);
                }
                names[i] = index;
            }
            else
            {
                names[i] = -(strings.IndexOf(node.Name) + 1);
            }
        }

        var functionFields = new int[functions.Count * 6];
        for (var i = 0; i < functions.Count; i++)
        {
            var function = functions[i];
            functionFields[i * 6] = strings.IndexOf(function.QualifiedName);
            functionFields[i * 6 + 1] = strings.IndexOf(function.DisplayFile);
            functionFields[i * 6 + 2] = function.FirstLine;
            functionFields[i * 6 + 3] = strings.IndexOf(function.Module);
            functionFields[i * 6 + 4] = (int)Classify(function.FileName);
            functionFields[i * 6 + 5] = (int)function.KindFlags;
        }

        var buffer = new ArrayBufferWriter<byte>(64 * 1024 + nodes.Length * NodeFields * 4);
        using (var json = new Utf8JsonWriter(buffer, JsonOptions))
        {
            json.WriteStartObject();
            json.WriteString("format", DataFormat);
            json.WriteStartArray("strings");
            foreach (var text in strings.Values) json.WriteStringValue(WithoutLoneSurrogates(text));
            json.WriteEndArray();
            json.WriteStartArray("functions");
            foreach (var field in functionFields) json.WriteNumberValue(field);
            json.WriteEndArray();
            json.WriteStartArray("nodes");
            for (var i = 0; i < nodes.Length; i++)
            {
                var node = nodes[i].Node;
                json.WriteNumberValue(names[i]);
                json.WriteNumberValue(Math.Max(node.Calls, 0));
                json.WriteNumberValue(Math.Max(node.Resumes, 0));
                json.WriteNumberValue(Math.Max(node.SelfNs, 0));
                json.WriteNumberValue(nodes[i].DisplayTotalNs);
                json.WriteNumberValue(node.Children.Count);
            }
            json.WriteEndArray();
            if (baseline is not null)
            {
                // Differential mode: the baseline's calls, self and display total per node, in the nodes' order.
                json.WriteStartArray("baseline");
                foreach (var flat in nodes)
                {
                    var (calls, self, total) = baseline.GetValueOrDefault(flat.Node);
                    json.WriteNumberValue(Math.Max(calls, 0));
                    json.WriteNumberValue(Math.Max(self, 0));
                    json.WriteNumberValue(Math.Max(total, 0));
                }
                json.WriteEndArray();
            }
            json.WriteEndObject();
        }

        WriteUtf8(output, buffer.WrittenSpan);
    }

    /// <summary>Decodes in slices so a large profile never needs one string of its whole size.</summary>
    private static void WriteUtf8(TextWriter output, ReadOnlySpan<byte> utf8)
    {
        var decoder = Encoding.UTF8.GetDecoder();
        var chars = ArrayPool<char>.Shared.Rent(16 * 1024);
        try
        {
            while (true)
            {
                decoder.Convert(utf8, chars, flush: true, out var bytesUsed, out var charsUsed, out var completed);
                output.Write(chars, 0, charsUsed);
                utf8 = utf8[bytesUsed..];
                if (completed) break;
            }
        }
        finally
        {
            ArrayPool<char>.Shared.Return(chars);
        }
    }

    /// <summary>How a frame is coloured: the page dims the standard library and interpreter internals.</summary>
    private enum CodeCategory { User = 1, ThirdParty = 2, StandardLibrary = 3, Internal = 4 }

    private static CodeCategory Classify(string fileName)
    {
        if (fileName.StartsWith('<')) return CodeCategory.Internal; // <frozen ...>, <string>, <built-in>
        var path = fileName.Replace('\\', '/');
        if (path.Contains("/site-packages/", StringComparison.Ordinal) || path.Contains("/dist-packages/", StringComparison.Ordinal))
            return CodeCategory.ThirdParty;
        if (StandardLibraryPath().IsMatch(path)) return CodeCategory.StandardLibrary;
        return CodeCategory.User;
    }

    [GeneratedRegex(@"/lib/python\d+\.\d+t?/|/Lib/", RegexOptions.CultureInvariant)]
    private static partial Regex StandardLibraryPath();

    /// <summary>JSON cannot carry a lone UTF-16 surrogate (the writer would throw); a name is never worth
    /// losing the whole page over, so such characters become U+FFFD.</summary>
    private static string WithoutLoneSurrogates(string text)
    {
        for (var i = 0; i < text.Length; i++)
        {
            if (!char.IsSurrogate(text[i])) continue;
            if (char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1])) { i++; continue; }
            var chars = text.ToCharArray();
            for (var j = i; j < chars.Length; j++)
            {
                if (!char.IsSurrogate(chars[j])) continue;
                if (char.IsHighSurrogate(chars[j]) && j + 1 < chars.Length && char.IsLowSurrogate(chars[j + 1])) { j++; continue; }
                chars[j] = '\uFFFD';
            }
            return new string(chars);
        }
        return text;
    }

    private sealed class StringTable
    {
        private readonly Dictionary<string, int> _indexes = new(StringComparer.Ordinal);
        public List<string> Values { get; } = [];

        public int IndexOf(string text)
        {
            if (_indexes.TryGetValue(text, out var index)) return index;
            index = Values.Count;
            _indexes.Add(text, index);
            Values.Add(text);
            return index;
        }
    }

    private enum Placeholder { None, Title, Header, Data }

    private readonly record struct TemplatePart(Placeholder Placeholder, string Text);

    /// <summary>Splits the template once at its placeholders, so that values are written in one pass and a
    /// title that happens to contain a placeholder's text is never substituted again.</summary>
    private static TemplatePart[] LoadTemplate()
    {
        using var stream = typeof(FlameGraphHtmlFile).Assembly.GetManifestResourceStream(TemplateResourceName)
            ?? throw new InvalidOperationException($"Embedded resource {TemplateResourceName} is missing from the assembly.");
        using var reader = new StreamReader(stream, Encoding.UTF8);
        var template = reader.ReadToEnd();

        var parts = new List<TemplatePart>();
        var dataPlaceholders = 0;
        var last = 0;
        foreach (Match match in PlaceholderPattern().Matches(template))
        {
            parts.Add(new TemplatePart(Placeholder.None, template[last..match.Index]));
            var placeholder = Enum.Parse<Placeholder>(match.Groups[1].Value, ignoreCase: true);
            if (placeholder == Placeholder.Data) dataPlaceholders++;
            parts.Add(new TemplatePart(placeholder, ""));
            last = match.Index + match.Length;
        }
        parts.Add(new TemplatePart(Placeholder.None, template[last..]));
        if (dataPlaceholders != 1)
            throw new InvalidOperationException($"The flame graph template must hold exactly one data placeholder, found {dataPlaceholders}.");
        return [.. parts];
    }

    [GeneratedRegex(@"\{\{(TITLE|HEADER|DATA)\}\}", RegexOptions.CultureInvariant)]
    private static partial Regex PlaceholderPattern();
}

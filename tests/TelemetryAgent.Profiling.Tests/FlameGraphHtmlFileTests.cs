using System.Text;
using System.Text.Json;
using TelemetryAgent.Output;
using TelemetryAgent.Testing;
using static TelemetryAgent.Profiling.Tests.FlameGraphTestTrees;

namespace TelemetryAgent.Profiling.Tests;

public class FlameGraphHtmlFileTests
{
    private static readonly DateTimeOffset GeneratedAt = new(2025, 3, 14, 15, 9, 26, TimeSpan.Zero);
    private const string DataStart = "<script id=\"profile-data\" type=\"application/json\">";

    private static string Render(CallNode root, string title = "Profile")
    {
        var output = new StringWriter();
        FlameGraphHtmlFile.Write(output, root, title, GeneratedAt);
        return output.ToString();
    }

    /// <summary>The JSON text of the page's data element.</summary>
    private static string DataText(string html)
    {
        var start = html.IndexOf(DataStart, StringComparison.Ordinal);
        Assert.True(start >= 0, "data script element not found");
        start += DataStart.Length;
        var end = html.IndexOf("</script>", start, StringComparison.Ordinal);
        return html[start..end];
    }

    private static JsonElement ExtractData(string html) => JsonDocument.Parse(DataText(html)).RootElement.Clone();

    /// <summary>An independent decoder of the page's data: the tree it describes, in pre-order.</summary>
    private sealed record DecodedNode(string Label, string? Location, long Calls, long Resumes, long SelfNs, long TotalNs, int Category, List<DecodedNode> Children);

    private static DecodedNode Decode(JsonElement data)
    {
        Assert.Equal(FlameGraphHtmlFile.DataFormat, data.GetProperty("format").GetString());
        var strings = data.GetProperty("strings").EnumerateArray().Select(s => s.GetString()!).ToArray();
        var functions = data.GetProperty("functions").EnumerateArray().Select(f => f.GetInt32()).ToArray();
        var fields = data.GetProperty("nodes").EnumerateArray().Select(n => n.GetInt64()).ToArray();
        Assert.Equal(0, functions.Length % 6);
        Assert.Equal(0, fields.Length % 6);

        var index = 0;
        DecodedNode Read(long[] f)
        {
            var o = index++ * 6;
            var name = (int)f[o];
            DecodedNode node;
            if (name >= 0)
            {
                var b = name * 6;
                var location = strings[functions[b + 1]] + ":" + functions[b + 2];
                node = new DecodedNode($"{strings[functions[b]]} ({location})", location, f[o + 1], f[o + 2], f[o + 3], f[o + 4], functions[b + 4], []);
            }
            else
            {
                node = new DecodedNode(strings[-name - 1], null, f[o + 1], f[o + 2], f[o + 3], f[o + 4], 0, []);
            }
            for (var c = 0; c < f[o + 5]; c++) node.Children.Add(Read(f));
            return node;
        }
        var root = Read(fields);
        Assert.Equal(fields.Length / 6, index);
        return root;
    }

    [Fact]
    public void Page_holds_every_node_with_its_counts_and_times()
    {
        var tree = Small();
        var decoded = Decode(ExtractData(Render(tree)));

        var pending = new Stack<(CallNode Expected, DecodedNode Actual)>();
        pending.Push((tree, decoded));
        var compared = 0;
        while (pending.TryPop(out var pair))
        {
            var (expected, actual) = pair;
            Assert.Equal(expected.Name, actual.Label);
            Assert.Equal(expected.Calls, actual.Calls);
            Assert.Equal(expected.Resumes, actual.Resumes);
            Assert.Equal(expected.SelfNs, actual.SelfNs);
            if (expected.Function is not null) Assert.Equal(expected.TotalNs, actual.TotalNs);
            Assert.Equal(expected.Children.Count, actual.Children.Count);
            for (var i = 0; i < expected.Children.Count; i++) pending.Push((expected.Children[i], actual.Children[i]));
            compared++;
        }
        Assert.Equal(27, compared);
    }

    [Fact]
    public void Group_nodes_without_a_total_span_their_children()
    {
        var decoded = Decode(ExtractData(Render(Small())));

        var web = decoded.Children[0];
        var batch = decoded.Children[1];
        Assert.Equal("webapp (pid 4242)", web.Label);
        Assert.Equal(web.Children.Sum(t => t.TotalNs), web.TotalNs);
        Assert.Equal(web.Children[0].Children.Single().TotalNs, web.Children[0].TotalNs);
        Assert.Equal(web.TotalNs + batch.TotalNs, decoded.TotalNs);
        Assert.True(decoded.TotalNs > 0);
    }

    [Fact]
    public void A_recorded_total_larger_than_its_parts_is_kept()
    {
        var root = CallNode.CreateRoot("all").With(totalNs: 5_000);
        root.GetOrAddGroup("p").GetOrAddGroup("t").GetOrAddChild(Function("f", "/a/f.py", 1)).With(calls: 1, selfNs: 100, totalNs: 100);

        var decoded = Decode(ExtractData(Render(root)));

        Assert.Equal(5_000, decoded.TotalNs);
        Assert.Equal(100, decoded.Children[0].TotalNs);
    }

    [Fact]
    public void Header_line_counts_processes_threads_and_time_on_stack()
    {
        var html = Render(Small());

        Assert.Contains(
            "<p class=\"meta\" id=\"profile-header\">2 processes · 3 threads · 571.38 ms on stack (all threads) · generated 2025-03-14 15:09:26 UTC</p>",
            html);
    }

    [Fact]
    public void Frames_are_classified_for_colouring()
    {
        var decoded = Decode(ExtractData(Render(Small())));
        var categories = new Dictionary<string, int>();
        var pending = new Stack<DecodedNode>([decoded]);
        while (pending.TryPop(out var node))
        {
            if (node.Location is not null) categories[node.Label] = node.Category;
            foreach (var child in node.Children) pending.Push(child);
        }

        Assert.Equal(1, categories["main (app.py:10)"]);
        Assert.Equal(2, categories["Session.execute (sqlalchemy/orm/session.py:2229)"]);
        Assert.Equal(3, categories["dumps (json/__init__.py:183)"]);
        Assert.Equal(4, categories["_find_and_load (<frozen importlib._bootstrap>:1349)"]);
    }

    [Theory]
    [InlineData("/usr/lib/python3.12/json/encoder.py", 3)]
    [InlineData("/root/.pyenv/versions/3.13.0/lib/python3.13t/asyncio/events.py", 3)]
    [InlineData(@"C:\Python312\Lib\asyncio\events.py", 3)]
    [InlineData("/usr/lib/python3/dist-packages/yaml/main.py", 2)]
    [InlineData("/srv/venv/lib/python3.12/site-packages/requests/api.py", 2)]
    [InlineData("<frozen runpy>", 4)]
    [InlineData("<string>", 4)]
    [InlineData("/home/me/project/libs/tool.py", 1)]
    [InlineData("", 1)]
    public void Files_are_classified_by_path(string fileName, int expectedCategory)
    {
        var root = CallNode.CreateRoot("all");
        root.GetOrAddGroup("p").GetOrAddGroup("t").GetOrAddChild(Function("f", fileName, 1, displayFile: "f.py")).With(calls: 1, selfNs: 1, totalNs: 1);

        var frame = Decode(ExtractData(Render(root))).Children[0].Children[0].Children[0];

        Assert.Equal(expectedCategory, frame.Category);
    }

    [Fact]
    public void Hostile_names_cannot_break_out_of_the_data_or_the_markup()
    {
        const string hostile = "</script><script>alert('x')</script><!-- \"q\" & \u2028\u2029 {{DATA}}";
        var function = Function(hostile, "/srv/app/</SCRIPT>.py", 1, displayFile: "</SCRIPT>\u2028.py", module: "<!--");
        var root = CallNode.CreateRoot("all");
        root.GetOrAddGroup("evil </script> (pid 1)").GetOrAddGroup("thread \u2029").GetOrAddChild(function).With(calls: 1, selfNs: 10, totalNs: 10);

        var html = Render(root, title: "</title><script>alert(1)</script> {{DATA}} & \"x\"");

        // Only the page's own two script elements close, and no JavaScript line terminator appears raw.
        Assert.Equal(2, CountOccurrences(html.ToLowerInvariant(), "</script"));
        Assert.DoesNotContain('\u2028', html);
        Assert.DoesNotContain('\u2029', html);
        Assert.Equal(1, CountOccurrences(html, DataStart));
        Assert.Contains("<title>&lt;/title&gt;&lt;script&gt;alert(1)&lt;/script&gt; {{DATA}} &amp; &quot;x&quot;</title>", html);

        // And the names survive the round trip exactly.
        var decoded = Decode(ExtractData(html));
        Assert.Equal("evil </script> (pid 1)", decoded.Children[0].Label);
        Assert.Equal("thread \u2029", decoded.Children[0].Children[0].Label);
        Assert.Equal(function.Label, decoded.Children[0].Children[0].Children[0].Label);
    }

    [Fact]
    public void Lone_surrogates_become_replacement_characters_instead_of_failing()
    {
        var root = CallNode.CreateRoot("all");
        root.GetOrAddGroup("p").GetOrAddGroup("t").GetOrAddChild(Function("bad\uD800name\uDC00", "/a/\uD83D\uDE00.py", 1, displayFile: "\uD83D\uDE00.py"))
            .With(calls: 1, selfNs: 5, totalNs: 5);

        var decoded = Decode(ExtractData(Render(root)));

        Assert.Equal("bad\uFFFDname\uFFFD (\uD83D\uDE00.py:1)", decoded.Children[0].Children[0].Children[0].Label);
    }

    [Fact]
    public void Empty_profile_still_writes_a_valid_page()
    {
        var html = Render(CallNode.CreateRoot("all"));

        var decoded = Decode(ExtractData(html));
        Assert.Equal("all", decoded.Label);
        Assert.Empty(decoded.Children);
        Assert.Contains("0 processes · 0 threads · 0 ns on stack", html);
    }

    [Fact]
    public void Deep_stacks_do_not_recurse()
    {
        var root = CallNode.CreateRoot("all");
        var node = root.GetOrAddGroup("p").GetOrAddGroup("t");
        var functions = Enumerable.Range(0, 2).Select(i => Function($"f{i}", "/a/deep.py", i)).ToArray();
        const int depth = 100_000;
        for (var i = 0; i < depth; i++) node = node.GetOrAddChild(functions[i % 2]).With(calls: 1, selfNs: 1);
        FillTotals(root);

        var data = ExtractData(Render(root));

        Assert.Equal((depth + 3) * 6, data.GetProperty("nodes").GetArrayLength());
        Assert.Equal(depth, data.GetProperty("nodes")[4].GetInt64());
    }

    /// <summary>The data the page embeds, against a golden JSON; the page's own markup, style and script are the
    /// browser test's (tests/browser), so an edit of the template's CSS changes no golden.</summary>
    [Fact]
    public void Output_is_deterministic_and_embeds_the_golden_data()
    {
        var first = Render(Small(), "checkout-service · flame graph");
        var second = Render(Small(), "checkout-service · flame graph");

        Assert.Equal(first, second);
        Golden.VerifyJson(DataText(first), "flamegraph-data.json");
    }

    [Fact]
    public void Default_overload_stamps_the_current_time()
    {
        var output = new StringWriter();
        var before = DateTimeOffset.UtcNow;
        FlameGraphHtmlFile.Write(output, Small(), "now");

        var year = before.UtcDateTime.ToString("yyyy-MM-dd", System.Globalization.CultureInfo.InvariantCulture);
        Assert.Contains("generated " + year, output.ToString());
    }

    /// <summary>Writes the pages that tests/browser drives (tests/browser/run.sh runs this before the browser
    /// test when it is not given a page). Checks them too, so the test is not only a file writer.</summary>
    [Fact]
    public void Writes_sample_pages_for_the_browser_test()
    {
        var folder = Path.Combine(RepositoryRoot(), "tests", "browser", ".generated");
        Directory.CreateDirectory(folder);

        var samples = new (string File, CallNode Root, string Title, int MinimumNodes)[]
        {
            ("sample-flamegraph.html", Small(), "checkout-service · flame graph", 27),
            ("large-flamegraph.html", Large(60_000), "synthetic 60k-node profile", 60_000),
        };
        foreach (var (file, root, title, minimumNodes) in samples)
        {
            var path = Path.Combine(folder, file);
            using (var writer = new StreamWriter(path, append: false, new UTF8Encoding(encoderShouldEmitUTF8Identifier: false)))
                FlameGraphHtmlFile.Write(writer, root, title, GeneratedAt);
            var data = ExtractData(File.ReadAllText(path));
            Assert.True(data.GetProperty("nodes").GetArrayLength() / 6 >= minimumNodes);
        }
    }

    private static int CountOccurrences(string text, string value)
    {
        var count = 0;
        for (var i = text.IndexOf(value, StringComparison.Ordinal); i >= 0; i = text.IndexOf(value, i + 1, StringComparison.Ordinal)) count++;
        return count;
    }
}

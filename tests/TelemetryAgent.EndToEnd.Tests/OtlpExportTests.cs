using System.Text.Json;
using OpenTelemetry.Proto.Common.V1;
using OpenTelemetry.Proto.Logs.V1;
using TelemetryAgent.EndToEnd.Tests.Support;
using TelemetryAgent.Profiling.Formats;
using TelemetryAgent.OtlpReceiver;
using static TelemetryAgent.EndToEnd.Tests.Support.Otlp;
using TelemetryAgent.Testing;

namespace TelemetryAgent.EndToEnd.Tests;

/// <summary>
/// Real Python programs through the real `telemetry-agent run --otlp-endpoint` into a real OTLP receiver (Kestrel,
/// HTTP/protobuf and h2c gRPC), over both protocols: what arrives must equal what the same run wrote to summary.json
/// and exceptions.json.
/// </summary>
public sealed class OtlpExportTests : IClassFixture<OtlpExportTests.Runs>
{
    public static TheoryData<string> Protocols => new() { "grpc", "http/protobuf" };

    private readonly Runs _runs;

    public OtlpExportTests(Runs runs) => _runs = runs;

    /// <summary>One run of a program into its own receiver.</summary>
    public sealed class ExportedRun(OtlpReceiver.OtlpReceiver receiver, Finished agent, string outputFolder) : IAsyncDisposable
    {
        public OtlpReceiver.OtlpReceiver Receiver { get; } = receiver;
        public Finished Agent { get; } = agent;
        public JsonElement Summary { get; } = JsonDocument.Parse(File.ReadAllText(Path.Combine(outputFolder, "summary.json"))).RootElement;
        public JsonElement Exceptions { get; } = JsonDocument.Parse(File.ReadAllText(Path.Combine(outputFolder, "exceptions.json"))).RootElement;

        public ValueTask DisposeAsync() => Receiver.DisposeAsync();
    }

    /// <summary>fixture_app.py and exceptions_app.py, each once per protocol.</summary>
    public sealed class Runs : IAsyncLifetime
    {
        private readonly TemporaryFolder _temp = new();
        public Dictionary<(string Program, string Protocol), ExportedRun> All { get; } = [];

        public async Task InitializeAsync()
        {
            foreach (var protocol in new[] { "grpc", "http/protobuf" })
            {
                All[("fixture", protocol)] = await RunAsync(_temp, protocol, ["examples/fixture_app.py"]);
                All[("exceptions", protocol)] = await RunAsync(_temp, protocol, ["examples/exceptions_app.py", "--escape"]);
            }
        }

        public async Task DisposeAsync()
        {
            foreach (var run in All.Values) await run.DisposeAsync();
            _temp.Dispose();
        }
    }

    /// <summary>The agent's environment without the caller's OTEL_* settings, plus <paramref name="extra"/>.</summary>
    internal static Dictionary<string, string?> CleanEnvironment(Dictionary<string, string?>? extra = null)
    {
        var environment = new Dictionary<string, string?>();
        foreach (System.Collections.DictionaryEntry entry in Environment.GetEnvironmentVariables())
        {
            if (((string)entry.Key).StartsWith("OTEL_", StringComparison.Ordinal)) environment[(string)entry.Key] = null;
        }
        foreach (var (name, value) in extra ?? []) environment[name] = value;
        return environment;
    }

    internal static Uri EndpointFor(OtlpReceiver.OtlpReceiver receiver, string protocol)
        => protocol == "grpc" ? receiver.GrpcEndpoint : receiver.HttpEndpoint;

    internal static async Task<ExportedRun> RunAsync(TemporaryFolder temp, string protocol, string[] program,
        Dictionary<string, string?>? environment = null, string[]? agentOptions = null)
    {
        var receiver = await OtlpReceiver.OtlpReceiver.StartAsync();
        var output = temp.File($"out-{Guid.NewGuid():N}");
        var agent = await Processes.RunAgentAsync(
            ["run", "--summary-functions", "100000", "-o", output, "--otlp-endpoint", EndpointFor(receiver, protocol).ToString(),
             "--otlp-protocol", protocol, .. agentOptions ?? [], .. program],
            environment: CleanEnvironment(environment));
        return new ExportedRun(receiver, agent, output);
    }

    private static OtlpTransport TransportOf(string protocol) => protocol == "grpc" ? OtlpTransport.Grpc : OtlpTransport.Http;

    [Theory]
    [MemberData(nameof(Protocols))]
    public void EachProcessHasItsOwnResourceFromItsHello(string protocol)
    {
        var run = _runs.All[("fixture", protocol)];
        Assert.True(run.Agent.ExitCode == 0, run.Agent.ToString());
        Assert.All(run.Receiver.Metrics.Snapshot(), request => Assert.Equal(TransportOf(protocol), request.Transport));

        var process = run.Summary.GetProperty("processes")[0];
        var resources = LatestMetricsByInstance(run.Receiver).Values.Select(entry => entry.Resource).ToList();
        Assert.Equal(2, resources.Count); // the Python process and the agent itself
        var resource = resources.Single(r => r["service.name"].StringValue == "fixture_app");
        Assert.Equal(process.GetProperty("pid").GetInt64(), resource["process.pid"].IntValue);
        Assert.Equal(process.GetProperty("parent_pid").GetInt64(), resource["process.parent_pid"].IntValue);
        var executable = process.GetProperty("executable").GetString()!;
        Assert.Equal(executable, resource["process.executable.path"].StringValue);
        Assert.Equal([executable, .. process.GetProperty("argv").EnumerateArray().Select(a => a.GetString()!)], Strings(resource["process.command_args"]));
        Assert.Equal("cpython", resource["process.runtime.name"].StringValue);
        Assert.Equal(process.GetProperty("python_version").GetString(), resource["process.runtime.version"].StringValue);
        Assert.Equal(process.GetProperty("host_name").GetString(), resource["host.name"].StringValue);
        Assert.True(Guid.TryParse(resource["service.instance.id"].StringValue, out _));
        Assert.Equal("dotnet", resource["telemetry.sdk.language"].StringValue);
        // Logs carry the same resource as metrics.
        Assert.All(LogRecords(run.Receiver).Where(r => r.Resource["service.name"].StringValue == "fixture_app"),
            record => Assert.Equal(resource["service.instance.id"].StringValue, record.Resource["service.instance.id"].StringValue));
    }

    [Theory]
    [MemberData(nameof(Protocols))]
    public void FunctionMetricsEqualSummaryJson(string protocol)
    {
        var run = _runs.All[("fixture", protocol)];
        var (_, metrics) = LatestMetricsByInstance(run.Receiver).Values.Single(entry => entry.Resource["service.name"].StringValue == "fixture_app");

        var summary = new Dictionary<(string Name, string File, long Line), (long Calls, long SelfNs, long TotalNs)>();
        foreach (var function in run.Summary.GetProperty("functions").EnumerateArray())
        {
            var module = function.GetProperty("module").GetString()!;
            var name = (module.Length > 0 ? module + "." : "") + function.GetProperty("qualified_name").GetString();
            var key = (name, function.GetProperty("path").GetString()!, function.GetProperty("line").GetInt64());
            var sum = summary.GetValueOrDefault(key);
            summary[key] = (sum.Calls + function.GetProperty("calls").GetInt64(), sum.SelfNs + function.GetProperty("self_ns").GetInt64(),
                sum.TotalNs + function.GetProperty("total_ns").GetInt64());
        }

        var calls = IntPoints(metrics["python.profile.function.calls"]);
        var selfTime = metrics["python.profile.function.self_time"].Sum.DataPoints
            .ToDictionary(p => SeriesKey(Attributes(p.Attributes)), p => p.AsDouble);
        Assert.True(calls.Count <= 51, $"{calls.Count} series: the cap is 50 functions plus one for the others");
        Assert.True(metrics["python.profile.function.calls"].Sum.IsMonotonic);
        Assert.Equal(OpenTelemetry.Proto.Metrics.V1.AggregationTemporality.Cumulative, metrics["python.profile.function.calls"].Sum.AggregationTemporality);
        Assert.Equal("{call}", metrics["python.profile.function.calls"].Unit);
        Assert.Equal("s", metrics["python.profile.function.self_time"].Unit);

        long otherExpected = 0;
        var chosen = calls.Where(p => p.Attributes["code.function.name"].StringValue != "[other functions]")
            .ToDictionary(p => SeriesKey(p.Attributes), p => p.Value);
        foreach (var (key, expected) in summary)
        {
            if (!chosen.TryGetValue(key, out var value))
            {
                otherExpected += expected.Calls;
                continue;
            }
            Assert.True(expected.Calls == value, $"{key}: {value} calls exported, {expected.Calls} in summary.json");
            Assert.True(Math.Abs(selfTime[key] * 1e9 - expected.SelfNs) < 1000, $"{key}: self time {selfTime[key]} s vs {expected.SelfNs} ns");
        }
        Assert.Equal(chosen.Count, chosen.Keys.Count(summary.ContainsKey));
        var other = calls.Where(p => p.Attributes["code.function.name"].StringValue == "[other functions]").Select(p => p.Value).SingleOrDefault();
        Assert.Equal(otherExpected, other);
        // The fixture's own numbers: fib(15) once and fib(10) eight times in threads (in its own series when chosen,
        // which depends on the machine's speed; in [other functions] otherwise, checked above either way).
        Assert.Equal(1973 + 8 * 177, summary.Single(entry => entry.Key.Name == "__main__.fib").Value.Calls);

        var process = run.Summary.GetProperty("processes")[0];
        Assert.Equal(process.GetProperty("recording").GetProperty("events_received").GetInt64(), SingleInt(metrics["python.profile.events.received"]));
        Assert.Equal(process.GetProperty("shim_stats").GetProperty("events_sent").GetInt64(), SingleInt(metrics["python.profile.shim.events.sent"]));
        Assert.Equal(0, SingleInt(metrics["python.profile.shim.events.dropped"]));
        Assert.Equal(1, SingleInt(metrics["python.profile.shim.connects"]));
        var scale = Assert.Single(metrics["python.profile.recording.scale"].Gauge.DataPoints);
        Assert.Equal((1.0, "full"), (scale.AsDouble, scale.Attributes.Single(a => a.Key == "telemetry_agent.recording.mode").Value.StringValue));
        var overhead = Assert.Single(metrics["python.profile.shim.overhead"].Gauge.DataPoints);
        Assert.Equal(process.GetProperty("shim_stats").GetProperty("overhead_achieved").GetDouble(), overhead.AsDouble, tolerance: 1e-6);
    }

    private static (string Name, string File, long Line) SeriesKey(Dictionary<string, AnyValue> attributes)
        => (attributes["code.function.name"].StringValue,
            attributes.TryGetValue("code.file.path", out var file) ? file.StringValue : "",
            attributes.TryGetValue("code.line.number", out var line) ? line.IntValue : 0);

    [Theory]
    [MemberData(nameof(Protocols))]
    public void TheAgentReportsItselfUnderItsOwnResource(string protocol)
    {
        var run = _runs.All[("fixture", protocol)];
        var (resource, metrics) = LatestMetricsByInstance(run.Receiver).Values.Single(entry => entry.Resource["service.name"].StringValue == "telemetry-agent");
        Assert.False(resource.ContainsKey("process.command_args"));
        Assert.Equal(1, SingleInt(metrics["telemetry_agent.connections.accepted"]));
        Assert.Equal(0, SingleInt(metrics["telemetry_agent.connections.open"]));
        var ended = Assert.Single(IntPoints(metrics["telemetry_agent.connections.ended"]));
        Assert.Equal(("Goodbye", 1L), (ended.Attributes["telemetry_agent.connection.end_reason"].StringValue, ended.Value));
        Assert.Equal(run.Summary.GetProperty("totals").GetProperty("events_received").GetInt64(), SingleInt(metrics["telemetry_agent.events.received"]));
        Assert.False(metrics.ContainsKey("telemetry_agent.export.failures"), "no export failed");
        Assert.Contains(IntPoints(metrics["telemetry_agent.export.requests"]), p => p.Attributes["telemetry_agent.signal"].StringValue == "metrics" && p.Value >= 1);
    }

    [Theory]
    [MemberData(nameof(Protocols))]
    public void EachExceptionGroupIsOneLogRecordEqualToExceptionsJson(string protocol)
    {
        var run = _runs.All[("exceptions", protocol)];
        Assert.True(run.Agent.ExitCode == 1, run.Agent.ToString()); // --escape: the program ends with an exception
        Assert.All(run.Receiver.Logs.Snapshot(), request => Assert.Equal(TransportOf(protocol), request.Transport));
        var groups = run.Exceptions.GetProperty("processes")[0].GetProperty("groups").EnumerateArray().ToList();
        var records = LogRecords(run.Receiver).Where(r => r.Resource["service.name"].StringValue == "exceptions_app").Select(r => r.Record).ToList();
        Assert.True(groups.Count >= 20, $"only {groups.Count} groups");
        // `run` exports once, at the end: one record per group.
        Assert.Equal(groups.Count, records.Count);

        foreach (var group in groups)
        {
            var fingerprint = group.GetProperty("fingerprint").GetString()!;
            var record = Assert.Single(records, r => Attributes(r.Attributes)["python.profile.exception.fingerprint"].StringValue == fingerprint);
            var attributes = Attributes(record.Attributes);
            var type = group.GetProperty("type").GetString()!;
            Assert.Equal(type.Length > 0 ? type : "[unknown type]", attributes["exception.type"].StringValue);
            Assert.Equal(group.GetProperty("count").GetInt64(), attributes["python.profile.exception.count"].IntValue);
            Assert.Equal(group.GetProperty("count").GetInt64(), attributes["python.profile.exception.count_total"].IntValue);
            Assert.Equal(group.GetProperty("library_internal").GetBoolean(), attributes["python.profile.exception.library_internal"].BoolValue);
            var notes = group.GetProperty("notes").EnumerateArray().Select(n => n.GetString()!).ToArray();
            if (notes.Length > 0) Assert.Equal(notes, Strings(attributes["python.profile.exception.notes"]));
            else Assert.False(attributes.ContainsKey("python.profile.exception.notes"));

            var byFate = group.GetProperty("by_fate").EnumerateObject().Where(f => f.Value.GetInt64() > 0).ToList();
            foreach (var fate in byFate)
            {
                Assert.Equal(fate.Value.GetInt64(), attributes["python.profile.exception.interval." + fate.Name].IntValue);
                Assert.Equal(fate.Value.GetInt64(), attributes["python.profile.exception.total." + fate.Name].IntValue);
            }
            Assert.Equal(byFate.Count, attributes.Keys.Count(k => k.StartsWith("python.profile.exception.interval.", StringComparison.Ordinal)));
            var uncaught = byFate.Any(f => f.Name is "escaped_thread" or "escaped_program" or "unraisable" or "asyncio_unhandled");
            var unsure = byFate.Any(f => f.Name is "in_flight" or "unknown");
            Assert.Equal(uncaught ? SeverityNumber.Error : unsure ? SeverityNumber.Warn : SeverityNumber.Info, record.SeverityNumber);

            if (group.GetProperty("raise_site") is { ValueKind: JsonValueKind.Object } site)
            {
                Assert.Equal(site.GetProperty("path").GetString(), attributes["code.file.path"].StringValue);
                Assert.Equal(site.GetProperty("line").GetInt64(), attributes["code.line.number"].IntValue);
            }

            if (group.GetProperty("latest") is not { ValueKind: JsonValueKind.Object } latest) continue;
            Assert.Equal(latest.GetProperty("fate").GetString(), attributes["python.profile.exception.fate"].StringValue);
            Assert.Equal(latest.GetProperty("thread").GetProperty("id").GetInt64(), attributes["thread.id"].IntValue);
            if (latest.GetProperty("exception") is not { ValueKind: JsonValueKind.Object } exception) continue;
            Assert.Equal(group.GetProperty("traceback_text").GetString(), attributes["exception.stacktrace"].StringValue);
            Assert.Equal(exception.GetProperty("message_status").GetString(), attributes["python.profile.exception.message_status"].StringValue);
            if (exception.GetProperty("message_status").GetString() == "unavailable") Assert.False(attributes.ContainsKey("exception.message"));
            else Assert.Equal(exception.GetProperty("message").GetString(), attributes["exception.message"].StringValue);
            // The body is the traceback's "Type: message" line.
            Assert.Equal(TracebackText.ExceptionLine(new(exception.GetProperty("type").GetString()!, exception.GetProperty("message").GetString()!,
                Enum.Parse<TelemetryAgent.Profiling.ExceptionMessageStatus>(exception.GetProperty("message_status").GetString()!, ignoreCase: true),
                [], 0, [], 0, null, null, false, [], 0, false)), record.Body.StringValue);

            var (relations, types) = ChainOf(exception);
            if (relations.Count == 0) Assert.False(attributes.ContainsKey("python.profile.exception.chain.relation"));
            else
            {
                Assert.Equal(relations, Strings(attributes["python.profile.exception.chain.relation"]));
                Assert.Equal(types, Strings(attributes["python.profile.exception.chain.type"]));
            }
            var (paths, memberTypes) = MembersOf(exception);
            if (paths.Count == 0) Assert.False(attributes.ContainsKey("python.profile.exception.members.path"));
            else
            {
                Assert.Equal(paths, Strings(attributes["python.profile.exception.members.path"]));
                Assert.Equal(memberTypes, Strings(attributes["python.profile.exception.members.type"]));
            }
        }

        // The records a reader looks for first.
        var settings = records.Single(r => Attributes(r.Attributes)["exception.type"].StringValue == "builtins.ValueError"
                                           && Attributes(r.Attributes).ContainsKey("python.profile.exception.notes"));
        Assert.Equal(["while reading settings.toml, key 'port'"], Strings(Attributes(settings.Attributes)["python.profile.exception.notes"]));
        Assert.Contains(records, r => Attributes(r.Attributes).TryGetValue("python.profile.exception.chain.relation", out var chain) && Strings(chain).SequenceEqual(["cause"]));
        Assert.Contains(records, r => Attributes(r.Attributes).TryGetValue("python.profile.exception.members.path", out var members) && Strings(members).Contains("3.1"));
        Assert.Contains(records, r => r.SeverityNumber == SeverityNumber.Error && Attributes(r.Attributes)["python.profile.exception.fate"].StringValue == "escaped_program");
    }

    private static (List<string> Relations, List<string> Types) ChainOf(JsonElement exception)
    {
        var relations = new List<string>();
        var types = new List<string>();
        for (var current = exception; ;)
        {
            if (current.GetProperty("cause") is { ValueKind: JsonValueKind.Object } cause) (relations, types, current) = Add("cause", cause);
            else if (current.GetProperty("context") is { ValueKind: JsonValueKind.Object } context && !current.GetProperty("suppress_context").GetBoolean())
                (relations, types, current) = Add("context", context);
            else return (relations, types);
        }

        (List<string>, List<string>, JsonElement) Add(string relation, JsonElement next)
        {
            relations.Add(relation);
            types.Add(next.GetProperty("type").GetString()!);
            return (relations, types, next);
        }
    }

    private static (List<string> Paths, List<string> Types) MembersOf(JsonElement exception)
    {
        var paths = new List<string>();
        var types = new List<string>();
        void Walk(JsonElement group, string prefix)
        {
            var index = 0;
            foreach (var member in group.GetProperty("members").EnumerateArray())
            {
                var path = prefix + (++index);
                paths.Add(path);
                types.Add(member.GetProperty("type").GetString()!);
                Walk(member, path + ".");
            }
        }
        Walk(exception, "");
        return (paths, types);
    }

    [Theory]
    [MemberData(nameof(Protocols))]
    public void ExceptionCountsByTypeAndFateEqualExceptionsJson(string protocol)
    {
        var run = _runs.All[("exceptions", protocol)];
        var (_, metrics) = LatestMetricsByInstance(run.Receiver).Values.Single(entry => entry.Resource["service.name"].StringValue == "exceptions_app");
        var expected = new Dictionary<(string Type, string Fate), long>();
        foreach (var group in run.Exceptions.GetProperty("processes")[0].GetProperty("groups").EnumerateArray())
        {
            var type = group.GetProperty("type").GetString()!;
            foreach (var fate in group.GetProperty("by_fate").EnumerateObject().Where(f => f.Value.GetInt64() > 0))
            {
                var key = (type.Length > 0 ? type : "[unknown type]", fate.Name);
                expected[key] = expected.GetValueOrDefault(key) + fate.Value.GetInt64();
            }
        }
        var exported = IntPoints(metrics["python.profile.exceptions"]).ToDictionary(
            p => (p.Attributes["exception.type"].StringValue, p.Attributes["python.profile.exception.fate"].StringValue), p => p.Value);
        Assert.Equal(expected.OrderBy(e => e.Key), exported.OrderBy(e => e.Key));
    }
}

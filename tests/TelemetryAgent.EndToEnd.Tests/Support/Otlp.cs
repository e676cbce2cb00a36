using OpenTelemetry.Proto.Common.V1;
using OpenTelemetry.Proto.Logs.V1;
using OpenTelemetry.Proto.Metrics.V1;
using TelemetryAgent.OtlpReceiver;

namespace TelemetryAgent.EndToEnd.Tests.Support;

/// <summary>Reading what a real <see cref="OtlpReceiver.OtlpReceiver"/> received from the agent.</summary>
public static class Otlp
{
    public static Dictionary<string, AnyValue> Attributes(IEnumerable<KeyValue> attributes) => attributes.ToDictionary(a => a.Key, a => a.Value);

    public static string[] Strings(AnyValue value) => value.ArrayValue.Values.Select(v => v.StringValue).ToArray();

    /// <summary>
    /// The last metrics each resource sent (cumulative: the last export holds everything), keyed by the resource's
    /// <c>service.instance.id</c>, the latest of each scope merged (a process's metrics and its start-up metrics come
    /// from two SDK instances under the same resource).
    /// </summary>
    public static Dictionary<string, (Dictionary<string, AnyValue> Resource, Dictionary<string, Metric> Metrics)> LatestMetricsByInstance(
        OtlpReceiver.OtlpReceiver receiver)
    {
        // Latest by the data's own time, not by arrival: an export retried in memory can arrive after a newer one.
        var latest = new Dictionary<(string Instance, string Scope), (ulong Time, Dictionary<string, AnyValue> Resource, Dictionary<string, Metric> Metrics)>();
        foreach (var request in receiver.Metrics.Snapshot())
        {
            foreach (var resourceMetrics in request.Message.ResourceMetrics)
            {
                var resource = Attributes(resourceMetrics.Resource.Attributes);
                var instance = resource["service.instance.id"].StringValue;
                foreach (var scope in resourceMetrics.ScopeMetrics)
                {
                    var metrics = scope.Metrics.ToDictionary(m => m.Name);
                    var time = metrics.Values.SelectMany(PointTimes).DefaultIfEmpty(0UL).Max();
                    var key = (instance, scope.Scope?.Name ?? "");
                    if (!latest.TryGetValue(key, out var known) || time >= known.Time) latest[key] = (time, resource, metrics);
                }
            }
        }
        return latest.GroupBy(entry => entry.Key.Instance).ToDictionary(group => group.Key, group =>
            (group.First().Value.Resource, group.SelectMany(entry => entry.Value.Metrics).ToDictionary(pair => pair.Key, pair => pair.Value)));
    }

    private static IEnumerable<ulong> PointTimes(Metric metric) => metric.DataCase switch
    {
        Metric.DataOneofCase.Sum => metric.Sum.DataPoints.Select(p => p.TimeUnixNano),
        Metric.DataOneofCase.Gauge => metric.Gauge.DataPoints.Select(p => p.TimeUnixNano),
        Metric.DataOneofCase.Histogram => metric.Histogram.DataPoints.Select(p => p.TimeUnixNano),
        Metric.DataOneofCase.ExponentialHistogram => metric.ExponentialHistogram.DataPoints.Select(p => p.TimeUnixNano),
        Metric.DataOneofCase.Summary => metric.Summary.DataPoints.Select(p => p.TimeUnixNano),
        _ => [],
    };

    /// <summary>Every log record with its resource, in arrival order.</summary>
    public static List<(Dictionary<string, AnyValue> Resource, LogRecord Record)> LogRecords(OtlpReceiver.OtlpReceiver receiver)
        => receiver.Logs.Snapshot()
            .SelectMany(request => request.Message.ResourceLogs)
            .SelectMany(resourceLogs => resourceLogs.ScopeLogs.SelectMany(scope => scope.LogRecords)
                .Select(record => (Attributes(resourceLogs.Resource.Attributes), record)))
            .ToList();

    /// <summary>A Sum's points as (attributes, integer value).</summary>
    /// <summary>
    /// A fixture_app run's function-call series against its summary.json: together (the functions the agent chose by
    /// self time, a choice that depends on the machine's speed, and <c>[other functions]</c>) they hold every call it
    /// recorded, and fib, when chosen, has exactly its calls.
    /// </summary>
    public static void AssertFixtureCalls(Dictionary<string, Metric> metrics, string summaryJsonPath)
    {
        using var summary = System.Text.Json.JsonDocument.Parse(File.ReadAllText(summaryJsonPath));
        var points = IntPoints(metrics["python.profile.function.calls"]);
        Assert.Equal(summary.RootElement.GetProperty("totals").GetProperty("calls").GetInt64(), points.Sum(p => p.Value));
        // fib(15) once and fib(10) eight times in threads.
        Assert.All(points.Where(p => p.Attributes["code.function.name"].StringValue == "__main__.fib"), fib => Assert.Equal(1973 + 8 * 177, fib.Value));
    }

    public static List<(Dictionary<string, AnyValue> Attributes, long Value)> IntPoints(Metric metric)
        => metric.Sum.DataPoints.Select(point => (Attributes(point.Attributes), point.AsInt)).ToList();

    public static long SingleInt(Metric metric) => Assert.Single(metric.Sum.DataPoints).AsInt;
}

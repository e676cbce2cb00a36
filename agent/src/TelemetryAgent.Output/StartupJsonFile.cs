using System.Text.Json;
using TelemetryAgent.Profiling;
using TelemetryAgent.Profiling.Formats;
using TelemetryAgent.Profiling.Startup;

namespace TelemetryAgent.Output;

/// <summary>
/// startup.json: each process's start-up (docs/startup.md documents every field): its phases from the process's start
/// to ready and which rule ended it, the import tree (find, load, exec, self and cumulative times, as
/// <c>python -X importtime</c> measures them), the costliest imports by self time, and the first invocations of the
/// ready-on function against the later ones. Names are snake_case and stable.
/// </summary>
public sealed class StartupJsonFile : IOutputFile
{
    public const string FileName = "startup.json";
    public const int FormatVersion = 1;
    public const int CostliestImports = 10;

    public string Name => FileName;

    public void Write(Stream output, OutputRun run)
    {
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(run);
        using var json = new Utf8JsonWriter(output, JsonOutput.Options);
        json.WriteStartObject();
        json.WriteNumber("format_version", FormatVersion);
        json.WriteStartArray("processes");
        foreach (var process in run.Processes)
        {
            if (process.Startup is { } startup) WriteProcess(json, process, startup);
        }
        json.WriteEndArray();
        json.WriteEndObject();
    }

    private static void WriteProcess(Utf8JsonWriter json, ProcessProfile process, StartupPhase startup)
    {
        var clock = process.Clock;
        json.WriteStartObject();
        json.WriteString("label", ProfileLabels.Process(process));
        json.WriteString("service_name", process.Identity.ServiceName);
        json.WriteNumber("pid", process.Identity.Pid);
        json.WriteString("ready_rule", StartupPhase.RuleName(startup.Rule));
        json.WriteString("ready_target", startup.ReadyTarget);
        if (startup.ProcessStartKnown)
        {
            json.WriteNumber("process_start_unix_ns", clock.ToUnixNs(startup.ProcessStartNs));
            json.WriteNumber("process_start_resolution_ns", startup.ProcessStartResolutionNs);
        }
        else
        {
            json.WriteNull("process_start_unix_ns");
        }
        json.WriteNumber("shim_start_unix_ns", clock.ToUnixNs(startup.ShimStartNs));
        json.WriteNumber("ready_unix_ns", clock.ToUnixNs(startup.ReadyNs));
        json.WriteNumber("total_ns", startup.TotalNs);
        json.WriteStartObject("phases");
        json.WriteNumber("interpreter_ns", startup.InterpreterNs);
        json.WriteNumber("imports_ns", startup.Imports.TotalNs);
        json.WriteNumber("other_ns", startup.OtherNs);
        json.WriteEndObject();
        json.WriteNumber("interpreter_cpu_ns", startup.InterpreterCpuNs);
        json.WriteNumber("shim_start_cpu_ns", startup.ShimStartCpuNs);

        json.WriteStartObject("imports");
        json.WriteNumber("count", startup.Imports.Imports.Count);
        json.WriteNumber("dropped", startup.ImportsDropped);
        json.WriteNumber("total_ns", startup.Imports.TotalNs);
        json.WriteStartArray("costliest_by_self_time");
        foreach (var import in startup.Imports.CostliestBySelfTime(CostliestImports))
        {
            json.WriteStartObject();
            json.WriteString("module", import.Module);
            json.WriteNumber("self_ns", import.SelfNs);
            json.WriteNumber("cumulative_ns", import.CumulativeNs);
            json.WriteEndObject();
        }
        json.WriteEndArray();
        json.WritePropertyName("tree");
        WriteTree(json, startup.Imports, startup.BeginNs);
        json.WriteEndObject();

        json.WriteNumber("first_invocations_planned", startup.FirstInvocationsPlanned);
        json.WriteStartArray("first_invocations");
        foreach (var invocation in process.FirstInvocations.OrderBy(invocation => invocation.Number))
        {
            json.WriteStartObject();
            json.WriteNumber("number", invocation.Number);
            json.WriteNumber("start_offset_ns", invocation.StartNs - startup.BeginNs);
            json.WriteNumber("duration_ns", invocation.DurationNs);
            json.WriteBoolean("raised", invocation.Raised);
            if (invocation.Trigger.Length > 0) json.WriteString("trigger", invocation.Trigger);
            json.WriteNumber("imports_ns", invocation.Imports.TotalNs);
            json.WritePropertyName("imports");
            WriteTree(json, invocation.Imports, startup.BeginNs);
            json.WriteEndObject();
        }
        json.WriteEndArray();

        if (FirstInvocationComparison.Of(process.FirstInvocations) is { } comparison)
        {
            json.WriteStartObject("first_vs_later");
            json.WriteNumber("first_ns", comparison.First.DurationNs);
            json.WriteNumber("later_count", comparison.Later);
            json.WriteNumber("later_median_ns", comparison.LaterMedianNs);
            json.WriteNumber("extra_ns", comparison.ExtraNs);
            json.WriteNumber("imports_only_in_first_ns", comparison.ImportsOnlyInFirstNs);
            json.WriteStartArray("imports_only_in_first");
            foreach (var import in comparison.ImportsOnlyInFirst) json.WriteStringValue(import.Module);
            json.WriteEndArray();
            json.WriteEndObject();
        }
        else
        {
            json.WriteNull("first_vs_later");
        }
        json.WriteEndObject();
    }

    // Nested as imported; children follow the order they began. Offsets are from the phase's beginning.
    private static void WriteTree(Utf8JsonWriter json, ImportTree tree, long beginNs)
    {
        json.WriteStartArray();
        var pending = new Stack<(int Index, int Child)>();
        var roots = tree.Roots;
        for (var rootIndex = 0; rootIndex < roots.Count; rootIndex++)
        {
            // Explicit stack: an import chain can be deep.
            WriteImportStart(json, tree.Imports[roots[rootIndex]], beginNs);
            pending.Push((roots[rootIndex], 0));
            while (pending.TryPop(out var top))
            {
                var children = tree.Children(top.Index);
                if (top.Child < children.Count)
                {
                    pending.Push((top.Index, top.Child + 1));
                    WriteImportStart(json, tree.Imports[children[top.Child]], beginNs);
                    pending.Push((children[top.Child], 0));
                    continue;
                }
                json.WriteEndArray();
                json.WriteEndObject();
            }
        }
        json.WriteEndArray();
    }

    private static void WriteImportStart(Utf8JsonWriter json, ImportRecord import, long beginNs)
    {
        json.WriteStartObject();
        json.WriteString("module", import.Module);
        json.WriteNumber("start_offset_ns", import.StartNs - beginNs);
        json.WriteNumber("cumulative_ns", import.CumulativeNs);
        json.WriteNumber("self_ns", import.SelfNs);
        json.WriteNumber("find_ns", import.FindNs);
        json.WriteNumber("load_ns", import.LoadNs);
        json.WriteNumber("exec_ns", import.ExecNs);
        json.WriteBoolean("failed", import.Failed);
        json.WriteStartArray("children");
    }
}

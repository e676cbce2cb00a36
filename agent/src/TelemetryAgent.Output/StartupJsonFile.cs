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
            json.WritePropertyName("call_tree");
            WriteCallTree(json, invocation.CallTree);
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
            if (comparison.FunctionsOnlyInFirst is { } functions)
            {
                json.WriteNumber("functions_only_in_first_self_ns", comparison.FunctionsOnlyInFirstSelfNs);
                json.WriteStartArray("functions_only_in_first");
                foreach (var function in functions)
                {
                    json.WriteStartObject();
                    json.WriteString("function", function.Function.Label);
                    json.WriteNumber("calls", function.Calls);
                    json.WriteNumber("self_ns", function.SelfNs);
                    json.WriteEndObject();
                }
                json.WriteEndArray();
            }
            else
            {
                json.WriteNull("functions_only_in_first_self_ns");
                json.WriteNull("functions_only_in_first");
            }
            json.WriteEndObject();
        }
        else
        {
            json.WriteNull("first_vs_later");
        }
        json.WriteEndObject();
    }

    // A flat list, parents first (a call tree can be deeper than JSON readers nest): each node's 1-based parent
    // (0: the ready-on function's own node has none), in the order the calls were first seen.
    private static void WriteCallTree(Utf8JsonWriter json, CallNode? tree)
    {
        if (tree is null)
        {
            json.WriteNullValue();
            return;
        }
        json.WriteStartArray();
        var pending = new Stack<(CallNode Node, int Parent)>();
        for (var i = tree.Children.Count - 1; i >= 0; i--) pending.Push((tree.Children[i], 0));
        var position = 0;
        while (pending.TryPop(out var entry))
        {
            var node = entry.Node;
            position++;
            json.WriteStartObject();
            json.WriteNumber("parent", entry.Parent);
            json.WriteString("function", node.Name);
            json.WriteNumber("calls", node.Calls);
            if (node.Resumes > 0) json.WriteNumber("resumes", node.Resumes);
            json.WriteNumber("self_ns", node.SelfNs);
            json.WriteNumber("total_ns", node.TotalNs);
            json.WriteEndObject();
            for (var i = node.Children.Count - 1; i >= 0; i--) pending.Push((node.Children[i], position));
        }
        json.WriteEndArray();
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

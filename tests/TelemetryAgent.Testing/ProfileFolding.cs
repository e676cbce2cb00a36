using System.Globalization;
using System.Text;
using OpenTelemetry.Proto.Collector.Profiles.V1Development;
using OpenTelemetry.Proto.Common.V1;
using OpenTelemetry.Proto.Profiles.V1Development;
using TelemetryAgent.Profiling.Formats;
using Xunit;

namespace TelemetryAgent.Testing;

/// <summary>
/// Rebuilds folded stacks (profile.folded's form: <c>process;thread;frame;... weight</c>, sorted, zero weights left
/// out) from decoded OTLP profiles and pprof files, reading only what a backend would read, so that tests compare
/// them with the agent's own profile.folded and calls.folded. Also checks the dictionary rules of proto/OTLP.md.
/// Shared by the export and end-to-end tests.
/// </summary>
public static class ProfileFolding
{
    /// <summary>Sums the profiles of <paramref name="sampleType"/> (<c>wall</c> or <c>calls</c>) of every request.</summary>
    public static string FromOtlp(IEnumerable<ExportProfilesServiceRequest> requests, string sampleType)
    {
        var weights = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var request in requests)
        {
            var dictionary = request.Dictionary;
            var strings = dictionary.StringTable;
            foreach (var resourceProfiles in request.ResourceProfiles)
            {
                var resource = resourceProfiles.Resource.Attributes.ToDictionary(a => a.Key, a => a.Value);
                var process = $"{resource["service.name"].StringValue} (pid {resource["process.pid"].IntValue})";
                foreach (var profile in resourceProfiles.ScopeProfiles.SelectMany(scope => scope.Profiles))
                {
                    if (strings[profile.SampleType.TypeStrindex] != sampleType) continue;
                    foreach (var sample in profile.Samples)
                    {
                        var threadName = sample.AttributeIndices
                            .Select(index => dictionary.AttributeTable[index])
                            .Single(attribute => strings[attribute.KeyStrindex] == "thread.name").Value.StringValue;
                        var frames = dictionary.StackTable[sample.StackIndex].LocationIndices
                            .Reverse()
                            .Select(location => strings[dictionary.FunctionTable[dictionary.LocationTable[location].Lines[0].FunctionIndex].NameStrindex]);
                        Add(weights, process, "thread " + threadName, frames, sample.Values.Sum());
                    }
                }
            }
        }
        return Render(weights);
    }

    /// <summary>One value (by index of its sample type) of a pprof profile, processes and threads from its labels.</summary>
    public static string FromPprof(Perftools.Profiles.Profile profile, int valueIndex)
    {
        var strings = profile.StringTable;
        var functions = profile.Function.ToDictionary(function => function.Id);
        var locations = profile.Location.ToDictionary(location => location.Id);
        var weights = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var sample in profile.Sample)
        {
            string Label(string key) => strings[(int)sample.Label.Single(label => strings[(int)label.Key] == key).Str];
            var frames = sample.LocationId.Reverse()
                .Select(id => strings[(int)functions[locations[id].Line.Single().FunctionId].Name]);
            Add(weights, Label("process"), Label("thread"), frames, sample.Value[valueIndex]);
        }
        return Render(weights);
    }

    /// <summary>
    /// Entry 0 of every table is the zero value; every other entry is distinct and referenced; every index is in
    /// range; stacks are non-empty; samples have one value and distinct identities.
    /// </summary>
    public static void AssertDictionaryRules(ExportProfilesServiceRequest request)
    {
        var d = request.Dictionary;
        Assert.Equal("", d.StringTable[0]);
        Assert.Equal(new Mapping(), d.MappingTable[0]);
        Assert.Equal(new Location(), d.LocationTable[0]);
        Assert.Equal(new Function(), d.FunctionTable[0]);
        Assert.Equal(new Link(), d.LinkTable[0]);
        Assert.Equal(new KeyValueAndUnit(), d.AttributeTable[0]);
        Assert.Equal(new Stack(), d.StackTable[0]);
        foreach (var table in new IEnumerable<object>[] { d.StringTable, d.LocationTable, d.FunctionTable, d.AttributeTable, d.StackTable })
        {
            var rows = table.ToList();
            Assert.Equal(rows.Count, rows.Distinct().Count());
        }

        var usedStrings = new HashSet<int> { 0 };
        var usedLocations = new HashSet<int> { 0 };
        var usedFunctions = new HashSet<int> { 0 };
        var usedAttributes = new HashSet<int> { 0 };
        var usedStacks = new HashSet<int> { 0 };
        foreach (var profile in request.ResourceProfiles.SelectMany(r => r.ScopeProfiles).SelectMany(s => s.Profiles))
        {
            usedStrings.UnionWith([profile.SampleType.TypeStrindex, profile.SampleType.UnitStrindex,
                profile.PeriodType.TypeStrindex, profile.PeriodType.UnitStrindex]);
            Assert.Equal(16, profile.ProfileId.Length);
            usedAttributes.UnionWith(profile.AttributeIndices);
            var identities = new HashSet<string>();
            foreach (var sample in profile.Samples)
            {
                Assert.Single(sample.Values);
                Assert.Empty(sample.TimestampsUnixNano);
                Assert.InRange(sample.StackIndex, 1, d.StackTable.Count - 1);
                usedStacks.Add(sample.StackIndex);
                usedAttributes.UnionWith(sample.AttributeIndices);
                Assert.True(identities.Add($"{sample.StackIndex}/{string.Join(',', sample.AttributeIndices)}/{sample.LinkIndex}"));
            }
        }
        foreach (var stack in usedStacks.Where(index => index > 0).Select(index => d.StackTable[index]))
        {
            Assert.NotEmpty(stack.LocationIndices);
            usedLocations.UnionWith(stack.LocationIndices);
        }
        foreach (var location in usedLocations.Where(index => index > 0).Select(index => d.LocationTable[index]))
        {
            usedAttributes.UnionWith(location.AttributeIndices);
            usedFunctions.UnionWith(location.Lines.Select(line => line.FunctionIndex));
        }
        foreach (var function in usedFunctions.Where(index => index > 0).Select(index => d.FunctionTable[index]))
        {
            usedStrings.UnionWith([function.NameStrindex, function.SystemNameStrindex, function.FilenameStrindex]);
        }
        foreach (var attribute in usedAttributes.Where(index => index > 0).Select(index => d.AttributeTable[index]))
        {
            usedStrings.Add(attribute.KeyStrindex);
        }
        Assert.Equal(d.StackTable.Count, usedStacks.Count);
        Assert.Equal(d.LocationTable.Count, usedLocations.Count);
        Assert.Equal(d.FunctionTable.Count, usedFunctions.Count);
        Assert.Equal(d.AttributeTable.Count, usedAttributes.Count);
        Assert.Equal(d.StringTable.Count, usedStrings.Count);
        Assert.All(usedStrings, index => Assert.InRange(index, 0, d.StringTable.Count - 1));
    }

    private static void Add(Dictionary<string, long> weights, string process, string thread, IEnumerable<string> frames, long weight)
    {
        var stack = new StringBuilder(ProfileLabels.ForFoldedStack(process)).Append(';').Append(ProfileLabels.ForFoldedStack(thread));
        foreach (var frame in frames) stack.Append(';').Append(ProfileLabels.ForFoldedStack(frame));
        var key = stack.ToString();
        weights[key] = weights.GetValueOrDefault(key) + weight;
    }

    private static string Render(Dictionary<string, long> weights)
    {
        var text = new StringBuilder();
        foreach (var stack in weights.Keys.Where(stack => weights[stack] != 0).Order(StringComparer.Ordinal))
        {
            text.Append(stack).Append(' ').Append(weights[stack].ToString(CultureInfo.InvariantCulture)).Append('\n');
        }
        return text.ToString();
    }
}

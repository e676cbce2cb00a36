using System.Security.Cryptography;
using System.Text;
using Google.Protobuf;
using OpenTelemetry.Proto.Collector.Profiles.V1Development;
using OpenTelemetry.Proto.Common.V1;
using OpenTelemetry.Proto.Profiles.V1Development;
using OpenTelemetry.Proto.Resource.V1;
using TelemetryAgent.Profiling;
using TelemetryAgent.Profiling.Formats;
using TelemetryAgent.Export.Python;

namespace TelemetryAgent.Export.Profiles;

/// <summary>What one process did during one export interval (its first one starts at its first event).</summary>
public sealed record ProfileInterval(ProcessProfile Process, IReadOnlyList<StackSample> Samples, long StartUnixNs, long EndUnixNs);

/// <summary>
/// Encodes profile intervals as an OTLP <c>ExportProfilesServiceRequest</c> (opentelemetry-proto v1.10.0,
/// profiles v1development; proto/OTLP.md "Profiles we send" describes every field).
/// </summary>
/// <remarks>
/// Each interval becomes one <c>ResourceProfiles</c> (the process's resource, <see cref="ProcessResource"/>) with two
/// profiles in one scope, wall time and calls (<c>Profile.sample_type</c> holds one measurement), all sharing the
/// request's dictionary. Stacks are leaf first; threads are sample attributes (<c>thread.id</c>,
/// <c>thread.name</c>). Deterministic: the same input gives the same bytes.
/// </remarks>
public static class OtlpProfileEncoder
{
    public const string ScopeName = "telemetry-agent";

    public static ExportProfilesServiceRequest Encode(IReadOnlyList<ProfileInterval> intervals)
    {
        ArgumentNullException.ThrowIfNull(intervals);
        var request = new ExportProfilesServiceRequest { Dictionary = new ProfilesDictionary() };
        var dictionary = new DictionaryBuilder(request.Dictionary);
        foreach (var interval in intervals)
        {
            var resource = new Resource();
            foreach (var (key, value) in ProcessResource.Attributes(interval.Process.Identity))
            {
                resource.Attributes.Add(new KeyValue { Key = key, Value = ToAnyValue(value) });
            }
            var scope = new ScopeProfiles { Scope = new InstrumentationScope { Name = ScopeName } };
            var instanceId = ProcessResource.ServiceInstanceId(interval.Process.Identity);
            scope.Profiles.Add(EncodeProfile(dictionary, interval, instanceId, ProfileSampleTypes.WallType, ProfileSampleTypes.WallUnit,
                static sample => sample.SelfNs));
            scope.Profiles.Add(EncodeProfile(dictionary, interval, instanceId, ProfileSampleTypes.CallsType, ProfileSampleTypes.CallsUnit,
                static sample => sample.Calls));
            var resourceProfiles = new ResourceProfiles { Resource = resource };
            resourceProfiles.ScopeProfiles.Add(scope);
            request.ResourceProfiles.Add(resourceProfiles);
        }
        return request;
    }

    private static Profile EncodeProfile(DictionaryBuilder dictionary, ProfileInterval interval, string instanceId, string type, string unit,
        Func<StackSample, long> value)
    {
        var valueType = new OpenTelemetry.Proto.Profiles.V1Development.ValueType
        {
            TypeStrindex = dictionary.Strings[type],
            UnitStrindex = dictionary.Strings[unit],
        };
        var profile = new Profile
        {
            SampleType = valueType,
            // One unit of the measurement per unit of the value. In burst mode the values are already scaled
            // estimates (the profile's telemetry_agent.recording.* attributes say so).
            PeriodType = valueType.Clone(),
            Period = 1,
            TimeUnixNano = (ulong)Math.Max(0, interval.StartUnixNs),
            DurationNano = (ulong)Math.Max(0, interval.EndUnixNs - interval.StartUnixNs),
            ProfileId = ProfileId(instanceId, interval.StartUnixNs, type),
        };

        profile.AttributeIndices.Add(dictionary.RecordingAttributes(interval.Process));

        // Equal stacks of one thread (equal functions under one parent) are one sample.
        var samples = new Dictionary<(int Stack, uint Thread), Sample>();
        foreach (var sample in interval.Samples)
        {
            var amount = value(sample);
            if (amount == 0) continue;
            var stack = dictionary.StackOf(sample.Leaf);
            var key = (stack, sample.Thread.Id);
            if (samples.TryGetValue(key, out var existing))
            {
                existing.Values[0] += amount;
                continue;
            }
            var encoded = new Sample { StackIndex = stack };
            encoded.AttributeIndices.Add(dictionary.ThreadAttributes(sample.Thread));
            encoded.Values.Add(amount);
            samples.Add(key, encoded);
            profile.Samples.Add(encoded);
        }
        return profile;
    }

    /// <summary>16 bytes that identify one profile: the process instance, the interval's start and the measurement.</summary>
    private static ByteString ProfileId(string instanceId, long startUnixNs, string type)
    {
        var hash = SHA256.HashData(Encoding.UTF8.GetBytes($"{instanceId}/{startUnixNs}/{type}"));
        return ByteString.CopyFrom(hash, 0, 16);
    }

    /// <summary>An attribute value as OTLP carries it: strings, integers, doubles, booleans and arrays of them.</summary>
    public static AnyValue ToAnyValue(object value) => value switch
    {
        string text => new AnyValue { StringValue = text },
        long number => new AnyValue { IntValue = number },
        int number => new AnyValue { IntValue = number },
        double number => new AnyValue { DoubleValue = number },
        bool flag => new AnyValue { BoolValue = flag },
        System.Collections.IEnumerable items => ArrayValue(items),
        _ => new AnyValue { StringValue = Convert.ToString(value, System.Globalization.CultureInfo.InvariantCulture) ?? "" },
    };

    private static AnyValue ArrayValue(System.Collections.IEnumerable items)
    {
        var array = new ArrayValue();
        foreach (var item in items) array.Values.Add(ToAnyValue(item));
        return new AnyValue { ArrayValue = array };
    }

    /// <summary>Fills a <c>ProfilesDictionary</c>: every table starts with its zero entry, nothing is defined twice.</summary>
    private sealed class DictionaryBuilder
    {
        private readonly ProfilesDictionary _dictionary;
        private readonly InternTable<(string Name, string SystemName, string File, long StartLine)> _functions = new();
        private readonly InternTable<int> _locations = new();
        private readonly InternTable<int[]> _stacks = new(SequenceComparer.Instance);
        private readonly InternTable<(string Key, string Text, long Number)> _attributes = new();
        private readonly Dictionary<CallNode, int> _stackByLeaf = new(ReferenceEqualityComparer.Instance);
        private readonly Dictionary<FunctionInfo, int> _locationByFunction = new(ReferenceEqualityComparer.Instance);
        private readonly Dictionary<ThreadProfile, int[]> _threadAttributes = new(ReferenceEqualityComparer.Instance);
        private readonly List<int> _path = [];
        private readonly int _frameTypeAttribute;

        public DictionaryBuilder(ProfilesDictionary dictionary)
        {
            _dictionary = dictionary;
            Strings = new StringTable(dictionary.StringTable);
            dictionary.MappingTable.Add(new Mapping());
            dictionary.LocationTable.Add(new Location());
            dictionary.FunctionTable.Add(new Function());
            dictionary.LinkTable.Add(new Link());
            dictionary.AttributeTable.Add(new KeyValueAndUnit());
            dictionary.StackTable.Add(new Stack());
            _frameTypeAttribute = Attribute("profile.frame.type", ProfileSampleTypes.FrameType);
        }

        public StringTable Strings { get; }

        /// <summary>The stack from <paramref name="leaf"/> up to its thread's root, leaf first.</summary>
        public int StackOf(CallNode leaf)
        {
            if (_stackByLeaf.TryGetValue(leaf, out var known)) return known;
            _path.Clear();
            for (var node = leaf; node.Function is not null; node = node.Parent!) _path.Add(LocationOf(node.Function));
            var locations = _path.ToArray();
            var index = _stacks.IndexOf(locations, out var added);
            if (added)
            {
                var stack = new Stack();
                stack.LocationIndices.Add(locations);
                _dictionary.StackTable.Add(stack);
            }
            _stackByLeaf.Add(leaf, index);
            return index;
        }

        /// <summary><c>thread.id</c> (the OS thread id) when known, and <c>thread.name</c>.</summary>
        public int[] ThreadAttributes(ThreadProfile thread)
        {
            if (_threadAttributes.TryGetValue(thread, out var known)) return known;
            var attributes = new List<int>(2);
            if (thread.NativeId != 0) attributes.Add(Attribute("thread.id", null, thread.NativeId));
            if (thread.Name.Length > 0) attributes.Add(Attribute("thread.name", thread.Name));
            _threadAttributes.Add(thread, known = attributes.ToArray());
            return known;
        }

        /// <summary>
        /// One location per function: the aggregate is per function, not per line, so <c>Line.line</c> is unset and
        /// the function's first line is <c>Function.start_line</c>.
        /// </summary>
        private int LocationOf(FunctionInfo function)
        {
            if (_locationByFunction.TryGetValue(function, out var known)) return known;
            var functionIndex = FunctionOf(function);
            var index = _locations.IndexOf(functionIndex, out var added);
            if (added)
            {
                var location = new Location();
                location.Lines.Add(new Line { FunctionIndex = functionIndex });
                location.AttributeIndices.Add(_frameTypeAttribute);
                _dictionary.LocationTable.Add(location);
            }
            _locationByFunction.Add(function, index);
            return index;
        }

        /// <summary>name: the label every output shows (<c>qualname (file:line)</c>); system name: the qualified name.</summary>
        private int FunctionOf(FunctionInfo function)
        {
            var index = _functions.IndexOf((function.Label, function.QualifiedName, function.FileName, function.FirstLine), out var added);
            if (added)
            {
                _dictionary.FunctionTable.Add(new Function
                {
                    NameStrindex = Strings[function.Label],
                    SystemNameStrindex = Strings[function.QualifiedName],
                    FilenameStrindex = Strings[function.FileName],
                    StartLine = function.FirstLine,
                });
            }
            return index;
        }

        /// <summary>
        /// How the data was recorded: <c>telemetry_agent.recording.mode</c> (full, burst, exceptions), for burst
        /// mode <c>telemetry_agent.recording.scale</c> (times and calls were multiplied by it, as text), and
        /// <c>telemetry_agent.recording.callbacks</c> (native or python) when the shim said which recorded.
        /// </summary>
        public int[] RecordingAttributes(ProcessProfile process)
        {
            var recording = process.Recording;
            var attributes = new List<int> { Attribute(PythonTelemetryNames.RecordingModeAttribute, recording.Mode) };
            if (recording.IsSampled)
            {
                var scale = process.Windows.Scale.ToString("0.###", System.Globalization.CultureInfo.InvariantCulture);
                attributes.Add(Attribute(PythonTelemetryNames.RecordingScaleAttribute, scale));
            }
            if (recording.Callbacks.Length > 0)
                attributes.Add(Attribute(PythonTelemetryNames.RecordingCallbacksAttribute, recording.Callbacks));
            return attributes.ToArray();
        }

        private int Attribute(string key, string? text, long number = 0)
        {
            var index = _attributes.IndexOf((key, text ?? "", number), out var added);
            if (added)
            {
                _dictionary.AttributeTable.Add(new KeyValueAndUnit
                {
                    KeyStrindex = Strings[key],
                    Value = text is not null ? new AnyValue { StringValue = text } : new AnyValue { IntValue = number },
                });
            }
            return index;
        }
    }
}

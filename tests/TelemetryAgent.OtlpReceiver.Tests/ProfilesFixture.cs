using Google.Protobuf;
using OpenTelemetry.Proto.Collector.Profiles.V1Development;
using OpenTelemetry.Proto.Common.V1;
using OpenTelemetry.Proto.Profiles.V1Development;
using OpenTelemetry.Proto.Resource.V1;
using ValueType = OpenTelemetry.Proto.Profiles.V1Development.ValueType;

namespace TelemetryAgent.OtlpReceiver.Tests;

/// <summary>A small but complete profiles export: two Python stacks with a dictionary, as our exporter will send.</summary>
internal static class ProfilesFixture
{
    public static ExportProfilesServiceRequest CpuProfile(string serviceName = "python-app")
    {
        // Strings:            0   1          2        3       4              5       6         7        8             9              10
        string[] strings = ["", "samples", "count", "wall", "nanoseconds", "main", "handle", "parse", "app/main.py", "service.name", serviceName];
        return new ExportProfilesServiceRequest
        {
            Dictionary = new ProfilesDictionary
            {
                StringTable = { strings },
                MappingTable = { new Mapping() },
                FunctionTable =
                {
                    new Function(),
                    new Function { NameStrindex = 5, SystemNameStrindex = 5, FilenameStrindex = 8, StartLine = 1 },
                    new Function { NameStrindex = 6, SystemNameStrindex = 6, FilenameStrindex = 8, StartLine = 10 },
                    new Function { NameStrindex = 7, SystemNameStrindex = 7, FilenameStrindex = 8, StartLine = 20 },
                },
                LocationTable =
                {
                    new Location(),
                    new Location { Lines = { new Line { FunctionIndex = 1, Line_ = 3 } } },
                    new Location { Lines = { new Line { FunctionIndex = 2, Line_ = 12 } } },
                    new Location { Lines = { new Line { FunctionIndex = 3, Line_ = 25, Column = 4 } } },
                },
                StackTable =
                {
                    new Stack(),
                    new Stack { LocationIndices = { 3, 2, 1 } },
                    new Stack { LocationIndices = { 2, 1 } },
                },
                LinkTable = { new Link() },
                AttributeTable =
                {
                    new KeyValueAndUnit(),
                    new KeyValueAndUnit { KeyStrindex = 3, Value = new AnyValue { IntValue = 4242 } },
                },
            },
            ResourceProfiles =
            {
                new ResourceProfiles
                {
                    Resource = new Resource
                    {
                        Attributes =
                        {
                            new KeyValue { Key = "process.runtime.name", Value = new AnyValue { StringValue = "cpython" } },
                            new KeyValue { KeyStrindex = 9, Value = new AnyValue { StringValueStrindex = 10 } },
                        },
                    },
                    ScopeProfiles =
                    {
                        new ScopeProfiles
                        {
                            Scope = new InstrumentationScope { Name = "telemetry-agent", Version = "0.1.0" },
                            Profiles =
                            {
                                new Profile
                                {
                                    SampleType = new ValueType { TypeStrindex = 1, UnitStrindex = 2 },
                                    PeriodType = new ValueType { TypeStrindex = 3, UnitStrindex = 4 },
                                    Period = 10_000_000,
                                    TimeUnixNano = 1_795_000_000_000_000_000,
                                    DurationNano = 2_000_000_000,
                                    ProfileId = ByteString.CopyFrom(Enumerable.Range(1, 16).Select(i => (byte)i).ToArray()),
                                    Samples =
                                    {
                                        new Sample { StackIndex = 1, Values = { 3 }, AttributeIndices = { 1 } },
                                        new Sample { StackIndex = 2, Values = { 2 } },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        };
    }
}

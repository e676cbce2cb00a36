using Google.Protobuf;
using OpenTelemetry.Proto.Collector.Profiles.V1Development;
using OpenTelemetry.Proto.Common.V1;
using OpenTelemetry.Proto.Profiles.V1Development;
using Pprof = Perftools.Profiles;
using ValueType = OpenTelemetry.Proto.Profiles.V1Development.ValueType;

namespace TelemetryAgent.OtlpReceiver.Tests;

/// <summary>
/// Hand-encoded byte fixtures, written from the field numbers of the specifications (opentelemetry-proto
/// v1.10.0 profiles and common; google/pprof profile.proto), pin our generated classes to the wire layout
/// both ways: the fixture decodes to the expected values and the values encode to exactly the fixture.
/// There is no SDK for profiles, so these fixtures are the independent check.
/// </summary>
public sealed class WireLayoutTests
{
    [Fact]
    public void Sample_uses_the_v1_10_field_numbers()
    {
        // v1.10.0 renumbered Sample: stack_index 1, attribute_indices 2, link_index 3, values 4, timestamps 5
        // (v1.9.0 had values 2, attribute_indices 3, link_index 4).
        var fixture = Hex(
            "08 01",                               // 1 stack_index = 1
            "12 02 02 03",                         // 2 attribute_indices = [2, 3] (packed)
            "18 04",                               // 3 link_index = 4
            "22 03 05 AC 02",                      // 4 values = [5, 300] (packed varints)
            "2A 08 06 00 00 00 00 00 00 00");      // 5 timestamps_unix_nano = [6] (packed fixed64)
        var expected = new Sample { StackIndex = 1, LinkIndex = 4, AttributeIndices = { 2, 3 }, Values = { 5, 300 }, TimestampsUnixNano = { 6 } };

        AssertLayout(fixture, expected, Sample.Parser);
    }

    [Fact]
    public void Profile_uses_the_v1_10_field_numbers()
    {
        var fixture = Hex(
            "0A 04 08 01 10 02",                   // 1 sample_type = {type_strindex 1, unit_strindex 2}
            "12 05 08 01 22 01 07",                // 2 samples = [{stack_index 1, values [7]}]
            "19 E8 03 00 00 00 00 00 00",          // 3 time_unix_nano = 1000 (fixed64)
            "20 05",                               // 4 duration_nano = 5
            "2A 04 08 03 10 04",                   // 5 period_type = {3, 4}
            "30 0A",                               // 6 period = 10
            "3A 02 AB CD",                         // 7 profile_id
            "40 01",                               // 8 dropped_attributes_count = 1
            "4A 05 70 70 72 6F 66",                // 9 original_payload_format = "pprof"
            "52 01 1F",                            // 10 original_payload
            "5A 01 09");                           // 11 attribute_indices = [9]
        var expected = new Profile
        {
            SampleType = new ValueType { TypeStrindex = 1, UnitStrindex = 2 },
            Samples = { new Sample { StackIndex = 1, Values = { 7 } } },
            TimeUnixNano = 1000,
            DurationNano = 5,
            PeriodType = new ValueType { TypeStrindex = 3, UnitStrindex = 4 },
            Period = 10,
            ProfileId = ByteString.CopyFrom(0xAB, 0xCD),
            DroppedAttributesCount = 1,
            OriginalPayloadFormat = "pprof",
            OriginalPayload = ByteString.CopyFrom(0x1F),
            AttributeIndices = { 9 },
        };

        AssertLayout(fixture, expected, Profile.Parser);
    }

    [Fact]
    public void Dictionary_tables_use_the_v1_10_field_numbers()
    {
        var fixture = Hex(
            "0A 00",                                     // 1 mapping_table = [{}]
            "12 08 1A 06 08 01 10 0C 18 03",             // 2 location_table = [{lines [{function 1, line 12, column 3}]}]
            "1A 08 08 01 10 02 18 03 20 0A",             // 3 function_table = [{name 1, system_name 2, filename 3, start_line 10}]
            "22 06 0A 01 01 12 01 02",                   // 4 link_table = [{trace_id 01, span_id 02}]
            "2A 00 2A 01 61",                            // 5 string_table = ["", "a"]
            "32 06 08 01 12 02 40 01",                   // 6 attribute_table = [{key 1, value {string_value_strindex 1}}]
            "3A 04 0A 02 01 02");                        // 7 stack_table = [{location_indices [1, 2]}]
        var expected = new ProfilesDictionary
        {
            MappingTable = { new Mapping() },
            LocationTable = { new Location { Lines = { new Line { FunctionIndex = 1, Line_ = 12, Column = 3 } } } },
            FunctionTable = { new Function { NameStrindex = 1, SystemNameStrindex = 2, FilenameStrindex = 3, StartLine = 10 } },
            LinkTable = { new Link { TraceId = ByteString.CopyFrom(1), SpanId = ByteString.CopyFrom(2) } },
            StringTable = { "", "a" },
            AttributeTable = { new KeyValueAndUnit { KeyStrindex = 1, Value = new AnyValue { StringValueStrindex = 1 } } },
            StackTable = { new Stack { LocationIndices = { 1, 2 } } },
        };

        AssertLayout(fixture, expected, ProfilesDictionary.Parser);
    }

    [Fact]
    public void Export_request_carries_the_dictionary_in_field_2()
    {
        var fixture = Hex(
            "0A 04 12 02 12 00",                   // 1 resource_profiles = [{scope_profiles [{profiles [{}]}]}]
            "12 02 2A 00");                        // 2 dictionary = {string_table [""]}
        var expected = new ExportProfilesServiceRequest
        {
            ResourceProfiles = { new ResourceProfiles { ScopeProfiles = { new ScopeProfiles { Profiles = { new Profile() } } } } },
            Dictionary = new ProfilesDictionary { StringTable = { "" } },
        };

        AssertLayout(fixture, expected, ExportProfilesServiceRequest.Parser);
    }

    [Fact]
    public void Common_string_table_references_use_the_v1_10_field_numbers()
    {
        // AnyValue.string_value_strindex = 8 and KeyValue.key_strindex = 3 were added in v1.10.0.
        var fixture = Hex("12 02 40 04", "18 03");
        var expected = new KeyValue { KeyStrindex = 3, Value = new AnyValue { StringValueStrindex = 4 } };

        AssertLayout(fixture, expected, KeyValue.Parser);
    }

    [Fact]
    public void Pprof_profile_uses_the_google_pprof_field_numbers()
    {
        var fixture = Hex(
            "0A 04 08 01 10 02",                                         // 1 sample_type = [{type 1, unit 2}]
            "12 0F 0A 02 01 02 12 01 03 1A 06 08 03 18 04 20 05",        // 2 sample = [{location_id [1,2], value [3], label [{key 3, num 4, num_unit 5}]}]
            "22 0C 08 01 10 01 22 06 08 01 10 07 18 02",                 // 4 location = [{id 1, mapping_id 1, line [{function_id 1, line 7, column 2}]}]
            "2A 0A 08 01 10 01 18 01 20 02 28 03",                       // 5 function = [{id 1, name 1, system_name 1, filename 2, start_line 3}]
            "32 00 32 01 78",                                            // 6 string_table = ["", "x"]
            "48 09",                                                     // 9 time_nanos = 9
            "50 0A",                                                     // 10 duration_nanos = 10
            "5A 04 08 01 10 02",                                         // 11 period_type = {1, 2}
            "60 0B",                                                     // 12 period = 11
            "70 01");                                                    // 14 default_sample_type = 1
        var expected = new Pprof.Profile
        {
            SampleType = { new Pprof.ValueType { Type = 1, Unit = 2 } },
            Sample = { new Pprof.Sample { LocationId = { 1, 2 }, Value = { 3 }, Label = { new Pprof.Label { Key = 3, Num = 4, NumUnit = 5 } } } },
            Location = { new Pprof.Location { Id = 1, MappingId = 1, Line = { new Pprof.Line { FunctionId = 1, Line_ = 7, Column = 2 } } } },
            Function = { new Pprof.Function { Id = 1, Name = 1, SystemName = 1, Filename = 2, StartLine = 3 } },
            StringTable = { "", "x" },
            TimeNanos = 9,
            DurationNanos = 10,
            PeriodType = new Pprof.ValueType { Type = 1, Unit = 2 },
            Period = 11,
            DefaultSampleType = 1,
        };

        AssertLayout(fixture, expected, Pprof.Profile.Parser);
    }

    private static void AssertLayout<T>(byte[] fixture, T expected, MessageParser<T> parser)
        where T : IMessage<T>
    {
        Assert.Equal(expected, parser.ParseFrom(fixture));
        Assert.Equal(Convert.ToHexString(fixture), Convert.ToHexString(expected.ToByteArray()));
    }

    private static byte[] Hex(params string[] parts) =>
        Convert.FromHexString(string.Concat(parts).Replace(" ", "", StringComparison.Ordinal));
}

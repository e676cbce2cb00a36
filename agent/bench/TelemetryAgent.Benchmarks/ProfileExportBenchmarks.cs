using BenchmarkDotNet.Attributes;
using Google.Protobuf;
using TelemetryAgent.Output;
using TelemetryAgent.Profiling;
using TelemetryAgent.Export.Profiles;
using TelemetryAgent.Testing;

namespace TelemetryAgent.Benchmarks;

/// <summary>
/// Encoding one process's profile for export: OTLP profiles (the request's bytes) and profile.pb.gz (gzip
/// included), from the tree of a 100,000-event synthetic connection. Reported per stack (one sample of each
/// measurement): "Mean" is ns/stack, "Allocated" is bytes/stack.
/// </summary>
[MemoryDiagnoser]
public class ProfileExportBenchmarks : IQuickBenchmarks
{
    private ProcessProfile _profile = null!;
    private IReadOnlyList<StackSample> _samples = [];

    [GlobalSetup]
    public void Setup()
    {
        _profile = SessionBenchmarks.Aggregate(Segments.OfSize(SyntheticStream.Create(SessionBenchmarks.EventCount), 4096));
        _samples = StackDeltas.Totals(_profile);
        Console.WriteLine($"// profile: {_samples.Count} stacks, OTLP request {EncodeOtlp()} bytes, profile.pb.gz {WritePprof()} bytes");
    }

    /// <summary>Path deltas (as an interval export computes them) plus the OTLP encoding, to bytes.</summary>
    [Benchmark]
    public int EncodeOtlp()
    {
        var samples = new StackDeltas().Next(_profile);
        var interval = new ProfileInterval(_profile, samples, _profile.FirstEventUnixNs, _profile.LastEventUnixNs);
        return OtlpProfileEncoder.Encode([interval]).ToByteArray().Length;
    }

    [Benchmark]
    public long WritePprof()
    {
        using var file = new MemoryStream();
        PprofFile.Write(file, [_profile]);
        return file.Length;
    }

    public IEnumerable<QuickScenario> CreateScenarios()
    {
        Setup();
        yield return new QuickScenario("profiles: OTLP encode (per stack)", _samples.Count, 0, () => EncodeOtlp());
        yield return new QuickScenario("profiles: profile.pb.gz (per stack)", _samples.Count, 0, () => WritePprof());
    }
}

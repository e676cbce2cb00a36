using System.Buffers;
using System.IO.Pipelines;
using BenchmarkDotNet.Attributes;
using TelemetryAgent.Protocol;
using TelemetryAgent.Protocol.Messages;
using TelemetryAgent.Testing;

namespace TelemetryAgent.Benchmarks;

/// <summary>
/// Parse throughput of the protocol layer alone over 100k events in ~64 KiB EVENTS frames. Each operation
/// is reported per event (OperationsPerInvoke), so "Mean" is ns/event and "Allocated" is bytes/event.
/// </summary>
[MemoryDiagnoser]
public class ParseBenchmarks : IQuickBenchmarks
{
    public const int EventCount = 100_000;

    private byte[] _stream = [];
    private ReadOnlySequence<byte> _contiguous;
    private ReadOnlySequence<byte> _segmented;

    [GlobalSetup]
    public void Setup()
    {
        _stream = SyntheticStream.Create(EventCount);
        _contiguous = new ReadOnlySequence<byte>(_stream);
        _segmented = Segments.OfSize(_stream, 4096);
    }

    /// <summary>4 KiB segments, as a socket pipe delivers data: every EVENTS payload is copied to scratch.</summary>
    [Benchmark(OperationsPerInvoke = EventCount, Baseline = true)]
    public long ParseSegments4KiB() => ParseAll(_segmented);

    /// <summary>One contiguous buffer: EVENTS payloads reach the handler without a copy.</summary>
    [Benchmark(OperationsPerInvoke = EventCount)]
    public long ParseContiguous() => ParseAll(_contiguous);

    /// <summary>The whole read loop (<see cref="WireConnection.RunAsync{THandler}"/>) over a PipeReader.</summary>
    [Benchmark(OperationsPerInvoke = EventCount)]
    public async Task<long> ReadLoopSegments4KiB()
    {
        WireConnectionResult result = await WireConnection.RunAsync(PipeReader.Create(_segmented), new CountingHandler());
        return result.Events;
    }

    public IEnumerable<QuickScenario> CreateScenarios()
    {
        Setup();
        yield return new QuickScenario("protocol: parse, 4 KiB segments", EventCount, _stream.Length, () => ParseSegments4KiB());
        yield return new QuickScenario("protocol: parse, contiguous", EventCount, _stream.Length, () => ParseContiguous());
        yield return new QuickScenario("protocol: read loop, 4 KiB segments", EventCount, _stream.Length,
            () => ReadLoopSegments4KiB().GetAwaiter().GetResult());
    }

    private static long ParseAll(ReadOnlySequence<byte> input)
    {
        var handler = new CountingHandler();
        var state = new WireStreamState();
        var reader = new SequenceReader<byte>(input);
        WireParser.TryReadPreamble(ref reader, ref state);
        while (WireParser.TryReadFrame(ref reader, ref state, ref handler))
        {
        }

        state.ReleaseScratch();
        if (handler.Events != EventCount)
        {
            throw new InvalidOperationException($"parsed {handler.Events} events, expected {EventCount}");
        }

        return handler.Checksum;
    }

    /// <summary>Decodes every record, as a session must, and folds the fields so the work is not elided.</summary>
    private struct CountingHandler : IWireHandler
    {
        public long Events;
        public long Checksum;

        public void OnEvents(ReadOnlySpan<byte> packedRecords)
        {
            int count = EventRecord.Count(packedRecords);
            for (int i = 0; i < count; i++)
            {
                EventRecord record = EventRecord.Read(packedRecords, i);
                Checksum += (long)record.Timestamp ^ record.CodeId ^ (long)record.ThreadId << 32 ^ (byte)record.Kind;
            }

            Events += count;
        }

        public void OnHello(Hello hello)
        {
        }

        public void OnDefinitions(Definitions definitions)
        {
        }

        public void OnStats(Stats stats)
        {
        }

        public void OnGoodbye(Goodbye goodbye)
        {
        }

        public void OnExceptions(Exceptions exceptions)
        {
        }
    }
}

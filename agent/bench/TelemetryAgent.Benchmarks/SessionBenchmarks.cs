using System.Buffers;
using BenchmarkDotNet.Attributes;
using TelemetryAgent.Profiling;
using TelemetryAgent.Protocol;
using TelemetryAgent.Protocol.Messages;
using TelemetryAgent.Sessions;
using TelemetryAgent.Testing;

namespace TelemetryAgent.Benchmarks;

/// <summary>
/// Parse + aggregate: the protocol parser feeding a <see cref="ProcessSession"/> that pairs events and builds
/// call trees. Reported per event (OperationsPerInvoke): "Mean" is ns/event, "Allocated" is bytes/event.
/// </summary>
[MemoryDiagnoser]
public class SessionBenchmarks : IQuickBenchmarks
{
    public const int EventCount = 100_000;
    private const int EventsPerFrame = 4096;

    private byte[] _stream = [];
    private ReadOnlySequence<byte> _segmented;
    private byte[][] _balancedFrames = [];
    private byte[] _balancedStream = [];
    private ReadOnlySequence<byte> _balancedSegmented;
    private ProcessSession _steadySession = null!;

    [GlobalSetup]
    public void Setup()
    {
        _stream = SyntheticStream.Create(EventCount, EventsPerFrame);
        _segmented = Segments.OfSize(_stream, 4096);
        _balancedFrames = BalancedFrames(EventCount);
        _balancedStream = StreamOf(_balancedFrames);
        _balancedSegmented = Segments.OfSize(_balancedStream, 4096);
        _steadySession = NewDefinedSession();
        AggregateSteadyState();   // the tree's nodes exist from here on, as in a long-running service
    }

    /// <summary>
    /// A whole connection, 4 KiB socket segments, into a new session: includes building the tree (each new path
    /// allocates its node once) and completing the session.
    /// </summary>
    [Benchmark(OperationsPerInvoke = EventCount, Baseline = true)]
    public long ParseAndAggregateSegments4KiB() => ParseAndAggregate(_segmented);

    /// <summary>
    /// The same over a stream whose calls follow a bounded set of paths (a few per depth), as a service's
    /// request handling does: the tree stops growing early, so this is closer to a real connection.
    /// </summary>
    [Benchmark(OperationsPerInvoke = EventCount)]
    public long ParseAndAggregateBoundedPaths() => ParseAndAggregate(_balancedSegmented);

    private static long ParseAndAggregate(ReadOnlySequence<byte> input) => Aggregate(input).EventsReceived;

    /// <summary>A whole connection into a new session: the completed profile.</summary>
    internal static ProcessProfile Aggregate(ReadOnlySequence<byte> input)
    {
        var session = new ProcessSession();
        var handler = session.Handler;
        var state = new WireStreamState();
        var reader = new SequenceReader<byte>(input);
        WireParser.TryReadPreamble(ref reader, ref state);
        while (WireParser.TryReadFrame(ref reader, ref state, ref handler))
        {
        }

        state.ReleaseScratch();
        session.Complete(ConnectionEnd.Goodbye);
        var received = session.Profile!.EventsReceived;
        if (received != EventCount) throw new InvalidOperationException($"aggregated {received} events, expected {EventCount}");
        return session.Profile;
    }

    /// <summary>
    /// Aggregation alone in steady state: EVENTS payloads of balanced call sequences into a session whose tree
    /// already holds every path they visit (the same frames were applied once in setup). Allocates nothing.
    /// </summary>
    [Benchmark(OperationsPerInvoke = EventCount)]
    public long AggregateSteadyState()
    {
        var handler = _steadySession.Handler;
        foreach (var frame in _balancedFrames) handler.OnEvents(frame);
        return _steadySession.Profile!.EventsReceived;
    }

    public IEnumerable<QuickScenario> CreateScenarios()
    {
        Setup();
        yield return new QuickScenario("session: parse+aggregate, 4 KiB", EventCount, _stream.Length,
            () => ParseAndAggregateSegments4KiB());
        yield return new QuickScenario("session: parse+aggregate, bounded", EventCount, _balancedStream.Length,
            () => ParseAndAggregateBoundedPaths());
        yield return new QuickScenario("session: aggregate, steady state", EventCount, (long)EventCount * WireFormat.EventRecordSize,
            () => AggregateSteadyState());
    }

    private static ProcessSession NewDefinedSession()
    {
        var session = new ProcessSession();
        session.OnHello(SyntheticStream.Hello());
        session.OnDefinitions(SyntheticStream.Definitions());
        return session;
    }

    private static byte[] StreamOf(byte[][] eventFrames)
    {
        var stream = new WireStream().Preamble()
            .Message(FrameType.Hello, SyntheticStream.Hello())
            .Message(FrameType.Definitions, SyntheticStream.Definitions());
        foreach (var frame in eventFrames) stream.Frame((byte)FrameType.Events, frame);
        return stream.Goodbye(new Goodbye { Reason = Goodbye.Types.Reason.Exit }).ToArray();
    }

    /// <summary>
    /// Calls on four threads over a fixed set of paths, every stack empty again at the end, so that replaying the
    /// frames visits only paths the tree already has and keeps stacks bounded. Timestamps restart on replay; the
    /// session clamps them once per thread, which is negligible.
    /// </summary>
    private static byte[][] BalancedFrames(int eventCount)
    {
        var random = new Random(7);
        var records = new List<EventRecord>(eventCount);
        var stacks = new Stack<uint>[SyntheticStream.Threads];
        for (var i = 0; i < stacks.Length; i++) stacks[i] = new Stack<uint>();
        ulong timestamp = 1_000;
        var thread = 0;
        var open = 0;
        // A push adds 2 to records + open frames and a pop 0, so an even count ends exactly with every frame closed.
        while (records.Count + open < eventCount)
        {
            if (random.Next(64) == 0) thread = random.Next(SyntheticStream.Threads);
            var stack = stacks[thread];
            timestamp += (ulong)random.Next(40, 3000);
            if (stack.Count == 0 || (stack.Count < 30 && random.Next(100) < 52))
            {
                // Three functions per depth near the root (entry points, handlers), one deeper down (shared
                // helpers): a few thousand distinct paths at most, as in a service handling requests.
                var code = (uint)(stack.Count * 10 + (stack.Count < 4 ? random.Next(1, 4) : 1));
                stack.Push(code);
                open++;
                records.Add(new EventRecord(timestamp, (uint)thread + 1, code, EventKind.Start));
            }
            else
            {
                open--;
                records.Add(new EventRecord(timestamp, (uint)thread + 1, stack.Pop(), EventKind.Return));
            }
        }
        for (var index = 0; index < stacks.Length; index++)
        {
            while (stacks[index].TryPop(out var code))
            {
                timestamp += 100;
                records.Add(new EventRecord(timestamp, (uint)index + 1, code, EventKind.Return));
            }
        }

        return records.Chunk(EventsPerFrame).Select(chunk =>
        {
            var payload = new byte[chunk.Length * WireFormat.EventRecordSize];
            for (var i = 0; i < chunk.Length; i++) chunk[i].WriteTo(payload.AsSpan(i * WireFormat.EventRecordSize));
            return payload;
        }).ToArray();
    }
}

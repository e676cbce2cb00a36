using System.Buffers;
using System.Buffers.Binary;
using System.Diagnostics;
using System.IO.Pipelines;
using TelemetryAgent.Output;
using TelemetryAgent.Protocol;
using TelemetryAgent.Protocol.Messages;
using TelemetryAgent.Sessions;
using Xunit.Abstractions;

namespace TelemetryAgent.Profiling.Tests;

/// <summary>
/// Seeded random and mutated streams through the whole read path: a real <see cref="Pipe"/> fed in random chunks,
/// <see cref="WireConnection"/> and a <see cref="ProcessSession"/> with small limits, then the exporters. Whatever the
/// bytes, the connection must end (normally, or with a protocol violation), never throw anything else, never hang,
/// and keep within its limits; memory must come back once sessions are let go.
/// </summary>
/// <remarks>
/// Fast mode (CI): <see cref="FastFrames"/> frames from seed 0. Long mode:
/// <c>TELEMETRY_FUZZ_FRAMES=1000000 dotnet test tests/TelemetryAgent.Profiling.Tests -c Release --filter SessionFuzzTests
/// --logger "console;verbosity=detailed"</c> (seeds from the clock; it prints them and its figures). A failure names its
/// seed: <c>TELEMETRY_FUZZ_SEED=n</c> replays that one case.
/// </remarks>
public sealed class SessionFuzzTests(ITestOutputHelper output)
{
    private const long FastFrames = 40_000;
    private static readonly TimeSpan CaseTimeout = TimeSpan.FromSeconds(20);

    private static readonly SessionLimits Limits = new()
    {
        MaxFramePayload = 256 * 1024, MaxCodeId = 2048, MaxThreadId = 64, MaxStackDepth = 96, MaxCallTreeNodes = 4000,
    };

    [Fact]
    public async Task Random_and_mutated_streams_end_the_connection_cleanly_within_its_limits()
    {
        var replay = Environment.GetEnvironmentVariable("TELEMETRY_FUZZ_SEED") is { Length: > 0 } one ? int.Parse(one) : (int?)null;
        var frameTarget = Environment.GetEnvironmentVariable("TELEMETRY_FUZZ_FRAMES") is { Length: > 0 } target ? long.Parse(target) : FastFrames;
        var longMode = frameTarget > FastFrames && replay is null;
        var firstSeed = replay ?? (longMode ? Environment.TickCount & 0x3FFFFFFF : 0);
        output.WriteLine($"first seed {firstSeed}, target {frameTarget:N0} frames");

        var budget = new AggregateMemoryBudget(64L << 20);
        var ends = new SortedDictionary<string, long>(StringComparer.Ordinal);
        var outputs = Directory.CreateTempSubdirectory("session-fuzz-");
        long frames = 0, bytes = 0, cases = 0, memoryAfterWarmUp = 0;
        var clock = Stopwatch.StartNew();
        try
        {
            for (var seed = firstSeed; replay is null ? frames < frameTarget : seed == replay; seed++)
            {
                var random = new Random(seed);
                var (stream, frameCount, mutation) = FuzzStream.Create(random);
                var what = $"seed {seed} ({mutation}); replay: TELEMETRY_FUZZ_SEED={seed} dotnet test tests/TelemetryAgent.Profiling.Tests --filter SessionFuzzTests";
                var session = new ProcessSession(limits: Limits) { MemoryBudget = budget };
                ConnectionEnd end;
                try
                {
                    end = await RunThroughPipe(session, stream, random).WaitAsync(CaseTimeout);
                }
                catch (TimeoutException)
                {
                    throw new Xunit.Sdk.XunitException($"hang: {what}");
                }
                catch (Exception error)
                {
                    throw new Xunit.Sdk.XunitException($"{error.GetType().Name} escaped: {what}\n{error}");
                }

                Assert.True(end.Reason is ConnectionEndReason.Goodbye or ConnectionEndReason.EndOfStream or ConnectionEndReason.ProtocolError,
                    $"{end}: {what}");
                ends[end.Label] = ends.GetValueOrDefault(end.Label) + 1;
                if (session.Profile is { } profile)
                {
                    Assert.True(profile.IsCompleted, what);
                    // At most one "[truncated]" node per node, plus the threads' roots.
                    Assert.True(profile.CallTreeNodes <= 2L * Limits.MaxCallTreeNodes + Limits.MaxThreadId, $"{profile.CallTreeNodes} nodes: {what}");
                    Assert.True(profile.Functions.Count <= Limits.MaxCodeId && profile.Threads.Count <= Limits.MaxThreadId, what);
                    if (cases % 97 == 0)
                    {
                        var report = FolderExporter.Standard().Write(outputs.FullName, OutputRun.Create([profile]));
                        Assert.True(report.AllSucceeded, $"export failed: {what}: " +
                            string.Join("; ", report.Files.Where(file => !file.Succeeded).Select(file => $"{file.Name}: {file.Error}")));
                    }
                }
                budget.Release(session.ReservedBytes);
                Assert.True(budget.ReservedBytes == 0, what);

                frames += frameCount;
                bytes += stream.Length;
                cases++;
                if (memoryAfterWarmUp == 0 && frames >= frameTarget / 10) memoryAfterWarmUp = GC.GetTotalMemory(forceFullCollection: true);
            }
        }
        finally
        {
            outputs.Delete(recursive: true);
        }
        clock.Stop();

        var memoryAtEnd = GC.GetTotalMemory(forceFullCollection: true);
        output.WriteLine($"{cases:N0} streams, {frames:N0} frames, {bytes / 1e6:N1} MB in {clock.Elapsed.TotalSeconds:N1} s: " +
                         $"{frames / clock.Elapsed.TotalSeconds:N0} frames/s");
        output.WriteLine($"managed heap after warm-up {memoryAfterWarmUp / 1e6:N1} MB, at the end {memoryAtEnd / 1e6:N1} MB");
        output.WriteLine("ends: " + string.Join(", ", ends.Select(pair => $"{pair.Key} {pair.Value:N0}")));
        if (replay is not null) return;

        // Nothing is kept between connections: the heap does not grow with the number of streams.
        if (memoryAfterWarmUp > 0) Assert.True(memoryAtEnd < memoryAfterWarmUp + (64L << 20), $"heap grew from {memoryAfterWarmUp:N0} to {memoryAtEnd:N0}");
        // The mutations reach the session's checks as well as the framing ones.
        string[] expected =
        [
            "Goodbye", "EndOfStream", "UndefinedId", "DuplicateDefinition", "TooManyDefinitions", "TooManyThreads", "InvalidRecord",
            "FrameTooLarge", "UnknownFrameType", "MalformedMessage", "TruncatedStream", "FrameAfterGoodbye",
        ];
        Assert.All(expected, label => Assert.True(ends.ContainsKey(label), $"no stream ended with {label}"));
    }

    /// <summary>Writes the stream in random chunks on one task while the session reads it on another.</summary>
    private static async Task<ConnectionEnd> RunThroughPipe(ProcessSession session, byte[] stream, Random random)
    {
        var pipe = new Pipe(new PipeOptions(pauseWriterThreshold: 64 * 1024, resumeWriterThreshold: 32 * 1024, useSynchronizationContext: false));
        var chunks = new List<int>();
        for (var offset = 0; offset < stream.Length;)
        {
            var size = Math.Min(stream.Length - offset, random.Next(4) == 0 ? random.Next(1, 16) : random.Next(1, 8192));
            chunks.Add(size);
            offset += size;
        }
        var writer = Task.Run(async () =>
        {
            var offset = 0;
            foreach (var size in chunks)
            {
                var flushed = await pipe.Writer.WriteAsync(stream.AsMemory(offset, size));
                offset += size;
                if (flushed.IsCompleted) break; // the reader stopped: the connection is over
            }
            await pipe.Writer.CompleteAsync();
        });
        var end = await session.RunAsync(pipe.Reader);
        await pipe.Reader.CompleteAsync();
        await writer;
        return end;
    }
}

/// <summary>
/// A random stream in the shape a shim sends (definitions, events, stats, exceptions, goodbye), with random bad
/// ids, kinds and timestamps mixed in, and then, for most streams, one mutation of its bytes.
/// </summary>
internal static class FuzzStream
{
    public static (byte[] Bytes, int Frames, string Mutation) Create(Random random)
    {
        var output = new ArrayBufferWriter<byte>();
        var frameStarts = new List<int>();
        WireEncoder.WritePreamble(output);
        frameStarts.Add(output.WrittenCount);
        WireEncoder.WriteMessage(output, FrameType.Hello, new Hello { ProtocolVersion = 1, Pid = random.Next(1, 1 << 22), WorkingDirectory = "/srv/app" });

        // Half the streams are well-formed before mutation; the others break a rule now and then.
        var bad = random.Next(2) == 0 ? 0 : random.NextDouble() * 0.02;
        uint codes = 0, threads = 0;
        long timestamp = random.Next();
        var frameCount = random.Next(20, 400);
        for (var frame = 1; frame < frameCount; frame++)
        {
            frameStarts.Add(output.WrittenCount);
            var choice = random.Next(100);
            if (choice < 15 || codes == 0 || threads == 0)
            {
                WireEncoder.WriteMessage(output, FrameType.Definitions, Definitions(random, bad, ref codes, ref threads));
            }
            else if (choice < 80)
            {
                var records = new EventRecord[random.Next(1, 64)];
                for (var i = 0; i < records.Length; i++) records[i] = Event(random, bad, codes, threads, ref timestamp);
                WireEncoder.WriteEvents(output, records);
            }
            else if (choice < 86)
            {
                WireEncoder.WriteMessage(output, FrameType.Stats, new Stats { EventsRecorded = (ulong)random.NextInt64(), EventsDropped = (ulong)random.Next() });
            }
            else if (choice < 98)
            {
                WireEncoder.WriteMessage(output, FrameType.Exceptions, Exceptions(random, bad, codes, threads));
            }
            else
            {
                WireEncoder.WriteMessage(output, FrameType.Goodbye, new Goodbye { Reason = Goodbye.Types.Reason.Exit, EndMonotonicNs = timestamp });
                break;
            }
        }
        var bytes = output.WrittenSpan.ToArray();
        var frames = frameStarts.Count;
        frameStarts.Add(bytes.Length);
        var (mutated, mutation) = Mutate(bytes, frameStarts, random);
        return (mutated, frames, mutation);
    }

    private static bool Bad(Random random, double rate) => random.NextDouble() < rate;

    private static Definitions Definitions(Random random, double bad, ref uint codes, ref uint threads)
    {
        var definitions = new Definitions();
        for (var i = random.Next(0, 6); i > 0; i--)
        {
            var id = !Bad(random, bad * 10) ? ++codes : random.Next(4) switch
            {
                0 => codes == 0 ? 1u : (uint)random.Next(1, (int)codes + 1), // defined twice
                1 => (uint)random.Next(2040, 2100),                           // around the limit
                2 => 0u,
                _ => (uint)random.NextInt64(0, uint.MaxValue),
            };
            definitions.Codes.Add(new CodeDefinition
            {
                Id = id, QualifiedName = Text(random, 40), FileName = random.Next(3) == 0 ? "/usr/lib/python3.12/x.py" : "/srv/app/app.py",
                FirstLine = (uint)random.Next(), Module = Text(random, 10), KindFlags = (uint)random.Next(8),
            });
        }
        for (var i = random.Next(0, 3); i > 0; i--)
        {
            var id = Bad(random, bad * 10) ? (random.Next(2) == 0 ? (uint)random.Next(60, 70) : (uint)random.NextInt64(0, uint.MaxValue))
                : random.Next(5) > 0 || threads == 0 ? ++threads
                : (uint)random.Next(1, (int)threads + 1); // a rename
            definitions.Threads.Add(new ThreadDefinition { Id = id, Name = Text(random, 20), Ident = (ulong)random.NextInt64(), IsMain = id == 1 });
        }
        return definitions;
    }

    private static EventRecord Event(Random random, double bad, uint codes, uint threads, ref long timestamp)
    {
        // Now and then a timestamp goes backwards: allowed (clamped), not a violation.
        timestamp += random.Next(100) < 97 ? random.Next(0, 5000) : -random.Next(0, 100_000);
        var ts = Bad(random, bad / 4) ? (ulong)random.NextInt64() | (1UL << 63) : (ulong)Math.Max(0, timestamp);
        var thread = Bad(random, bad) ? (uint)random.Next(0, 1 << 24) : (uint)random.Next(1, (int)Math.Max(threads, 1) + 1);
        var code = Bad(random, bad) ? (uint)random.NextInt64(0, uint.MaxValue) : (uint)random.Next(1, (int)Math.Max(codes, 1) + 1);
        // Pushes a little more often than pops, so stacks grow to the depth limit now and then.
        var kind = Bad(random, bad / 4) ? (EventKind)random.Next(256) : (EventKind)(random.Next(100) < 52 ? random.Next(1, 4) : random.Next(4, 8));
        return new EventRecord(ts, thread, code, kind);
    }

    private static Exceptions Exceptions(Random random, double bad, uint codes, uint threads)
    {
        var exceptions = new Exceptions();
        for (var i = random.Next(0, 3); i > 0; i--)
        {
            var record = new ExceptionRecord
            {
                ThreadId = Bad(random, bad) ? (uint)random.Next(0, 100) : (uint)random.Next(1, (int)Math.Max(threads, 1) + 1),
                RaisedNs = random.NextInt64(), FateNs = random.NextInt64(), Fate = (ExceptionFate)random.Next(0, 8),
                FramesUnwound = (uint)random.Next(), Reraises = (uint)random.Next(3), Detail = Detail(random, bad, codes, depth: 0),
            };
            for (var frame = random.Next(0, 12); frame > 0; frame--) record.Stack.Add(Location(random, bad, codes));
            if (random.Next(2) == 0) record.HandledAt = Location(random, bad, codes);
            exceptions.Records.Add(record);
        }
        for (var i = random.Next(0, 3); i > 0; i--)
        {
            exceptions.Tallies.Add(new ExceptionTally
            {
                TypeName = Text(random, 30), RaisedAt = random.Next(4) == 0 ? null : Location(random, bad, codes),
                Fate = (ExceptionFate)random.Next(0, 8), Count = (ulong)random.NextInt64(),
            });
        }
        return exceptions;
    }

    private static ExceptionDetail Detail(Random random, double bad, uint codes, int depth)
    {
        var detail = new ExceptionDetail
        {
            TypeName = Text(random, 30), Message = Text(random, random.Next(10) == 0 ? 3000 : 80),
            MessageStatus = (ExceptionDetail.Types.MessageStatus)random.Next(0, 4), SuppressContext = random.Next(2) == 0,
            NotesOmitted = (uint)random.Next(3), MembersOmitted = (uint)random.Next(3),
        };
        for (var i = random.Next(0, 4); i > 0; i--) detail.Notes.Add(Text(random, 60));
        for (var i = random.Next(0, 6); i > 0; i--) detail.Traceback.Add(Location(random, bad, codes));
        if (depth < 12 && random.Next(3) == 0) detail.Cause = Detail(random, bad, codes, depth + 1);
        if (depth < 12 && random.Next(4) == 0) detail.Context = Detail(random, bad, codes, depth + 1);
        for (var i = depth < 4 && random.Next(5) == 0 ? random.Next(1, 5) : 0; i > 0; i--) detail.Members.Add(Detail(random, bad, codes, depth + 1));
        return detail;
    }

    private static Location Location(Random random, double bad, uint codes) => new()
    {
        CodeId = Bad(random, bad) ? (uint)random.Next(0, 5000) : (uint)random.Next(1, (int)Math.Max(codes, 1) + 1),
        Line = (uint)random.Next(),
    };

    private static string Text(Random random, int maxLength)
    {
        var chars = new char[random.Next(0, maxLength + 1)];
        for (var i = 0; i < chars.Length; i++)
        {
            chars[i] = random.Next(20) switch
            {
                0 => (char)random.Next(0x80, 0xD7FF),
                1 => (char)random.Next(0xD800, 0xDFFF), // a lone surrogate: protobuf encodes it as U+FFFD
                _ => (char)random.Next(0x20, 0x7F),
            };
        }
        return new string(chars);
    }

    private static (byte[], string) Mutate(byte[] bytes, List<int> frameStarts, Random random)
    {
        // frameStarts ends with the stream's length; the first entry is HELLO's start.
        int Frame() => random.Next(0, frameStarts.Count - 1);
        switch (random.Next(10))
        {
            case 0:
            case 1:
                return (bytes, "none");
            case 2:
            {
                var flips = random.Next(1, 9);
                for (var i = 0; i < flips; i++) bytes[random.Next(bytes.Length)] ^= (byte)(1 << random.Next(8));
                return (bytes, $"{flips} bit flips");
            }
            case 3:
                var cut = random.Next(bytes.Length);
                return (bytes[..cut], $"truncated at {cut}");
            case 4:
            {
                var at = frameStarts[Frame()];
                var length = random.Next(3) switch { 0 => uint.MaxValue, 1 => (uint)WireFormat.MaxFramePayload + 1, _ => (uint)random.Next(256 * 1024, int.MaxValue) };
                BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(at + 1), length);
                return (bytes, $"length {length} at {at}");
            }
            case 5:
            {
                var at = frameStarts[Frame()];
                bytes[at] = (byte)(random.Next(2) == 0 ? 0 : random.Next(7, 256));
                return (bytes, $"frame type {bytes[at]} at {at}");
            }
            case 6:
            {
                // Out of order: a later frame moved before an earlier one (definitions after their use, HELLO later).
                int a = Frame(), b = Frame();
                if (a > b) (a, b) = (b, a);
                var moved = bytes[frameStarts[b]..frameStarts[b + 1]];
                var result = bytes[..frameStarts[a]].Concat(moved).Concat(bytes[frameStarts[a]..frameStarts[b]]).Concat(bytes[frameStarts[b + 1]..]).ToArray();
                return (result, $"frame {b} moved before frame {a}");
            }
            case 7:
            {
                var index = Frame();
                var copy = bytes[frameStarts[index]..frameStarts[index + 1]];
                var at = frameStarts[random.Next(index + 1, frameStarts.Count)];
                return (bytes[..at].Concat(copy).Concat(bytes[at..]).ToArray(), $"frame {index} repeated at {at}");
            }
            case 8:
            {
                var garbage = new byte[random.Next(1, 64)];
                random.NextBytes(garbage);
                var at = frameStarts[random.Next(frameStarts.Count)];
                return (bytes[..at].Concat(garbage).Concat(bytes[at..]).ToArray(), $"{garbage.Length} random bytes at {at}");
            }
            default:
            {
                // A frame's payload replaced by random bytes of the same length: messages that do not decode.
                var index = Frame();
                var start = frameStarts[index] + WireFormat.FrameHeaderSize;
                random.NextBytes(bytes.AsSpan(start, frameStarts[index + 1] - start));
                return (bytes, $"payload of frame {index} randomized");
            }
        }
    }
}

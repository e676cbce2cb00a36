using System.Buffers;
using System.Buffers.Binary;
using System.IO.Pipelines;
using TelemetryAgent.Protocol.Messages;
using TelemetryAgent.Protocol.Tests.Support;
using TelemetryAgent.Testing;

namespace TelemetryAgent.Protocol.Tests;

/// <summary>
/// Seeded random streams: valid ones must parse exactly like the reference decoder however they are cut;
/// damaged ones must end in a result or a <see cref="ProtocolException"/>, never another exception or a hang.
/// Failures name their seed, so any case replays alone.
/// </summary>
public sealed class FuzzTests
{
    private static readonly TimeSpan CaseTimeout = TimeSpan.FromSeconds(10);

    [Fact]
    public async Task Random_valid_streams_parse_like_the_reference_however_they_are_cut()
    {
        for (int seed = 0; seed < 150; seed++)
        {
            var random = new Random(seed);
            byte[] stream = RandomStream(random);
            ReferenceDecoder.Decoded expected = ReferenceDecoder.Decode(stream);
            for (int attempt = 0; attempt < 3; attempt++)
            {
                int[] cuts = Segments.RandomCuts(random, stream.Length);
                Parse.Outcome outcome = Parse.All(stream, cuts);
                Assert.True(outcome.Consumed == stream.Length, $"seed {seed}, {Segments.Describe(cuts)}");
                Assert.Equal(expected.Frames, outcome.Frames);
            }

            var handler = new RecordingHandler();
            WireConnectionResult result = await RunTimeBoxed(stream, random, handler, seed, "valid");
            Assert.Equal(expected.Frames, handler.Frames);
            Assert.Equal(expected.EndsWithGoodbye ? WireStreamEnd.Goodbye : WireStreamEnd.EndOfStream, result.End);
            Assert.Equal(stream.Length, result.Bytes);
            Assert.Equal(expected.Events, result.Events);
        }
    }

    [Fact]
    public async Task Damaged_streams_end_in_a_result_or_a_protocol_violation()
    {
        var violations = new Dictionary<ProtocolViolation, int>();
        for (int seed = 0; seed < 1000; seed++)
        {
            var random = new Random(seed);
            byte[] original = RandomStream(random);
            (byte[] damaged, string mutation) = Mutate(original, ReferenceDecoder.Decode(original).FrameEnds, random);
            try
            {
                await RunTimeBoxed(damaged, random, new RecordingHandler(), seed, mutation);
            }
            catch (ProtocolException error)
            {
                violations[error.Violation] = violations.GetValueOrDefault(error.Violation) + 1;
            }
        }

        // The mutations are meant to reach every check the framing layer has.
        ProtocolViolation[] framing =
        [
            ProtocolViolation.BadMagic, ProtocolViolation.UnsupportedVersion, ProtocolViolation.UnknownFrameType,
            ProtocolViolation.FrameTooLarge, ProtocolViolation.MisalignedEvents, ProtocolViolation.DuplicateHello,
            ProtocolViolation.FrameAfterGoodbye, ProtocolViolation.MalformedMessage, ProtocolViolation.TruncatedStream,
        ];
        Assert.All(framing, violation => Assert.True(violations.ContainsKey(violation), $"no case reached {violation}"));
    }

    /// <summary>Runs the read loop on its own task, through a pipe or a segmented sequence, with a deadline.</summary>
    private static async Task<WireConnectionResult> RunTimeBoxed(byte[] stream, Random random, RecordingHandler handler, int seed, string what)
    {
        bool throughPipe = random.Next(4) == 0;
        int[] cuts = Segments.RandomCuts(random, stream.Length);
        Task<WireConnectionResult> run = Task.Run(async () =>
        {
            if (!throughPipe)
            {
                return await WireConnection.RunAsync(PipeReader.Create(Segments.Create(stream, cuts)), handler);
            }

            var pipe = new Pipe();
            Task writing = WireConnectionTests.WriteInChunksAsync(pipe.Writer, stream, new Random(seed), maxChunk: 512);
            try
            {
                return await WireConnection.RunAsync(pipe.Reader, handler);
            }
            finally
            {
                await pipe.Reader.CompleteAsync();
                await writing;
            }
        });

        try
        {
            return await run.WaitAsync(CaseTimeout);
        }
        catch (TimeoutException)
        {
            Assert.Fail($"seed {seed} ({what}): the read loop hung");
            throw;
        }
        catch (Exception error) when (error is not ProtocolException)
        {
            Assert.Fail($"seed {seed} ({what}): {error.GetType().Name} instead of a ProtocolException: {error}");
            throw;
        }
    }

    private static byte[] RandomStream(Random random)
    {
        var hello = new Hello
        {
            ProtocolVersion = 1,
            Pid = random.NextInt64(),
            Argv = { RandomText(random), RandomText(random) },
            PythonVersion = RandomText(random),
            ClockMonotonicNs = random.NextInt64(),
            ClockUnixNs = random.NextInt64(),
        };
        WireStream builder = new WireStream().Preamble().Message(FrameType.Hello, hello);
        int frames = random.Next(0, 12);
        for (int i = 0; i < frames; i++)
        {
            switch (random.Next(5))
            {
                case 4:
                    builder.Message(FrameType.Exceptions, RandomExceptions(random));
                    break;
                case 0:
                    var definitions = new Definitions();
                    for (int c = random.Next(0, 4); c > 0; c--)
                    {
                        definitions.Codes.Add(new CodeDefinition
                        {
                            Id = (uint)random.NextInt64(1, uint.MaxValue), QualifiedName = RandomText(random), FileName = RandomText(random),
                            FirstLine = (uint)random.Next(), KindFlags = (uint)random.Next(8),
                        });
                    }

                    for (int t = random.Next(0, 3); t > 0; t--)
                    {
                        definitions.Threads.Add(new ThreadDefinition { Id = (uint)random.Next(1, 1 << 24), Ident = (ulong)random.NextInt64(), Name = RandomText(random) });
                    }

                    builder.Message(FrameType.Definitions, definitions);
                    break;
                case 1:
                    builder.Message(FrameType.Stats, new Stats { EventsRecorded = (ulong)random.NextInt64(), EventsDropped = (ulong)random.Next() });
                    break;
                default:
                    var records = new EventRecord[random.Next(1, 300)];
                    for (int r = 0; r < records.Length; r++)
                    {
                        records[r] = new EventRecord((ulong)random.NextInt64() << 1, (uint)random.Next(0, 1 << 24), (uint)random.NextInt64(0, 1L << 32), (EventKind)random.Next(256));
                    }

                    builder.Events(records);
                    break;
            }
        }

        if (random.Next(2) == 0)
        {
            builder.Message(FrameType.Goodbye, new Goodbye { Reason = (Goodbye.Types.Reason)random.Next(4), Detail = RandomText(random) });
        }

        return builder.ToArray();
    }

    private static Exceptions RandomExceptions(Random random)
    {
        Location RandomLocation() => new() { CodeId = (uint)random.NextInt64(0, 1L << 32), Line = (uint)random.Next() };

        ExceptionDetail RandomDetail(int depth)
        {
            var detail = new ExceptionDetail
            {
                TypeName = RandomText(random), Message = RandomText(random),
                MessageStatus = (ExceptionDetail.Types.MessageStatus)random.Next(4), SuppressContext = random.Next(2) == 0,
            };
            for (int n = random.Next(0, 3); n > 0; n--) detail.Notes.Add(RandomText(random));
            for (int f = random.Next(0, 4); f > 0; f--) detail.Traceback.Add(RandomLocation());
            if (depth < 3 && random.Next(3) == 0) detail.Cause = RandomDetail(depth + 1);
            if (depth < 3 && random.Next(3) == 0) detail.Context = RandomDetail(depth + 1);
            for (int m = depth < 3 ? random.Next(0, 3) : 0; m > 0; m--) detail.Members.Add(RandomDetail(depth + 1));
            return detail;
        }

        var exceptions = new Exceptions();
        for (int r = random.Next(0, 4); r > 0; r--)
        {
            var record = new ExceptionRecord
            {
                ThreadId = (uint)random.Next(0, 1 << 24), RaisedNs = random.NextInt64(), FateNs = random.NextInt64(),
                Fate = (ExceptionFate)random.Next(8), FramesUnwound = (uint)random.Next(), Reraises = (uint)random.Next(3),
                StackTruncated = random.Next(2) == 0,
            };
            for (int f = random.Next(0, 5); f > 0; f--) record.Stack.Add(RandomLocation());
            if (random.Next(2) == 0) record.HandledAt = RandomLocation();
            if (random.Next(4) != 0) record.Detail = RandomDetail(0);
            exceptions.Records.Add(record);
        }

        for (int t = random.Next(0, 3); t > 0; t--)
        {
            exceptions.Tallies.Add(new ExceptionTally
            {
                TypeName = RandomText(random), RaisedAt = RandomLocation(), Fate = (ExceptionFate)random.Next(7), Count = (ulong)random.NextInt64(),
            });
        }

        return exceptions;
    }

    private static string RandomText(Random random)
    {
        const string alphabet = "abcXYZ_.<>/ 0123é世🙂";
        var chars = new char[random.Next(0, 24)];
        for (int i = 0; i < chars.Length; i++)
        {
            chars[i] = alphabet[random.Next(alphabet.Length - 2)];
        }

        return new string(chars) + (random.Next(5) == 0 ? "🙂" : "");
    }

    private static (byte[] Damaged, string Mutation) Mutate(byte[] stream, List<int> frameEnds, Random random)
    {
        var bytes = new List<byte>(stream);
        int frame = random.Next(frameEnds.Count);
        int frameStart = frame == 0 ? WireFormat.PreambleSize : frameEnds[frame - 1];
        switch (random.Next(8))
        {
            case 0:
                int flips = random.Next(1, 5);
                for (int i = 0; i < flips; i++)
                {
                    bytes[random.Next(bytes.Count)] ^= (byte)(1 << random.Next(8));
                }

                return (bytes.ToArray(), $"{flips} bit flips");
            case 1:
                int keep = random.Next(stream.Length);
                return (stream.AsSpan(0, keep).ToArray(), $"truncated to {keep} bytes");
            case 2:
                uint declared = BinaryPrimitives.ReadUInt32LittleEndian(stream.AsSpan(frameStart + 1));
                uint length = random.Next(4) switch
                {
                    0 => uint.MaxValue,
                    1 => WireFormat.MaxFramePayload + (uint)random.Next(1, 64),
                    2 => (uint)random.Next(),
                    _ => (uint)Math.Max(0, declared + random.Next(-15, 16)),
                };
                byte[] damaged = bytes.ToArray();
                BinaryPrimitives.WriteUInt32LittleEndian(damaged.AsSpan(frameStart + 1), length);
                return (damaged, $"frame {frame} length set to {length}");
            case 3:
                byte type = (byte)random.Next(256);
                bytes[frameStart] = type;
                return (bytes.ToArray(), $"frame {frame} type set to {type}");
            case 4:
                var inserted = new byte[random.Next(1, 40)];
                random.NextBytes(inserted);
                int at = random.Next(bytes.Count + 1);
                bytes.InsertRange(at, inserted);
                return (bytes.ToArray(), $"{inserted.Length} random bytes inserted at {at}");
            case 5:
                int from = random.Next(bytes.Count);
                int count = random.Next(1, Math.Min(64, bytes.Count - from) + 1);
                bytes.RemoveRange(from, count);
                return (bytes.ToArray(), $"{count} bytes removed at {from}");
            case 6:
                bytes.InsertRange(frameEnds[frame], stream.AsSpan(frameStart, frameEnds[frame] - frameStart).ToArray());
                return (bytes.ToArray(), $"frame {frame} repeated");
            default:
                byte[] preamble = stream.AsSpan(0, WireFormat.PreambleSize).ToArray();
                preamble[random.Next(WireFormat.PreambleSize)] = (byte)random.Next(256);
                return ([.. preamble, .. stream.AsSpan(WireFormat.PreambleSize)], "preamble byte replaced");
        }
    }
}

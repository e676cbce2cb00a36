using System.Buffers.Binary;
using System.IO.Pipelines;
using System.Net.Sockets;
using TelemetryAgent.Protocol.Messages;
using TelemetryAgent.Protocol.Tests.Support;
using TelemetryAgent.Testing;

namespace TelemetryAgent.Protocol.Tests;

public sealed class WireConnectionTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(15);

    /// <summary>Lets a whole maximal frame arrive without the writer pausing.</summary>
    private static readonly PipeOptions RoomForOneFrame = new(
        pauseWriterThreshold: 2L * WireFormat.MaxFrameSize, resumeWriterThreshold: WireFormat.MaxFrameSize, useSynchronizationContext: false);

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public async Task Random_chunks_written_from_another_task_give_the_same_frames_as_the_reference(int seed)
    {
        byte[] stream = LongStream(seed);
        var pipe = new Pipe(RoomForOneFrame);
        var reader = new CountingPipeReader(pipe.Reader);
        var handler = new RecordingHandler();
        Task<WireConnectionResult> run = WireConnection.RunAsync(reader, handler);
        // A first piece shorter than the preamble, read alone before the rest is written: the stream arrives in
        // several reads whatever the scheduling; the rest in random chunks.
        const int firstPiece = 3;
        Task writing = Task.Run(async () =>
        {
            await pipe.Writer.WriteAsync(stream.AsMemory(0, firstPiece));
            await WaitUntilAsync(() => AsksForMoreAfter(reader, firstPiece));
            await WriteInChunksAsync(pipe.Writer, stream[firstPiece..], new Random(seed), maxChunk: seed * 700);
        });

        WireConnectionResult result = await run.WaitAsync(Timeout);
        await writing.WaitAsync(Timeout);

        ReferenceDecoder.Decoded expected = ReferenceDecoder.Decode(stream);
        Assert.Equal(expected.Frames, handler.Frames);
        Assert.Equal(new WireConnectionResult(WireStreamEnd.Goodbye, expected.Frames.Count, expected.Events, stream.Length), result);
        Assert.True(reader.Reads > 1, "the stream was meant to arrive in several reads");
        Assert.Equal(reader.Reads, reader.Advances);
        Assert.Equal(0, reader.AdvancesWithoutRead);
    }

    [Fact]
    public async Task Every_end_of_stream_position_is_judged_by_where_it_falls()
    {
        byte[] stream = TestMessages.TypicalStream();
        ReferenceDecoder.Decoded decoded = ReferenceDecoder.Decode(stream);
        var random = new Random(11);
        for (int length = 0; length <= stream.Length; length++)
        {
            byte[] prefix = stream.AsSpan(0, length).ToArray();
            var reader = new CountingPipeReader(PipeReader.Create(Segments.Create(prefix, length > 1 ? Segments.RandomCuts(random, length) : [])));
            int frameIndex = decoded.FrameEnds.IndexOf(length);
            Task<WireConnectionResult> run = WireConnection.RunAsync(reader, new RecordingHandler());
            if (frameIndex < 0)
            {
                // Inside the preamble or a frame, or before HELLO.
                var error = await Assert.ThrowsAsync<ProtocolException>(() => run.WaitAsync(Timeout));
                Assert.True(error.Violation == ProtocolViolation.TruncatedStream, $"prefix {length}: {error.Message}");
            }
            else
            {
                WireConnectionResult result = await run.WaitAsync(Timeout);
                Assert.Equal(length == stream.Length ? WireStreamEnd.Goodbye : WireStreamEnd.EndOfStream, result.End);
                Assert.Equal(frameIndex + 1, result.Frames);
                Assert.Equal(length, result.Bytes);
            }

            Assert.Equal(reader.Reads, reader.Advances);
        }
    }

    [Fact]
    public async Task A_partial_frame_then_completion_is_TruncatedStream_without_hanging()
    {
        byte[] stream = TestMessages.TypicalStream();
        var pipe = new Pipe(RoomForOneFrame);
        var reader = new CountingPipeReader(pipe.Reader);
        Task<WireConnectionResult> run = WireConnection.RunAsync(reader, new RecordingHandler());
        await pipe.Writer.WriteAsync(stream.AsMemory(0, stream.Length - 3));
        await WaitUntilAsync(() => AsksForMoreAfter(reader, stream.Length - 3) || run.IsCompleted);
        Assert.False(run.IsCompleted, "the loop must wait for the rest of the frame");
        await pipe.Writer.CompleteAsync();

        var error = await Assert.ThrowsAsync<ProtocolException>(() => run.WaitAsync(Timeout));
        Assert.Equal(ProtocolViolation.TruncatedStream, error.Violation);
    }

    [Fact]
    public async Task An_empty_connection_is_TruncatedStream()
    {
        var pipe = new Pipe();
        await pipe.Writer.CompleteAsync();
        var error = await Assert.ThrowsAsync<ProtocolException>(() => WireConnection.RunAsync(pipe.Reader, new RecordingHandler()).WaitAsync(Timeout));
        Assert.Equal(ProtocolViolation.TruncatedStream, error.Violation);
    }

    [Fact]
    public async Task An_oversized_frame_is_rejected_while_its_payload_has_not_arrived()
    {
        var pipe = new Pipe();
        Task<WireConnectionResult> run = WireConnection.RunAsync(pipe.Reader, new RecordingHandler());
        byte[] header = new byte[WireFormat.FrameHeaderSize];
        header[0] = (byte)FrameType.Definitions;
        BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(1), WireFormat.MaxFramePayload + 1);
        await pipe.Writer.WriteAsync(WireStream.WithHello().Raw(header).ToArray());

        // The writer stays open: the rejection must come from the header alone.
        var error = await Assert.ThrowsAsync<ProtocolException>(() => run.WaitAsync(Timeout));
        Assert.Equal(ProtocolViolation.FrameTooLarge, error.Violation);
    }

    [Fact]
    public async Task Maximal_frames_pass_through_pipes_with_any_back_pressure_threshold()
    {
        var records = new EventRecord[WireFormat.MaxFramePayload / WireFormat.EventRecordSize];
        for (int i = 0; i < records.Length; i++)
        {
            records[i] = new EventRecord((ulong)i, 1, 1, i % 2 == 0 ? EventKind.Start : EventKind.Return);
        }

        byte[] stream = WireStream.WithHello().Events(records).Events(records).Events(records).ToArray();

        // The default pipe pauses its writer at 64 KiB; it must still deliver frames 16 times larger.
        foreach (Pipe pipe in new[] { new Pipe(RoomForOneFrame), new Pipe() })
        {
            Task<WireConnectionResult> run = WireConnection.RunAsync(pipe.Reader, new CountingHandler());
            Task writing = Task.Run(() => WriteInChunksAsync(pipe.Writer, stream, new Random(5), maxChunk: 256 * 1024));
            WireConnectionResult result = await run.WaitAsync(Timeout);
            await writing.WaitAsync(Timeout);

            Assert.Equal(new WireConnectionResult(WireStreamEnd.EndOfStream, 4, 3L * records.Length, stream.Length), result);
        }
    }

    [Fact]
    public async Task Cancelling_the_token_ends_the_loop_cleanly_with_what_was_read()
    {
        byte[] stream = TestMessages.TypicalStream();
        ReferenceDecoder.Decoded decoded = ReferenceDecoder.Decode(stream);
        var pipe = new Pipe();
        using var cancellation = new CancellationTokenSource();
        var handler = new RecordingHandler();
        Task<WireConnectionResult> run = WireConnection.RunAsync(pipe.Reader, handler, cancellation.Token);
        await pipe.Writer.WriteAsync(stream.AsMemory(0, decoded.FrameEnds[1] + 2));
        await WaitUntilAsync(() => handler.Frames.Count == 2);
        cancellation.Cancel();

        WireConnectionResult result = await run.WaitAsync(Timeout);
        Assert.Equal(new WireConnectionResult(WireStreamEnd.Cancelled, 2, 0, decoded.FrameEnds[1]), result);
    }

    [Fact]
    public async Task CancelPendingRead_ends_the_loop_cleanly()
    {
        var pipe = new Pipe();
        var reader = new CountingPipeReader(pipe.Reader);
        byte[] hello = WireStream.WithHello().ToArray();
        Task<WireConnectionResult> run = WireConnection.RunAsync(reader, new RecordingHandler());
        await pipe.Writer.WriteAsync(hello);
        await WaitUntilAsync(() => AsksForMoreAfter(reader, hello.Length));
        reader.CancelPendingRead();

        WireConnectionResult result = await run.WaitAsync(Timeout);
        Assert.Equal(WireStreamEnd.Cancelled, result.End);
    }

    [Fact]
    public async Task Bytes_arriving_after_goodbye_are_FrameAfterGoodbye()
    {
        byte[] stream = TestMessages.TypicalStream();
        var pipe = new Pipe();
        var reader = new CountingPipeReader(pipe.Reader);
        Task<WireConnectionResult> run = WireConnection.RunAsync(reader, new RecordingHandler());
        await pipe.Writer.WriteAsync(stream);
        await WaitUntilAsync(() => AsksForMoreAfter(reader, stream.Length) || run.IsCompleted);
        Assert.False(run.IsCompleted, "after GOODBYE the loop waits for the peer to close");
        await pipe.Writer.WriteAsync(new byte[] { (byte)FrameType.Stats });

        var error = await Assert.ThrowsAsync<ProtocolException>(() => run.WaitAsync(Timeout));
        Assert.Equal(ProtocolViolation.FrameAfterGoodbye, error.Violation);
    }

    [Fact]
    public async Task A_handler_exception_ends_the_loop_after_advancing_the_reader()
    {
        var reader = new CountingPipeReader(PipeReader.Create(new System.Buffers.ReadOnlySequence<byte>(TestMessages.TypicalStream())));
        await Assert.ThrowsAsync<InvalidOperationException>(() => WireConnection.RunAsync(reader, new FailingHandler()).WaitAsync(Timeout));
        Assert.Equal(1, reader.Advances);
        Assert.Equal(reader.Reads, reader.Advances);
    }

    [Fact]
    public async Task A_stream_over_a_real_unix_socket_is_parsed_whole()
    {
        byte[] stream = LongStream(seed: 9);
        string path = Path.Combine(Path.GetTempPath(), $"ta-proto-{Environment.ProcessId}-{Guid.NewGuid():N}.sock");
        using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            listener.Bind(new UnixDomainSocketEndPoint(path));
            listener.Listen();
            Task sending = Task.Run(async () =>
            {
                using var client = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                await client.ConnectAsync(new UnixDomainSocketEndPoint(path));
                var random = new Random(9);
                for (int offset = 0; offset < stream.Length;)
                {
                    int size = Math.Min(random.Next(1, 5000), stream.Length - offset);
                    offset += await client.SendAsync(stream.AsMemory(offset, size));
                }

                client.Shutdown(SocketShutdown.Send);
            });

            using Socket accepted = await listener.AcceptAsync().WaitAsync(Timeout);
            await using var network = new NetworkStream(accepted, ownsSocket: false);
            PipeReader input = PipeReader.Create(network);
            var handler = new RecordingHandler();
            WireConnectionResult result = await WireConnection.RunAsync(input, handler).WaitAsync(Timeout);
            await input.CompleteAsync();
            await sending.WaitAsync(Timeout);

            Assert.Equal(WireStreamEnd.Goodbye, result.End);
            Assert.Equal(stream.Length, result.Bytes);
            Assert.Equal(ReferenceDecoder.Decode(stream).Frames, handler.Frames);
        }
        finally
        {
            File.Delete(path);
        }
    }

    /// <summary>HELLO, definitions, some hundreds of events in frames of varied size, stats, GOODBYE.</summary>
    private static byte[] LongStream(int seed)
    {
        var random = new Random(seed);
        WireStream builder = WireStream.WithHello().Message(FrameType.Definitions, TestMessages.Definitions());
        ulong timestamp = 1_000_000;
        for (int frame = 0; frame < 30; frame++)
        {
            var records = new EventRecord[random.Next(1, 200)];
            for (int i = 0; i < records.Length; i++)
            {
                timestamp += (ulong)random.Next(1, 5000);
                records[i] = new EventRecord(timestamp, (uint)random.Next(1, 4), (uint)random.Next(1, 3), (EventKind)random.Next(1, 8));
            }

            builder.Events(records);
            if (frame % 10 == 9)
            {
                builder.Message(FrameType.Stats, new Stats { EventsRecorded = (ulong)frame * 100, FramesSent = (ulong)frame });
            }
        }

        return builder.Message(FrameType.Goodbye, new Goodbye { Reason = Goodbye.Types.Reason.Exit, EndMonotonicNs = (long)timestamp }).ToArray();
    }

    internal static async Task WriteInChunksAsync(PipeWriter writer, byte[] data, Random random, int maxChunk)
    {
        for (int offset = 0; offset < data.Length;)
        {
            int size = Math.Min(random.Next(1, maxChunk + 1), data.Length - offset);
            FlushResult flush = await writer.WriteAsync(data.AsMemory(offset, size));
            if (flush.IsCompleted)
            {
                return; // the reader stopped (for example on a violation)
            }

            offset += size;
            if (random.Next(8) == 0)
            {
                await Task.Yield(); // let the reader catch up, so data arrives over many reads
            }
        }

        await writer.CompleteAsync();
    }

    /// <summary>The loop has examined all <paramref name="written"/> bytes and is reading again: it waits for more.</summary>
    private static bool AsksForMoreAfter(CountingPipeReader reader, long written) => reader.Examined >= written && reader.Waiting;

    private static async Task WaitUntilAsync(Func<bool> condition)
    {
        using var timeout = new CancellationTokenSource(Timeout);
        while (!condition())
        {
            await Task.Delay(5, timeout.Token);
        }
    }

    private sealed class FailingHandler : IWireHandler
    {
        public void OnHello(Hello hello)
        {
        }

        public void OnDefinitions(Definitions definitions) => throw new InvalidOperationException("session bug");

        public void OnEvents(ReadOnlySpan<byte> packedRecords)
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

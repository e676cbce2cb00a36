using Google.Protobuf;
using Grpc.Core;
using TelemetryAgent.Live.Contracts;
using TelemetryAgent.Output;

namespace TelemetryAgent.Live;

/// <summary>The gRPC query API (proto/telemetry_agent/v1/query.proto) over <see cref="LiveQueries"/>.</summary>
public sealed class QueryService(LiveQueries queries, Func<StatusResponse> status) : Query.QueryBase
{
    /// <summary>Files go out in chunks of this size (gRPC's default message limit is 4 MiB).</summary>
    public const int ChunkBytes = 1 << 20;

    public override Task<ListProcessesResponse> ListProcesses(ListProcessesRequest request, ServerCallContext context)
    {
        var response = new ListProcessesResponse { NowUnixNs = LiveQueries.UnixNs(queries.Time.GetUtcNow()) };
        response.Processes.Add(queries.Catalog.Processes().Select(LiveQueries.Describe));
        return Task.FromResult(response);
    }

    public override Task GetProfile(ProfileRequest request, IServerStreamWriter<FileChunk> responseStream, ServerCallContext context)
        => Answer(async () =>
        {
            var answer = await queries.ProfilesAsync(request.Process, request.Range, context.CancellationToken).ConfigureAwait(false);
            var file = LiveQueries.FileOf(request.Format);
            using var content = new MemoryStream();
            file.Write(content, queries.RunOf(answer));
            await WriteFileAsync(responseStream, file.Name, content, answer.Coverage(), context.CancellationToken).ConfigureAwait(false);
        });

    public override Task<ExceptionsResponse> GetExceptions(ExceptionsRequest request, ServerCallContext context)
        => Answer(() => queries.ExceptionsAsync(request.Process, request.Range, request.Limit, context.CancellationToken));

    public override Task Snapshot(SnapshotRequest request, IServerStreamWriter<FileChunk> responseStream, ServerCallContext context)
        => Answer(async () =>
        {
            var (process, snapshot) = await queries.SnapshotAsync(request.Process, context.CancellationToken).ConfigureAwait(false);
            var run = OutputRun.Create([snapshot], queries.Time, snapshot.ConnectedAt,
                snapshot.EndedAt ?? snapshot.CheckpointTakenAt ?? queries.Time.GetUtcNow());
            var coverage = new ProfileAnswer([snapshot], [process], null).Coverage();
            coverage.StartUnixNs = LiveQueries.UnixNs(snapshot.ConnectedAt);
            coverage.EndUnixNs = snapshot.LastEventUnixNs;
            coverage.FolderName = ProcessFolders.FolderName(snapshot.Identity, queries.Time.GetLocalNow(), "snapshot");
            // The files are independent: written at once on the thread pool, each sent as soon as it is done.
            var written = FolderExporter.StandardFiles().Select(file => Task.Run(() =>
            {
                var content = new MemoryStream();
                file.Write(content, run);
                return (file.Name, Content: content);
            }, context.CancellationToken)).ToArray();
            try
            {
                var first = true;
                await foreach (var done in Task.WhenEach(written).ConfigureAwait(false))
                {
                    var (name, content) = await done.ConfigureAwait(false);
                    await WriteFileAsync(responseStream, name, content, first ? coverage : null, context.CancellationToken).ConfigureAwait(false);
                    first = false;
                }
            }
            finally
            {
                // A failed file or a caller gone ends the answer; the other writers are still waited for.
                await ((Task)Task.WhenAll(written)).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            }
        });

    public override Task WatchTop(TopRequest request, IServerStreamWriter<TopUpdate> responseStream, ServerCallContext context)
        => Answer(async () =>
        {
            try
            {
                await foreach (var update in queries.WatchTopAsync(request, context.CancellationToken).ConfigureAwait(false))
                    await responseStream.WriteAsync(update, context.CancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (context.CancellationToken.IsCancellationRequested)
            {
                // The caller went away: the normal end of a watch.
            }
        });

    public override Task<StatusResponse> GetStatus(StatusRequest request, ServerCallContext context) => Task.FromResult(status());

    private static async Task WriteFileAsync(IServerStreamWriter<FileChunk> stream, string name, MemoryStream content, Coverage? coverage,
        CancellationToken cancellation)
    {
        var bytes = content.GetBuffer().AsMemory(0, (int)content.Length);
        var offset = 0;
        do
        {
            var length = Math.Min(ChunkBytes, bytes.Length - offset);
            var chunk = new FileChunk
            {
                FileName = offset == 0 ? name : "",
                // The buffer is this file's alone and never written again: the chunks share it rather than copy it.
                Data = UnsafeByteOperations.UnsafeWrap(bytes.Slice(offset, length)),
                LastOfFile = offset + length == bytes.Length,
                Coverage = offset == 0 ? coverage : null,
            };
            await stream.WriteAsync(chunk, cancellation).ConfigureAwait(false);
            offset += length;
        } while (offset < bytes.Length);
    }

    /// <summary>A question the live views cannot answer becomes the matching gRPC status, not an internal error.</summary>
    private static async Task Answer(Func<Task> work)
    {
        try
        {
            await work().ConfigureAwait(false);
        }
        catch (LiveQueryException e)
        {
            throw new RpcException(new Status(e.NotFound ? StatusCode.NotFound : StatusCode.InvalidArgument, e.Message));
        }
    }

    private static async Task<T> Answer<T>(Func<Task<T>> work)
    {
        try
        {
            return await work().ConfigureAwait(false);
        }
        catch (LiveQueryException e)
        {
            throw new RpcException(new Status(e.NotFound ? StatusCode.NotFound : StatusCode.InvalidArgument, e.Message));
        }
    }
}

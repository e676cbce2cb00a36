using System.CommandLine;
using Grpc.Core;
using TelemetryAgent.Live.Contracts;

namespace TelemetryAgent.Cli;

/// <summary>
/// `telemetry-agent snapshot --pid N [-o DIR]`: the folder `serve` writes when a process ends (flame graph, folded
/// stacks, speedscope, pprof, summary.json, exceptions.json), of a process that keeps running. The agent takes a
/// checkpoint on the process's session after its next frame and sends the files; they are written here by this
/// user, under a hidden staging name, then renamed, so the folder appears only whole.
/// </summary>
public static class SnapshotCommand
{
    private static readonly Option<long?> Pid = new("--pid", "-p") { Description = "The process (its latest connection)." };

    private static readonly Option<ulong?> Connection = new("--connection")
    {
        Description = "One connection, as `status`/the web UI number it (a process that reconnected has several).",
    };

    private static readonly Option<string?> Output = new("--output", "-o")
    {
        Description = "The folder to write (it must not exist). Default: ./telemetry-out/<service>-<pid>-<time>-snapshot/.",
    };

    public static Command Create()
    {
        var command = new Command("snapshot", "Write the output folder of a process that keeps running, as `serve` writes it when a process ends.")
        {
            Pid, Connection, Output,
        };
        QueryClient.AddTo(command);
        command.Validators.Add(result =>
        {
            if ((result.GetValue(Pid) is null) == (result.GetValue(Connection) is null)) result.AddError("give one of --pid and --connection.");
        });
        command.SetAction((result, cancellation) => ExecuteAsync(result, cancellation));
        return command;
    }

    private static async Task<int> ExecuteAsync(ParseResult result, CancellationToken cancellation)
    {
        if (QueryClient.Open(result, out var error) is not { } client)
        {
            Console.Error.WriteLine($"telemetry-agent snapshot: {error}");
            return 2;
        }
        var selector = result.GetValue(Pid) is { } pid ? new ProcessSelector { Pid = pid } : new ProcessSelector { ConnectionId = result.GetValue(Connection)!.Value };
        string? folder = result.GetValue(Output) is { Length: > 0 } given ? Path.GetFullPath(given) : null;
        string? staging = null;
        var files = new List<string>();
        try
        {
            using var call = client.Snapshot(new SnapshotRequest { Process = selector }, cancellationToken: cancellation);
            FileStream? current = null;
            try
            {
                await foreach (var chunk in call.ResponseStream.ReadAllAsync(cancellation).ConfigureAwait(false))
                {
                    if (staging is null)
                    {
                        folder ??= Path.GetFullPath(Path.Combine("telemetry-out", chunk.Coverage?.FolderName is { Length: > 0 } name ? name : "snapshot"));
                        if (Directory.Exists(folder) || File.Exists(folder))
                        {
                            Console.Error.WriteLine($"telemetry-agent snapshot: {folder} exists already; give another --output");
                            return 2;
                        }
                        staging = Path.Combine(Path.GetDirectoryName(folder)!, $".{Path.GetFileName(folder)}.partial");
                        Directory.CreateDirectory(staging);
                    }
                    if (chunk.FileName.Length > 0)
                    {
                        current?.Dispose();
                        // The agent names its files; a name is never a path.
                        var name = Path.GetFileName(chunk.FileName);
                        files.Add(name);
                        current = new FileStream(Path.Combine(staging, name), FileMode.CreateNew, FileAccess.Write);
                    }
                    if (current is null) throw new InvalidDataException("the agent sent data before a file name");
                    chunk.Data.WriteTo(current);
                    if (chunk.LastOfFile)
                    {
                        current.Dispose();
                        current = null;
                    }
                }
            }
            finally
            {
                current?.Dispose();
            }
            if (staging is null || folder is null) throw new InvalidDataException("the agent sent no file");
            Directory.Move(staging, folder);
        }
        catch (RpcException e)
        {
            Console.Error.WriteLine($"telemetry-agent snapshot: {QueryClient.Explain(e, result)}");
            TryDelete(staging);
            return QueryClient.IsUnreachable(e) ? StatusCommand.ExitCodes.Unreachable : 1;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidDataException)
        {
            Console.Error.WriteLine($"telemetry-agent snapshot: {e.Message}");
            TryDelete(staging);
            return 1;
        }
        Console.Error.WriteLine($"telemetry-agent: wrote {folder}/ ({string.Join(", ", files)})");
        return 0;
    }

    private static void TryDelete(string? staging)
    {
        if (staging is null) return;
        try
        {
            Directory.Delete(staging, recursive: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Only litter under a hidden name.
        }
    }
}

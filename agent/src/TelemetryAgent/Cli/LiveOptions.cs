using System.CommandLine;
using System.Net;
using TelemetryAgent.Hosting;
using TelemetryAgent.Live;
using TelemetryAgent.Profiling;

namespace TelemetryAgent.Cli;

/// <summary>`serve`'s live views: where the query API and the web UI listen, and what history they keep (docs/live.md).</summary>
internal static class LiveOptions
{
    private static readonly Option<string?> QuerySocket = new("--query-socket")
    {
        Description = "The query API's Unix socket (for `top`, `snapshot`, `status`), under the same access rules as --socket. " +
                      "Default: the --socket path with .sock replaced by .query.sock.",
    };

    private static readonly Option<string?> QueryTcp = new("--query-tcp")
    {
        Description = "Serve the query API on loopback TCP too, e.g. 127.0.0.1:7070 (any local user can reach it: set --token-file).",
    };

    private static readonly Option<string?> Http = new("--http")
    {
        Description = "Serve the web UI (live and differential flame graphs, exceptions) at HOST:PORT, e.g. 127.0.0.1:8080. Off by default; " +
                      "an address other than loopback needs --token-file.",
    };

    private static readonly Option<string?> TokenFile = new("--token-file")
    {
        Description = "A file holding the token the web UI and --query-tcp require (open the UI once as /?token=TOKEN).",
    };

    private static readonly Option<int> HistoryMinutes = Positive("--history-minutes", 60, 24 * 60,
        "How far back each process's time buckets go (for \"the last N s\" and \"between t1 and t2\").");

    private static readonly Option<int> BucketSeconds = Positive("--bucket-seconds", 10, 600,
        "The length of one time bucket: the granularity of time-range answers.");

    private static readonly Option<int> HistoryMegabytes = Positive("--history-mb", 16, 1 << 16,
        "Estimated MiB of time buckets kept per process; past it the oldest go. Counted in --max-aggregate-memory-mb.");

    private static readonly Option<int> KeepEnded = new("--keep-ended")
    {
        Description = "Ended processes the live views keep (their trees and buckets count in --max-aggregate-memory-mb, and go first when it is short).",
        DefaultValueFactory = _ => RetentionSettings.Default.MaxEndedProcesses,
    };

    private static readonly Option<int> KeepEndedMinutes = Positive("--keep-ended-minutes", 60, 7 * 24 * 60,
        "How long an ended process stays in the live views.");

    public static void AddTo(Command command)
    {
        foreach (var option in new Option[] { QuerySocket, QueryTcp, Http, TokenFile, HistoryMinutes, BucketSeconds, HistoryMegabytes, KeepEnded, KeepEndedMinutes })
            command.Options.Add(option);
        KeepEnded.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<int>() is < 0 or > 100_000) result.AddError("--keep-ended takes a whole number from 0 to 100000.");
        });
    }

    public static (LiveViewsOptions Views, TimelineSettings Timeline, RetentionSettings Retention)? Read(ParseResult result, string ingestSocket, out string? error)
    {
        error = null;
        string? token = null;
        if (result.GetValue(TokenFile) is { Length: > 0 } file)
        {
            try
            {
                token = File.ReadAllText(file).Trim();
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                error = $"--token-file: {e.Message}";
                return null;
            }
            if (token.Length < 16)
            {
                error = "--token-file: the token must be at least 16 characters";
                return null;
            }
        }
        IPEndPoint? queryTcp = null, http = null;
        if (result.GetValue(QueryTcp) is { Length: > 0 } tcpText)
        {
            if (!IPEndPoint.TryParse(tcpText, out queryTcp) || queryTcp.Port == 0 && !tcpText.EndsWith(":0", StringComparison.Ordinal))
            {
                error = $"--query-tcp: '{tcpText}' is not HOST:PORT with HOST an IP address";
                return null;
            }
            if (!IPAddress.IsLoopback(queryTcp.Address))
            {
                error = $"--query-tcp: {queryTcp.Address} is not a loopback address; the query API is served on loopback only";
                return null;
            }
        }
        if (result.GetValue(Http) is { Length: > 0 } httpText)
        {
            if (!IPEndPoint.TryParse(httpText, out http) || !httpText.Contains(':', StringComparison.Ordinal))
            {
                error = $"--http: '{httpText}' is not HOST:PORT with HOST an IP address (e.g. 127.0.0.1:8080)";
                return null;
            }
            if (!IPAddress.IsLoopback(http.Address) && token is null)
            {
                error = $"--http: {http.Address} is not a loopback address: the UI is then served only with --token-file";
                return null;
            }
        }
        var views = new LiveViewsOptions(result.GetValue(QuerySocket) ?? LiveViews.QuerySocketPathFor(ingestSocket), queryTcp, http, token);
        var timeline = new TimelineSettings
        {
            Window = TimeSpan.FromMinutes(result.GetValue(HistoryMinutes)),
            BucketLength = TimeSpan.FromSeconds(result.GetValue(BucketSeconds)),
            MaxBytes = (long)result.GetValue(HistoryMegabytes) << 20,
        };
        var retention = new RetentionSettings
        {
            MaxEndedProcesses = result.GetValue(KeepEnded),
            KeepEndedFor = TimeSpan.FromMinutes(result.GetValue(KeepEndedMinutes)),
        };
        return (views, timeline, retention);
    }

    private static Option<int> Positive(string name, int defaultValue, int maximum, string description)
    {
        var option = new Option<int>(name) { Description = description, DefaultValueFactory = _ => defaultValue };
        option.Validators.Add(result =>
        {
            var value = result.GetValueOrDefault<int>();
            if (value < 1 || value > maximum) result.AddError($"{name} takes a whole number from 1 to {maximum}.");
        });
        return option;
    }
}

using System.Globalization;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using Google.Protobuf;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using TelemetryAgent.Live.Contracts;
using TelemetryAgent.Output;
using TelemetryAgent.Profiling;

namespace TelemetryAgent.Live;

/// <summary>
/// The web UI: one page (live.html) over a few endpoints. The flame graphs are the page every output folder has
/// (flamegraph.html), written for the chosen processes and range, and, for a comparison, in its differential mode.
/// </summary>
/// <remarks>
/// Query parameters name the processes (<c>pid</c>, <c>service</c> or <c>connection</c>; all when none) and the range
/// (<c>last</c> seconds, or <c>from</c> and <c>to</c> in Unix milliseconds; since start when none). A comparison takes
/// them twice, prefixed <c>a.</c> (the baseline) and <c>b.</c>; <c>b.</c> takes <c>a.</c>'s processes when it names none.
/// </remarks>
public static class WebUi
{
    public const string TokenCookie = "telemetry_agent_token";
    private const string PageResource = "TelemetryAgent.Live.live.html";
    private static readonly Lazy<byte[]> Page = new(() =>
    {
        using var stream = typeof(WebUi).Assembly.GetManifestResourceStream(PageResource)
            ?? throw new InvalidOperationException($"Embedded resource {PageResource} is missing.");
        using var copy = new MemoryStream();
        stream.CopyTo(copy);
        return copy.ToArray();
    });

    private static readonly UTF8Encoding Utf8NoBom = new(encoderShouldEmitUTF8Identifier: false);

    private static readonly JsonFormatter Json = new(JsonFormatter.Settings.Default.WithFormatDefaultValues(true));

    public static void Map(WebApplication app, LiveQueries queries, Func<StatusResponse> status, string? token, IPEndPoint endpoint)
    {
        app.Use(async (context, next) =>
        {
            context.Response.Headers.CacheControl = "no-store";
            context.Response.Headers["X-Content-Type-Options"] = "nosniff";
            context.Response.Headers["Referrer-Policy"] = "no-referrer";
            if (token is null)
            {
                // Without a token only loopback is allowed; a page of another site that resolves its own name to
                // 127.0.0.1 (DNS rebinding) must still not read profiles: the Host header must be an address of ours.
                if (!IsLocalHost(context.Request.Host.Host))
                {
                    context.Response.StatusCode = StatusCodes.Status421MisdirectedRequest;
                    return;
                }
            }
            else if (context.Request.Query["token"] is { Count: 1 } given && Matches(given[0], token))
            {
                context.Response.Cookies.Append(TokenCookie, token, new CookieOptions
                {
                    HttpOnly = true, SameSite = SameSiteMode.Strict, Path = "/",
                });
                context.Response.Redirect(context.Request.Path);
                return;
            }
            else if (!HasToken(context, token))
            {
                context.Response.StatusCode = StatusCodes.Status401Unauthorized;
                await context.Response.WriteAsync("telemetry-agent: this UI needs its token: open it once as /?token=<token>\n").ConfigureAwait(false);
                return;
            }
            try
            {
                await next(context).ConfigureAwait(false);
            }
            catch (LiveQueryException e)
            {
                context.Response.StatusCode = e.NotFound ? StatusCodes.Status404NotFound : StatusCodes.Status400BadRequest;
                await context.Response.WriteAsync(e.Message).ConfigureAwait(false);
            }
        });

        app.MapGet("/", () => Results.Bytes(Page.Value, "text/html; charset=utf-8"));
        app.MapGet("/api/processes", () =>
        {
            var response = new ListProcessesResponse { NowUnixNs = LiveQueries.UnixNs(queries.Time.GetUtcNow()) };
            response.Processes.Add(queries.Catalog.Processes().Select(LiveQueries.Describe));
            return JsonResult(response);
        });
        app.MapGet("/api/status", () => JsonResult(status()));
        app.MapGet("/api/exceptions", async (HttpRequest request, CancellationToken cancellation) =>
        {
            var response = await queries.ExceptionsAsync(SelectorOf(request.Query, ""), RangeOf(request.Query, ""), 200, cancellation)
                .ConfigureAwait(false);
            return JsonResult(response);
        });
        app.MapGet("/api/profile", async (HttpRequest request, CancellationToken cancellation) =>
        {
            var format = request.Query["format"].ToString() switch
            {
                "folded" => ProfileFormat.Folded,
                "calls" => ProfileFormat.FoldedCalls,
                "speedscope" => ProfileFormat.Speedscope,
                _ => ProfileFormat.Pprof,
            };
            var answer = await queries.ProfilesAsync(SelectorOf(request.Query, ""), RangeOf(request.Query, ""), cancellation).ConfigureAwait(false);
            var file = LiveQueries.FileOf(format);
            using var content = new MemoryStream();
            file.Write(content, queries.RunOf(answer));
            return Results.File(content.ToArray(), "application/octet-stream", file.Name);
        });
        app.MapGet("/flamegraph", async (HttpRequest request, CancellationToken cancellation) =>
        {
            var answer = await queries.ProfilesAsync(SelectorOf(request.Query, ""), RangeOf(request.Query, ""), cancellation).ConfigureAwait(false);
            return Html(text => FlameGraphHtmlFile.Write(text, MergedCallTree.Of(answer.Profiles), LiveQueries.Title(answer), queries.Time.GetUtcNow()));
        });
        app.MapGet("/diff", async (HttpRequest request, CancellationToken cancellation) =>
        {
            var selectorA = SelectorOf(request.Query, "a.");
            var selectorB = request.Query.Keys.Any(key => key is "b.pid" or "b.service" or "b.connection") ? SelectorOf(request.Query, "b.") : selectorA;
            var baseline = await queries.ProfilesAsync(selectorA, RangeOf(request.Query, "a."), cancellation).ConfigureAwait(false);
            var comparison = await queries.ProfilesAsync(selectorB, RangeOf(request.Query, "b."), cancellation).ConfigureAwait(false);
            return Html(text => FlameGraphHtmlFile.WriteDifference(text, MergedCallTree.Of(baseline.Profiles, byService: true),
                MergedCallTree.Of(comparison.Profiles, byService: true),
                $"{LiveQueries.Title(comparison)} against {LiveQueries.Title(baseline)}", queries.Time.GetUtcNow()));
        });
    }

    /// <summary>A page written as UTF-8 into one buffer and sent from it: no string of the whole page, no second encoding.</summary>
    private static IResult Html(Action<TextWriter> write)
    {
        var page = new MemoryStream();
        using (var text = new StreamWriter(page, Utf8NoBom, bufferSize: 1 << 16, leaveOpen: true)) write(text);
        return Results.Bytes(page.GetBuffer().AsMemory(0, (int)page.Length), "text/html; charset=utf-8");
    }

    private static IResult JsonResult(IMessage message) => Results.Content(Json.Format(message), "application/json", Encoding.UTF8);

    public static ProcessSelector SelectorOf(IQueryCollection query, string prefix)
    {
        if (Long(query, prefix + "pid") is { } pid) return new ProcessSelector { Pid = pid };
        if (query[prefix + "service"] is { Count: 1 } service && service[0] is { Length: > 0 } name) return new ProcessSelector { Service = name };
        if (Long(query, prefix + "connection") is { } connection) return new ProcessSelector { ConnectionId = (ulong)connection };
        return new ProcessSelector { All = true };
    }

    public static TimeRange RangeOf(IQueryCollection query, string prefix)
    {
        if (Long(query, prefix + "last") is { } seconds) return new TimeRange { LastSeconds = seconds };
        if (Long(query, prefix + "from") is { } from && Long(query, prefix + "to") is { } to)
            return new TimeRange { Between = new Between { StartUnixNs = from * 1_000_000, EndUnixNs = to * 1_000_000 } };
        return new TimeRange { SinceStart = true };
    }

    private static long? Long(IQueryCollection query, string name)
    {
        if (query[name] is not { Count: 1 } values || values[0] is not { Length: > 0 } text) return null;
        return long.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out var value)
            ? value
            : throw new LiveQueryException($"{name} must be a whole number, not '{text}'");
    }

    internal static bool HasToken(HttpContext context, string token)
    {
        var header = context.Request.Headers.Authorization.ToString();
        if (header.StartsWith("Bearer ", StringComparison.Ordinal) && Matches(header["Bearer ".Length..], token)) return true;
        return context.Request.Cookies.TryGetValue(TokenCookie, out var cookie) && Matches(cookie, token);
    }

    private static bool Matches(string? given, string token)
        => given is not null && CryptographicOperations.FixedTimeEquals(Encoding.UTF8.GetBytes(given), Encoding.UTF8.GetBytes(token));

    private static bool IsLocalHost(string host)
        => host is "localhost" || (IPAddress.TryParse(host.Trim('[', ']'), out var address) && IPAddress.IsLoopback(address));
}

using System.Net;
using System.Text;
using System.Text.Json;

namespace TelemetryAgent.Lambda;

/// <summary>An event of the Lambda Extensions API's <c>/event/next</c>.</summary>
/// <param name="Type">INVOKE or SHUTDOWN (anything else as sent).</param>
/// <param name="Deadline">When the invocation times out (INVOKE), or when the environment is killed (SHUTDOWN).</param>
/// <param name="RequestId">The invocation's request id (INVOKE); empty otherwise.</param>
/// <param name="ShutdownReason">spindown, timeout or failure (SHUTDOWN); empty otherwise.</param>
public sealed record ExtensionEvent(string Type, DateTimeOffset Deadline, string RequestId, string ShutdownReason)
{
    public const string Invoke = "INVOKE";
    public const string Shutdown = "SHUTDOWN";
}

/// <summary>The Extensions API said something other than success, or what it sent does not read as the reference says.</summary>
public sealed class ExtensionsApiException(string message) : Exception(message);

/// <summary>
/// A client of the AWS Lambda Extensions API (version 2020-01-01) as its API reference specifies it: register for INVOKE
/// and SHUTDOWN, then ask for each next event. The API is at
/// <c>http://$AWS_LAMBDA_RUNTIME_API/2020-01-01/extension/</c>.
/// </summary>
public sealed class ExtensionsApiClient : IDisposable
{
    public const string NameHeader = "Lambda-Extension-Name";
    public const string IdentifierHeader = "Lambda-Extension-Identifier";

    private readonly HttpClient _http;
    private string? _identifier;

    /// <param name="runtimeApi">host:port, as AWS_LAMBDA_RUNTIME_API gives it.</param>
    public ExtensionsApiClient(string runtimeApi)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(runtimeApi);
        // /event/next blocks until the next invocation, however long the environment stays frozen.
        _http = new HttpClient { BaseAddress = new Uri($"http://{runtimeApi.Trim()}/2020-01-01/extension/"), Timeout = Timeout.InfiniteTimeSpan };
    }

    /// <summary>The identifier the API gave at registration.</summary>
    public string Identifier => _identifier ?? throw new InvalidOperationException("not registered");

    /// <summary>Registers <paramref name="name"/> (the extension's file name under /opt/extensions) for INVOKE and SHUTDOWN.</summary>
    public async Task RegisterAsync(string name, CancellationToken cancel)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "register")
        {
            Content = new StringContent("""{"events":["INVOKE","SHUTDOWN"]}""", Encoding.UTF8, "application/json"),
        };
        request.Headers.Add(NameHeader, name);
        using var response = await _http.SendAsync(request, cancel).ConfigureAwait(false);
        await EnsureSuccessAsync(response, "register", cancel).ConfigureAwait(false);
        _identifier = response.Headers.TryGetValues(IdentifierHeader, out var values) && values.FirstOrDefault() is { Length: > 0 } id
            ? id
            : throw new ExtensionsApiException($"register: the response has no {IdentifierHeader} header");
    }

    /// <summary>The next event; blocks until Lambda sends one.</summary>
    public async Task<ExtensionEvent> NextEventAsync(CancellationToken cancel)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, "event/next");
        request.Headers.Add(IdentifierHeader, Identifier);
        using var response = await _http.SendAsync(request, cancel).ConfigureAwait(false);
        await EnsureSuccessAsync(response, "event/next", cancel).ConfigureAwait(false);
        var body = await response.Content.ReadAsByteArrayAsync(cancel).ConfigureAwait(false);
        return ParseEvent(body);
    }

    /// <summary>Reads an event's JSON as the API reference shows it.</summary>
    public static ExtensionEvent ParseEvent(ReadOnlySpan<byte> json)
    {
        try
        {
            var reader = new Utf8JsonReader(json);
            using var document = JsonDocument.ParseValue(ref reader);
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new ExtensionsApiException("event/next: the event is not a JSON object");
            var type = root.TryGetProperty("eventType", out var eventType) && eventType.ValueKind == JsonValueKind.String
                ? eventType.GetString()!
                : throw new ExtensionsApiException("event/next: the event has no eventType");
            var deadline = root.TryGetProperty("deadlineMs", out var deadlineMs) && deadlineMs.TryGetInt64(out var ms)
                ? DateTimeOffset.FromUnixTimeMilliseconds(Math.Clamp(ms, 0, 253402300799999))
                : DateTimeOffset.MaxValue;
            return new ExtensionEvent(type, deadline, StringOf(root, "requestId"), StringOf(root, "shutdownReason"));
        }
        catch (JsonException error)
        {
            throw new ExtensionsApiException($"event/next: the event is not JSON ({error.Message})");
        }
    }

    private static string StringOf(JsonElement root, string name) =>
        root.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.String ? value.GetString()! : "";

    private static async Task EnsureSuccessAsync(HttpResponseMessage response, string call, CancellationToken cancel)
    {
        if (response.StatusCode == HttpStatusCode.OK) return;
        var body = await response.Content.ReadAsStringAsync(cancel).ConfigureAwait(false);
        throw new ExtensionsApiException($"{call}: HTTP {(int)response.StatusCode} {response.ReasonPhrase}" +
                                         (body.Length > 0 ? $": {(body.Length > 300 ? body[..300] + "..." : body)}" : ""));
    }

    public void Dispose() => _http.Dispose();
}

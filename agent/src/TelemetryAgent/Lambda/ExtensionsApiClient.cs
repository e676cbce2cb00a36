using System.Net;
using System.Net.Sockets;
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

    // A registration response is a few headers and a short JSON body.
    private const int MaxRegisterResponseBytes = 64 * 1024;

    // An event is a short JSON object (its request id, deadline and ARN).
    private const int MaxEventResponseBytes = 1024 * 1024;

    // Made at the first /event/next, after registration (see RegisterAsync).
    private readonly Lazy<HttpClient> _http;
    private readonly Uri _base;
    private string? _identifier;

    /// <param name="runtimeApi">host:port, as AWS_LAMBDA_RUNTIME_API gives it.</param>
    public ExtensionsApiClient(string runtimeApi)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(runtimeApi);
        _base = new Uri($"http://{runtimeApi.Trim()}/2020-01-01/extension/");
        // /event/next blocks until the next invocation, however long the environment stays frozen.
        _http = new Lazy<HttpClient>(() => new HttpClient { BaseAddress = _base, Timeout = Timeout.InfiniteTimeSpan });
    }

    /// <summary>The identifier the API gave at registration.</summary>
    public string Identifier => _identifier ?? throw new InvalidOperationException("not registered");

    /// <summary>
    /// Registers <paramref name="name"/> (the extension's file name under /opt/extensions) for INVOKE and SHUTDOWN, in one
    /// HTTP/1.1 exchange on a socket of its own: Lambda starts the function's runtime only after every extension has
    /// registered, and HttpClient's first request would add about 0.1 s to that (its code compiled as it first runs).
    /// </summary>
    public async Task RegisterAsync(string name, CancellationToken cancel)
    {
        if (name.AsSpan().IndexOfAny('\r', '\n') >= 0) throw new ArgumentException("an extension name is one line", nameof(name));
        const string body = """{"events":["INVOKE","SHUTDOWN"]}""";
        var request = Encoding.UTF8.GetBytes(
            $"POST {_base.AbsolutePath}register HTTP/1.1\r\nHost: {_base.Authority}\r\n{NameHeader}: {name}\r\n" +
            $"Content-Type: application/json\r\nContent-Length: {Encoding.UTF8.GetByteCount(body)}\r\nConnection: close\r\n\r\n{body}");
        using var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
        // Lambda gives an address (127.0.0.1:9001): no name to resolve.
        EndPoint api = IPAddress.TryParse(_base.Host, out var address) ? new IPEndPoint(address, _base.Port) : new DnsEndPoint(_base.Host, _base.Port);
        await socket.ConnectAsync(api, cancel).ConfigureAwait(false);
        await socket.SendAsync(request, SocketFlags.None, cancel).ConfigureAwait(false);
        var response = new byte[MaxRegisterResponseBytes];
        var length = 0;
        while (length < response.Length && await socket.ReceiveAsync(response.AsMemory(length), SocketFlags.None, cancel).ConfigureAwait(false) is > 0 and var read)
            length += read;
        _identifier = ReadRegistration(Encoding.UTF8.GetString(response, 0, length));
    }

    /// <summary>Takes the identifier of a registration made under this extension's name by another program (the layer's launcher).</summary>
    public void Adopt(string identifier)
    {
        if (string.IsNullOrWhiteSpace(identifier) || identifier.AsSpan().IndexOfAny('\r', '\n') >= 0)
            throw new ExtensionsApiException($"not an extension identifier: \"{identifier}\"");
        _identifier = identifier.Trim();
    }

    /// <summary>The identifier from a registration's raw HTTP/1.1 response; a failure's status and body otherwise.</summary>
    public static string ReadRegistration(string response)
    {
        var (headers, _) = ReadResponse("register", Encoding.UTF8.GetBytes(response));
        foreach (var (name, value) in headers)
            if (name.Equals(IdentifierHeader, StringComparison.OrdinalIgnoreCase) && value.Length > 0) return value;
        throw new ExtensionsApiException($"register: the response has no {IdentifierHeader} header");
    }

    /// <summary>
    /// The event in the raw HTTP/1.1 response to an /event/next request that another program sent with
    /// <c>Connection: close</c> (the layer's launcher, before the agent started): the whole response, as read to its end.
    /// </summary>
    public static ExtensionEvent ReadEventResponse(ReadOnlySpan<byte> response)
    {
        var (headers, body) = ReadResponse("event/next", response);
        var chunked = headers.Any(header => header.Name.Equals("Transfer-Encoding", StringComparison.OrdinalIgnoreCase)
                                            && header.Value.Contains("chunked", StringComparison.OrdinalIgnoreCase));
        if (chunked) return ParseEvent(Dechunk(body));
        foreach (var (name, value) in headers)
        {
            if (!name.Equals("Content-Length", StringComparison.OrdinalIgnoreCase)) continue;
            if (!int.TryParse(value, out var length) || length < 0 || length > body.Length)
                throw new ExtensionsApiException($"event/next: Content-Length {Shorten(value)} with {body.Length} bytes of body");
            body = body[..length];
        }
        return ParseEvent(body);
    }

    /// <summary>Reads the response to an /event/next request sent on <paramref name="connection"/> (see <see cref="ReadEventResponse"/>).</summary>
    public static async Task<ExtensionEvent> ReadEventResponseAsync(Socket connection, CancellationToken cancel)
    {
        using var stream = new NetworkStream(connection, ownsSocket: true);
        var response = new byte[MaxEventResponseBytes];
        var length = 0;
        while (await stream.ReadAsync(response.AsMemory(length), cancel).ConfigureAwait(false) is > 0 and var read)
        {
            length += read;
            if (length == response.Length) throw new ExtensionsApiException($"event/next: the response is longer than {MaxEventResponseBytes} bytes");
        }
        return ReadEventResponse(response.AsSpan(0, length));
    }

    /// <summary>A raw HTTP/1.1 response's headers and body, when its status is 200; its status and body in the error otherwise.</summary>
    private static (List<(string Name, string Value)> Headers, byte[] Body) ReadResponse(string call, ReadOnlySpan<byte> response)
    {
        var headersEnd = response.IndexOf("\r\n\r\n"u8);
        var lines = Encoding.UTF8.GetString(headersEnd < 0 ? response : response[..headersEnd]).Split("\r\n");
        var body = headersEnd < 0 ? [] : response[(headersEnd + 4)..].ToArray();
        var status = lines[0].Split(' ', 3);
        if (status.Length < 2 || !status[0].StartsWith("HTTP/1.", StringComparison.Ordinal) || !int.TryParse(status[1], out var code))
            throw new ExtensionsApiException($"{call}: not an HTTP response ({Shorten(lines[0])})");
        if (code != 200)
        {
            var text = Encoding.UTF8.GetString(body);
            throw new ExtensionsApiException($"{call}: HTTP {code} {(status.Length > 2 ? status[2] : "")}" + (text.Length > 0 ? $": {Shorten(text)}" : ""));
        }
        if (headersEnd < 0) throw new ExtensionsApiException($"{call}: the response ended in its headers");
        var headers = new List<(string, string)>();
        foreach (var line in lines.Skip(1))
        {
            var colon = line.IndexOf(':');
            if (colon > 0) headers.Add((line[..colon].Trim(), line[(colon + 1)..].Trim()));
        }
        return (headers, body);
    }

    /// <summary>A chunked transfer coding's data (RFC 9112, section 7.1); chunk extensions and trailers are skipped.</summary>
    private static byte[] Dechunk(ReadOnlySpan<byte> body)
    {
        var data = new List<byte>();
        while (true)
        {
            var lineEnd = body.IndexOf("\r\n"u8);
            if (lineEnd < 0) throw new ExtensionsApiException("event/next: a chunked body ends in a chunk's size");
            var sizeText = Encoding.ASCII.GetString(body[..lineEnd]).Split(';')[0].Trim();
            if (!int.TryParse(sizeText, System.Globalization.NumberStyles.AllowHexSpecifier, null, out var size) || size < 0)
                throw new ExtensionsApiException($"event/next: not a chunk size: \"{Shorten(sizeText)}\"");
            body = body[(lineEnd + 2)..];
            if (size == 0) return [.. data];
            if (body.Length < size + 2) throw new ExtensionsApiException("event/next: a chunked body ends inside a chunk");
            data.AddRange(body[..size]);
            body = body[(size + 2)..];
        }
    }

    private static string Shorten(string text) => text.Length > 300 ? text[..300] + "..." : text;

    /// <summary>The next event; blocks until Lambda sends one.</summary>
    public async Task<ExtensionEvent> NextEventAsync(CancellationToken cancel)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, "event/next");
        request.Headers.Add(IdentifierHeader, Identifier);
        using var response = await _http.Value.SendAsync(request, cancel).ConfigureAwait(false);
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
        throw new ExtensionsApiException($"{call}: HTTP {(int)response.StatusCode} {response.ReasonPhrase}" + (body.Length > 0 ? $": {Shorten(body)}" : ""));
    }

    public void Dispose()
    {
        if (_http.IsValueCreated) _http.Value.Dispose();
    }
}

using System.Collections.Concurrent;
using System.Text.Json;
using System.Threading.Channels;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace TelemetryAgent.EndToEnd.Tests.Support;

/// <summary>
/// An emulator of AWS Lambda's Runtime API (2018-06-01) and Extensions API (2020-01-01) on one local port, as Lambda
/// serves both at AWS_LAMBDA_RUNTIME_API, written to their API references (paths, headers, event JSON); there is no
/// real Lambda here. It drives the lifecycle as Lambda does: Init ends when the runtime and every registered extension
/// have asked for their next event; an invocation goes to the runtime and, as INVOKE, to every extension, and is over
/// (the environment would be frozen) once the runtime has posted its result and all of them asked for the next event
/// again; SHUTDOWN goes to the extensions.
/// </summary>
public sealed class LambdaEmulator : IAsyncDisposable
{
    public const string FunctionName = "orders";
    public const string FunctionArn = "arn:aws:lambda:eu-west-1:123456789012:function:orders";

    private readonly WebApplication _app;
    private readonly ConcurrentDictionary<string, Extension> _extensions = new();
    private readonly Channel<Invocation> _invocations = Channel.CreateUnbounded<Invocation>();
    private readonly ConcurrentDictionary<string, Invocation> _running = new();
    private readonly Lock _gate = new();
    private TaskCompletionSource _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _runtimeNextCalls;
    private int _invocationCount;

    private LambdaEmulator(WebApplication app) => _app = app;

    /// <summary>host:port, the value of AWS_LAMBDA_RUNTIME_API.</summary>
    public string RuntimeApi { get; private set; } = "";

    /// <summary>Called when an extension asks for its next event, before it gets one: (extension name, how many times it asked, this one included).</summary>
    public Action<string, int>? ExtensionAskedForNext { get; set; }

    /// <summary>Errors the extensions reported (init/error, exit/error): "path: error type".</summary>
    public ConcurrentQueue<string> ExtensionErrors { get; } = new();

    public IReadOnlyCollection<string> ExtensionNames => _extensions.Values.Select(extension => extension.Name).ToArray();

    public static async Task<LambdaEmulator> StartAsync()
    {
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = [] });
        builder.Logging.ClearProviders();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        var app = builder.Build();
        var emulator = new LambdaEmulator(app);
        emulator.Map(app);
        await app.StartAsync();
        var address = new Uri(app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single());
        emulator.RuntimeApi = $"127.0.0.1:{address.Port}";
        return emulator;
    }

    private void Map(WebApplication app)
    {
        app.MapPost("/2020-01-01/extension/register", RegisterAsync);
        app.MapGet("/2020-01-01/extension/event/next", ExtensionNextAsync);
        app.MapPost("/2020-01-01/extension/init/error", context => ExtensionErrorAsync(context, "init/error"));
        app.MapPost("/2020-01-01/extension/exit/error", context => ExtensionErrorAsync(context, "exit/error"));
        app.MapGet("/2018-06-01/runtime/invocation/next", RuntimeNextAsync);
        app.MapPost("/2018-06-01/runtime/invocation/{requestId}/response", context => RuntimeResultAsync(context, error: false));
        app.MapPost("/2018-06-01/runtime/invocation/{requestId}/error", context => RuntimeResultAsync(context, error: true));
        app.MapPost("/2018-06-01/runtime/init/error", async context =>
        {
            ExtensionErrors.Enqueue("runtime init/error: " + context.Request.Headers["Lambda-Runtime-Function-Error-Type"]);
            await Accepted(context);
        });
    }

    private async Task RegisterAsync(HttpContext context)
    {
        var name = context.Request.Headers["Lambda-Extension-Name"].ToString();
        if (name.Length == 0)
        {
            await Error(context, 400, "InvalidRequest", "Lambda-Extension-Name is missing");
            return;
        }
        using var body = await JsonDocument.ParseAsync(context.Request.Body);
        var events = body.RootElement.TryGetProperty("events", out var list) ? list.EnumerateArray().Select(e => e.GetString()!).ToArray() : [];
        if (Volatile.Read(ref _invocationCount) > 0)
        {
            await Error(context, 403, "Extension.InvalidPhase", "registration is open during Init only");
            return;
        }
        var extension = new Extension(name, Guid.NewGuid().ToString(), events);
        _extensions[extension.Id] = extension;
        context.Response.Headers["Lambda-Extension-Identifier"] = extension.Id;
        await context.Response.WriteAsJsonAsync(new { functionName = FunctionName, functionVersion = "$LATEST", handler = "handlers.handle" });
        Signal();
    }

    private async Task ExtensionNextAsync(HttpContext context)
    {
        if (!_extensions.TryGetValue(context.Request.Headers["Lambda-Extension-Identifier"].ToString(), out var extension))
        {
            await Error(context, 403, "Extension.UnknownExtensionIdentifier", "unknown Lambda-Extension-Identifier");
            return;
        }
        var asked = Interlocked.Increment(ref extension.NextCalls);
        ExtensionAskedForNext?.Invoke(extension.Name, asked);
        Signal();
        string json;
        try
        {
            json = await extension.Events.Reader.ReadAsync(context.RequestAborted);
        }
        catch (OperationCanceledException)
        {
            return;
        }
        context.Response.Headers["Lambda-Extension-Event-Identifier"] = Guid.NewGuid().ToString();
        context.Response.ContentType = "application/json";
        await context.Response.WriteAsync(json);
    }

    private async Task ExtensionErrorAsync(HttpContext context, string path)
    {
        ExtensionErrors.Enqueue($"{path}: {context.Request.Headers["Lambda-Extension-Function-Error-Type"]}");
        await Accepted(context);
    }

    private async Task RuntimeNextAsync(HttpContext context)
    {
        Interlocked.Increment(ref _runtimeNextCalls);
        Signal();
        Invocation invocation;
        try
        {
            invocation = await _invocations.Reader.ReadAsync(context.RequestAborted);
        }
        catch (OperationCanceledException)
        {
            return;
        }
        _running[invocation.RequestId] = invocation;
        var headers = context.Response.Headers;
        headers["Lambda-Runtime-Aws-Request-Id"] = invocation.RequestId;
        headers["Lambda-Runtime-Deadline-Ms"] = invocation.DeadlineMs.ToString(System.Globalization.CultureInfo.InvariantCulture);
        headers["Lambda-Runtime-Invoked-Function-Arn"] = FunctionArn;
        headers["Lambda-Runtime-Trace-Id"] = invocation.TraceId;
        context.Response.ContentType = "application/json";
        await context.Response.WriteAsync(invocation.Payload);
    }

    private async Task RuntimeResultAsync(HttpContext context, bool error)
    {
        var requestId = context.Request.RouteValues["requestId"]?.ToString() ?? "";
        if (!_running.TryRemove(requestId, out var invocation))
        {
            await Error(context, 400, "InvalidRequestID", $"no running invocation {requestId}");
            return;
        }
        using var reader = new StreamReader(context.Request.Body);
        var body = await reader.ReadToEndAsync();
        invocation.Result.TrySetResult(new InvocationResult(body, error ? context.Request.Headers["Lambda-Runtime-Function-Error-Type"].ToString() : null));
        await Accepted(context);
    }

    private static Task Accepted(HttpContext context)
    {
        context.Response.StatusCode = 202;
        return context.Response.WriteAsJsonAsync(new { status = "OK" });
    }

    private static Task Error(HttpContext context, int status, string type, string message)
    {
        context.Response.StatusCode = status;
        return context.Response.WriteAsJsonAsync(new { errorMessage = message, errorType = type });
    }

    private void Signal()
    {
        lock (_gate) Interlocked.Exchange(ref _changed, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();
    }

    /// <summary>Waits until <paramref name="condition"/> holds, re-checking it whenever a call arrives.</summary>
    private async Task WaitUntilAsync(Func<bool> condition, TimeSpan timeout, string what)
    {
        using var cancel = new CancellationTokenSource(timeout);
        while (true)
        {
            Task changed;
            lock (_gate) changed = _changed.Task;
            if (condition()) return;
            try
            {
                await changed.WaitAsync(cancel.Token);
            }
            catch (OperationCanceledException)
            {
                throw new TimeoutException($"the Lambda emulator waited {timeout.TotalSeconds:0} s for {what}");
            }
        }
    }

    private bool AllAskedForNext(int times) =>
        Volatile.Read(ref _runtimeNextCalls) >= times && _extensions.Values.All(extension => Volatile.Read(ref extension.NextCalls) >= times);

    /// <summary>
    /// <paramref name="extensions"/> extensions have registered: Lambda starts the function's runtime then, not before.
    /// </summary>
    public Task WaitForRegistrationAsync(int extensions, TimeSpan timeout) =>
        WaitUntilAsync(() => _extensions.Count >= extensions, timeout, $"{extensions} extension(s) registered");

    /// <summary>Init is over: the runtime and <paramref name="extensions"/> registered extensions have asked for their first event.</summary>
    public Task WaitForInitAsync(int extensions, TimeSpan timeout) =>
        WaitUntilAsync(() => _extensions.Count >= extensions && AllAskedForNext(1), timeout,
            $"Init: {extensions} extension(s) registered and everyone's first next");

    /// <summary>
    /// One invocation as Lambda runs it; returns its result once the runtime posted it and the runtime and every
    /// extension asked for their next event again (when Lambda freezes the environment).
    /// </summary>
    public async Task<InvocationResult> InvokeAsync(string payload, TimeSpan timeout)
    {
        var number = Interlocked.Increment(ref _invocationCount);
        await WaitUntilAsync(() => AllAskedForNext(number), timeout, $"everyone waiting before invocation {number}");
        var invocation = new Invocation(Guid.NewGuid().ToString(), payload, DateTimeOffset.UtcNow.Add(timeout).ToUnixTimeMilliseconds(),
            $"Root=1-{DateTimeOffset.UtcNow.ToUnixTimeSeconds():x8}-{Guid.NewGuid():N}"[..39] + ";Sampled=0");
        var invoke = JsonSerializer.Serialize(new
        {
            eventType = "INVOKE", deadlineMs = invocation.DeadlineMs, requestId = invocation.RequestId, invokedFunctionArn = FunctionArn,
            tracing = new { type = "X-Amzn-Trace-Id", value = invocation.TraceId },
        });
        foreach (var extension in _extensions.Values.Where(extension => extension.Subscribes("INVOKE"))) extension.Events.Writer.TryWrite(invoke);
        _invocations.Writer.TryWrite(invocation);
        InvocationResult result;
        try
        {
            result = await invocation.Result.Task.WaitAsync(timeout);
        }
        catch (TimeoutException)
        {
            throw new TimeoutException($"the Lambda emulator waited {timeout.TotalSeconds:0} s for the runtime's result of invocation {number}");
        }
        await WaitUntilAsync(() => AllAskedForNext(number + 1), timeout, $"everyone's next after invocation {number}");
        return result;
    }

    /// <summary>Sends SHUTDOWN to every extension that subscribed to it, with Lambda's deadline for external extensions (2 s).</summary>
    public void Shutdown(string reason = "spindown")
    {
        var shutdown = JsonSerializer.Serialize(new
        {
            eventType = "SHUTDOWN", shutdownReason = reason, deadlineMs = DateTimeOffset.UtcNow.AddSeconds(2).ToUnixTimeMilliseconds(),
        });
        foreach (var extension in _extensions.Values.Where(extension => extension.Subscribes("SHUTDOWN"))) extension.Events.Writer.TryWrite(shutdown);
    }

    public async ValueTask DisposeAsync()
    {
        _invocations.Writer.TryComplete();
        await _app.StopAsync();
        await _app.DisposeAsync();
    }

    private sealed class Extension(string name, string id, string[] events)
    {
        public string Name { get; } = name;
        public string Id { get; } = id;
        public Channel<string> Events { get; } = Channel.CreateUnbounded<string>();
        public int NextCalls;

        public bool Subscribes(string type) => events.Contains(type);
    }

    private sealed record Invocation(string RequestId, string Payload, long DeadlineMs, string TraceId)
    {
        public TaskCompletionSource<InvocationResult> Result { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }
}

/// <summary>What the runtime posted: the response body, and the error type when it posted an error.</summary>
public sealed record InvocationResult(string Body, string? ErrorType);

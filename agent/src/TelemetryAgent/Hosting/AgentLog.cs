using System.Text;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting.Systemd;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Console;

namespace TelemetryAgent.Hosting;

/// <summary>How the agent writes its log on stderr (serve --log-format; docs/operations.md).</summary>
public enum LogFormat
{
    /// <summary>"telemetry-agent: message", one line per message, written at once: for people (and `run`).</summary>
    Plain,

    /// <summary>One JSON object per line (the console logger's JSON format): for Kubernetes and log shippers.</summary>
    Json,

    /// <summary>"&lt;N&gt;message" with syslog priorities (the console logger's systemd format): for the journal.</summary>
    Systemd,
}

/// <summary>The agent's log in one of its formats, on stderr (stdout belongs to the commands' answers).</summary>
public static class AgentLogging
{
    /// <summary>systemd's format under systemd (the journal reads its priorities), else plain.</summary>
    public static LogFormat DefaultFormat => SystemdHelpers.IsSystemdService() ? LogFormat.Systemd : LogFormat.Plain;

    /// <summary>
    /// Information and above from the agent; warnings and above from the libraries under it (the host, Kestrel). The
    /// host's own report of a failed start is left out: the agent logs why it could not start, in its words.
    /// </summary>
    public static void Configure(ILoggingBuilder logging, LogFormat format)
    {
        ArgumentNullException.ThrowIfNull(logging);
        logging.SetMinimumLevel(LogLevel.Information);
        logging.AddFilter("Microsoft", LogLevel.Warning);
        logging.AddFilter("Microsoft.Extensions.Hosting.Internal.Host", LogLevel.None);
        switch (format)
        {
            case LogFormat.Plain:
                logging.AddProvider(new PlainLoggerProvider(Console.Error));
                break;
            case LogFormat.Json:
                logging.AddJsonConsole(options =>
                {
                    options.TimestampFormat = "yyyy-MM-ddTHH:mm:ss.fffZ";
                    options.UseUtcTimestamp = true;
                    // Paths and messages as written ('...' rather than \u0027...\u0027): the lines go to a log, not into HTML.
                    options.JsonWriterOptions = new System.Text.Json.JsonWriterOptions
                    {
                        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
                    };
                });
                break;
            case LogFormat.Systemd:
                // No timestamp: the journal adds its own.
                logging.AddSystemdConsole();
                break;
        }
        logging.Services.Configure<ConsoleLoggerOptions>(options => options.LogToStandardErrorThreshold = LogLevel.Trace);
    }
}

/// <summary>
/// The plain format: each message as the line people and scripts have always read, "telemetry-agent: message", written
/// to <paramref name="output"/> synchronously (no queue: a line is out before the next statement runs, so it interleaves
/// with `run`'s own output in order). Levels are not printed.
/// </summary>
public sealed class PlainLoggerProvider(TextWriter output) : ILoggerProvider
{
    private readonly PlainLogger _logger = new(output);

    public ILogger CreateLogger(string categoryName) => _logger;

    public void Dispose()
    {
    }

    private sealed class PlainLogger(TextWriter output) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel != LogLevel.None;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (!IsEnabled(logLevel)) return;
            var message = formatter(state, exception);
            if (exception is not null) message = $"{message}: {exception.Message}";
            lock (output) output.WriteLine($"telemetry-agent: {message}");
        }
    }
}

/// <summary>
/// The parts that report on a <see cref="TextWriter"/> in "telemetry-agent: ..." lines (output folders, OTLP exporters,
/// the live views' web server; `run` hands them stderr) seen as log entries of one level: each whole line becomes one
/// entry of <paramref name="level"/>, without the prefix, which the log's format adds back (plain) or does not need.
/// </summary>
public sealed class LogLineWriter(ILogger logger, LogLevel level) : TextWriter
{
    private const string Prefix = "telemetry-agent: ";
    private readonly StringBuilder _line = new();

    public override Encoding Encoding => Encoding.UTF8;

    public override void Write(char value)
    {
        lock (_line)
        {
            if (value == '\n') Emit();
            else if (value != '\r') _line.Append(value);
        }
    }

    public override void Write(string? value)
    {
        if (value is null) return;
        foreach (var c in value) Write(c);
    }

    public override void WriteLine(string? value)
    {
        lock (_line)
        {
            _line.Append(value);
            Emit();
        }
    }

    private void Emit()
    {
        var line = _line.ToString();
        _line.Clear();
        if (line.StartsWith(Prefix, StringComparison.Ordinal)) line = line[Prefix.Length..];
        logger.Log(level, default, line, null, static (message, _) => message);
    }
}

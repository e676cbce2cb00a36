using System.CommandLine;
using TelemetryAgent.Export;
using TelemetryAgent.Export.Settings;
using TelemetryAgent.Hosting;
using TelemetryAgent.Output;

namespace TelemetryAgent.Cli;

/// <summary>
/// `telemetry-agent run`: starts a private agent, runs one Python program under the shim, and when it exits
/// prints a summary and writes the flame graphs. Child processes are traced as their own processes.
/// </summary>
public static class RunCommand
{
    private static readonly Option<string?> Python = new("--python")
    {
        Description = $"The Python interpreter (3.12 or later) to run the program with. Default: ${PythonLocator.EnvironmentVariable}, " +
                      "then the newest python3.x on PATH, then the newest pyenv version. " +
                      "An interpreter named before the program (`run -- python3.13 app.py`) wins over this.",
    };

    private static readonly Option<string?> Output = new("--output", "-o")
    {
        Description = "The folder for profile.folded, calls.folded, profile.speedscope.json, flamegraph.html and summary.json. " +
                      "Default: ./telemetry-out/<timestamp>/ (<timestamp>-2 and so on when another run took that second). " +
                      "Nothing is written when no process reported to the agent.",
    };

    private static readonly Option<string?> ServiceName = new("--service-name")
    {
        Description = "The service name to report for the program (sets OTEL_SERVICE_NAME for it). Default: the program's own " +
                      "OTEL_SERVICE_NAME, else the script or module name.",
    };

    private static readonly Option<int> Top = OptionValues.WholeNumber("--top", 20, 0, int.MaxValue,
        "How many functions the console summary lists, by self time.");

    private static readonly Option<int> SummaryFunctions = OptionValues.WholeNumber("--summary-functions", 200, 0, int.MaxValue,
        "How many functions summary.json lists, by self time.");

    private static readonly Option<double> ChildGrace = OptionValues.Seconds("--child-grace", 5.0, 0, 24 * 3600,
        "Seconds to wait, after the program exits, for child processes that are still sending.");

    private static readonly Option<string?> ShimPath = new("--shim-path")
    {
        Description = $"The folder holding the telemetry_shim package. Default: ${ShimLocator.EnvironmentVariable}, else the copy next to the agent.",
    };

    /// <summary>The shim's mode setting (python-shim/README.md "Modes"), passed to the program and its children.</summary>
    private const string ModeVariable = "TELEMETRY_SHIM_MODE";

    private static readonly Option<string> Mode = new("--mode")
    {
        Description = "What the shim records: full (every call, exact), burst (calls in short windows, scaled to the whole run: " +
                      "production overhead), or exceptions (exceptions only, no calls). Passed to the program and its Python " +
                      $"children as ${ModeVariable}; window, period, budget and filters come from the TELEMETRY_SHIM_* variables.",
        DefaultValueFactory = _ => "full",
    };

    private static readonly Argument<string[]> Program = new("program")
    {
        Description = "The program and its arguments: `script.py [args]`, `-m module [args]`, or `python3.x script.py|-m module [args]`. " +
                      "Everything from the script (or -m, or --) on belongs to the program.",
        Arity = ArgumentArity.OneOrMore,
    };

    private static readonly HashSet<string> OptionsWithValue =
        ["--python", "--output", "-o", "--service-name", "--top", "--summary-functions", "--child-grace", "--shim-path", "--mode",
         .. ExportOptions.WithValue, .. AgentOptions.WithValue];

    static RunCommand()
    {
        OptionValues.OneOf(Mode, "full", "burst", "exceptions");
    }

    public static Command Create()
    {
        var command = new Command("run", "Run a Python program under the shim and write its flame graphs when it exits. " +
                                         "The program's exit code becomes this command's; Ctrl-C reaches the program.")
        {
            Python, Output, ServiceName, Top, SummaryFunctions, ChildGrace, ShimPath, Mode,
            ExportOptions.Otlp, ExportOptions.Endpoint, ExportOptions.Protocol, ExportOptions.Retry, ExportOptions.RetryDirectory, Program,
        };
        AgentOptions.AddTo(command);
        command.SetAction((result, _) =>
        {
            if (ExportOptions.Resolve(result, out var problem) is not { } otlp)
            {
                Console.Error.WriteLine($"telemetry-agent run: {problem}");
                return Task.FromResult(2);
            }
            return ExecuteAsync(
                new RunSettings(
                    result.GetValue(Python), result.GetValue(Output), result.GetValue(ServiceName), result.GetValue(Top), result.GetValue(SummaryFunctions),
                    TimeSpan.FromSeconds(result.GetValue(ChildGrace)), result.GetValue(ShimPath), otlp, result.GetValue(Mode)!.Trim().ToLowerInvariant()),
                result.GetValue(Program) ?? [], result);
        });
        return command;
    }

    /// <summary>Rewrites `run [agent options] program...` as `run [agent options] -- program...`.</summary>
    public static string[] SeparateProgram(string[] args)
    {
        var (agentPart, programPart) = ProgramLine.Split(args.Skip(1).ToArray(), OptionsWithValue);
        return programPart.Length == 0 ? args : ["run", .. agentPart, "--", .. programPart];
    }

    private sealed record RunSettings(
        string? Python, string? Output, string? ServiceName, int Top, int SummaryFunctions, TimeSpan ChildGrace, string? ShimPath, OtlpSettings Otlp,
        string Mode);

    private static async Task<int> ExecuteAsync(RunSettings settings, string[] programTokens, ParseResult options)
    {
        var log = Console.Error;
        if (AgentOptions.Read(options, out var optionError) is not var (limits, access, redactor)) return Fail(optionError!);
        var program = ProgramLine.Parse(programTokens, out var programError);
        if (programError is not null) return Fail(programError);

        var python = program.Interpreter is { } named
            ? PythonLocator.Locate(named, out var pythonProblem, "before the program")
            : PythonLocator.Locate(settings.Python, out pythonProblem);
        if (python is null) return Fail(pythonProblem);
        var shim = ShimLocator.Locate(settings.ShimPath, out var shimProblem);
        if (shim is null) return Fail(shimProblem);

        string outputFolder;
        try
        {
            outputFolder = settings.Output is { } chosen ? Path.GetFullPath(chosen) : ReserveDefaultOutputFolder();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return Fail($"cannot create the output folder under {Path.GetFullPath(DefaultOutputRoot)}: {e.Message}");
        }
        var runFolder = CreatePrivateFolder();
        try
        {
            var startedAt = DateTimeOffset.UtcNow;
            // Each process is exported once, when it ends.
            var statistics = new AgentStatistics();
            var export = ExportPipeline.Create(new ExportContext(settings.Otlp, log, CheckpointInterval: null, statistics.Snapshot));
            await using var host = new AgentHost(new PlainLoggerProvider(log).CreateLogger("run"), limits, observers: export.Observers, statistics) { Access = access, Redactor = redactor };
            try
            {
                host.Listen(Path.Combine(runFolder.FullName, "agent.sock"));
            }
            catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or UnauthorizedAccessException)
            {
                return Fail($"cannot listen on {runFolder.FullName}/agent.sock: {e.Message}");
            }

            var environment = new Dictionary<string, string>
            {
                ["PYTHONPATH"] = PrependPath(shim, Environment.GetEnvironmentVariable("PYTHONPATH")),
                [ModeVariable] = settings.Mode,
            };
            if (settings.ServiceName is { } serviceName) environment["OTEL_SERVICE_NAME"] = serviceName;
            string[] arguments = ["-m", "telemetry_shim", "--socket", host.SocketPath, .. program.Arguments];

            int exitCode;
            using (var child = ChildProgram.Start(python.Path, arguments, environment))
                exitCode = await child.WaitForExitAsync().ConfigureAwait(false);

            if (!await host.WaitForConnectionsAsync(settings.ChildGrace).ConfigureAwait(false))
                log.WriteLine($"telemetry-agent: processes still sending {settings.ChildGrace.TotalSeconds:0.#} s after the program " +
                              "exited are cut off: their profiles are partial (ended: Cancelled).");
            await host.DisposeAsync().ConfigureAwait(false);
            var endedAt = DateTimeOffset.UtcNow;
            await export.ShutdownAsync(ExportOptions.FinalExportDeadline(settings.Otlp)).ConfigureAwait(false);

            var recorded = host.Store.Snapshot();
            if (recorded.Completed.Count == 0 && recorded.Running.Count == 0)
            {
                // Nothing to write: no folder of empty files. The program's own error, if any, is above.
                if (settings.Output is null)
                {
                    TryDelete(outputFolder);
                    TryDelete(Path.GetDirectoryName(outputFolder)!);
                }
                var cut = recorded.ConnectionsWithoutProfile.Values.Sum();
                log.WriteLine((exitCode != 0 ? $"telemetry-agent: the program exited with status {exitCode} before the shim reported a process"
                                             : "telemetry-agent: no process reported to the agent (see any warnings above)")
                              + (cut > 0 ? $" ({cut} connection(s) ended before their HELLO)" : "") + "; no outputs written.");
                return exitCode;
            }
            try
            {
                var report = FolderExporter.Standard(settings.SummaryFunctions)
                    .Write(outputFolder, OutputRun.Create(recorded, startedAt, endedAt));
                Tell(log, report, settings.Top);
                if (!report.AllSucceeded && exitCode == 0) exitCode = 1;
            }
            catch (Exception e)
            {
                // The program's exit code is what the caller waits for: a failure of ours must not replace it.
                log.WriteLine($"telemetry-agent: writing the outputs failed: {e}");
                if (exitCode == 0) exitCode = 1;
            }
            return exitCode;
        }
        finally
        {
            try { runFolder.Delete(recursive: true); } catch (IOException) { }
        }

        int Fail(string message)
        {
            log.WriteLine($"telemetry-agent run: {message}");
            return 2;
        }
    }

    /// <summary>What the run recorded (<see cref="ConsoleSummary"/>), what could not be written, and where the outputs are.</summary>
    private static void Tell(TextWriter log, OutputReport report, int top)
    {
        log.WriteLine();
        log.Write(ConsoleSummary.Format(report.Summary, top));
        report.LogProblems(log);
        log.WriteLine($"Outputs: {report.Folder}/ ({string.Join(", ", report.Files.Where(f => f.Succeeded).Select(f => f.Name))})");
    }

    private const string DefaultOutputRoot = "telemetry-out";

    /// <summary>
    /// ./telemetry-out/&lt;local time&gt;/, created here so that two runs started in the same second never share one:
    /// the second gets &lt;time&gt;-2, and so on.
    /// </summary>
    private static string ReserveDefaultOutputFolder()
    {
        var root = Directory.CreateDirectory(DefaultOutputRoot).FullName;
        var stamp = DateTime.Now.ToString("yyyyMMdd-HHmmss", System.Globalization.CultureInfo.InvariantCulture);
        for (var attempt = 1; ; attempt++)
        {
            var candidate = Path.Combine(root, attempt == 1 ? stamp : $"{stamp}-{attempt}");
            if (Transport.Native.TryCreateDirectory(candidate)) return candidate;
        }
    }

    private static void TryDelete(string emptyFolder)
    {
        try
        {
            Directory.Delete(emptyFolder);
        }
        catch (IOException)
        {
            // Not empty (something else wrote there) or gone: leave it.
        }
    }

    /// <summary>
    /// A private folder for the socket, so that only this user reaches this run's agent: under $TMPDIR, or
    /// /tmp when $TMPDIR is too long for a Unix socket address.
    /// </summary>
    private static DirectoryInfo CreatePrivateFolder()
    {
        var folder = Directory.CreateTempSubdirectory("telemetry-agent-");
        if (System.Text.Encoding.UTF8.GetByteCount(Path.Combine(folder.FullName, "agent.sock")) <= Transport.UnixSocketListener.MaxPathBytes)
            return folder;
        folder.Delete();
        var fallback = Path.Combine("/tmp", $"telemetry-agent-{Guid.NewGuid():N}"[..24]);
        return Directory.CreateDirectory(fallback, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
    }

    private static string PrependPath(string folder, string? existing) =>
        string.IsNullOrEmpty(existing) ? folder : $"{folder}:{existing}";
}

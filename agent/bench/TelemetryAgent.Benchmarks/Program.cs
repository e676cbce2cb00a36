using BenchmarkDotNet.Running;
using TelemetryAgent.Benchmarks;

// `quick [name filter]`: a Stopwatch run of every quick scenario, figures in seconds.
// `otlp`: what OTLP export costs per Python process (SDK instance, export round trip), against a real receiver.
// `snapshot [baseline telemetry-agent.dll]`, `snapshot-files`, `top`, `top-wide`, `top-refresh`, `timeline-memory`, `range`: the live views' figures (LiveBenchmarks; the first three run the real
// agent, built with -c Release, and real Python programs).
// Anything else goes to BenchmarkDotNet, e.g. `--filter '*Parse*'` or `--list flat`.
if (args.Length > 0 && args[0] == "quick")
{
    return QuickRunner.Run(args.Length > 1 ? args[1] : null);
}

if (args.Length > 0 && args[0] == "otlp")
{
    return await OtlpExportCost.RunAsync();
}

if (args.Length > 0 && args[0] is "snapshot" or "snapshot-files" or "top" or "top-wide" or "top-refresh" or "timeline-memory" or "range")
{
    return await LiveBenchmarks.RunAsync(args[0], args.Length > 1 ? args[1] : null);
}

BenchmarkSwitcher.FromAssembly(typeof(QuickRunner).Assembly).Run(args);
return 0;

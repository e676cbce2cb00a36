using BenchmarkDotNet.Running;
using TelemetryAgent.Benchmarks;

// `quick [name filter]`: a Stopwatch run of every quick scenario, figures in seconds.
// Anything else goes to BenchmarkDotNet, e.g. `--filter '*Parse*'` or `--list flat`.
if (args.Length > 0 && args[0] == "quick")
{
    return QuickRunner.Run(args.Length > 1 ? args[1] : null);
}

BenchmarkSwitcher.FromAssembly(typeof(QuickRunner).Assembly).Run(args);
return 0;

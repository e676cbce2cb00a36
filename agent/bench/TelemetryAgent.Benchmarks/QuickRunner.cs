using System.Diagnostics;
using System.Reflection;

namespace TelemetryAgent.Benchmarks;

/// <summary>One workload the quick mode measures: an operation that processes a whole in-memory stream.</summary>
public sealed record QuickScenario(string Name, long EventsPerOperation, long BytesPerOperation, Action Operation);

/// <summary>
/// A benchmark class that also offers its workloads to the quick mode. Implement it on a BenchmarkDotNet
/// class (with a public parameterless constructor) and the quick mode finds it by reflection.
/// </summary>
public interface IQuickBenchmarks
{
    /// <summary>Prepares the inputs (as [GlobalSetup] would) and returns the workloads.</summary>
    IEnumerable<QuickScenario> CreateScenarios();
}

/// <summary>
/// Runs every <see cref="QuickScenario"/> for a fixed wall time with a Stopwatch and prints throughput and
/// allocations per event. Rough figures in seconds; BenchmarkDotNet gives the careful ones.
/// </summary>
public static class QuickRunner
{
    private static readonly TimeSpan Warmup = TimeSpan.FromSeconds(0.5);
    private static readonly TimeSpan Measure = TimeSpan.FromSeconds(2);

    public static int Run(string? nameFilter)
    {
        List<QuickScenario> scenarios = DiscoverScenarios()
            .Where(s => nameFilter is null || s.Name.Contains(nameFilter, StringComparison.OrdinalIgnoreCase))
            .ToList();
        if (scenarios.Count == 0)
        {
            Console.Error.WriteLine($"No quick scenario matches '{nameFilter}'.");
            return 1;
        }

        Console.WriteLine($"{"scenario",-34} {"Mevents/s",10} {"ns/event",9} {"MB/s",8} {"B/event",8}");
        foreach (QuickScenario scenario in scenarios)
        {
            RunFor(scenario, Warmup);
            long allocatedBefore = GC.GetAllocatedBytesForCurrentThread();
            (long operations, TimeSpan elapsed) = RunFor(scenario, Measure);
            long allocated = GC.GetAllocatedBytesForCurrentThread() - allocatedBefore;

            double events = (double)operations * scenario.EventsPerOperation;
            double seconds = elapsed.TotalSeconds;
            Console.WriteLine(
                $"{scenario.Name,-34} {events / seconds / 1e6,10:F1} {seconds * 1e9 / events,9:F2} " +
                $"{operations * scenario.BytesPerOperation / seconds / 1e6,8:F0} {allocated / events,8:F3}");
        }

        return 0;
    }

    private static (long Operations, TimeSpan Elapsed) RunFor(QuickScenario scenario, TimeSpan duration)
    {
        long operations = 0;
        var stopwatch = Stopwatch.StartNew();
        while (stopwatch.Elapsed < duration)
        {
            scenario.Operation();
            operations++;
        }

        return (operations, stopwatch.Elapsed);
    }

    private static IEnumerable<QuickScenario> DiscoverScenarios()
    {
        IEnumerable<Type> types = Assembly.GetExecutingAssembly().GetTypes()
            .Where(t => typeof(IQuickBenchmarks).IsAssignableFrom(t) && t is { IsAbstract: false, IsInterface: false })
            .OrderBy(t => t.Name, StringComparer.Ordinal);
        foreach (Type type in types)
        {
            var benchmarks = (IQuickBenchmarks)Activator.CreateInstance(type)!;
            foreach (QuickScenario scenario in benchmarks.CreateScenarios())
            {
                yield return scenario;
            }
        }
    }
}

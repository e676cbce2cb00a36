using Microsoft.Extensions.Time.Testing;
using TelemetryAgent.Profiling;
using TelemetryAgent.Protocol.Messages;
using TelemetryAgent.Sessions;

namespace TelemetryAgent.Testing;

/// <summary>
/// A fixed start-up, built by a scripted session: the input of the start-up golden tests. "orders" (pid 5150) started
/// 40 ms before the shim, imported json (with json.decoder and re nested in it), a missing optional module and
/// handlers in 60 ms, became ready at the first call of handlers:handle, whose first invocation imported csv lazily
/// and connected; the two later invocations imported nothing and only looked up. Full mode: the invocations' calls
/// are recorded, so each has its call tree.
/// </summary>
public static class StartupSample
{
    public static readonly DateTimeOffset Start = new(2025, 3, 14, 9, 26, 53, TimeSpan.Zero);

    // Shim clock, nanoseconds (the script's HELLO maps 1 000 ns to its Unix time).
    public const long ProcessStartNs = 1_000_000;
    public const long ShimStartNs = 41_000_000;
    public const long ReadyNs = 110_000_000;

    public static (IReadOnlyList<ProcessProfile> Profiles, FakeTimeProvider Time) Build()
    {
        var time = new FakeTimeProvider(Start);
        var store = new ProfileStore();
        var orders = new SessionScript(store, time: time, pid: 5150, serviceName: "orders", mode: "full");
        orders.Thread(1, "MainThread", isMain: true)
            .Code(1, "<module>", "/srv/app/app.py")
            .Code(2, "handle", "/srv/app/handlers.py", line: 4, readyOn: true)
            .Code(3, "connect", "/srv/app/handlers.py", line: 12)
            .Code(4, "lookup", "/srv/app/handlers.py", line: 16);
        orders.Start(ShimStartNs + 1_000_000, 1)
            // Invocation 1: csv imported (110.5 to 122.5 ms), then the connection made, then one lookup.
            .Start(ReadyNs, 2).Start(123_000_000, 3).Return(124_000_000, 3).Start(124_000_000, 4).Return(124_500_000, 4)
            .Return(125_000_000, 2)
            // Invocations 2 and 3: one lookup each.
            .Start(130_000_000, 2).Start(131_000_000, 4).Return(131_500_000, 4).Return(133_000_000, 2)
            .Start(140_000_000, 2).Start(140_500_000, 4).Return(141_000_000, 4).Return(142_000_000, 2)
            .Return(145_000_000, 1);
        var startup = new Startup
        {
            ReadyRule = Startup.Types.ReadyRule.ReadyOnFunction,
            ReadyTarget = "handlers:handle",
            ProcessStartNs = ProcessStartNs,
            ProcessStartResolutionNs = 10_000_000,
            ShimStartNs = ShimStartNs,
            ReadyNs = ReadyNs,
            InterpreterCpuNs = 35_000_000,
            ShimStartCpuNs = 4_000_000,
            FirstInvocationsPlanned = 3,
            Imports =
            {
                Import("json", 0, 42_000_000, 70_000_000, find: 1_000_000, load: 2_000_000, exec: 5_000_000),
                Import("json.decoder", 1, 43_000_000, 63_000_000, find: 500_000, load: 1_500_000, exec: 3_000_000),
                Import("re", 2, 45_000_000, 60_000_000, find: 400_000, load: 2_600_000, exec: 12_000_000),
                Import("optional_speedups", 0, 71_000_000, 72_000_000, find: 1_000_000, load: 0, exec: 0, failed: true),
                Import("handlers", 0, 80_000_000, 100_000_000, find: 2_000_000, load: 3_000_000, exec: 15_000_000),
            },
        };
        var first = Invocation(1, ReadyNs, 125_000_000, Import("csv", 0, 110_500_000, 122_500_000, find: 1_000_000, load: 3_000_000, exec: 8_000_000));
        var second = Invocation(2, 130_000_000, 133_000_000);
        var third = Invocation(3, 140_000_000, 142_000_000);
        first.Trigger = second.Trigger = "http";
        third.Trigger = "smoke-signal"; // not one of faas.trigger's values: the agent leaves it out

        time.Advance(TimeSpan.FromMilliseconds(2));
        orders.Session.OnStats(new Stats { EventsRecorded = 0, Startup = startup });
        orders.Session.OnStats(new Stats { FirstInvocations = { first } });
        orders.Session.OnStats(new Stats { FirstInvocations = { second, third } });
        orders.Goodbye(endMonotonicNs: 150_000_000);
        time.Advance(TimeSpan.FromMilliseconds(200));
        orders.Complete(ConnectionEnd.Goodbye);
        return (store.Snapshot().Completed, time);
    }

    public static Import Import(string module, uint parent, long start, long end, long find, long load, long exec, bool failed = false)
        => new()
        {
            Module = module, Parent = parent, StartNs = start, EndNs = end, FindNs = find, LoadNs = load, ExecNs = exec, Failed = failed,
        };

    private static FirstInvocation Invocation(uint number, long start, long end, params Import[] imports)
    {
        var invocation = new FirstInvocation { Number = number, StartNs = start, EndNs = end };
        invocation.Imports.Add(imports);
        return invocation;
    }
}

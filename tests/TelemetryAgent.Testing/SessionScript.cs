using TelemetryAgent.Profiling;
using TelemetryAgent.Protocol;
using TelemetryAgent.Protocol.Messages;
using TelemetryAgent.Sessions;
using Xunit;

namespace TelemetryAgent.Testing;

/// <summary>
/// Drives a <see cref="ProcessSession"/> the way a connection would, without a socket or parser: HELLO, then
/// definitions and events in script order. Events go through <see cref="ProcessSession.OnEvents"/> as packed
/// records, so the record decoding is exercised too.
/// </summary>
public sealed class SessionScript
{
    public const string WorkingDirectory = "/srv/app";

    /// <summary>HELLO's clock: shim monotonic <see cref="HelloMonotonicNs"/> is Unix time <see cref="HelloUnixNs"/>.</summary>
    public const long HelloMonotonicNs = 1_000;
    public const long HelloUnixNs = 1_700_000_000_000_001_000;

    /// <summary>The agent's time when the shim's clock reads <paramref name="monotonicNs"/>.</summary>
    public static DateTimeOffset AgentTimeAt(long monotonicNs) => ClockMapping.FromUnixNs(HelloUnixNs + monotonicNs - HelloMonotonicNs);

    public SessionScript(ProfileStore? store = null, SessionLimits? limits = null, TimeProvider? time = null,
        long pid = 4242, string serviceName = "", string[]? argv = null, IProcessObserver? observer = null,
        AggregateMemoryBudget? budget = null, Redactor? redactor = null, string mode = "full", string[]? exclude = null,
        TimelineSettings? timeline = null, InvocationCounter? invocations = null, bool countsInvocations = false)
    {
        Session = new ProcessSession(store, limits, time, observer)
        {
            MemoryBudget = budget, Redactor = redactor ?? Redactor.Default, Timeline = timeline, Invocations = invocations,
        };
        var hello = new Hello
        {
            ProtocolVersion = 1,
            ShimVersion = "0.1.0",
            Pid = pid,
            ParentPid = 1,
            ProcessStartUnixNs = 1_700_000_000_000_000_000,
            Executable = "/usr/bin/python3.12",
            PythonImplementation = "cpython",
            PythonVersion = "3.12.1",
            HostName = "host-1",
            ServiceName = serviceName,
            ClockMonotonicNs = HelloMonotonicNs,
            ClockUnixNs = HelloUnixNs,
            Mode = mode,
            ToolId = 2,
            WorkingDirectory = WorkingDirectory,
            CountsInvocations = countsInvocations,
        };
        hello.Argv.Add(argv ?? ["/srv/app/app.py", "--port", "8080"]);
        hello.Exclude.Add(exclude ?? []);
        Session.OnHello(hello);
    }

    public ProcessSession Session { get; }
    public ProcessProfile Profile => Session.Profile!;

    public SessionScript Code(uint id, string qualifiedName, string file = "/srv/app/app.py", uint line = 1, uint kindFlags = 0,
        bool readyOn = false)
    {
        var definitions = new Definitions();
        definitions.Codes.Add(new CodeDefinition
        {
            Id = id, QualifiedName = qualifiedName, FileName = file, FirstLine = line, Module = "app", KindFlags = kindFlags,
            ReadyOn = readyOn,
        });
        Session.OnDefinitions(definitions);
        return this;
    }

    public SessionScript Thread(uint id, string name, bool isMain = false)
    {
        var definitions = new Definitions();
        definitions.Threads.Add(new ThreadDefinition
        {
            Id = id, Ident = 140_000_000u + id, NativeId = 9_000 + id, Name = name, IsMain = isMain,
        });
        Session.OnDefinitions(definitions);
        return this;
    }

    public SessionScript Start(long ts, uint code, uint thread = 1) => Event(ts, code, EventKind.Start, thread);
    public SessionScript Resume(long ts, uint code, uint thread = 1) => Event(ts, code, EventKind.Resume, thread);
    public SessionScript Throw(long ts, uint code, uint thread = 1) => Event(ts, code, EventKind.Throw, thread);
    public SessionScript Return(long ts, uint code, uint thread = 1) => Event(ts, code, EventKind.Return, thread);
    public SessionScript Yield(long ts, uint code, uint thread = 1) => Event(ts, code, EventKind.Yield, thread);
    public SessionScript Unwind(long ts, uint code, uint thread = 1) => Event(ts, code, EventKind.Unwind, thread);
    public SessionScript Seed(long ts, uint code, uint thread = 1) => Event(ts, code, EventKind.Seed, thread);
    public SessionScript WindowStart(long ts) => Event(ts, 0, EventKind.WindowStart, 0);
    public SessionScript WindowEnd(long ts) => Event(ts, 0, EventKind.WindowEnd, 0);
    public SessionScript InvocationWindowStart(long ts) => Event(ts, 0, EventKind.InvocationWindowStart, 0);
    public SessionScript InvocationWindowEnd(long ts) => Event(ts, 0, EventKind.InvocationWindowEnd, 0);

    public SessionScript Event(long ts, uint code, EventKind kind, uint thread = 1)
    {
        Span<byte> record = stackalloc byte[WireFormat.EventRecordSize];
        new EventRecord((ulong)ts, thread, code, kind).WriteTo(record);
        Session.OnEvents(record);
        return this;
    }

    /// <summary>Sends one EXCEPTIONS frame's content.</summary>
    public SessionScript Exceptions(IEnumerable<ExceptionRecord>? records = null, IEnumerable<ExceptionTally>? tallies = null)
    {
        var exceptions = new Exceptions();
        exceptions.Records.Add(records ?? []);
        exceptions.Tallies.Add(tallies ?? []);
        Session.OnExceptions(exceptions);
        return this;
    }

    public SessionScript Raise(ExceptionRecord record) => Exceptions(records: [record]);

    public SessionScript Tally(string typeName, uint code, uint line, ExceptionFate fate, ulong count)
        => Exceptions(tallies: [new ExceptionTally { TypeName = typeName, RaisedAt = new Location { CodeId = code, Line = line }, Fate = fate, Count = count }]);

    public SessionScript Stats(ulong recorded, ulong dropped, ulong invocationsEnded = 0)
    {
        Session.OnStats(new Stats { EventsRecorded = recorded, EventsDropped = dropped, EventsSent = recorded - dropped, InvocationsEnded = invocationsEnded });
        return this;
    }

    public SessionScript Goodbye(long endMonotonicNs = 0, Goodbye.Types.Reason reason = Protocol.Messages.Goodbye.Types.Reason.Exit)
    {
        Session.OnGoodbye(new Goodbye { Reason = reason, EndMonotonicNs = endMonotonicNs });
        return this;
    }

    public ProcessProfile Complete(ConnectionEnd? end = null)
    {
        Session.Complete(end ?? ConnectionEnd.Goodbye);
        return Profile;
    }

    public ThreadProfile ThreadNamed(string name) => Profile.Threads.Single(thread => thread.Name == name);
}

/// <summary>Finds nodes of a call tree by their function names.</summary>
public static class TreeAssertions
{
    /// <summary>The node reached from <paramref name="root"/> through functions with these qualified names.</summary>
    public static CallNode At(this CallNode root, params string[] qualifiedNames)
    {
        var node = root;
        foreach (var name in qualifiedNames)
        {
            var matches = node.Children.Where(child => child.Function?.QualifiedName == name).ToArray();
            Assert.True(matches.Length == 1,
                $"expected one child '{name}' under '{node.Name}', found {matches.Length}: " +
                string.Join(", ", node.Children.Select(child => child.Name)));
            node = matches[0];
        }
        return node;
    }

    /// <summary>Asserts calls, resumes, self and total of a node.</summary>
    public static void Has(this CallNode node, long calls, long resumes, long selfNs, long totalNs)
        => Assert.Equal((calls, resumes, selfNs, totalNs), (node.Calls, node.Resumes, node.SelfNs, node.TotalNs));

    /// <summary>Every node's self plus its children's totals equals its total (for function nodes).</summary>
    public static void AssertConsistent(this CallNode root)
    {
        var pending = new Stack<CallNode>();
        pending.Push(root);
        while (pending.TryPop(out var node))
        {
            var childTotals = node.Children.Sum(child => child.TotalNs);
            var expected = node.Function is null ? childTotals : node.SelfNs + childTotals;
            Assert.True(expected == node.TotalNs, $"{node.Name}: total {node.TotalNs}, self+children {expected}");
            foreach (var child in node.Children) pending.Push(child);
        }
    }
}

/// <summary>Exception records for scripted sessions, in the shape the shim sends them.</summary>
public static class ExceptionRecords
{
    public static Location At(uint code, uint line) => new() { CodeId = code, Line = line };

    /// <summary>
    /// A record raised at the last of <paramref name="stack"/> (code, line pairs, outermost first), with a detail
    /// whose traceback is the same frames.
    /// </summary>
    public static ExceptionRecord Record(string type, string message, (uint Code, uint Line)[] stack,
        ExceptionFate fate = ExceptionFate.FateHandled, long raisedNs = 0, uint thread = 1, Location? handledAt = null,
        string[]? notes = null)
    {
        var detail = new ExceptionDetail { TypeName = type, Message = message };
        detail.Notes.Add(notes ?? []);
        var record = new ExceptionRecord
        {
            ThreadId = thread, RaisedNs = raisedNs, FateNs = raisedNs == 0 ? 0 : raisedNs + 100, Fate = fate,
            HandledAt = handledAt, Detail = detail,
        };
        foreach (var (code, line) in stack)
        {
            record.Stack.Add(At(code, line));
            detail.Traceback.Add(At(code, line));
        }
        return record;
    }
}

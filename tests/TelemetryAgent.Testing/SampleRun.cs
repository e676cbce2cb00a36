using Microsoft.Extensions.Time.Testing;
using TelemetryAgent.Profiling;
using TelemetryAgent.Protocol.Messages;
using TelemetryAgent.Sessions;

namespace TelemetryAgent.Testing;

/// <summary>
/// A fixed aggregate of two processes, built by scripted sessions: the input of the golden output tests.
/// "checkout" (pid 4242) says goodbye with a frame still open; it has two threads, recursion, a generator,
/// library code and exceptions: a handled one with tallies of more, one that escaped a thread with its cause, an
/// exception group that ended the program, a library error handled by the program, and one raised and handled
/// inside library code (with tallies, the largest group, yet listed after the program's). "worker" (pid 4300) dies
/// without goodbye after an implicit and an unmatched exit and reports dropped events.
/// </summary>
public static class SampleRun
{
    public static readonly DateTimeOffset Start = new(2025, 3, 14, 9, 26, 53, TimeSpan.Zero);

    /// <summary>The two completed profiles, the store they were published to, and the clock (which moves only when told).</summary>
    public static (IReadOnlyList<ProcessProfile> Profiles, ProfileStore Store, FakeTimeProvider Time) Build()
    {
        var time = new FakeTimeProvider(Start);
        var store = new ProfileStore();

        var checkout = new SessionScript(store, time: time, pid: 4242, serviceName: "checkout")
            .Thread(1, "MainThread", isMain: true)
            .Code(1, "<module>", "/srv/app/app.py", 1)
            .Code(2, "handle_order", "/srv/app/handlers.py", 10)
            .Code(3, "fib", "/srv/app/mathx.py", 3)
            .Code(4, "loads", "/usr/lib/python3.12/json/__init__.py", 299)
            .Code(5, "rows", "/srv/app/db.py", 20, kindFlags: 1)
            .Code(6, "Session.request", "/opt/venv/lib/python3.12/site-packages/requests/sessions.py", 500)
            .Code(7, "validate", "/srv/app/handlers.py", 40);
        time.Advance(TimeSpan.FromMilliseconds(2));
        checkout
            .Start(1_000, 1)
            .Start(2_000, 2)
            .Start(3_000, 3).Start(3_500, 3).Start(3_700, 3).Return(3_900, 3).Return(4_200, 3).Return(5_000, 3)
            .Start(5_000, 4).Return(9_000, 4)
            .Start(9_000, 5).Yield(9_400, 5).Resume(9_600, 5).Yield(9_900, 5).Resume(10_000, 5).Return(10_100, 5)
            .Start(10_200, 7).Unwind(10_800, 7)
            .Return(11_000, 2)
            .Thread(2, "ThreadPoolExecutor-0_0")
            .Start(4_000, 6, thread: 2).Start(4_100, 4, thread: 2).Return(6_100, 4, thread: 2).Return(8_000, 6, thread: 2)
            .Start(12_000, 2)
            .Start(12_500, 3).Return(13_500, 3)
            .Exceptions(records: [HandledValueError(), RequestFailure(), OrdersFailed(), CacheMiss(), BadJson()],
                tallies:
                [
                    new ExceptionTally { TypeName = "builtins.ValueError", RaisedAt = At(7, 44), Fate = ExceptionFate.FateHandled, Count = 25 },
                    new ExceptionTally { TypeName = "builtins.KeyError", RaisedAt = At(4, 340), Fate = ExceptionFate.FateHandled, Count = 40 },
                ])
            .Stats(recorded: 40, dropped: 0)
            .Goodbye(endMonotonicNs: 15_000);
        time.Advance(TimeSpan.FromMilliseconds(1_500));
        checkout.Complete(ConnectionEnd.Goodbye);

        time.Advance(TimeSpan.FromMilliseconds(100));
        var worker = new SessionScript(store, time: time, pid: 4300, argv: ["/srv/app/worker.py", "--queue", "orders"])
            .Thread(1, "MainThread", isMain: true)
            .Code(1, "main", "/srv/app/worker.py", 5)
            .Code(2, "poll", "/srv/app/worker.py", 30)
            .Code(3, "decode", "<frozen codecs>", 1)
            .Start(100_000, 1)
            .Start(100_500, 2).Start(101_000, 3).Return(103_000, 2)   // decode's exit was lost: implicit exit
            .Return(103_500, 3)                                       // not on the stack any more: unmatched
            .Start(104_000, 2).Return(104_300, 2)
            .Stats(recorded: 60, dropped: 5);
        time.Advance(TimeSpan.FromMilliseconds(800));
        worker.Complete(ConnectionEnd.EndOfStream);

        time.Advance(TimeSpan.FromMilliseconds(50));
        return (store.Snapshot().Completed, store, time);
    }

    private static Location At(uint code, uint line) => ExceptionRecords.At(code, line);

    /// <summary>validate raises, handle_order handles it.</summary>
    private static ExceptionRecord HandledValueError()
    {
        var record = ExceptionRecords.Record("builtins.ValueError", "quantity must be positive", [(1, 12), (2, 15), (7, 44)],
            raisedNs: 10_700, handledAt: At(2, 17), notes: ["order 1001", "line 3 of the basket"]);
        record.FramesUnwound = 1;
        record.Detail.Traceback.RemoveAt(0);
        return record;
    }

    /// <summary>Raised and handled inside json (library code), 41 times with the tallies: listed after the program's groups.</summary>
    private static ExceptionRecord CacheMiss()
        => ExceptionRecords.Record("builtins.KeyError", "'ttl'", [(1, 12), (2, 15), (4, 340)], raisedNs: 5_500, handledAt: At(4, 341));

    /// <summary>Raised in json, handled by handle_order: it involves the program.</summary>
    private static ExceptionRecord BadJson()
        => ExceptionRecords.Record("json.decoder.JSONDecodeError", "Expecting value: line 1 column 1 (char 0)", [(1, 12), (2, 15), (4, 355)],
            raisedNs: 6_000, handledAt: At(2, 16));

    /// <summary>A library error with its cause escapes the pool thread.</summary>
    private static ExceptionRecord RequestFailure() => new()
    {
        ThreadId = 2, RaisedNs = 7_000, FateNs = 8_000, Fate = ExceptionFate.FateEscapedThread,
        Stack = { At(6, 520) }, FramesUnwound = 1,
        Detail = new ExceptionDetail
        {
            TypeName = "requests.exceptions.ConnectionError", Message = "HTTPConnectionPool(host='stock', port=80): Max retries exceeded",
            Traceback = { At(6, 520) },
            Cause = new ExceptionDetail
            {
                TypeName = "builtins.ConnectionRefusedError", Message = "[Errno 111] Connection refused", Traceback = { At(6, 530) },
            },
            SuppressContext = true,
        },
    };

    /// <summary>An exception group of two members ends the program; its message could not be captured safely.</summary>
    private static ExceptionRecord OrdersFailed() => new()
    {
        ThreadId = 1, RaisedNs = 14_000, FateNs = 14_500, Fate = ExceptionFate.FateEscapedProgram,
        Stack = { At(1, 30) },
        Detail = new ExceptionDetail
        {
            TypeName = "builtins.ExceptionGroup", Message = "2 orders failed (2 sub-exceptions)", Traceback = { At(1, 30) },
            Notes = { "batch 7" },
            Members =
            {
                new ExceptionDetail { TypeName = "builtins.ValueError", Message = "quantity must be positive", Traceback = { At(2, 15), At(7, 44) } },
                new ExceptionDetail
                {
                    TypeName = "app.errors.OutOfStock", MessageStatus = ExceptionDetail.Types.MessageStatus.MessageUnavailable,
                    Context = new ExceptionDetail { TypeName = "builtins.KeyError", Message = "'sku-9'", Traceback = { At(5, 22) } },
                },
            },
        },
    };
}

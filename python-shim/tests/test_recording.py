"""What the shim records, checked on real programs: real sys.monitoring, real subprocesses,
a real Unix socket (support.RecordingAgent) and an independent decoder."""

import cProfile
import os
import pstats
import sys
import tempfile
import textwrap
import unittest

from tests import support

PRELUDE = "import telemetry_shim\nassert telemetry_shim.start(), 'shim did not start'\n"


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


class TracedProgram:
    """Runs `source` in a fresh interpreter with the shim started first; one connection expected."""

    def __init__(self, test, source, prelude=PRELUDE, env=None, connections=1):
        with support.RecordingAgent() as agent:
            full_env = {"TELEMETRY_AGENT_SOCKET": agent.path}
            full_env.update(env or {})
            self.returncode, self.stdout, self.stderr = support.run_python(
                prelude + textwrap.dedent(source), env=full_env)
            test.assertEqual(0, self.returncode, self.stderr)
            self.connections = agent.wait_for(connections, timeout=30)
        self.conn = self.connections[0]
        test.assertIsNone(self.conn.error)
        self.main = self.conn.thread_named("MainThread")


def starts(conn, name, thread_id=None):
    return support.call_counts(conn, thread_id).get(name, 0)


def kinds_of(conn, name):
    return [kind for _, _, c, kind in conn.events if conn.codes[c]["qualified_name"] == name]


class CallCountTests(unittest.TestCase):
    def test_recursion_counts_equal_cprofile(self):
        profiler = cProfile.Profile()
        profiler.runcall(fib, 15)
        cprofile_calls = next(ncalls for (_, _, name), (_, ncalls, *_rest) in pstats.Stats(profiler).stats.items()
                              if name == "fib")
        self.assertEqual(1973, cprofile_calls)
        run = TracedProgram(self, """
            def fib(n):
                return n if n < 2 else fib(n - 1) + fib(n - 2)
            print(fib(15))
            """)
        self.assertEqual("610\n", run.stdout)
        self.assertEqual(cprofile_calls, starts(run.conn, "fib"))
        self.assertEqual(cprofile_calls, kinds_of(run.conn, "fib").count("RETURN"))

    def test_exit_flush_delivers_every_recorded_event(self):
        run = TracedProgram(self, """
            def fib(n):
                return n if n < 2 else fib(n - 1) + fib(n - 2)
            fib(18)
            """)
        goodbye = run.conn.goodbye
        self.assertIsNotNone(goodbye)
        self.assertEqual("REASON_EXIT", goodbye["reason"])
        final = goodbye["final_stats"]
        self.assertEqual(0, final["events_dropped"])
        self.assertEqual(final["events_recorded"], final["events_sent"] + final["events_dropped"])
        self.assertEqual(len(run.conn.events), final["events_sent"])
        self.assertEqual(len(run.conn.frame_types) - 1, final["frames_sent"])
        self.assertEqual(1, final["connects"])
        self.assertEqual(8361, starts(run.conn, "fib"))
        self.assertGreater(goodbye["end_monotonic_ns"], run.conn.events[-1][0] - 1)

    def test_cprofile_still_works_while_the_shim_runs(self):
        # cProfile on 3.12+ sees every thread through one shared stack (its known flaw), so the
        # shim's sender thread running while cProfile profiles can skew cProfile's counts: keep
        # the sender asleep (long flush interval, first tick already done) during the profile.
        run = TracedProgram(self, """
            import cProfile, pstats, time
            time.sleep(0.2)
            def fib(n):
                return n if n < 2 else fib(n - 1) + fib(n - 2)
            profiler = cProfile.Profile()
            profiler.runcall(fib, 12)
            stats = pstats.Stats(profiler).stats
            print(next(v[1] for k, v in stats.items() if k[2] == "fib"))
            """, env={"TELEMETRY_SHIM_FLUSH_INTERVAL_MS": "10000"})
        self.assertEqual("465\n", run.stdout)
        self.assertEqual(465, starts(run.conn, "fib"))


class StackTests(unittest.TestCase):
    def assert_balanced(self, conn, thread_id):
        stack, problems = support.replay_stacks(conn)[thread_id]
        self.assertEqual([], problems)
        self.assertEqual([], [conn.codes[c]["qualified_name"] for c in stack])

    def test_hello_describes_the_process(self):
        run = TracedProgram(self, "import os; print(os.getpid(), os.getppid())",
                            env={"OTEL_SERVICE_NAME": "checkout", "OTEL_RESOURCE_ATTRIBUTES": "team=pay"})
        pid, ppid = map(int, run.stdout.split())
        hello = run.conn.hello
        self.assertEqual((1, pid, ppid), (hello["protocol_version"], hello["pid"], hello["parent_pid"]))
        self.assertEqual(("checkout", "team=pay", "full"), (hello["service_name"], hello["resource_attributes"],
                                                            hello["mode"]))
        self.assertEqual(("cpython", "0.1.0"), (hello["python_implementation"], hello["shim_version"]))
        self.assertIn(hello["tool_id"], (3, 4, 5))
        self.assertEqual(["-c"], hello["argv"])
        self.assertTrue(hello["python_version"].startswith("3.1"))
        self.assertGreater(hello["clock_unix_ns"], 1_600_000_000 * 10**9)
        self.assertLessEqual(hello["process_start_unix_ns"], hello["clock_unix_ns"])
        self.assertGreater(hello["process_start_unix_ns"], hello["clock_unix_ns"] - 60 * 10**9)
        self.assertEqual(os.getcwd(), hello["working_directory"])

    def test_hello_argv_is_the_one_at_start_even_when_the_agent_comes_later(self):
        # multiprocessing's spawn child replaces sys.argv with its parent's: a HELLO sent after
        # that must still name the process as it was started.
        with tempfile.TemporaryDirectory(prefix="tashim-") as folder:
            socket_path, ready, go = (os.path.join(folder, name) for name in ("agent.sock", "ready", "go"))
            program = support.start_python(PRELUDE + textwrap.dedent("""
                import os, sys, time
                sys.argv[:] = ["replaced.py"]
                open(%r, "w").close()
                deadline = time.monotonic() + 30
                while not os.path.exists(%r) and time.monotonic() < deadline:
                    time.sleep(0.01)
                """ % (ready, go)), env={"TELEMETRY_AGENT_SOCKET": socket_path})
            try:
                support.wait_for_file(ready, program)
                with support.RecordingAgent(socket_path) as agent:
                    agent.wait_for_accepted(1)
                    open(go, "w").close()
                    _, stderr = program.communicate(timeout=60)
                    self.assertEqual(0, program.returncode, stderr)
                    conn = agent.wait_for(1)[0]
            finally:
                program.kill()
                program.wait()
        self.assertEqual(["-c"], conn.hello["argv"])

    def test_main_thread_balanced_and_module_seeded(self):
        run = TracedProgram(self, """
            def fib(n):
                return n if n < 2 else fib(n - 1) + fib(n - 2)
            fib(5)
            """)
        first = run.conn.events[0]
        self.assertEqual("SEED", first[3])
        self.assertEqual("<module>", run.conn.qualified_name(first[2]))
        self.assert_balanced(run.conn, run.main)
        self.assertTrue(run.conn.threads[run.main]["is_main"])

    def test_generator_starts_once_and_resumes_per_next(self):
        run = TracedProgram(self, """
            def numbers():
                yield 1
                yield 2
                yield 3
            g = numbers()
            total = next(g) + next(g) + next(g)
            try:
                next(g)
            except StopIteration:
                pass
            """)
        self.assertEqual(["START", "YIELD", "RESUME", "YIELD", "RESUME", "YIELD", "RESUME", "RETURN"],
                         kinds_of(run.conn, "numbers"))
        flags = [c["kind_flags"] for c in run.conn.codes.values() if c["qualified_name"] == "numbers"]
        self.assertEqual([1], flags)
        self.assert_balanced(run.conn, run.main)

    def test_throw_into_a_suspended_generator(self):
        run = TracedProgram(self, """
            def worker():
                try:
                    yield 1
                except ValueError:
                    yield 2
            g = worker()
            next(g)
            g.throw(ValueError)
            g.close()
            """)
        kinds = kinds_of(run.conn, "worker")
        self.assertEqual(["START", "YIELD", "THROW", "YIELD"], kinds[:4])
        # close() throws GeneratorExit in: THROW then UNWIND (3.12) -- the frame ends either way.
        self.assertIn(kinds[-1], ("UNWIND", "RETURN"))
        self.assert_balanced(run.conn, run.main)

    def test_async_function(self):
        run = TracedProgram(self, """
            import asyncio
            async def child(i):
                await asyncio.sleep(0)
                return i
            async def main():
                return sum(await asyncio.gather(*(child(i) for i in range(3))))
            print(asyncio.run(main()))
            """)
        self.assertEqual("3\n", run.stdout)
        self.assertEqual(1, starts(run.conn, "main"))
        self.assertEqual(3, starts(run.conn, "child"))
        self.assertEqual(3, kinds_of(run.conn, "child").count("RESUME"))
        self.assertEqual(3, kinds_of(run.conn, "child").count("RETURN"))
        self.assertEqual({2}, {c["kind_flags"] for c in run.conn.codes.values() if c["qualified_name"] == "child"})
        self.assert_balanced(run.conn, run.main)

    def test_exceptions_unwind_frames(self):
        run = TracedProgram(self, """
            def inner(n):
                if n == 0:
                    raise KeyError(n)
                return inner(n - 1)
            def outer():
                try:
                    inner(3)
                except KeyError:
                    return "caught"
            print(outer())
            """)
        self.assertEqual("caught\n", run.stdout)
        self.assertEqual(["START"] * 4 + ["UNWIND"] * 4, kinds_of(run.conn, "inner"))
        self.assert_balanced(run.conn, run.main)

    def test_two_named_threads_have_their_own_ids_and_balanced_stacks(self):
        run = TracedProgram(self, """
            import threading, time
            def fib(n):
                return n if n < 2 else fib(n - 1) + fib(n - 2)
            def alpha():
                fib(10)
                threading.current_thread().name = "alpha-renamed"
                time.sleep(0.3)  # the sender checks names every tick (50 ms)
            threads = [threading.Thread(target=alpha, name="alpha"),
                       threading.Thread(target=fib, args=(12,), name="beta")]
            for t in threads: t.start()
            for t in threads: t.join()
            """)
        conn = run.conn
        alpha, beta = conn.thread_named("alpha-renamed"), conn.thread_named("beta")
        self.assertIsNotNone(alpha)
        self.assertIsNotNone(beta)
        self.assertEqual(3, len({run.main, alpha, beta}))
        self.assertEqual(177, starts(conn, "fib", alpha))
        self.assertEqual(465, starts(conn, "fib", beta))
        self.assertEqual(0, starts(conn, "fib", run.main))
        for thread_id in (alpha, beta, run.main):
            self.assert_balanced(conn, thread_id)
        names = [t["name"] for t in conn.thread_history if t["id"] == alpha]
        self.assertEqual(["alpha", "alpha-renamed"], names)
        self.assertFalse(conn.threads[alpha]["is_main"])
        self.assertNotEqual(conn.threads[alpha]["native_id"], conn.threads[beta]["native_id"])

    def test_sequential_threads_never_share_an_id(self):
        run = TracedProgram(self, """
            import threading
            for i in range(5):
                t = threading.Thread(target=sum, args=([1],), name="seq-%d" % i)
                t.start(); t.join()
            """)
        ids = {run.conn.thread_named("seq-%d" % i) for i in range(5)}
        self.assertEqual(5, len(ids))
        self.assertNotIn(None, ids)

    def test_start_in_the_middle_of_a_call_stack_seeds_running_frames(self):
        run = TracedProgram(self, """
            import telemetry_shim
            def leaf():
                return 1
            def middle():
                telemetry_shim.start()
                return leaf()
            def top():
                return middle()
            top()
            """, prelude="")
        names = [(run.conn.qualified_name(c), k) for _, t, c, k in run.conn.events if t == run.main]
        self.assertEqual([("<module>", "SEED"), ("top", "SEED"), ("middle", "SEED"), ("leaf", "START"),
                          ("leaf", "RETURN"), ("middle", "RETURN"), ("top", "RETURN")], names[:7])
        self.assertFalse(any("telemetry_shim" in c["file_name"] for c in run.conn.codes.values()))
        self.assert_balanced(run.conn, run.main)

    def test_thread_already_running_is_seeded_on_its_first_event(self):
        run = TracedProgram(self, """
            import threading, telemetry_shim
            go, done = threading.Event(), threading.Event()
            def spin():
                go.wait()
                sum(range(3))
                done.set()
            def body():
                spin()
            t = threading.Thread(target=body, name="early")
            t.start()
            telemetry_shim.start()
            go.set(); t.join()
            """, prelude="")
        early = run.conn.thread_named("early")
        names = [(run.conn.qualified_name(c), k) for _, t, c, k in run.conn.events if t == early]
        seeds = [n for n, k in names if k == "SEED"]
        self.assertEqual(["Thread._bootstrap", "Thread._bootstrap_inner", "Thread.run", "body", "spin"], seeds[:5])
        self.assert_balanced(run.conn, early)


if __name__ == "__main__":
    unittest.main()

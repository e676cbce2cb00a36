"""The shim never changes the program: tool ids, absent or slow agents, a full buffer, fork,
internal errors, stop/start. Real subprocesses and real sockets."""

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import unittest

from tests import support

FIB = """
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)
"""


def run(*parts, env=None, timeout=60):
    """Runs the program made of `parts`, each dedented on its own."""
    return support.run_python("\n".join(textwrap.dedent(part) for part in parts), env=env, timeout=timeout)


def fib_starts(conn):
    return support.call_counts(conn).get("fib", 0)


class ToolIdTests(unittest.TestCase):
    def test_takes_4_when_3_is_taken(self):
        with support.RecordingAgent() as agent:
            code, out, err = run("""
                import sys, telemetry_shim
                sys.monitoring.use_tool_id(3, "other-a")
                print(telemetry_shim.start(), sys.monitoring.get_tool(3), sys.monitoring.get_tool(4))
                """, FIB, "fib(6)\n", env={"TELEMETRY_AGENT_SOCKET": agent.path})
            self.assertEqual((0, "True other-a telemetry_shim\n", ""), (code, out, err))
            conn = agent.wait_for(1)[0]
        self.assertEqual(4, conn.hello["tool_id"])
        self.assertEqual(25, fib_starts(conn))

    def test_3_and_4_taken_runs_untraced_with_one_warning_and_leaves_the_optimizer_id_free(self):
        source = """
            import sys, telemetry_shim
            for i in (3, 4):
                sys.monitoring.use_tool_id(i, "other")
            print(telemetry_shim.start(), telemetry_shim.start(), telemetry_shim.is_active())
            """
        tail = FIB + "print(fib(10))\nprint([sys.monitoring.get_tool(i) for i in range(6)])\n"
        with support.RecordingAgent() as agent:
            code, out, err = run(source, tail, env={"TELEMETRY_AGENT_SOCKET": agent.path})
            self.assertEqual([], agent.connections_so_far())
        self.assertEqual(0, code)
        self.assertEqual("False False False\n55\n[None, None, None, 'other', 'other', None]\n", out)
        self.assertEqual(1, len(err.splitlines()), err)
        self.assertIn("no free sys.monitoring tool id (3 and 4 are in use", err)

    def test_never_takes_ids_0_1_2_and_honours_the_env_choice(self):
        with support.RecordingAgent() as agent:
            code, out, err = run("""
                import sys, telemetry_shim
                telemetry_shim.start()
                print([sys.monitoring.get_tool(i) for i in range(6)])
                """, env={"TELEMETRY_AGENT_SOCKET": agent.path, "TELEMETRY_SHIM_TOOL_ID": "4"})
            self.assertEqual((0, ""), (code, err))
            conn = agent.wait_for(1)[0]
        self.assertEqual("[None, None, None, None, 'telemetry_shim', None]\n", out)
        self.assertEqual(4, conn.hello["tool_id"])

    def test_stop_frees_the_tool_id_and_start_works_again(self):
        with support.RecordingAgent() as agent:
            code, out, err = run("""
                import sys, telemetry_shim
                """, FIB, """
                telemetry_shim.start(); fib(5); telemetry_shim.stop()
                print(telemetry_shim.is_active(), sys.monitoring.get_tool(3))
                fib(5)
                telemetry_shim.start(); fib(6)
                print(telemetry_shim.is_active())
                """, env={"TELEMETRY_AGENT_SOCKET": agent.path})
            self.assertEqual((0, "False None\nTrue\n", ""), (code, out, err))
            first, second = agent.wait_for(2)
        self.assertEqual("REASON_DETACH", first.goodbye["reason"])
        self.assertEqual(15, fib_starts(first))
        self.assertEqual("REASON_EXIT", second.goodbye["reason"])
        self.assertEqual(25, fib_starts(second))


class UnchangedProgramTests(unittest.TestCase):
    PROGRAM = FIB + """
import sys, threading
print(fib(16), sys.getrecursionlimit(), sys.getprofile(), sys.gettrace(), threading.active_count())
sys.stderr.write("to stderr\\n")
sys.exit(3)
"""

    def test_agent_absent_output_and_exit_code_unchanged(self):
        plain = run(self.PROGRAM)
        missing = os.path.join(tempfile.mkdtemp(), "nobody.sock")
        traced = run("import telemetry_shim; assert telemetry_shim.start()", self.PROGRAM,
                     env={"TELEMETRY_AGENT_SOCKET": missing})
        self.assertEqual(3, plain[0])
        self.assertEqual(plain[:2], traced[:2])
        lines = traced[2].splitlines()
        self.assertEqual(2, len(lines), traced[2])  # the program's own line plus at most one warning
        self.assertIn("to stderr", lines)
        self.assertTrue(any("agent not reachable" in line for line in lines))

    def test_agent_present_output_and_exit_code_unchanged(self):
        plain = run(self.PROGRAM)
        with support.RecordingAgent() as agent:
            traced = run("import telemetry_shim; assert telemetry_shim.start()", self.PROGRAM,
                         env={"TELEMETRY_AGENT_SOCKET": agent.path})
            conn = agent.wait_for(1)[0]
        self.assertEqual(plain, traced)
        self.assertEqual(3193, fib_starts(conn))
        self.assertEqual("REASON_EXIT", conn.goodbye["reason"])

    def test_python_311_without_sys_monitoring_warns_once_and_runs(self):
        python311 = shutil.which("python3.11") or "/usr/bin/python3"
        version = subprocess.run([python311, "-c", "import sys; print(sys.version_info >= (3, 12))"],
                                 capture_output=True, text=True).stdout.strip()
        if version != "False":
            self.skipTest("no Python < 3.12 available")
        env = dict(os.environ, PYTHONPATH=support.SHIM_ROOT)
        result = subprocess.run([python311, "-c", "import telemetry_shim as t; print(t.start(), t.start(), "
                                 "t.is_active(), t.__version__); t.stop()"],
                                capture_output=True, text=True, env=env, timeout=30)
        self.assertEqual((0, "False False False 0.1.0\n"), (result.returncode, result.stdout))
        self.assertEqual(1, len(result.stderr.splitlines()), result.stderr)


class DeliveryTests(unittest.TestCase):
    def test_agent_that_appears_later_gets_a_new_session_with_drops_counted(self):
        tmp = tempfile.mkdtemp()
        path = os.path.join(tmp, "late.sock")
        try:
            program = """
                import os, sys, time, telemetry_shim
                """ + FIB.replace("\n", "\n                ") + """
                def phase_one():
                    fib(12)
                def phase_two():
                    fib(11)
                telemetry_shim.start()
                phase_one()
                time.sleep(0.3)          # the sender finds no agent and drops phase one
                print("ready", flush=True)
                sys.stdin.readline()     # the test starts the agent now
                deadline = time.time() + 10
                while time.time() < deadline and not os.path.exists(sys.argv[1] + ".connected"):
                    time.sleep(0.05)
                phase_two()
                """
            env = dict(os.environ, PYTHONPATH=support.SHIM_ROOT, TELEMETRY_AGENT_SOCKET=path,
                       PYTHONDONTWRITEBYTECODE="1")
            proc = subprocess.Popen([support.find_python(), "-c", textwrap.dedent(program), path],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, env=env)
            try:
                self.assertEqual("ready\n", proc.stdout.readline())
                with support.RecordingAgent(path) as agent:
                    proc.stdin.write("go\n")
                    proc.stdin.flush()
                    agent.wait_for_accepted(1, timeout=15)
                    open(path + ".connected", "w").close()
                    out, err = proc.communicate(timeout=30)
                    conn = agent.wait_for(1)[0]
            finally:
                if proc.poll() is None:
                    proc.kill()
            self.assertEqual(0, proc.returncode, err)
            self.assertEqual(1, len(err.splitlines()), err)
            self.assertIsNone(conn.error)
            final = conn.goodbye["final_stats"]
            self.assertGreater(final["events_dropped"], 2 * 465)  # all of phase one at least
            self.assertEqual(final["events_recorded"], final["events_sent"] + final["events_dropped"])
            self.assertEqual(1, final["connects"])
            counts = support.call_counts(conn)
            self.assertEqual(287, counts.get("fib"))
            self.assertNotIn("phase_one", counts)
            # The new session re-seeded the main thread, so its stack replays cleanly.
            main = conn.thread_named("MainThread")
            stack, problems = support.replay_stacks(conn)[main]
            self.assertEqual(([], []), (stack, problems))
            self.assertEqual("SEED", next(k for _, t, _, k in conn.events if t == main))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def test_full_buffer_drops_and_counts_and_stays_bounded(self):
        with support.RecordingAgent() as agent:
            code, out, err = run("""
                import time, telemetry_shim
                telemetry_shim.start()
                time.sleep(0.3)  # connected; the next tick is a long way off
                """, FIB, "fib(20)\n", env={"TELEMETRY_AGENT_SOCKET": agent.path,
                                          "TELEMETRY_SHIM_BUFFER_EVENTS": "2048",
                                          "TELEMETRY_SHIM_FLUSH_INTERVAL_MS": "5000"})
            self.assertEqual((0, "", ""), (code, out, err))
            conn = agent.wait_for(1)[0]
        final = conn.goodbye["final_stats"]
        fib_events = 2 * 21891
        self.assertGreaterEqual(final["events_dropped"], fib_events - 2048)
        self.assertLessEqual(final["events_sent"], 2048 + 64)  # the buffer never held more
        self.assertEqual(final["events_recorded"], final["events_sent"] + final["events_dropped"])
        self.assertEqual(len(conn.events), final["events_sent"])

    def test_agent_hanging_up_never_kills_a_program_that_restored_sigpipe(self):
        # SIG_DFL for SIGPIPE (what `python ... | head` style tools do): a plain send() to a
        # closed socket would kill the process with exit status 141.
        with support.HangingUpAgent() as agent:
            code, out, err = run("""
                import signal, time, telemetry_shim
                signal.signal(signal.SIGPIPE, signal.SIG_DFL)
                telemetry_shim.start()
                """, FIB, """
                deadline = time.monotonic() + 0.6  # a dozen ticks, each writing to a closed connection
                while time.monotonic() < deadline:
                    fib(10)
                print("finished", flush=True)
                raise SystemExit(7)
                """, env={"TELEMETRY_AGENT_SOCKET": agent.path, "TELEMETRY_SHIM_FLUSH_INTERVAL_MS": "20"})
            hung_up = agent.hung_up
        self.assertEqual((7, "finished\n", ""), (code, out, err))
        self.assertGreaterEqual(hung_up, 1)

    def test_internal_error_turns_the_shim_off_and_the_program_goes_on(self):
        with support.RecordingAgent() as agent:
            code, out, err = run("""
                import telemetry_shim
                from telemetry_shim import _control
                telemetry_shim.start()
                """, FIB, """
                fib(5)
                _control._shim.recorder.codes._next_code_id = None  # the next new code fails inside the shim
                def fresh():
                    return fib(8)
                print(fresh(), telemetry_shim.is_active())
                """, env={"TELEMETRY_AGENT_SOCKET": agent.path})
            conn = agent.wait_for(1)[0]
        self.assertEqual((0, "21 False\n"), (code, out), err)
        self.assertEqual(1, len(err.splitlines()), err)
        self.assertIn("internal error", err)
        self.assertEqual("REASON_ERROR", conn.goodbye["reason"])
        self.assertIn("TypeError", conn.goodbye["detail"])
        self.assertEqual(1, conn.goodbye["final_stats"]["callback_errors"])
        self.assertEqual(15, fib_starts(conn))

    def test_program_exceptions_raised_inside_a_callback_still_reach_the_program(self):
        # A signal handler can run while a callback runs; its exception belongs to the program.
        with support.RecordingAgent() as agent:
            code, out, err = run("""
                import signal, telemetry_shim
                class Timeout(Exception):
                    pass
                def on_alarm(signum, frame):
                    raise Timeout()
                signal.signal(signal.SIGALRM, on_alarm)
                telemetry_shim.start()
                def spin():
                    return 1
                signal.setitimer(signal.ITIMER_REAL, 0.05)
                try:
                    while True:
                        spin()
                except Timeout:
                    print("timed out", telemetry_shim.is_active())
                """, env={"TELEMETRY_AGENT_SOCKET": agent.path}, timeout=30)
            agent.wait_for(1)
        self.assertEqual((0, "timed out True\n", ""), (code, out, err))

    def test_fork_child_gets_its_own_connection(self):
        with support.RecordingAgent() as agent:
            code, out, err = run("""
                import os, telemetry_shim
                telemetry_shim.start()
                """, FIB, """
                def in_parent():
                    fib(9)
                def in_child():
                    fib(7)
                fib(5)
                pid = os.fork()
                if pid == 0:
                    in_child()
                else:
                    in_parent()
                    _, status = os.waitpid(pid, 0)
                    print(os.getpid(), pid, os.waitstatus_to_exitcode(status))
                """, env={"TELEMETRY_AGENT_SOCKET": agent.path})
            self.assertEqual(0, code, err)
            conns = agent.wait_for(2)
        parent_pid, child_pid, child_code = map(int, out.split())
        self.assertEqual(0, child_code)
        by_pid = {c.hello["pid"]: c for c in conns}
        self.assertEqual({parent_pid, child_pid}, set(by_pid))
        parent, child = by_pid[parent_pid], by_pid[child_pid]
        self.assertEqual(parent_pid, child.hello["parent_pid"])
        for conn in (parent, child):
            self.assertIsNone(conn.error)
            self.assertEqual("REASON_EXIT", conn.goodbye["reason"])
            final = conn.goodbye["final_stats"]
            self.assertEqual(final["events_recorded"], final["events_sent"] + final["events_dropped"])
            self.assertEqual(1, final["connects"])
        self.assertEqual(15 + 109, fib_starts(parent))  # fib(5) before the fork, fib(9) after
        self.assertEqual(41, fib_starts(child))  # only its own fib(7)
        self.assertNotIn("in_parent", support.call_counts(child))
        main = child.thread_named("MainThread")
        self.assertEqual("SEED", child.events[0][3])
        stack, problems = support.replay_stacks(child)[main]
        self.assertEqual([], problems)

    def test_forking_in_a_tight_loop_prints_no_fork_warning(self):
        # CPython's "multi-threaded, use of fork()" DeprecationWarning (shown for every fork
        # with -W always) must never come from the sender thread: it is gone at every fork,
        # even with no call between two forks (a new sender thread starts at the first call
        # after os.fork() has returned).
        program = textwrap.dedent("""
            import os, sys, telemetry_shim
            telemetry_shim.start()
            """) + FIB + textwrap.dedent("""
            children = []
            for _ in range(5):
                pid = os.fork()
                if pid == 0:
                    fib(6)
                    sys.exit(0)
                children += [pid]
            for pid in children:
                _, status = os.waitpid(pid, 0)
                assert os.waitstatus_to_exitcode(status) == 0
            fib(8)
            print(os.getpid(), *children)
            """)
        with support.RecordingAgent() as agent:
            code, out, err = support.run_python(["-W", "always::DeprecationWarning", "-c", program],
                                                env={"TELEMETRY_AGENT_SOCKET": agent.path})
            self.assertEqual((0, ""), (code, err))
            parent_pid, *child_pids = map(int, out.split())
            conns = agent.wait_for(6)
        by_pid = {c.hello["pid"]: c for c in conns}
        self.assertEqual({parent_pid, *child_pids}, set(by_pid))
        for pid, conn in by_pid.items():
            self.assertIsNone(conn.error)
            self.assertEqual("REASON_EXIT", conn.goodbye["reason"])
            self.assertEqual(67 if pid == parent_pid else 25, fib_starts(conn))
        final = by_pid[parent_pid].goodbye["final_stats"]
        self.assertEqual((0, final["events_recorded"]), (final["events_dropped"], final["events_sent"]))

    def test_multiprocessing_fork_child_flushes_before_os_exit(self):
        with support.RecordingAgent() as agent:
            code, out, err = run("""
                import multiprocessing, telemetry_shim
                """, FIB, """
                def job():
                    fib(7)
                if __name__ == "__main__":
                    telemetry_shim.start()
                    process = multiprocessing.get_context("fork").Process(target=job)
                    process.start(); process.join()
                    print(process.exitcode)
                """, env={"TELEMETRY_AGENT_SOCKET": agent.path})
            self.assertEqual((0, "0\n"), (code, out), err)
            conns = agent.wait_for(2)
        child = next(c for c in conns if c.hello["parent_pid"] != os.getpid())
        self.assertIsNone(child.error)
        self.assertIsNotNone(child.goodbye)
        self.assertEqual("REASON_EXIT", child.goodbye["reason"])
        self.assertEqual(41, fib_starts(child))
        final = child.goodbye["final_stats"]
        self.assertEqual(final["events_recorded"], final["events_sent"] + final["events_dropped"])


if __name__ == "__main__":
    unittest.main()

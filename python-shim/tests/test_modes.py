"""Modes on real processes: burst windows (markers, seeds, balance), exceptions only, the mode
setting and its defaults, code filters, the overhead figures, and a refused set_events."""

import os
import sys
import textwrap
import unittest

from tests import support

# A CPU-bound main thread and a thread that sleeps through every window.
BUSY_AND_IDLE = textwrap.dedent("""
    import threading, time

    def fib(n):
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    def sleeper():
        time.sleep(1.2)

    thread = threading.Thread(target=sleeper, name="sleeper")
    thread.start()
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        fib(12)
    thread.join()
""")

WINDOW_ENV = {"TELEMETRY_SHIM_MODE": "burst", "TELEMETRY_SHIM_WINDOW_MS": "20", "TELEMETRY_SHIM_PERIOD_MS": "150",
              "TELEMETRY_SHIM_BUDGET": "off"}


def windows_of(conn):
    """[(start_ts, end_ts or None, [(ts, thread, code, kind) inside])] and the events outside any window."""
    windows, outside, current = [], [], None
    for event in conn.events:
        kind = event[3]
        if kind == "WINDOW_START":
            if current is not None:
                raise AssertionError("WINDOW_START inside a window")
            current = (event[0], [])
        elif kind == "WINDOW_END":
            if current is None:
                raise AssertionError("WINDOW_END outside a window")
            windows.append((current[0], event[0], current[1]))
            current = None
        elif current is None:
            outside.append(event)
        else:
            current[1].append(event)
    if current is not None:
        windows.append((current[0], None, current[1]))
    return windows, outside


def check_window(test, conn, start, events):
    """Per thread: SEEDs first, all at the window's start; every pop matches the top of the stack."""
    stacks = {}
    for ts, thread, code, kind in events:
        stack = stacks.setdefault(thread, [])
        seeding = not stack or all(k == "SEED" for k in stack[1])
        if kind == "SEED":
            test.assertEqual(start, ts, "a SEED not at its window's start")
            test.assertTrue(seeding, "a SEED after the thread's other events of the window")
        if not stack:
            stack.extend(([], []))
        codes, kinds = stack
        if kind in support.PUSH_KINDS:
            codes.append(code)
            kinds.append(kind)
        else:
            test.assertTrue(codes and codes[-1] == code, "%s of %s does not match the top of %s's stack" % (
                kind, conn.qualified_name(code), conn.threads[thread]["name"]))
            codes.pop()
            kinds.pop()
    return stacks


class RunnerTestCase(support.TempDirTestCase):
    def run_program(self, source, env, args=()):
        """Runs `source` as a script under `python -m telemetry_shim`; returns (connection, stderr)."""
        script = self.write("program.py", source)
        with support.RecordingAgent() as agent:
            code, _, err = support.run_python(["-m", "telemetry_shim", "--socket", agent.path, *args, script], env=env)
            self.assertEqual(0, code, err)
            conn = agent.wait_for(1)[0]
            self.assertTrue(conn.wait_ended(30))
            self.assertIsNone(conn.error)
            return conn, err


class BurstModeTests(RunnerTestCase):
    def test_windows_are_marked_seeded_and_balanced(self):
        conn, _ = self.run_program(BUSY_AND_IDLE, WINDOW_ENV)
        self.assertEqual("burst", conn.hello["mode"])
        self.assertEqual((20_000_000, 1_000_000_000 * 150 // 1000, 0),
                         (conn.hello["window_ns"], conn.hello["period_ns"], conn.hello["overhead_budget_ppm"]))
        windows, outside = windows_of(conn)
        self.assertGreaterEqual(len(windows), 4)
        self.assertLessEqual(len(outside), len(windows), "only a callback running at a window's end lands outside")
        sleeper = conn.thread_named("sleeper")
        main = conn.thread_named("MainThread")
        seeded_sleeper = 0
        for index, (start, end, events) in enumerate(windows):
            self.assertIsNotNone(end, "every window is closed (the last one at stop)")
            if index < len(windows) - 1:  # the last one ends at stop, however soon after its start that comes
                self.assertGreaterEqual(end - start, 1_000_000, "no window is shorter than the shortest allowed")
            stacks = check_window(self, conn, start, events)
            self.assertIn(main, stacks, "the busy thread runs in every window")
            if sleeper in stacks:
                codes, _ = stacks[sleeper]
                names = [conn.qualified_name(c) for c in codes]
                if "sleeper" in names:
                    seeded_sleeper += 1
                    # Seeded by the shim after the window closed: rooted in the thread's bootstrap.
                    self.assertEqual("Thread._bootstrap", names[0])
        self.assertGreaterEqual(seeded_sleeper, 2, "the sleeping thread is seeded in the windows it sleeps through")
        stats = conn.goodbye["final_stats"]
        self.assertEqual(2 * len(windows), stats["event_toggles"])
        self.assertEqual(0, stats["toggles_refused"])
        self.assertGreater(stats["overhead_ns"], 0)
        self.assertGreater(stats["elapsed_ns"], stats["overhead_ns"])

    def test_windows_close_on_time_though_the_program_holds_the_gil(self):
        # A computing program hands the GIL to the sender only after the switch interval (here
        # 10 ms): the sender learns that delay and wakes that much early. Unlearned, every window
        # would last 40 + 10 ms.
        # ~10 windows. Fewer calls per second than fib(12) alone (the computing holds the GIL all the
        # same): this test's agent decodes every event in Python, and a sender blocked on it serves no window.
        busy = BUSY_AND_IDLE.replace("+ 1.0", "+ 2.0").replace("    fib(12)\n", "    fib(4)\n    for _ in range(300): pass\n")
        source = "import sys\nsys.setswitchinterval(0.01)\n" + busy
        env = dict(WINDOW_ENV, TELEMETRY_SHIM_WINDOW_MS="40", TELEMETRY_SHIM_PERIOD_MS="200")
        conn, _ = self.run_program(source, env)
        windows, _ = windows_of(conn)
        lengths = sorted(end - start for start, end, _ in windows[2:-1])  # learnt; not cut by the end
        self.assertGreaterEqual(len(lengths), 2, windows)
        # Waking early never cuts a window short. (How early it wakes is checked below on the scheduler itself:
        # a loaded machine stretches real windows by more than the 10 ms this would tell apart.)
        self.assertGreater(lengths[len(lengths) // 2], 30_000_000, lengths)

    def test_the_sender_learns_how_late_a_close_comes_and_wakes_that_much_early(self):
        # The scheduler alone, with a recorder whose every close comes 10 ms after the sender asks for it (the
        # GIL of a computing program, after its switch interval): windows configured at 40 ms last 50 ms until
        # the latency is learnt, then converge to 40 ms.
        from telemetry_shim._windows import BurstWindows

        class LateRecorder:
            windows_failed = False
            tool_id = 3

            def open_burst_window(self, started_ns):
                return True

            def close_burst_window(self, switch_events=True):
                return self.asked_ns + 10_000_000

        settings = type("Settings", (), {"period_ns": 200_000_000, "budget": 0, "slowdown": 1.0, "window_ns": 40_000_000})
        recorder = LateRecorder()
        windows = BurstWindows(recorder, settings, now_ns=0)
        lengths = []
        for _ in range(8):
            windows.service(windows.next_open_ns, 0, 0, 0.0)  # opens (at the real clock's now)
            self.assertTrue(windows.is_open)
            recorder.asked_ns = windows._close_due_ns()
            self.assertTrue(windows.service(recorder.asked_ns, 0, 0, 0.0))  # closes, 10 ms late
            lengths.append(recorder.asked_ns + 10_000_000 - windows.opened_at_ns)
        self.assertEqual(50_000_000, lengths[0])
        self.assertEqual(sorted(lengths, reverse=True), lengths)
        self.assertLess(lengths[-1], 40_200_000, lengths)
        self.assertGreaterEqual(lengths[-1], 40_000_000, lengths)

    def test_runner_defaults_to_burst_and_run_mode_option_wins(self):
        source = "def f():\n    pass\nfor _ in range(10):\n    f()\n"
        conn, _ = self.run_program(source, {"TELEMETRY_SHIM_MODE": None})
        self.assertEqual("burst", conn.hello["mode"])
        conn, _ = self.run_program(source, {"TELEMETRY_SHIM_MODE": "burst"}, args=("--mode", "full"))
        self.assertEqual("full", conn.hello["mode"])
        self.assertEqual(10, support.call_counts(conn)["f"])
        self.assertNotIn("WINDOW_START", {k for _, _, _, k in conn.events})

    def test_a_bad_setting_is_reported_once_and_the_default_used(self):
        conn, err = self.run_program("pass\n", {"TELEMETRY_SHIM_MODE": "fast", "TELEMETRY_SHIM_BUDGET": "lots"})
        self.assertEqual("burst", conn.hello["mode"])
        self.assertEqual(10_000, conn.hello["overhead_budget_ppm"])
        self.assertEqual(1, err.count("telemetry_shim:"), err)
        self.assertIn("TELEMETRY_SHIM_MODE='fast'", err)
        self.assertIn("TELEMETRY_SHIM_BUDGET='lots'", err)

    def test_budget_shrinks_windows_of_call_heavy_code(self):
        env = dict(WINDOW_ENV, TELEMETRY_SHIM_WINDOW_MS="50", TELEMETRY_SHIM_PERIOD_MS="200",
                   TELEMETRY_SHIM_BUDGET="0.1%")
        conn, _ = self.run_program(BUSY_AND_IDLE, env)
        windows, _ = windows_of(conn)
        self.assertGreaterEqual(len(windows), 2)
        covered = sum(end - start for start, end, _ in windows)
        span = conn.goodbye["end_monotonic_ns"] - windows[0][0]
        # Configured: 25% of the time. 0.1% of 200 ms is 0.2 ms of cost: the shim shortens the
        # windows to 1 ms and lengthens the period.
        self.assertLess(covered / span, 0.12, [end - start for start, end, _ in windows])


class WindowPlanTests(unittest.TestCase):
    """The burst schedule's arithmetic, on a real (not installed) recorder."""

    def windows(self, environ=None):
        from telemetry_shim import SHIM_PACKAGE_DIR
        from telemetry_shim._monitor import Recorder
        from telemetry_shim._settings import read_settings
        from telemetry_shim._windows import BurstWindows

        settings = read_settings(mode="burst", environ=environ or {})
        recorder = Recorder(1024, SHIM_PACKAGE_DIR, lambda: None, burst=True)
        return BurstWindows(recorder, settings, 0)

    def test_a_window_that_caught_nothing_at_most_doubles_the_next(self):
        windows = self.windows()
        self.assertEqual(2_000_000, windows.window_ns)  # the first window is short
        # 5 ms without a call (the program waited): no cost seen, yet the next window may only grow
        # to twice as long, not to a quarter of the period at once.
        windows._adapt(5_000_000, 0, 0, 1_000)
        self.assertLessEqual(windows.window_ns, 10_000_000)
        self.assertEqual(1_000_000_000, windows.period_ns)

    def test_no_window_is_planned_shorter_than_a_close_takes(self):
        windows = self.windows()
        windows.close_latency_ns = 8_000_000  # learnt: the GIL comes 8 ms after the sender asks
        # 20,000 events in a 10 ms window at 1 us each: 2 ms of cost per window-ms. 1% of 1 s allows
        # 5 ms, below the 8 ms a close takes: the period doubles instead.
        windows._adapt(10_000_000, 20_000, 20_000 * 1_000, 1_000)
        self.assertEqual(2_000_000_000, windows.period_ns)
        self.assertGreaterEqual(windows.window_ns, 8_000_000)

    def test_slowdown_stretches_every_interval(self):
        from telemetry_shim import _exceptions
        from telemetry_shim._exceptions import program_threads, sender_thread
        from telemetry_shim._settings import read_settings

        settings = read_settings(mode="burst", environ={"TELEMETRY_SHIM_SLOWDOWN": "12"})
        self.assertEqual((120_000_000, 12_000_000_000, 12.0), (settings.window_ns, settings.period_ns, settings.slowdown))
        windows = self.windows({"TELEMETRY_SHIM_SLOWDOWN": "12"})
        self.assertEqual((24_000_000, 12_000_000, 720_000_000_000),
                         (windows.window_ns, windows.min_window_ns, windows.max_period_ns))
        def intervals():
            return (program_threads.SITE_DETAIL_INTERVAL_NS, program_threads.MAX_DETAILED_PER_SECOND,
                    sender_thread.QUIET_NS)

        normal = intervals()
        try:
            _exceptions.stretch_intervals(4)
            self.assertEqual((4 * normal[0], normal[1] / 4, 4 * normal[2]), intervals())
        finally:
            _exceptions.stretch_intervals(1)
        self.assertEqual(normal, intervals())
        for bad in ("0.5", "fast", "5000"):
            settings = read_settings(mode="burst", environ={"TELEMETRY_SHIM_SLOWDOWN": bad})
            self.assertEqual(1.0, settings.slowdown)
            self.assertEqual(1, len(settings.problems), settings.problems)
            self.assertIn("TELEMETRY_SHIM_SLOWDOWN", settings.problems[0])


class ExceptionsModeTests(RunnerTestCase):
    def test_no_call_events_and_every_exception_counted(self):
        source = textwrap.dedent("""
            def parse(text):
                try:
                    return int(text)
                except ValueError:
                    return None

            for i in range(300):
                parse("x" if i % 3 == 0 else "7")
        """)
        conn, _ = self.run_program(source, {}, args=("--mode", "exceptions"))
        self.assertEqual("exceptions", conn.hello["mode"])
        self.assertNotIn("EVENTS", conn.frame_types)
        self.assertEqual([], conn.events)
        handled = sum(1 for r in conn.exception_records if r["fate"] == "FATE_HANDLED")
        handled += sum(t["count"] for t in conn.tallies if t["fate"] == "FATE_HANDLED")
        self.assertEqual(100, handled)
        self.assertEqual(0, conn.goodbye["final_stats"]["event_toggles"])


FILTERED = textwrap.dedent("""
    import json, telemetry_shim
    assert telemetry_shim.start(SOCKET, mode="full")

    def encode(i):
        return json.dumps({"i": i, "items": [i, i + 1]})

    def main():
        for i in range(200):
            encode(i)

    main()
    telemetry_shim.stop()
""")


class FilterTests(unittest.TestCase):
    def run_filtered(self, include, exclude):
        with support.RecordingAgent() as agent:
            env = {"TELEMETRY_SHIM_INCLUDE": include, "TELEMETRY_SHIM_EXCLUDE": exclude}
            code, _, err = support.run_python(FILTERED.replace("SOCKET", repr(agent.path)), env=env)
            self.assertEqual(0, code, err)
            conn = agent.wait_for(1)[0]
            self.assertTrue(conn.wait_ended(30))
        self.assertIsNone(conn.error)
        return conn

    def test_excluding_the_stdlib_keeps_the_program_exact(self):
        conn = self.run_filtered("", "stdlib")
        self.assertEqual(["stdlib"], conn.hello["exclude"])
        counts = support.call_counts(conn)
        self.assertEqual(200, counts["encode"])
        self.assertEqual(1, counts["main"])
        recorded = {conn.codes[c]["module"] for _, _, c, _ in conn.events}
        self.assertEqual({"__main__"}, recorded, "no event of json or any other stdlib module")
        for thread, (stack, problems) in support.replay_stacks(conn).items():
            self.assertEqual([], problems)

    def test_include_only_the_named_module(self):
        conn = self.run_filtered("json.*", "")
        counts = support.call_counts(conn)
        self.assertNotIn("encode", counts)
        self.assertEqual(200, counts["JSONEncoder.encode"])
        self.assertTrue(all(conn.codes[c]["module"].startswith("json.") for _, _, c, _ in conn.events))


class RefusedToggleTests(unittest.TestCase):
    """CPython 3.13+ refuses set_events after about 2**24 changes (OverflowError, for good). Simulated
    by making the recorder's set_events raise from the Nth call on."""

    PROGRAM = textwrap.dedent("""
        import sys, time, telemetry_shim
        from telemetry_shim import _control

        def work():
            return sum(range(10))

        real = sys.monitoring.set_events
        calls = [0]

        def refusing(tool, mask):
            calls[0] += 1
            if calls[0] >= REFUSE_FROM:
                raise OverflowError("events set too many times")
            return real(tool, mask)

        import os
        os.environ.update(TELEMETRY_SHIM_WINDOW_MS="5", TELEMETRY_SHIM_PERIOD_MS="30", TELEMETRY_SHIM_BUDGET="off")
        assert telemetry_shim.start(SOCKET, mode="burst")
        _control._shim.recorder._set_events = refusing
        end = time.monotonic() + 0.6
        n = 0
        while time.monotonic() < end:
            work()
            n += 1
        recorder = _control._shim.recorder
        print(recorder.windows_failed, n > 0)
        telemetry_shim.stop()
    """)

    def run_refusing(self, refuse_from):
        with support.RecordingAgent() as agent:
            source = self.PROGRAM.replace("SOCKET", repr(agent.path)).replace("REFUSE_FROM", str(refuse_from))
            code, out, err = support.run_python(source)
            self.assertEqual(0, code, err)
            self.assertEqual("", err)
            conn = agent.wait_for(1)[0]
            self.assertTrue(conn.wait_ended(30))
        self.assertIsNone(conn.error)
        self.assertEqual("True True", out.strip())
        return conn

    def test_refused_when_opening_stops_the_windows(self):
        conn = self.run_refusing(5)  # windows 1 and 2 open and close; window 3 cannot open
        windows, _ = windows_of(conn)
        self.assertEqual(3, len(windows))
        start, end, events = windows[-1]
        self.assertEqual([], events, "the refused window is empty")
        self.assertEqual(1, conn.goodbye["final_stats"]["toggles_refused"])
        self.assertEqual(5, conn.goodbye["final_stats"]["event_toggles"])

    def test_refused_when_closing_unregisters_the_call_callbacks(self):
        conn = self.run_refusing(4)  # window 2 cannot close: events stay on, callbacks go
        windows, outside = windows_of(conn)
        self.assertEqual(2, len(windows))
        # The program kept calling work() for half a second: with the callbacks still registered
        # that would be thousands of events. Only a callback that was running when a window closed
        # can land outside (at most one per window end, right after it).
        self.assertLessEqual(len(outside), len(windows), outside)
        last_end = windows[-1][1]
        self.assertTrue(all(ts < last_end + 50_000_000 for ts, _, _, _ in outside), outside)
        self.assertEqual(1, conn.goodbye["final_stats"]["toggles_refused"])
        self.assertGreater(support.call_counts(conn).get("work", 0), 0)


if __name__ == "__main__":
    unittest.main()

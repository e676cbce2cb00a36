"""autostart/sitecustomize.py: a process starts under the shim from its environment alone, and the
bootstrap never breaks it. Real interpreters, real sockets."""

import os
import shutil
import unittest

from tests import support

AUTOSTART_DIR = os.path.join(support.SHIM_ROOT, "telemetry_shim", "autostart")
SHIM_PACKAGE_DIR = os.path.join(support.SHIM_ROOT, "telemetry_shim")

PROGRAM = """\
import sys
def work(n):
    return n * 2
for i in range(3):
    work(i)
print("sitecustomize from", getattr(sys.modules.get("sitecustomize"), "__file__", None))
"""


def autostart_env(agent_path, flag="1", extra_path=()):
    return {
        "TELEMETRY_SHIM_AUTOSTART": flag,
        "TELEMETRY_AGENT_SOCKET": agent_path,
        "PYTHONPATH": os.pathsep.join([AUTOSTART_DIR, support.SHIM_ROOT, *extra_path]),
    }


class AutostartTest(support.TempDirTestCase):
    tmp_prefix = "tashim-autostart-"

    def setUp(self):
        super().setUp()
        self.program = self.write("program.py", PROGRAM)

    def run_program(self, env, arguments=None):
        with support.RecordingAgent() as agent:
            full_env = {key: value.replace("{agent}", agent.path) for key, value in env.items()}
            result = support.run_python(arguments or [self.program], env=full_env, cwd=self.tmp)
            # The shim says goodbye at exit, so a process that started it has connected by now.
            accepted = agent.connections_so_far()
            connections = agent.wait_for(len(accepted), timeout=30) if accepted else []
        return result, connections

    def test_enabled_by_environment_records_the_program(self):
        for flag in ("1", "true", "YES"):
            with self.subTest(flag=flag):
                (code, out, err), connections = self.run_program(autostart_env("{agent}", flag))
                self.assertEqual((code, err), (0, ""))
                self.assertEqual(len(connections), 1)
                conn = connections[0]
                self.assertIsNone(conn.error)
                self.assertEqual(conn.goodbye["reason"], "REASON_EXIT")
                self.assertEqual(support.call_counts(conn)["work"], 3)
                self.assertEqual(conn.hello["pid"] > 0, True)

    def test_subinterpreters_are_left_alone(self):
        # They run `site` too; instrumenting the deep-frozen code they share with the main interpreter
        # from a second one corrupts memory (CPython's test_threading crashed under the shim).
        try:
            import _testcapi
        except ImportError:
            self.skipTest("no _testcapi.run_in_subinterp")
        program = self.write("subinterpreters.py", """
import _testcapi, telemetry_shim
code = "import sys, telemetry_shim; print(telemetry_shim.is_active(), telemetry_shim.start(), 'sitecustomize' in sys.modules)"
print(telemetry_shim.is_active(), _testcapi.run_in_subinterp(code))
""")
        (code, out, err), connections = self.run_program(autostart_env("{agent}"), [program])
        self.assertEqual((0, ""), (code, err))
        self.assertEqual("False False True\nTrue 0\n", out)
        self.assertEqual(1, len(connections))

    def test_interpreters_made_and_destroyed_on_another_thread_while_the_sender_settles_exceptions(self):
        # The sender asks whether other interpreters may run before it reads the threads' states; asking the
        # interpreters module's list_all() walked them without a lock on 3.12 and crashed while a thread
        # destroyed one (CPython's test__xxinterpchannels under exceptions mode). Once that module is imported
        # the answer is yes, with no walk.
        try:
            from test.support import interpreters  # noqa: F401
        except ImportError:
            self.skipTest("no test.support.interpreters")
        program = self.write("churn.py", """
import sys, threading, time
from telemetry_shim import _tables
print(_tables.other_interpreters_running())
from test.support import interpreters
print(_tables.other_interpreters_running())
stop = threading.Event()
def churn():
    while not stop.is_set():
        interpreters.create().close()
worker = threading.Thread(target=churn)
worker.start()
deadline = time.monotonic() + 2
while time.monotonic() < deadline:
    try:
        {}[1]  # handled: a flight the sender settles once it has been quiet
    except KeyError:
        pass
    time.sleep(0.001)
stop.set()
worker.join()
print("done")
""")
        env = dict(autostart_env("{agent}"), TELEMETRY_SHIM_MODE="exceptions")
        (code, out, err), connections = self.run_program(env, [program])
        self.assertEqual((0, "", "False\nTrue\ndone\n"), (code, err, out))
        self.assertEqual(1, len(connections))

    def test_isolated_subinterpreters_running_beside_the_shim(self):
        # sys._current_frames() walks every interpreter's threads: on 3.12, called by the sender while
        # an isolated subinterpreter (its own GIL) runs, it corrupts memory. The sender does without.
        try:
            from test.support import interpreters
        except ImportError:
            self.skipTest("no test.support.interpreters")
        program = self.write("isolated.py", """
from test.support import interpreters
for i in range(30):
    interp = interpreters.create()
    run = getattr(interp, "run", None) or interp.exec
    run("import json\\nfor i in range(20000):\\n    pass\\ntry:\\n    {}[1]\\nexcept KeyError:\\n    pass\\n")
    interp.close()
try:
    {}[1]
except KeyError:
    pass
print("done")
""")
        for mode in ("exceptions", "burst"):
            with self.subTest(mode=mode):
                env = dict(autostart_env("{agent}"), TELEMETRY_SHIM_MODE=mode)
                (code, out, err), connections = self.run_program(env, [program])
                self.assertEqual((0, "", "done\n"), (code, err, out))
                self.assertEqual(1, len(connections))
                self.assertIsNone(connections[0].error)

    def test_isolated_subinterpreters_made_through_the_c_api_while_the_sender_reads_the_threads(self):
        # Interpreters made through the C API (here _testcapi's, as CPython's test_capi does) leave no trace in
        # sys.modules. sys._current_frames() would build frame objects in them while they run under their own
        # GIL, which corrupts memory; with the C extension the sender reads this interpreter's threads only.
        from telemetry_shim import _native_path
        if _native_path.load()[0] is None:
            self.skipTest("the C extension is not built for this Python: the sender would use sys._current_frames()")
        try:
            from test import support as cpython_support
            cpython_support.run_in_subinterp_with_config  # noqa: B018
        except (ImportError, AttributeError):
            self.skipTest("no test.support.run_in_subinterp_with_config")
        program = self.write("capi_interpreters.py", """
import threading, time
from telemetry_shim import _tables
from test import support
print(_tables.other_interpreters_running(), _tables.thread_states_readable())
script = "def f(n):\\n    try:\\n        raise ValueError(n)\\n    except ValueError:\\n        pass\\nfor i in range(20000):\\n    f(i)\\n"
config = dict(own_gil=True, use_main_obmalloc=False, allow_fork=False, allow_exec=False, allow_threads=True,
              allow_daemon_threads=False, check_multi_interp_extensions=True)
deadline = time.monotonic() + 2
results = []
def churn():
    while time.monotonic() < deadline:
        results.append(support.run_in_subinterp_with_config(script, **config))
worker = threading.Thread(target=churn)
worker.start()
handled = 0
while time.monotonic() < deadline:
    try:
        {}[1]
    except KeyError:
        handled += 1
        time.sleep(0.15)  # quiet for longer than the sender waits: it reads the threads' states to settle it
worker.join()
print(set(results), len(results) > 1, handled > 5)
print(handled)
""")
        env = dict(autostart_env("{agent}"), TELEMETRY_SHIM_MODE="exceptions", TELEMETRY_SHIM_NATIVE="on")
        (code, out, err), connections = self.run_program(env, [program])
        self.assertEqual((0, "", "False True\n{0} True True\n"), (code, err, "".join(out.splitlines(True)[:2])))
        self.assertEqual(1, len(connections))
        conn = connections[0]
        self.assertIsNone(conn.error)
        # Each KeyError the program handled is reported once, handled: a detailed record or a tally.
        fates = {}
        for tally in conn.tallies:
            if conn.codes[tally["raised_at"]["code_id"]]["file_name"] == program:
                fates[tally["fate"]] = fates.get(tally["fate"], 0) + tally["count"]
        for record in conn.exception_records:
            if conn.codes[record["stack"][-1]["code_id"]]["file_name"] == program:
                fates[record["fate"]] = fates.get(record["fate"], 0) + 1
        self.assertEqual({"FATE_HANDLED": int(out.splitlines()[2])}, fates)

    def test_disabled_by_environment_starts_nothing(self):
        for flag in ("", "0", "false", "no"):
            with self.subTest(flag=flag):
                (code, out, err), connections = self.run_program(autostart_env("{agent}", flag))
                self.assertEqual((code, err), (0, ""))
                self.assertEqual(connections, [])
                self.assertIn(os.path.join(AUTOSTART_DIR, "sitecustomize.py"), out)

    def test_a_flag_that_is_neither_on_nor_off_is_reported_and_starts_nothing(self):
        (code, out, err), connections = self.run_program(autostart_env("{agent}", "enabled"))
        self.assertEqual(0, code, err)
        self.assertEqual(connections, [])
        self.assertEqual(1, len(err.splitlines()), err)
        self.assertIn("TELEMETRY_SHIM_AUTOSTART='enabled'", err)
        self.assertIn(os.path.join(AUTOSTART_DIR, "sitecustomize.py"), out)

    def test_no_bootstrap_frames_are_recorded(self):
        (code, _, err), connections = self.run_program(autostart_env("{agent}"))
        self.assertEqual((code, err), (0, ""))
        conn = connections[0]
        for definition in conn.codes.values():
            self.assertNotEqual(definition["file_name"], "<frozen site>", definition)
            self.assertFalse(definition["file_name"].startswith(SHIM_PACKAGE_DIR), definition)
        main = next(t for t, thread in conn.threads.items() if thread["is_main"])
        main_events = [(kind, conn.codes[c]) for _, t, c, kind in conn.events if t == main]
        # What remains: the program's <module> is seeded (the shim starts as it begins), no more.
        seeds = [d["qualified_name"] for kind, d in main_events if kind == "SEED"]
        self.assertEqual(seeds, ["<module>"])
        self.assertEqual(main_events[0][1]["file_name"], self.program)

    def test_chains_to_the_sitecustomize_it_shadows(self):
        marker = os.path.join(self.tmp, "marker.txt")
        user_dir = os.path.dirname(self.write("user/sitecustomize.py", """\
            with open(%r, "a") as f:
                f.write("ran\\n")
            """ % marker))
        for flag in ("1", "0"):
            with self.subTest(flag=flag):
                if os.path.exists(marker):
                    os.remove(marker)
                (code, out, err), connections = self.run_program(
                    autostart_env("{agent}", flag, extra_path=[user_dir]))
                self.assertEqual((code, err), (0, ""))
                with open(marker) as f:
                    self.assertEqual(f.read(), "ran\n")
                # The program sees the user's module under the name sitecustomize.
                self.assertIn(os.path.join(user_dir, "sitecustomize.py"), out)
                self.assertEqual(len(connections), 1 if flag == "1" else 0)

    def test_failing_chained_sitecustomize_is_reported_as_site_reports_it(self):
        user_dir = os.path.dirname(self.write("user/sitecustomize.py", "raise RuntimeError('user setup failed')\n"))
        plain = support.run_python([self.program], cwd=self.tmp, env={"PYTHONPATH": os.pathsep.join(
            [support.SHIM_ROOT, user_dir])})
        (code, out, err), connections = self.run_program(
            autostart_env("{agent}", extra_path=[user_dir]))
        self.assertEqual(plain[0], 0)
        self.assertIn("Error in sitecustomize", plain[2])
        self.assertEqual(err, plain[2])
        self.assertEqual(code, 0)
        self.assertEqual(len(connections), 1)
        self.assertEqual(support.call_counts(connections[0])["work"], 3)

    def test_broken_shim_never_breaks_the_host(self):
        # A copy of the bootstrap next to a telemetry_shim package that cannot be imported.
        broken_root = os.path.join(self.tmp, "broken")
        os.makedirs(os.path.join(broken_root, "autostart"))
        shutil.copy(os.path.join(AUTOSTART_DIR, "sitecustomize.py"), os.path.join(broken_root, "autostart"))
        self.write("broken/telemetry_shim/__init__.py", "raise ImportError('simulated broken install')\n")
        env = {
            "TELEMETRY_SHIM_AUTOSTART": "1",
            "TELEMETRY_AGENT_SOCKET": "{agent}",
            "PYTHONPATH": os.pathsep.join([os.path.join(broken_root, "autostart"), broken_root]),
        }
        plain = support.run_python([self.program], cwd=self.tmp, env={"PYTHONPATH": None})
        (code, out, err), connections = self.run_program(env)
        self.assertEqual(code, 0)
        self.assertEqual(connections, [])
        self.assertEqual(out, plain[1].replace("None", os.path.join(broken_root, "autostart", "sitecustomize.py")))
        lines = err.splitlines()
        self.assertEqual(len(lines), 1, err)
        self.assertTrue(lines[0].startswith("telemetry-shim: autostart:"), err)
        self.assertIn("simulated broken install", lines[0])

    def test_no_double_start_under_the_runner(self):
        (code, out, err), connections = self.run_program(
            autostart_env("{agent}"), ["-m", "telemetry_shim", self.program])
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(len(connections), 1)
        conn = connections[0]
        main = next(t for t, thread in conn.threads.items() if thread["is_main"])
        starts = [conn.codes[c] for _, t, c, kind in conn.events if t == main and kind == "START"]
        self.assertEqual((starts[0]["qualified_name"], starts[0]["file_name"]), ("<module>", self.program))

    def test_module_form_is_recorded_from_runpy(self):
        self.write("pkg/__init__.py", "")
        self.write("pkg/tool.py", PROGRAM)
        (code, out, err), connections = self.run_program(autostart_env("{agent}"), ["-m", "pkg.tool"])
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(support.call_counts(connections[0])["work"], 3)


if __name__ == "__main__":
    unittest.main()

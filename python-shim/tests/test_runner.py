"""`python -m telemetry_shim`: the program must run exactly as under plain `python`, and only the
program's frames are recorded. Every test runs real interpreters against a real Unix socket."""

import json
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import unittest

from tests import support

REPO_ROOT = support.REPO_ROOT
FIXTURE_APP = os.path.join(REPO_ROOT, "examples", "fixture_app.py")
SHIM_PACKAGE_DIR = os.path.join(support.SHIM_ROOT, "telemetry_shim")

# Prints everything the program can observe about how it was started.
PROBE = '''\
"""probe docstring"""
import json, os, sys
import __main__

def describe():
    spec = globals().get("__spec__")
    loader = globals().get("__loader__")
    return {
        "argv": sys.argv,
        "path0": sys.path[0],
        "name": __name__,
        "file": globals().get("__file__"),
        "cached": globals().get("__cached__"),
        "package": globals().get("__package__"),
        "doc": __doc__,
        "spec": None if spec is None else [spec.name, spec.origin, spec.parent],
        "loader": None if loader is None else type(loader).__name__,
        "globals": sorted(globals()),
        "builtins_is_module": type(__builtins__).__name__,
        "main_is_this": sys.modules["__main__"].__dict__ is globals(),
        "main_module_file": getattr(__main__, "__file__", None),
        "cwd": os.getcwd(),
    }

print(json.dumps(describe(), sort_keys=True))
'''


def run_shim(arguments, agent=None, env=None, cwd=None, timeout=60):
    socket_option = ["--socket", agent.path] if agent is not None else []
    return support.run_python(["-m", "telemetry_shim", *socket_option, *arguments],
                              env=env, cwd=cwd, timeout=timeout)


def main_thread_id(conn):
    return next(thread_id for thread_id, thread in conn.threads.items() if thread["is_main"])


def first_push_events(conn, thread_id, count):
    pushes = [(kind, conn.qualified_name(code)) for _, t, code, kind in conn.events
              if t == thread_id and kind in support.PUSH_KINDS]
    return pushes[:count]


class TempDirTestCase(support.TempDirTestCase):
    tmp_prefix = "tashim-runner-"


class ScriptSemanticsTest(TempDirTestCase):
    def assert_same_as_plain(self, plain_args, shim_args, cwd):
        plain = support.run_python(plain_args, cwd=cwd)
        with support.RecordingAgent() as agent:
            shimmed = run_shim(shim_args, agent, cwd=cwd)
            connections = agent.wait_for(1, timeout=30)
        self.assertEqual(plain[0], 0, plain[2])
        self.assertEqual(shimmed, plain)
        self.assertEqual(len(connections), 1)
        self.assertIsNone(connections[0].error)
        return json.loads(plain[1]), connections[0]

    def test_script_sees_what_plain_python_gives_it(self):
        self.write("app/probe.py", PROBE)
        seen, conn = self.assert_same_as_plain(
            ["app/probe.py", "one", "--socket", "-m", "x"],
            ["app/probe.py", "one", "--socket", "-m", "x"], cwd=self.tmp)
        self.assertEqual(seen["argv"], ["app/probe.py", "one", "--socket", "-m", "x"])
        self.assertEqual(seen["path0"], os.path.join(self.tmp, "app"))
        self.assertTrue(seen["main_is_this"])
        self.assertEqual(conn.hello["argv"], seen["argv"])

    def test_symlinked_script_gets_the_target_directory_on_sys_path(self):
        self.write("real/probe.py", PROBE)
        os.symlink(os.path.join(self.tmp, "real", "probe.py"), os.path.join(self.tmp, "link.py"))
        seen, _ = self.assert_same_as_plain(["link.py"], ["link.py"], cwd=self.tmp)
        self.assertEqual(seen["path0"], os.path.join(self.tmp, "real"))

    def test_module_sees_what_python_dash_m_gives_it(self):
        self.write("pkg/__init__.py", "")
        self.write("pkg/probe.py", PROBE)
        seen, conn = self.assert_same_as_plain(
            ["-m", "pkg.probe", "a", "-m", "b"], ["-m", "pkg.probe", "a", "-m", "b"], cwd=self.tmp)
        self.assertEqual(seen["spec"][0], "pkg.probe")
        self.assertEqual(seen["package"], "pkg")
        self.assertEqual(seen["argv"][1:], ["a", "-m", "b"])

    def test_package_runs_its_main_module(self):
        self.write("pkg/__init__.py", "")
        self.write("pkg/__main__.py", PROBE)
        seen, _ = self.assert_same_as_plain(["-m", "pkg", "z"], ["-mpkg", "z"], cwd=self.tmp)
        self.assertEqual(seen["spec"][0], "pkg.__main__")

    def test_directory_with_main_module_runs_like_python_does(self):
        self.write("appdir/__main__.py", PROBE)
        seen, _ = self.assert_same_as_plain(["appdir", "q"], ["appdir", "q"], cwd=self.tmp)
        self.assertEqual(seen["path0"], os.path.join(self.tmp, "appdir"))

    def test_runner_options_before_the_script_are_not_passed_on(self):
        self.write("probe.py", PROBE)
        with support.RecordingAgent() as agent:
            code, out, err = run_shim(["--service-name", "billing", "probe.py", "--service-name", "x"],
                                      agent, cwd=self.tmp)
            conn = agent.wait_for(1, timeout=30)[0]
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(out)["argv"], ["probe.py", "--service-name", "x"])
        self.assertEqual(conn.hello["service_name"], "billing")


class ExitStatusTest(TempDirTestCase):
    def assert_same_outcome(self, source, expected_code, program_runs=True):
        script = self.write("prog.py", source)
        plain = support.run_python([script], cwd=self.tmp)
        with support.RecordingAgent() as agent:
            shimmed = run_shim([script], agent, cwd=self.tmp)
            connections = agent.wait_for(1, timeout=30) if program_runs else agent.connections_so_far()
        self.assertEqual(plain[0], expected_code, plain[2])
        self.assertEqual(shimmed, plain)
        if not program_runs:
            self.assertEqual(connections, [], "the shim starts only when the program does")
            return plain
        self.assertIsNone(connections[0].error)
        self.assertEqual(connections[0].goodbye["reason"], "REASON_EXIT")
        return plain

    def test_normal_end(self):
        self.assert_same_outcome("print('done')\n", 0)

    def test_sys_exit_code(self):
        self.assert_same_outcome("import sys\nprint('bye')\nsys.exit(3)\n", 3)

    def test_sys_exit_message(self):
        _, _, err = self.assert_same_outcome("raise SystemExit('fatal: no config')\n", 1)
        self.assertEqual(err, "fatal: no config\n")

    def test_uncaught_exception_prints_the_same_traceback(self):
        _, _, err = self.assert_same_outcome("""\
            def load():
                raise ValueError("boom")
            try:
                load()
            except ValueError as error:
                raise KeyError("config") from error
            """, 1)
        self.assertIn('in load\n    raise ValueError("boom")', err)
        self.assertNotIn("telemetry_shim", err)
        self.assertNotIn("runpy", err)

    def test_custom_excepthook_still_decides(self):
        _, out, _ = self.assert_same_outcome("""\
            import sys
            sys.excepthook = lambda t, v, tb: print("hook", t.__name__, tb.tb_frame.f_code.co_name)
            raise RuntimeError("x")
            """, 1)
        self.assertEqual(out, "hook RuntimeError <module>\n")

    def test_syntax_error_is_reported_without_traceback(self):
        _, _, err = self.assert_same_outcome("x = (\n", 1, program_runs=False)
        self.assertTrue(err.startswith('  File "'), err)

    def test_keyboard_interrupt_ends_the_process_by_sigint(self):
        _, _, err = self.assert_same_outcome("raise KeyboardInterrupt\n", -signal.SIGINT)
        self.assertIn("KeyboardInterrupt", err)

    def test_atexit_and_non_daemon_threads_run_before_the_shim_says_goodbye(self):
        script = self.write("prog.py", """\
            import atexit, threading
            def late():
                print("late")
            def background():
                print("background")
            atexit.register(late)
            threading.Thread(target=background, name="bg").start()
            """)
        with support.RecordingAgent() as agent:
            code, out, err = run_shim([script], agent)
            conn = agent.wait_for(1, timeout=30)[0]
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(sorted(out.split()), ["background", "late"])
        self.assertEqual(support.call_counts(conn).get("late"), 1)
        self.assertEqual(support.call_counts(conn).get("background"), 1)


class CommandLineTest(TempDirTestCase):
    def test_help_explains_every_option(self):
        code, out, err = run_shim(["--help"])
        self.assertEqual(code, 0, err)
        for option in ("--socket", "--service-name", "-m module", "--version", "TELEMETRY_AGENT_SOCKET"):
            self.assertIn(option, out)

    def test_missing_program_is_a_usage_error(self):
        code, _, err = run_shim([])
        self.assertEqual(code, 2)
        self.assertIn("no program given", err)

    def test_unknown_runner_option_is_a_usage_error(self):
        code, _, err = run_shim(["--frobnicate", "x.py"])
        self.assertEqual(code, 2)
        self.assertIn("--frobnicate", err)

    def test_missing_script_and_module_are_reported_as_python_does(self):
        for arguments in (["nowhere.py"], ["-m", "no_such_module_here"]):
            with self.subTest(arguments=arguments):
                plain = support.run_python(arguments, cwd=self.tmp)
                shimmed = run_shim(arguments, cwd=self.tmp)
                self.assertNotEqual(plain[0], 0)
                self.assertEqual(shimmed, plain)

    def test_children_inherit_the_shim_environment(self):
        script = self.write("env.py", """\
            import json, os
            print(json.dumps({k: os.environ.get(k) for k in
                ("TELEMETRY_AGENT_SOCKET", "TELEMETRY_SHIM_AUTOSTART", "PYTHONPATH")}))
            """)
        code, out, err = run_shim(["--socket", "rel.sock", script], cwd=self.tmp,
                                  env={"PYTHONPATH": support.SHIM_ROOT + os.pathsep + "/opt/extra"})
        self.assertEqual(code, 0, err)
        seen = json.loads(out)
        self.assertEqual(seen["TELEMETRY_AGENT_SOCKET"], os.path.join(self.tmp, "rel.sock"))
        self.assertEqual(seen["TELEMETRY_SHIM_AUTOSTART"], "1")
        self.assertEqual(seen["PYTHONPATH"].split(os.pathsep), [
            os.path.join(SHIM_PACKAGE_DIR, "autostart"), support.SHIM_ROOT, "/opt/extra"])

    @unittest.skipUnless(shutil.which("python3.11") or shutil.which("python3"), "no older python3")
    def test_python_older_than_312_gets_a_clear_error(self):
        older = shutil.which("python3.11") or shutil.which("python3")
        version = subprocess.run([older, "-c", "import sys; print(sys.version_info >= (3, 12))"],
                                 capture_output=True, text=True).stdout.strip()
        if version != "False":
            self.skipTest("python3 on PATH is 3.12+")
        completed = subprocess.run([older, "-m", "telemetry_shim", "x.py"], capture_output=True,
                                   text=True, env={**os.environ, "PYTHONPATH": support.SHIM_ROOT})
        self.assertEqual(completed.returncode, 2)
        self.assertIn("Python 3.12 or newer", completed.stderr)


class RecordedFramesTest(TempDirTestCase):
    def test_no_runner_frames_are_recorded(self):
        script = self.write("prog.py", """\
            def work():
                return sum(range(10))
            work()
            """)
        with support.RecordingAgent() as agent:
            code, _, err = run_shim([script], agent)
            conn = agent.wait_for(1, timeout=30)[0]
        self.assertEqual(code, 0, err)
        main = main_thread_id(conn)
        starts = [conn.codes[c] for _, t, c, kind in conn.events if t == main and kind == "START"]
        self.assertEqual((starts[0]["qualified_name"], starts[0]["file_name"]), ("<module>", script))
        for code_definition in conn.codes.values():
            self.assertFalse(code_definition["file_name"].startswith(SHIM_PACKAGE_DIR), code_definition)
        self.assertEqual(support.call_counts(conn)["work"], 1)


def cprofile_counts(python_args, cwd):
    """{(qualified function name, first line): calls} of fixture_app.py functions under cProfile."""
    with tempfile.TemporaryDirectory() as tmp:
        stats_path = os.path.join(tmp, "fixture.prof")
        code, _, err = support.run_python(["-m", "cProfile", "-o", stats_path, *python_args], cwd=cwd)
        if code != 0:
            raise AssertionError("cProfile run failed: " + err)
        stats = pstats.Stats(stats_path)
    counts = {}
    for (file_name, line, name), (_, calls, _, _, _) in stats.stats.items():
        if os.path.realpath(file_name) == os.path.realpath(FIXTURE_APP):
            counts[(name, line)] = calls
    return counts


class FixtureAppCallCountsTest(unittest.TestCase):
    """Per-function counts of examples/fixture_app.py equal cProfile's.

    The rule: cProfile counts a call on every entry into a frame, including each time a generator or
    coroutine is resumed (or has an exception thrown into it). So for generator and coroutine code the
    comparison is START + RESUME + THROW; for every other function it is START alone.
    """

    def test_counts_equal_cprofile(self):
        with support.RecordingAgent() as agent:
            code, out, err = run_shim([FIXTURE_APP], agent)
            conn = agent.wait_for(1, timeout=30)[0]
        self.assertEqual(code, 0, err)
        self.assertIsNone(conn.error)
        expected = cprofile_counts([FIXTURE_APP], cwd=REPO_ROOT)

        entries = {}
        starts = {}
        resumable = set()
        for _, _, code_id, kind in conn.events:
            definition = conn.codes[code_id]
            if os.path.realpath(definition["file_name"]) != os.path.realpath(FIXTURE_APP):
                continue
            # cProfile names a function by co_name and co_firstlineno.
            key = (definition["qualified_name"].rsplit(".", 1)[-1], definition["first_line"])
            self.assertNotEqual(kind, "SEED", key)
            if definition["kind_flags"]:
                resumable.add(key)
            if kind in ("START", "RESUME", "THROW"):
                entries[key] = entries.get(key, 0) + 1
            if kind == "START":
                starts[key] = starts.get(key, 0) + 1
        self.assertEqual(entries, expected)
        self.assertEqual({name for name, _ in resumable}, {"countdown", "fetch", "fetch_all"})
        for key, count in expected.items():
            if key not in resumable:
                self.assertEqual(starts.get(key), count, key)

        worker_threads = {thread["name"] for thread in conn.threads.values()}
        self.assertLessEqual({"worker-1", "worker-2"}, worker_threads)
        problems = {t: p for t, (_, p) in support.replay_stacks(conn).items() if p}
        self.assertEqual(problems, {})


if __name__ == "__main__":
    unittest.main()

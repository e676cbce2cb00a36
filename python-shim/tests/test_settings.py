"""Every environment variable the shim reads, parsed by _settings under one rule: a bad value is
reported (one stderr line for all of them, at start) and its default used; a number below a
setting's minimum is reported and the minimum used."""

import os
import sys
import textwrap
import unittest

from tests import support

from telemetry_shim import _settings
from telemetry_shim._settings import read_settings


def settings_from(environ, **arguments):
    return read_settings(environ=environ, **arguments)


class BadValuesTests(unittest.TestCase):
    """Values that were ignored without a word before they were parsed here."""

    def assert_reported(self, environ, field, expected):
        settings = settings_from(environ)
        name, = environ
        self.assertEqual(expected, getattr(settings, field))
        self.assertEqual(1, len(settings.problems), settings.problems)
        self.assertIn(name, settings.problems[0])

    def test_buffer_events(self):
        self.assert_reported({"TELEMETRY_SHIM_BUFFER_EVENTS": "lots"}, "buffer_events", 131072)
        self.assert_reported({"TELEMETRY_SHIM_BUFFER_EVENTS": "100"}, "buffer_events", 1024)
        self.assert_reported({"TELEMETRY_SHIM_BUFFER_EVENTS": "inf"}, "buffer_events", 131072)
        self.assertEqual(2048, settings_from({"TELEMETRY_SHIM_BUFFER_EVENTS": "2048"}).buffer_events)
        self.assertIsNone(settings_from({}).buffer_events, "unset: the recording callbacks' default")

    def test_flush_interval(self):
        self.assert_reported({"TELEMETRY_SHIM_FLUSH_INTERVAL_MS": "soon"}, "flush_interval_s", 0.05)
        self.assert_reported({"TELEMETRY_SHIM_FLUSH_INTERVAL_MS": "0"}, "flush_interval_s", 0.001)
        self.assert_reported({"TELEMETRY_SHIM_FLUSH_INTERVAL_MS": "nan"}, "flush_interval_s", 0.05)
        self.assertEqual(0.02, settings_from({"TELEMETRY_SHIM_FLUSH_INTERVAL_MS": "20"}).flush_interval_s)

    def test_note_watch(self):
        self.assertTrue(settings_from({}).note_watch)
        self.assertFalse(settings_from({"TELEMETRY_SHIM_NOTE_WATCH": "off"}).note_watch)
        self.assert_reported({"TELEMETRY_SHIM_NOTE_WATCH": "maybe"}, "note_watch", True)

    def test_exit_timeout(self):
        self.assert_reported({"TELEMETRY_SHIM_EXIT_TIMEOUT_S": "never"}, "exit_timeout_s", 2.0)
        self.assert_reported({"TELEMETRY_SHIM_EXIT_TIMEOUT_S": "-1"}, "exit_timeout_s", 0.0)
        self.assertEqual(0.0, settings_from({"TELEMETRY_SHIM_EXIT_TIMEOUT_S": "0"}).exit_timeout_s)

    def test_tool_id(self):
        for bad in ("7", "1", "5", "three"):  # 5 is sys.monitoring.OPTIMIZER_ID
            with self.subTest(bad=bad):
                self.assert_reported({"TELEMETRY_SHIM_TOOL_ID": bad}, "tool_ids", (3, 4))
        settings = settings_from({"TELEMETRY_SHIM_TOOL_ID": " 4 "})
        self.assertEqual(((4, 3), []), (settings.tool_ids, settings.problems))

    def test_an_infinite_window_is_reported_instead_of_failing_the_start(self):
        self.assert_reported({"TELEMETRY_SHIM_WINDOW_MS": "inf"}, "window_ns", 10_000_000)

    def test_every_problem_is_kept_for_the_one_line(self):
        settings = settings_from({"TELEMETRY_SHIM_MODE": "fast", "TELEMETRY_SHIM_TOOL_ID": "9",
                                  "TELEMETRY_SHIM_BUFFER_EVENTS": "x", "TELEMETRY_SHIM_EXIT_TIMEOUT_S": "-2"})
        self.assertEqual(["TELEMETRY_SHIM_MODE", "TELEMETRY_SHIM_TOOL_ID", "TELEMETRY_SHIM_BUFFER_EVENTS",
                          "TELEMETRY_SHIM_EXIT_TIMEOUT_S"], [problem.split("=")[0].split()[0] for problem in settings.problems])

    def test_unset_and_good_values_are_not_problems(self):
        self.assertEqual([], settings_from({}).problems)
        good = {"TELEMETRY_SHIM_MODE": "burst", "TELEMETRY_SHIM_WINDOW_MS": "5", "TELEMETRY_SHIM_PERIOD_MS": "500",
                "TELEMETRY_SHIM_BUDGET": "0.5%", "TELEMETRY_SHIM_TOOL_ID": "4", "TELEMETRY_SHIM_BUFFER_EVENTS": "4096",
                "TELEMETRY_SHIM_FLUSH_INTERVAL_MS": "10", "TELEMETRY_SHIM_EXIT_TIMEOUT_S": "1.5",
                "TELEMETRY_SHIM_SLOWDOWN": "2"}
        self.assertEqual([], settings_from(good).problems)


class WhereAndWhoTests(unittest.TestCase):
    def test_socket_path(self):
        self.assertEqual("/run/a.sock", _settings.default_socket_path(
            {"TELEMETRY_AGENT_SOCKET": "/run/a.sock", "XDG_RUNTIME_DIR": "/run/user/7"}))
        self.assertEqual("/run/user/7/telemetry-agent.sock", _settings.default_socket_path({"XDG_RUNTIME_DIR": "/run/user/7"}))
        self.assertEqual("/tmp/telemetry-agent-%d.sock" % os.getuid(), _settings.default_socket_path({}))
        self.assertEqual("/given.sock", settings_from({"TELEMETRY_AGENT_SOCKET": "/env.sock"},
                                                      socket_path="/given.sock").socket_path)
        self.assertEqual("/env.sock", settings_from({"TELEMETRY_AGENT_SOCKET": "/env.sock"}).socket_path)

    def test_service_name(self):
        env = {"OTEL_SERVICE_NAME": "otel", "TELEMETRY_SHIM_SERVICE_NAME": "from-runner",
               "OTEL_RESOURCE_ATTRIBUTES": "team=a"}
        self.assertEqual("given", settings_from(env, service_name="given", autostart=True).service_name)
        # Only autostart takes the name a runner handed its children; every entry point falls back to OTEL's.
        self.assertEqual("from-runner", settings_from(env, autostart=True).service_name)
        self.assertEqual("otel", settings_from(env).service_name)
        self.assertEqual("", settings_from({}).service_name)
        self.assertEqual(("otel", "team=a"), tuple(settings_from(env).hello_fields()[key]
                                                   for key in ("service_name", "resource_attributes")))


@unittest.skipIf(sys.version_info < (3, 12), "sys.monitoring is Python 3.12+")
class ReportedAtStartTests(unittest.TestCase):
    def test_bad_values_make_one_stderr_line_and_the_defaults_are_used(self):
        program = textwrap.dedent("""
            import telemetry_shim
            print(telemetry_shim.start())
            def work():
                return 1
            work()
            print("done")
        """)
        with support.RecordingAgent() as agent:
            code, out, err = support.run_python(program, env={
                "TELEMETRY_AGENT_SOCKET": agent.path, "TELEMETRY_SHIM_TOOL_ID": "9",
                "TELEMETRY_SHIM_BUFFER_EVENTS": "lots", "TELEMETRY_SHIM_FLUSH_INTERVAL_MS": "-5",
                "TELEMETRY_SHIM_EXIT_TIMEOUT_S": "never"})
            conn = agent.wait_for(1)[0]
            self.assertTrue(conn.wait_ended(30))
        self.assertEqual((0, "True\ndone\n"), (code, out), err)
        self.assertEqual(1, len(err.splitlines()), err)
        for name in ("TELEMETRY_SHIM_TOOL_ID", "TELEMETRY_SHIM_BUFFER_EVENTS", "TELEMETRY_SHIM_FLUSH_INTERVAL_MS",
                     "TELEMETRY_SHIM_EXIT_TIMEOUT_S"):
            self.assertIn(name, err)
        self.assertEqual(3, conn.hello["tool_id"])
        self.assertEqual(1, support.call_counts(conn)["work"])


if __name__ == "__main__":
    unittest.main()

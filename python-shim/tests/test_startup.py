"""The start-up phase on real processes: the import tree against `python -X importtime`, the ready
rules, the first invocations (a lazy import shows in the first only), and what each mode records
before ready."""

import os
import statistics
import sys
import textwrap
import threading
import time
import unittest

from tests import support

# Standard modules that neither `site` nor the shim and its runner import, so that both runs import
# them in full.
IMPORT_HEAVY = textwrap.dedent("""
    import json
    import decimal
    import email.parser
    import xml.dom.minidom
    import http.client
    import tomllib
""")
TOP_LEVEL = ("json", "decimal", "email.parser", "xml.dom.minidom", "http.client", "tomllib")
RUNS = 3


def importtime_rows(stderr):
    """[(module, level, self µs, cumulative µs)] from `-X importtime`'s lines, in its order (children first)."""
    rows = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        self_us, cumulative_us, name = line[len("import time:"):].split("|")
        level = (len(name) - len(name.lstrip(" ")) - 1) // 2
        rows.append((name.strip(), level, int(self_us), int(cumulative_us)))
    return rows


def top_level_imports(imports):
    return {entry["module"]: entry["end_ns"] - entry["start_ns"] for entry in imports if entry["parent"] == 0}


# Standard modules a program may never import itself that the shim's start() must not import (each would add to
# every start).
NOT_IMPORTED_BY_START = ("dis", "inspect", "json", "re", "dataclasses", "enum", "typing", "traceback", "logging",
                         "weakref", "struct", "_struct", "opcode", "_opcode", "socket", "selectors", "argparse",
                         "sysconfig", "fnmatch", "tokenize", "linecache", "importlib.util")
# ... nor these, which threading imports on 3.12 but not on 3.13 (array, which the Python outbox needs for call
# records, imports collections.abc and with it collections).
NOT_IMPORTED_BY_START_3_13 = ("functools", "collections", "operator", "keyword", "reprlib")


class ShimStartImportsTest(support.TempDirTestCase):
    def test_start_imports_no_heavy_standard_module(self):
        program = textwrap.dedent("""
            import sys
            before = set(sys.modules)
            import telemetry_shim
            started = telemetry_shim.start(sys.argv[1], mode=sys.argv[2])
            print(started, "%d.%d" % sys.version_info[:2], " ".join(sorted(set(sys.modules) - before)))
            telemetry_shim.stop(0)
            """)
        for mode in ("full", "burst", "exceptions"):
            with self.subTest(mode=mode):
                code, out, err = support.run_python(["-c", program, os.path.join(self.tmp, "absent.sock"), mode])
                self.assertEqual(0, code, err)
                started, version, *imported = out.split()
                self.assertEqual("True", started, err)
                imported = set(imported)
                self.assertIn("telemetry_shim._monitor", imported)
                heavy = NOT_IMPORTED_BY_START + (
                    NOT_IMPORTED_BY_START_3_13 if version != "3.12" and "array" not in imported else ())
                self.assertEqual([], sorted(imported.intersection(heavy)))
                self.assertEqual(mode != "exceptions", "telemetry_shim._windows" in imported)


class StartupTestCase(support.TempDirTestCase):
    def run_under_shim(self, source, *runner_args, env=None, name="app.py", interpreter_args=()):
        script = self.write(name, source)
        with support.RecordingAgent() as agent:
            code, out, err = support.run_python(
                [*interpreter_args, "-m", "telemetry_shim", "--socket", agent.path, *runner_args, script], env=env,
                cwd=self.tmp)
            self.assertEqual(0, code, err)
            conn = agent.wait_for(1)[0]
            self.assertTrue(conn.wait_ended(30))
        self.assertIsNone(conn.error)
        return conn, out, err


class ImportTreeTest(StartupTestCase):
    def test_top_level_cumulative_times_match_importtime(self):
        # Both measure the same imports of the same process: the shim runs under -X importtime.
        reference = {module: [] for module in TOP_LEVEL}
        recorded = {module: [] for module in TOP_LEVEL}
        seen = []  # per run: the top-level modules each side saw, for a failure's message
        for _ in range(RUNS):
            conn, _, err = self.run_under_shim(IMPORT_HEAVY, "--mode", "exceptions", interpreter_args=["-X", "importtime"])
            seen.append(([module for module, level, _, _ in importtime_rows(err) if level == 0],
                         sorted(top_level_imports(conn.startup["imports"]))))
            for module, level, _self_us, cumulative_us in importtime_rows(err):
                if level == 0 and module in reference:
                    reference[module].append(cumulative_us * 1000)
            for module, cumulative_ns in top_level_imports(conn.startup["imports"]).items():
                if module in recorded:
                    recorded[module].append(cumulative_ns)
        print("\ntop-level imports, cumulative ms (median of %d runs): -X importtime and the shim's tree, same process"
              % RUNS)
        failures = []
        for module in TOP_LEVEL:
            self.assertEqual(RUNS, len(reference[module]), "%s: -X importtime's and the shim's top-level imports, "
                                                           "per run: %r" % (module, seen))
            self.assertEqual(RUNS, len(recorded[module]), "%s: -X importtime's and the shim's top-level imports, "
                                                          "per run: %r" % (module, seen))
            expected = statistics.median(reference[module])
            got = statistics.median(recorded[module])
            tolerance = max(0.15 * expected, 2_000_000)
            print("  %-16s importtime %7.2f  shim %7.2f" % (module, expected / 1e6, got / 1e6))
            if abs(got - expected) > tolerance:
                failures.append(module)
        self.assertEqual([], failures, "outside 15% or 2 ms of -X importtime")

    def test_tree_nests_as_imported_with_phases_adding_up(self):
        conn, _, _ = self.run_under_shim(IMPORT_HEAVY, "--mode", "exceptions")
        imports = conn.startup["imports"]
        by_position = {position: entry for position, entry in enumerate(imports, start=1)}
        names = [entry["module"] for entry in imports]
        for module in TOP_LEVEL:
            self.assertIn(module, names)
        # json.decoder is imported by json, inside json's execution.
        decoder = imports[names.index("json.decoder")]
        self.assertEqual("json", by_position[decoder["parent"]]["module"])
        for position, entry in by_position.items():
            self.assertLessEqual(entry["start_ns"], entry["end_ns"])
            children = [child for child in imports if child["parent"] == position]
            cumulative = entry["end_ns"] - entry["start_ns"]
            self_ns = cumulative - sum(child["end_ns"] - child["start_ns"] for child in children)
            self.assertGreaterEqual(self_ns, 0, entry["module"])
            self.assertEqual(self_ns, entry["find_ns"] + entry["load_ns"] + entry["exec_ns"], entry["module"])
            for child in children:
                self.assertLessEqual(entry["start_ns"], child["start_ns"])
                self.assertLessEqual(child["end_ns"], entry["end_ns"])
        startup = conn.startup
        self.assertEqual("READY_MAIN_MODULE_END", startup["ready_rule"])
        self.assertLess(0, startup["process_start_ns"])
        self.assertLess(startup["process_start_ns"], startup["shim_start_ns"])
        self.assertLess(startup["shim_start_ns"], imports[0]["start_ns"])
        self.assertLessEqual(imports[-1]["end_ns"], startup["ready_ns"])

    def test_a_failed_import_is_kept_and_marked(self):
        conn, _, _ = self.run_under_shim(textwrap.dedent("""
            try:
                import no_such_module_here
            except ImportError:
                pass
            import json
        """), "--mode", "exceptions")
        failed = [entry for entry in conn.startup["imports"] if entry["failed"]]
        self.assertEqual(["no_such_module_here"], [entry["module"] for entry in failed])
        self.assertIn("json", [entry["module"] for entry in conn.startup["imports"] if not entry["failed"]])


HANDLER_MODULE = textwrap.dedent("""
    import json

    def handler(event):
        import csv  # lazily, on the first invocation only
        return json.dumps(event)
""")
CALLER = textwrap.dedent("""
    import handlers
    for number in range(5):
        handlers.handler({"n": number})
""")


class RaisingDict(dict):
    """A program's own mapping: reading it would run the program's code."""

    def get(self, *args):
        raise AssertionError("the program's method ran")

    __getitem__ = __contains__ = get


class LambdaTriggerTest(unittest.TestCase):
    """faas.trigger from the events of the AWS Lambda documentation's examples (trimmed to the keys that tell)."""

    def test_each_documented_source(self):
        from telemetry_shim._startup import lambda_trigger

        cases = {
            "http": [
                {"resource": "/", "path": "/", "httpMethod": "GET", "requestContext": {"resourceId": "2gxmpl"}},  # REST API
                {"version": "2.0", "routeKey": "$default", "rawPath": "/", "requestContext": {"http": {"method": "POST"}}},
                {"requestContext": {"elb": {"targetGroupArn": "arn:aws:elasticloadbalancing:..."}}, "httpMethod": "GET"},
            ],
            "pubsub": [
                {"Records": [{"messageId": "059f36b4", "eventSource": "aws:sqs"}]},
                {"Records": [{"EventSource": "aws:sns", "Sns": {"Message": "hello"}}]},
                {"Records": [{"kinesis": {"data": "SGVsbG8="}, "eventSource": "aws:kinesis"}]},
                {"source": "com.mycompany.myapp", "detail-type": "OrderCreated", "detail": {}},
            ],
            "datasource": [
                {"Records": [{"eventSource": "aws:s3", "s3": {"bucket": {"name": "b"}}}]},
                {"Records": [{"eventName": "INSERT", "eventSource": "aws:dynamodb"}]},
            ],
            "timer": [{"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}],
            "": [{"n": 1}, [], "text", None, {"Records": []}, {"Records": [{"eventSource": "aws:kafka"}]},
                 {"requestContext": "not a dict", "httpMethod": "GET"}, RaisingDict(httpMethod="GET")],
        }
        for expected, events in cases.items():
            for event in events:
                self.assertEqual(expected, lambda_trigger(event), event)


class ReadyRulesTest(StartupTestCase):
    def setUp(self):
        super().setUp()
        self.write("handlers.py", HANDLER_MODULE)

    def test_ready_on_function_and_the_lazy_import_of_the_first_invocation(self):
        conn, _, _ = self.run_under_shim(CALLER, "--mode", "burst", "--ready-on", "handlers:handler")
        startup = conn.startup
        self.assertEqual("READY_ON_FUNCTION", startup["ready_rule"])
        self.assertEqual("handlers:handler", startup["ready_target"])
        self.assertEqual(3, startup["first_invocations_planned"])
        self.assertIn("handlers", [entry["module"] for entry in startup["imports"]])
        self.assertNotIn("csv", [entry["module"] for entry in startup["imports"]])
        invocations = conn.first_invocations
        self.assertEqual([1, 2, 3], [invocation["number"] for invocation in invocations])
        # Ready is the first call; the invocation is timed once its window of call events is open.
        self.assertLessEqual(startup["ready_ns"], invocations[0]["start_ns"])
        self.assertEqual(["csv", "_csv"], [entry["module"] for entry in invocations[0]["imports"]])
        self.assertEqual([], invocations[1]["imports"])
        self.assertEqual([], invocations[2]["imports"])
        for earlier, later in zip(invocations, invocations[1:]):
            self.assertLess(earlier["end_ns"], later["start_ns"])
        csv_import = invocations[0]["imports"][0]
        self.assertLessEqual(invocations[0]["start_ns"], csv_import["start_ns"])
        self.assertLessEqual(csv_import["end_ns"], invocations[0]["end_ns"])

    def test_lambda_handler_names_the_ready_function(self):
        env = {"AWS_LAMBDA_FUNCTION_NAME": "orders", "_HANDLER": "handlers.handler",
               "TELEMETRY_SHIM_FIRST_INVOCATIONS": "2"}
        conn, _, _ = self.run_under_shim(CALLER, "--mode", "exceptions", env=env)
        self.assertEqual("READY_LAMBDA_HANDLER", conn.startup["ready_rule"])
        self.assertEqual("handlers:handler", conn.startup["ready_target"])
        self.assertEqual([1, 2], [invocation["number"] for invocation in conn.first_invocations])

    def test_on_lambda_each_first_invocation_says_what_triggered_it(self):
        caller = textwrap.dedent("""
            import handlers
            handlers.handler({"version": "2.0", "routeKey": "GET /orders", "requestContext": {"http": {"method": "GET"}}})
            handlers.handler({"Records": [{"eventSource": "aws:sqs", "body": "{}"}]})
            handlers.handler({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}})
            handlers.handler({"n": 4})
        """)
        env = {"AWS_LAMBDA_FUNCTION_NAME": "orders", "_HANDLER": "handlers.handler", "TELEMETRY_SHIM_FIRST_INVOCATIONS": "4"}
        conn, _, _ = self.run_under_shim(caller, "--mode", "exceptions", env=env)
        self.assertEqual(["http", "pubsub", "timer", "other"], [invocation["trigger"] for invocation in conn.first_invocations])

    def test_off_lambda_no_trigger_is_guessed(self):
        conn, _, _ = self.run_under_shim(CALLER, "--mode", "exceptions", "--ready-on", "handlers:handler")
        self.assertEqual([""] * 3, [invocation.get("trigger", "") for invocation in conn.first_invocations])

    def test_ready_on_a_function_of_the_main_script(self):
        source = "import json\n\ndef serve(n):\n    return n\n\nfor n in range(4):\n    serve(n)\n"
        conn, _, _ = self.run_under_shim(source, "--ready-on", "app:serve")
        self.assertEqual("READY_ON_FUNCTION", conn.startup["ready_rule"])
        self.assertEqual(3, len(conn.first_invocations))

    def test_mark_ready_wins_and_later_imports_are_not_startup(self):
        source = textwrap.dedent("""
            import json
            import telemetry_shim
            assert telemetry_shim.mark_ready()
            assert not telemetry_shim.mark_ready()
            import csv
        """)
        conn, _, _ = self.run_under_shim(source, "--mode", "exceptions")
        self.assertEqual("READY_MARKED", conn.startup["ready_rule"])
        names = [entry["module"] for entry in conn.startup["imports"]]
        self.assertIn("json", names)
        self.assertNotIn("csv", names)

    def test_a_function_never_called_leaves_the_main_module_end_and_releases_the_mode(self):
        source = textwrap.dedent("""
            import json
            def fail():
                try:
                    raise ValueError("after the main module")
                except ValueError:
                    pass
            import atexit
            atexit.register(fail)
        """)
        conn, _, _ = self.run_under_shim(source, "--mode", "exceptions", "--ready-on", "handlers:no_such_function")
        self.assertEqual("READY_MAIN_MODULE_END", conn.startup["ready_rule"])
        self.assertEqual([], conn.first_invocations)
        self.assertIn("after the main module", [r["detail"]["message"] for r in conn.exception_records if r["detail"]])

    def test_exit_when_the_main_module_is_unknown(self):
        # start() from a thread: no main module's code to wait for; the program's exit ends the phase.
        source = textwrap.dedent("""
            import threading, telemetry_shim
            thread = threading.Thread(target=telemetry_shim.start)
            thread.start(); thread.join()
            import json
        """)
        with support.RecordingAgent() as agent:
            code, _, err = support.run_python(source, env={"TELEMETRY_AGENT_SOCKET": agent.path})
            self.assertEqual(0, code, err)
            conn = agent.wait_for(1)[0]
            self.assertTrue(conn.wait_ended(30))
        self.assertEqual("READY_EXIT", conn.startup["ready_rule"])

    def test_hello_carries_the_platform_variables_and_nothing_else(self):
        env = {"AWS_LAMBDA_FUNCTION_NAME": "orders", "AWS_REGION": "eu-west-1", "AWS_SECRET_ACCESS_KEY": "secret",
               "K_SERVICE": ""}
        conn, _, _ = self.run_under_shim("import json\n", env=env)
        self.assertEqual(["AWS_LAMBDA_FUNCTION_NAME=orders", "AWS_REGION=eu-west-1"], conn.hello["platform_environment"])

    def test_startup_off(self):
        conn, _, _ = self.run_under_shim("import json\n", env={"TELEMETRY_SHIM_STARTUP": "off"})
        self.assertIsNone(conn.startup)


ONE_TOOL = textwrap.dedent("""
    import sys, time
    import handlers

    monitoring = sys.monitoring
    tools = [tool for tool in range(6) if monitoring.get_tool(tool) is not None]
    find_and_load = sys.modules["_frozen_importlib"]._find_and_load.__code__
    print([monitoring.get_tool(tool) for tool in tools], monitoring.get_local_events(tools[0], find_and_load))
    for number in range(5):
        handlers.handler({"n": number})
    deadline = time.monotonic() + 20
    while monitoring.get_local_events(tools[0], find_and_load) and time.monotonic() < deadline:
        time.sleep(0.001)
    print(monitoring.get_local_events(tools[0], find_and_load))
""")


class EveryLambdaInvocationTest(StartupTestCase):
    """On Lambda every call of the handler is counted once it ends (Stats.invocations_ended), beyond the first
    invocations too, and promptly: the agent's extension exports on it before the environment is frozen."""

    PROGRAM = textwrap.dedent("""
        import os
        import sys
        import time
        import lambda_handlers

        lambda_handlers.handle("a")
        try:
            lambda_handlers.handle("fail")
        except ValueError:
            pass
        # Blocked, as a Lambda runtime waits for its next event: only the sender can find the call that raised.
        while not os.path.exists(sys.argv[1]):
            time.sleep(0.005)
        lambda_handlers.handle("b")
    """)

    def run_gated(self, agent, mode, script, gate, env, while_blocked):
        """Runs `script gate` under the shim in `mode`, and `while_blocked(conn, wait_until)` while it waits on its
        gate files (as a Lambda runtime waits for its next event); `wait_until(condition)` returns once the
        condition holds, the program has ended or 60 s have passed. Returns the connection once the program ended
        well."""
        process = support.start_python(["-m", "telemetry_shim", "--socket", agent.path, "--mode", mode, script, gate],
                                       env=env, cwd=self.tmp)

        def wait_until(condition):
            deadline = time.monotonic() + 60
            while not condition() and process.poll() is None and time.monotonic() < deadline:
                threading.Event().wait(0.01)

        try:
            conn = agent.wait_for_accepted(1)[0]
            while_blocked(conn, wait_until)
            _, err = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        self.assertEqual(0, process.returncode, err)
        return conn

    def test_each_call_is_counted_when_it_ends_even_one_that_raised(self):
        self.write("lambda_handlers.py", textwrap.dedent("""
            def handle(event, context=None):
                if event == "fail":
                    raise ValueError("bad event")
                return inner(event)

            def inner(event):
                return event.upper()
        """))
        script = self.write("app.py", self.PROGRAM)
        env = {"AWS_LAMBDA_FUNCTION_NAME": "orders", "_HANDLER": "lambda_handlers.handle",
               "TELEMETRY_SHIM_FIRST_INVOCATIONS": "1"}
        for mode in ("exceptions", "burst", "full"):
            with self.subTest(mode=mode), support.RecordingAgent() as agent:
                gate = os.path.join(self.tmp, "gate-" + mode)
                seen = []

                def while_blocked(conn, wait_until):
                    wait_until(lambda: (conn.stats or {}).get("invocations_ended", 0) >= 2)
                    seen.append((conn.stats or {}).get("invocations_ended", 0))
                    open(gate, "w").close()

                self.run_gated(agent, mode, script, gate, env, while_blocked)
                self.assertEqual([2], seen, "the STATS while the program waited, after a call that returned and one that raised")
                conn = agent.wait_for(1)[0]
                self.assertTrue(conn.hello["counts_invocations"])
                self.assertEqual(3, conn.goodbye["final_stats"]["invocations_ended"])
                self.assertEqual([1], [invocation["number"] for invocation in conn.first_invocations])
                if mode == "full":  # the handler's calls are recorded as any other, after its first ones too
                    starts = [event for event in conn.events if event[3] == "START"
                              and conn.codes[event[2]]["qualified_name"] == "handle"]
                    self.assertEqual(3, len(starts))

    def test_the_exceptions_of_a_call_are_sent_before_the_stats_that_says_it_ended(self):
        # Handled in the handler, swallowed by C code (getattr with a default) in it, or raised out of it and
        # handled by its caller: each concluded at once when the call ends, not after the quiet period.
        self.check_exceptions_before_call_end("")

    def test_an_end_waits_for_the_exceptions_of_a_thread_still_inside_the_callback_that_ended_the_call(self):
        # The callback that ends the call wakes the sender; here it then sleeps (the GIL let go) in a function of
        # the shim's own files, so that the sender's tick finds the thread inside the shim with the KeyError not
        # yet settled: the end waits for it.
        slow_report = textwrap.dedent("""
            import telemetry_shim
            from telemetry_shim import _control
            phase = _control._shim.startup
            namespace = {"report": phase._on_report, "sleep": time.sleep}
            source = "def on_report():\\n    report()\\n    sleep(0.3)\\n"
            shim_file = os.path.join(os.path.dirname(telemetry_shim.__file__), "slow_report.py")
            exec(compile(source, shim_file, "exec"), namespace)
            phase._on_report = namespace["on_report"]
        """)
        self.check_exceptions_before_call_end(slow_report)

    def test_an_end_waits_for_the_exceptions_its_caller_is_still_handling(self):
        # The caller's handler lets the GIL go while it handles the KeyError the call raised (as a Lambda runtime
        # reports the error): the sender's tick finds the call ended and the KeyError being handled, and the end
        # waits for its fate.
        self.check_exceptions_before_call_end("", while_handling="time.sleep(0.1)")

    def check_exceptions_before_call_end(self, before_second_call, while_handling="pass"):
        self.write("lambda_handlers.py", textwrap.dedent("""
            class Order:
                def __getattr__(self, name):
                    raise AttributeError(name)

            def handle(event, context=None):
                try:
                    int(event)
                except ValueError:
                    pass
                getattr(Order(), "discount", None)
                if event == "fail":
                    raise KeyError(event)
                return event
        """))
        program = textwrap.dedent("""
            import os
            import sys
            import time
            import lambda_handlers

            lambda_handlers.handle("a")
            while not os.path.exists(sys.argv[1] + ".1"):
                time.sleep(0.005)
        """) + before_second_call + textwrap.dedent("""
            try:
                lambda_handlers.handle("fail")
            except KeyError:
                WHILE_HANDLING
            while not os.path.exists(sys.argv[1] + ".2"):
                time.sleep(0.005)
        """)
        script = self.write("app.py", program.replace("WHILE_HANDLING", while_handling))
        # Without settling at the end they would come with the STATS after their quiet period (100 ms).
        env = {"AWS_LAMBDA_FUNCTION_NAME": "orders", "_HANDLER": "lambda_handlers.handle"}
        for mode in ("exceptions", "burst"):
            with self.subTest(mode=mode), support.RecordingAgent() as agent:
                gate = os.path.join(self.tmp, "gate-" + mode)

                def while_blocked(conn, wait_until):
                    for ended in (1, 2):
                        wait_until(lambda: ended in conn.exceptions_before_invocation_end)
                        open("%s.%d" % (gate, ended), "w").close()

                conn = self.run_gated(agent, mode, script, gate, env, while_blocked)
                for ended, expected in ((1, {"builtins.ValueError", "builtins.AttributeError"}),
                                        (2, {"builtins.ValueError", "builtins.AttributeError", "builtins.KeyError"})):
                    records, tallies = conn.exceptions_before_invocation_end[ended]

                    def in_handlers(location):
                        return conn.codes[location["code_id"]]["file_name"].endswith("lambda_handlers.py")

                    handled = [(record["detail"]["type_name"], record["fate"]) for record in records
                               if in_handlers(record["stack"][-1])]
                    handled += [(tally["type_name"], tally["fate"]) for tally in tallies if in_handlers(tally["raised_at"])]
                    self.assertEqual(expected, {name for name, _ in handled}, (ended, records, tallies))
                    self.assertEqual({"FATE_HANDLED"}, {fate for _, fate in handled}, (ended, handled))

    def test_off_lambda_calls_after_the_first_invocations_are_not_watched(self):
        self.write("handlers.py", HANDLER_MODULE)
        conn, _, _ = self.run_under_shim(CALLER, "--mode", "exceptions", "--ready-on", "handlers:handler")
        self.assertFalse(conn.hello["counts_invocations"])
        self.assertEqual(0, conn.goodbye["final_stats"]["invocations_ended"])
        self.assertEqual(3, len(conn.first_invocations))


class OneToolIdTest(StartupTestCase):
    """The phase shares the shim's one tool id in every mode, with the C callbacks or the Python ones
    (TELEMETRY_SHIM_NATIVE, as the suite runs), and leaves no local event behind."""

    def setUp(self):
        super().setUp()
        self.write("handlers.py", HANDLER_MODULE)

    def run_mode(self, mode):
        conn, out, _ = self.run_under_shim(ONE_TOOL, "--mode", mode, "--ready-on", "handlers:handler",
                                           env={"TELEMETRY_SHIM_FIRST_INVOCATIONS": "2"})
        during, after = out.splitlines()
        self.assertEqual("['telemetry_shim'] %d" % (sys.monitoring.events.PY_START | sys.monitoring.events.PY_RETURN), during)
        self.assertEqual("0", after)  # the phase's events went off once the first invocations were over
        self.assertEqual("READY_ON_FUNCTION", conn.startup["ready_rule"])
        names = [entry["module"] for entry in conn.startup["imports"]]
        self.assertIn("handlers", names)
        self.assertIn("json", names)
        self.assertEqual([1, 2], [invocation["number"] for invocation in conn.first_invocations])
        self.assertEqual(["csv", "_csv"], [entry["module"] for entry in conn.first_invocations[0]["imports"]])
        self.assertEqual([], conn.first_invocations[1]["imports"])
        return conn

    def test_full_mode_records_importlib_and_the_handler_as_any_code(self):
        conn = self.run_mode("full")
        counts = support.call_counts(conn)
        self.assertEqual(5, counts.get("handler"))
        # Every import the tree holds ran _find_and_load, recorded as a call like any other.
        self.assertGreaterEqual(counts.get("_find_and_load", 0),
                                len(conn.startup["imports"]) + len(conn.first_invocations[0]["imports"]))
        for thread_id, (_stack, problems) in support.replay_stacks(conn).items():
            self.assertEqual([], problems, thread_id)
        # The handler's definition says it is the ready-on function (the agent keeps its invocations' call
        # trees); no other code's does.
        self.assertEqual(["handler"], [code["qualified_name"] for code in conn.codes.values() if code.get("ready_on")])

    def test_without_first_invocations_no_code_is_said_to_be_the_ready_on_one(self):
        conn, _, _ = self.run_under_shim(CALLER, "--mode", "full", "--ready-on", "handlers:handler",
                                         env={"TELEMETRY_SHIM_FIRST_INVOCATIONS": "0"})
        self.assertEqual(5, support.call_counts(conn).get("handler"))
        self.assertEqual([], [code for code in conn.codes.values() if code.get("ready_on")])

    def test_burst_mode_records_nothing_outside_its_windows_and_each_first_invocation_in_a_window_of_its_own(self):
        conn = self.run_mode("burst")
        windows, outside = windows_of(conn)
        self.assertEqual([], outside)
        self.assert_invocation_windows(conn, windows, 2)

    def test_exceptions_mode_records_only_the_first_invocations_calls(self):
        conn = self.run_mode("exceptions")
        windows, outside = windows_of(conn)
        self.assertEqual([], outside)
        self.assertEqual({"INVOCATION_WINDOW_START"}, {kind for kind, _events in windows})
        self.assert_invocation_windows(conn, windows, 2)

    def assert_invocation_windows(self, conn, windows, planned):
        """Each first invocation's handler call (and json.dumps under it) is in an invocation window of its own,
        from before its start to after its end; no later call is."""
        handler_starts = [(ts, kind) for kind, events in windows for ts, _thread, code_id, event_kind in events
                          if event_kind == "START" and conn.qualified_name(code_id) == "handler"]
        in_invocation_windows = [ts for ts, kind in handler_starts if kind == "INVOCATION_WINDOW_START"]
        self.assertEqual(planned, len(in_invocation_windows))
        for ts, invocation in zip(in_invocation_windows, conn.first_invocations):
            self.assertTrue(invocation["start_ns"] <= ts <= invocation["end_ns"], (invocation, ts))
        invocation_windows = [events for kind, events in windows if kind == "INVOCATION_WINDOW_START"]
        self.assertEqual(planned, len(invocation_windows))
        for events, invocation in zip(invocation_windows, conn.first_invocations):
            names = [conn.qualified_name(code_id) for _ts, _thread, code_id, kind in events if kind == "START"]
            self.assertEqual("handler", names[0])
            self.assertIn("dumps", names)
            self.assertLessEqual(events[0][0], invocation["start_ns"])  # timed once its window is open


def windows_of(conn):
    """([(the window's start marker, [its events])], [events outside windows]); fails on a window inside another."""
    windows, outside, current = [], [], None
    for event in conn.events:
        kind = event[3]
        if kind in ("WINDOW_START", "INVOCATION_WINDOW_START"):
            assert current is None, "a window inside another"
            current = []
            windows.append((kind, current))
        elif kind in ("WINDOW_END", "INVOCATION_WINDOW_END"):
            assert current is not None and windows[-1][0][:-5] == kind[:-3], "an end without its start"
            current = None
        elif current is None:
            outside.append((kind, conn.qualified_name(event[2])))
        else:
            current.append(event)
    return windows, outside


class InvocationWindowsTest(StartupTestCase):
    def test_a_raising_invocation_ends_and_closes_its_window_where_it_raised(self):
        source = textwrap.dedent("""
            def handle(n):
                if n == 0:
                    raise ValueError("first call fails")
                return n
            for n in range(3):
                try:
                    handle(n)
                except ValueError:
                    pass
        """)
        for mode in ("exceptions", "burst"):
            with self.subTest(mode=mode):
                conn, _, _ = self.run_under_shim(source, "--mode", mode, "--ready-on", "app:handle")
                self.assertEqual([True, False, False], [invocation["raised"] for invocation in conn.first_invocations])
                first, second = conn.first_invocations[:2]
                ends = [ts for ts, _thread, _code, kind in conn.events if kind == "INVOCATION_WINDOW_END"]
                self.assertEqual(3, len(ends))
                # Closed at the unwind, before the loop's next call (not found ended at that call).
                self.assertLessEqual(first["end_ns"], ends[0])
                self.assertLess(ends[0], second["start_ns"])

    def test_an_invocation_that_starts_inside_a_burst_window_ends_it_and_gets_its_own(self):
        # Windows of a minute: once the first invocation's window has closed, the burst window that waited for it
        # opens, and the second invocation starts inside it.
        source = textwrap.dedent("""
            import sys, time
            monitoring = sys.monitoring
            tool = [tool for tool in range(6) if monitoring.get_tool(tool) == "telemetry_shim"][0]

            def handle(n):
                return sum(range(n))

            def burst_window_open():
                return monitoring.get_events(tool) & monitoring.events.PY_START

            handle(1)
            deadline = time.monotonic() + 20
            while not burst_window_open() and time.monotonic() < deadline:
                time.sleep(0.001)
            print(bool(burst_window_open()), handle(2), bool(burst_window_open()))
        """)
        env = {"TELEMETRY_SHIM_WINDOW_MS": "60000", "TELEMETRY_SHIM_PERIOD_MS": "240000",
               "TELEMETRY_SHIM_BUDGET": "off", "TELEMETRY_SHIM_FIRST_INVOCATIONS": "2"}
        conn, out, _ = self.run_under_shim(source, "--mode", "burst", "--ready-on", "app:handle", env=env)
        self.assertEqual("True 1 False", out.strip())  # the invocation's window, then no window: events off
        windows, outside = windows_of(conn)
        self.assertEqual(["INVOCATION_WINDOW_START", "WINDOW_START", "INVOCATION_WINDOW_START"],
                         [kind for kind, _events in windows])
        self.assertEqual([], outside)
        second = conn.first_invocations[1]
        burst_end = [ts for ts, _thread, _code, kind in conn.events if kind == "WINDOW_END"][0]
        window_start = [ts for ts, _thread, _code, kind in conn.events if kind == "INVOCATION_WINDOW_START"][1]
        self.assertLessEqual(burst_end, window_start)
        self.assertLessEqual(window_start, second["start_ns"])
        handle_starts = [[ts for ts, _thread, code_id, kind in events if kind == "START" and
                          conn.qualified_name(code_id) == "handle"] for _kind, events in windows]
        self.assertEqual([1, 0, 1], [len(starts) for starts in handle_starts])
        # Its window's first event after the seeds of its callers.
        first = next(event for event in windows[2][1] if event[3] != "SEED")
        self.assertEqual(("handle", "START"), (conn.qualified_name(first[2]), first[3]))

    def test_in_exceptions_mode_the_phase_keeps_its_own_callbacks_outside_the_windows(self):
        source = textwrap.dedent("""
            import sys
            monitoring = sys.monitoring
            tool = [tool for tool in range(6) if monitoring.get_tool(tool) == "telemetry_shim"][0]

            def start_callback():
                callback = monitoring.register_callback(tool, monitoring.events.PY_START, None)
                monitoring.register_callback(tool, monitoring.events.PY_START, callback)
                return getattr(callback, "__qualname__", type(callback).__name__)

            def handle():
                return start_callback()

            print(start_callback(), handle())
        """)
        conn, out, _ = self.run_under_shim(source, "--mode", "exceptions", "--ready-on", "app:handle")
        native = conn.hello["callbacks"] == "native"
        phase = "StartupCallbacks.py_start" if native else "telemetry_shim.startup_callback"
        recorder = "Callbacks.py_start" if native else "telemetry_shim.callback[START]"
        # Before the first invocation (the import events of the start-up), and inside its window.
        self.assertEqual([phase, recorder], out.split())
        self.assertEqual(1, len(windows_of(conn)[0]))

    def test_with_the_c_callbacks_no_python_frame_runs_for_an_imports_events(self):
        # A PEP 523 frame evaluator (_testinternalcapi's, as CPython's test_capi uses it) sees every Python frame
        # the interpreter runs: during the phase, importlib's events run none of the shim's with the C callbacks
        # (the phase's own: in exceptions mode, and in burst mode outside its windows, none of which opens before
        # a ready-on function's first call), and the Python twin's without them, not the recorder's slow path.
        support.skip_without_frame_recorder(self)
        source = textwrap.dedent("""
            import _testinternalcapi
            frames = []
            _testinternalcapi.set_eval_frame_record(frames)
            import colorsys
            _testinternalcapi.set_eval_frame_default()
            def serve():
                pass
            shim_frames = ("_find_and_load", "on_start", "on_return", "on_event", "_slow_path")
            print(*sorted({name for name in frames if name in shim_frames}))
        """)
        for mode in ("exceptions", "burst"):
            with self.subTest(mode=mode):
                conn, out, _ = self.run_under_shim(source, "--mode", mode, "--ready-on", "app:serve")
                imports = [entry["module"] for entry in conn.startup["imports"]]
                self.assertIn("colorsys", imports)
                if conn.hello["callbacks"] == "native":
                    self.assertEqual("_find_and_load\n", out)
                else:
                    self.assertEqual("_find_and_load on_event on_return on_start\n", out)

    def test_an_invocation_that_runs_too_long_has_its_window_closed_by_the_sender(self):
        source = textwrap.dedent("""
            import sys, time
            from telemetry_shim import _sender
            _sender.MAX_INVOCATION_WINDOW_NS = 50_000_000
            monitoring = sys.monitoring
            tool = [tool for tool in range(6) if monitoring.get_tool(tool) == "telemetry_shim"][0]

            def serve():
                deadline = time.monotonic() + 20
                while monitoring.get_events(tool) & monitoring.events.PY_START and time.monotonic() < deadline:
                    time.sleep(0.001)
                return monitoring.get_events(tool) & monitoring.events.PY_START

            print(serve(), serve())
        """)
        conn, out, _ = self.run_under_shim(source, "--mode", "exceptions", "--ready-on", "app:serve")
        self.assertEqual("0 0", out.strip())
        windows, _outside = windows_of(conn)
        self.assertEqual(2, len(windows))
        ends = [ts for ts, _thread, _code, kind in conn.events if kind == "INVOCATION_WINDOW_END"]
        for end, invocation in zip(ends, conn.first_invocations):
            self.assertLess(end, invocation["end_ns"])  # cut while it ran
            self.assertGreaterEqual(end - invocation["start_ns"], 50_000_000)

    def test_stop_before_ready_leaves_no_local_event_on_the_freed_tool_id(self):
        source = textwrap.dedent("""
            import sys, telemetry_shim
            find_and_load = sys.modules["_frozen_importlib"]._find_and_load.__code__
            for mode in ("full", "exceptions"):
                assert telemetry_shim.start(mode=mode)
                import json
                telemetry_shim.stop()
                print(mode, [sys.monitoring.get_tool(tool) for tool in (3, 4)],
                      [sys.monitoring.get_local_events(tool, find_and_load) for tool in (3, 4)])
        """)
        with support.RecordingAgent() as agent:
            code, out, err = support.run_python(source, env={"TELEMETRY_AGENT_SOCKET": agent.path})
        self.assertEqual((0, ""), (code, err))
        self.assertEqual("full [None, None] [0, 0]\nexceptions [None, None] [0, 0]\n", out)


class ModesBeforeReadyTest(StartupTestCase):
    SOURCE = textwrap.dedent("""
        import telemetry_shim

        def fail(tag):
            try:
                raise ValueError(tag)
            except ValueError:
                pass

        def handler():
            fail("after ready")

        fail("before ready")
        handler()
    """)

    def messages(self, conn):
        return [record["detail"]["message"] for record in conn.exception_records if record["detail"]]

    def test_exceptions_mode_records_from_ready_on(self):
        conn, _, _ = self.run_under_shim(self.SOURCE, "--mode", "exceptions", "--ready-on", "app:handler")
        self.assertEqual(["after ready"], self.messages(conn))

    def test_without_a_ready_on_function_exceptions_mode_records_from_the_start(self):
        conn, _, _ = self.run_under_shim(self.SOURCE, "--mode", "exceptions")
        self.assertEqual(["before ready", "after ready"], self.messages(conn))

    def test_full_mode_records_everything(self):
        conn, _, _ = self.run_under_shim(self.SOURCE, "--mode", "full", "--ready-on", "app:handler")
        self.assertEqual(["before ready", "after ready"], self.messages(conn))
        counts = support.call_counts(conn)
        self.assertEqual(2, counts.get("fail"))

    def test_without_a_startup_phase_exceptions_mode_records_everything(self):
        conn, _, _ = self.run_under_shim(self.SOURCE, "--mode", "exceptions", "--ready-on", "app:handler",
                                         env={"TELEMETRY_SHIM_STARTUP": "0"})
        self.assertEqual(["before ready", "after ready"], self.messages(conn))


if __name__ == "__main__":
    unittest.main()

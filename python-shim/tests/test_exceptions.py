"""Exception capture on real programs: real sys.monitoring, real subprocesses, a real Unix socket
and the independent decoder of support.py. Each record is checked field by field; lines are found
through `# @name` markers in the program's source."""

import os
import sys
import textwrap
import time
import unittest

from tests import support
from telemetry_shim._exceptions import program_threads

PRELUDE = "import telemetry_shim\nassert telemetry_shim.start(%s), 'shim did not start'\n"


class ExceptionRun:
    """Runs `source` with the shim started first (start(**start_args)); one connection expected."""

    def __init__(self, test, source, returncode=0, start_args="", env=None, prelude=None, args=None):
        self.test = test
        self.source = (PRELUDE % start_args if prelude is None else prelude) + textwrap.dedent(source)
        with support.RecordingAgent() as agent:
            full_env = {"TELEMETRY_AGENT_SOCKET": agent.path}
            full_env.update(env or {})
            started = time.monotonic()
            self.returncode, self.stdout, self.stderr = support.run_python(
                args if args is not None else self.source, env=full_env)
            self.elapsed = time.monotonic() - started
            test.assertEqual(returncode, self.returncode, self.stderr)
            self.conn = agent.wait_for(1, timeout=30)[0]
        test.assertIsNone(self.conn.error)
        # Records of exceptions raised by the program's own code (the interpreter's imports
        # raise and handle many on their own).
        self.all_records = self.conn.exception_records
        self.records = [r for r in self.all_records if self._raised_in_program(r)]

    def _raised_in_program(self, record):
        site = (record["stack"] or record["detail"]["traceback"] or [None])[-1]
        return site is not None and self.conn.codes[site["code_id"]]["file_name"] == "<string>"

    def line(self, marker):
        """The line number of the line holding `# @marker`."""
        lines = [number for number, text in enumerate(self.source.splitlines(), 1)
                 if text.rstrip().endswith("# @" + marker)]
        self.test.assertEqual(1, len(lines), "marker %s" % marker)
        return lines[0]

    def where(self, location):
        """(qualified name, line) of a Location."""
        if location is None:
            return None
        return self.conn.qualified_name(location["code_id"]), location["line"]

    def of_type(self, type_name):
        return [r for r in self.records if r["detail"]["type_name"] == type_name]

    def one(self, type_name):
        found = self.of_type(type_name)
        self.test.assertEqual(1, len(found), [r["detail"]["type_name"] for r in self.records])
        return found[0]

    def assert_stacks_balanced(self):
        for thread_id, (stack, problems) in support.replay_stacks(self.conn).items():
            self.test.assertEqual([], problems, self.conn.threads[thread_id]["name"])
            self.test.assertEqual([], stack, self.conn.threads[thread_id]["name"])


class PropagationTests(unittest.TestCase):
    def test_note_added_in_a_handler_then_reraised(self):
        run = ExceptionRun(self, """
            def parse(text):
                raise ValueError("bad input: " + text)  # @raise
            def load(text):
                try:
                    return parse(text)  # @call
                except ValueError as error:
                    error.add_note("while loading settings.toml")
                    error.add_note("line 3")
                    raise  # @reraise
            try:
                load("x=")  # @load
            except ValueError:  # @handler
                pass
            """)
        record = run.one("builtins.ValueError")
        self.assertEqual("FATE_HANDLED", record["fate"])
        self.assertEqual(("<module>", run.line("handler")), run.where(record["handled_at"]))
        self.assertEqual(1, record["reraises"])
        self.assertEqual(2, record["frames_unwound"])
        self.assertEqual([("<module>", run.line("load")), ("load", run.line("call")), ("parse", run.line("raise"))],
                         [run.where(l) for l in record["stack"]])
        self.assertFalse(record["stack_truncated"])
        self.assertEqual(run.conn.thread_named("MainThread"), record["thread_id"])
        self.assertLessEqual(record["raised_ns"], record["fate_ns"])
        detail = record["detail"]
        self.assertEqual(("bad input: x=", "MESSAGE_OK"), (detail["message"], detail["message_status"]))
        self.assertEqual(["while loading settings.toml", "line 3"], detail["notes"])
        self.assertEqual(0, detail["notes_omitted"])
        # The traceback as the exception carries it (a bare `raise` adds no entry).
        self.assertEqual([("<module>", run.line("load")), ("load", run.line("call")),
                          ("parse", run.line("raise"))], [run.where(l) for l in detail["traceback"]])
        self.assertEqual((None, None, False, [], 0, False),
                         (detail["cause"], detail["context"], detail["suppress_context"], detail["members"],
                          detail["members_omitted"], detail["nesting_truncated"]))
        self.assertEqual(1, len(run.records))
        self.assertEqual([], run.conn.tallies)
        run.assert_stacks_balanced()

    def test_notes_added_in_a_handler_that_swallows_it_are_recorded(self):
        # Nothing after the handler shows the exception again: the notes watch (C_RETURN of add_note)
        # reads them, in both spellings of the call.
        run = ExceptionRun(self, """
            def parse(text):
                raise ValueError("bad input: " + text)  # @raise
            for text in ("a", "b"):
                try:
                    parse(text)
                except ValueError as error:  # @handler
                    error.add_note("while parsing " + text)
                    add = error.add_note
                    add("then dropped")
            """)
        records = run.of_type("builtins.ValueError")
        self.assertEqual([["while parsing a", "then dropped"], ["while parsing b", "then dropped"]],
                         [r["detail"]["notes"] for r in records])
        self.assertEqual({("FATE_HANDLED", ("<module>", run.line("handler")))},
                         {(r["fate"], run.where(r["handled_at"])) for r in records})

    def test_notes_watch_off_leaves_call_events_alone(self):
        run = ExceptionRun(self, """
            import sys
            tool = next(t for t in range(6) if sys.monitoring.get_tool(t) == "telemetry_shim")
            print(bool(sys.monitoring.get_events(tool) & sys.monitoring.events.CALL))
            try:
                raise ValueError("x")
            except ValueError as error:
                error.add_note("late")
            """, start_args="calls=False", env={"TELEMETRY_SHIM_NOTE_WATCH": "off"})
        self.assertEqual("False\n", run.stdout)
        self.assertEqual([], run.one("builtins.ValueError")["detail"]["notes"])

    def test_exception_unwinding_through_50_frames_is_one_record(self):
        run = ExceptionRun(self, """
            def dive(n):
                if n == 1:
                    raise LookupError("bottom")  # @raise
                return dive(n - 1)  # @recurse
            try:
                dive(50)  # @call
            except LookupError:  # @handler
                pass
            """)
        record = run.one("builtins.LookupError")
        self.assertEqual(1, len(run.records))
        self.assertEqual(50, record["frames_unwound"])
        self.assertEqual(0, record["reraises"])
        stack = [run.where(l) for l in record["stack"]]
        self.assertEqual([("<module>", run.line("call"))] + [("dive", run.line("recurse"))] * 49
                         + [("dive", run.line("raise"))], stack)
        self.assertEqual(51, len(record["detail"]["traceback"]))
        self.assertEqual(("<module>", run.line("handler")), run.where(record["handled_at"]))
        run.assert_stacks_balanced()

    def test_deep_stack_keeps_the_innermost_128_frames(self):
        run = ExceptionRun(self, """
            def dive(n):
                if n == 0:
                    raise LookupError("bottom")
                return dive(n - 1)
            try:
                dive(300)
            except LookupError:
                pass
            """)
        record = run.one("builtins.LookupError")
        self.assertEqual(128, len(record["stack"]))
        self.assertTrue(record["stack_truncated"])
        self.assertEqual(128, len(record["detail"]["traceback"]))
        self.assertEqual(301, record["frames_unwound"])
        self.assertEqual({"dive"}, {run.where(l)[0] for l in record["stack"]})

    def test_with_block_exit_swallowing_is_handled_at_the_with_line(self):
        run = ExceptionRun(self, """
            import contextlib
            class Quiet:
                def __enter__(self):
                    return self
                def __exit__(self, kind, value, tb):
                    return kind is KeyError
            def work():
                with Quiet():  # @with
                    raise KeyError("gone")  # @raise
                with contextlib.suppress(IndexError):  # @suppress
                    [][1]  # @index
                return "done"
            print(work())
            """)
        self.assertEqual("done\n", run.stdout)
        key_error = run.one("builtins.KeyError")
        self.assertEqual("FATE_HANDLED", key_error["fate"])
        self.assertEqual(("work", run.line("with")), run.where(key_error["handled_at"]))
        self.assertEqual(("work", run.line("raise")), run.where(key_error["stack"][-1]))
        self.assertEqual(0, key_error["reraises"])
        index_error = run.one("builtins.IndexError")
        self.assertEqual(("work", run.line("suppress")), run.where(index_error["handled_at"]))
        self.assertEqual(("list index out of range", "MESSAGE_OK"),
                         (index_error["detail"]["message"], index_error["detail"]["message_status"]))
        run.assert_stacks_balanced()

    def test_with_block_that_does_not_swallow_counts_one_reraise(self):
        run = ExceptionRun(self, """
            class Passing:
                def __enter__(self):
                    return self
                def __exit__(self, *exc_info):
                    return False
            def work():
                with Passing():
                    raise KeyError("k")
            try:
                work()
            except KeyError:  # @handler
                pass
            """)
        record = run.one("builtins.KeyError")
        self.assertEqual(("<module>", run.line("handler")), run.where(record["handled_at"]))
        self.assertEqual((1, 1), (record["reraises"], record["frames_unwound"]))

    def test_exception_swallowed_by_c_code_is_handled_at_the_calling_line(self):
        run = ExceptionRun(self, """
            class Lazy:
                @property
                def value(self):
                    raise AttributeError("not loaded")  # @raise
            print(hasattr(Lazy(), "value"))  # @hasattr
            """)
        self.assertEqual("False\n", run.stdout)
        record = run.one("builtins.AttributeError")
        self.assertEqual("FATE_HANDLED", record["fate"])
        self.assertEqual(("<module>", run.line("hasattr")), run.where(record["handled_at"]))
        self.assertEqual(1, record["frames_unwound"])


    def test_stop_iteration_ended_by_a_for_loop_or_yield_from_is_handled_there(self):
        # The loop's FOR_ITER (or yield from's SEND) swallows a StopIteration in C after a RAISE
        # event in the looping frame, and nothing follows: not an exception in flight.
        run = ExceptionRun(self, """
            class Countdown:
                def __init__(self, n):
                    self.n = n
                def __iter__(self):
                    return self
                def __next__(self):
                    if self.n == 0:
                        raise StopIteration  # @raise
                    self.n -= 1
                    return self.n
            def drain():
                total = 0
                for value in Countdown(3):  # @for
                    total += value
                return total
            def delegate():
                yield from Countdown(2)  # @yieldfrom
            for _ in map(next, [iter(())]):  # @cmap
                pass
            print(drain(), list(delegate()))
            """)
        self.assertEqual("3 [1, 0]\n", run.stdout)
        records = run.of_type("builtins.StopIteration")
        # (handled at, frames unwound): the map() one was raised by next() in C, so it left no
        # frame of the program's.
        self.assertEqual(sorted([(("drain", run.line("for")), 1), (("delegate", run.line("yieldfrom")), 1),
                                 (("<module>", run.line("cmap")), 0)]),
                         sorted((run.where(r["handled_at"]), r["frames_unwound"]) for r in records))
        self.assertEqual({"FATE_HANDLED"}, {r["fate"] for r in records})
        self.assertEqual([], [r for r in run.all_records if r["fate"] == "FATE_IN_FLIGHT"])
        self.assertEqual([], [t for t in run.conn.tallies if t["fate"] == "FATE_IN_FLIGHT"])

    def test_awaits_of_finished_futures_are_handled_where_they_wait_and_add_up(self):
        # `await` of a done future: the future's iterator raises StopIteration in C, a RAISE event in
        # the awaiting frame, and that frame's SEND ends it. After the first detailed ones each is
        # only counted (asyncio code does this on every await).
        run = ExceptionRun(self, """
            import asyncio
            async def main():
                loop = asyncio.get_running_loop()
                for i in range(3000):
                    future = loop.create_future()
                    loop.call_soon(future.set_result, i)
                    await future  # @await
            asyncio.run(main())
            print("done")
            """)
        self.assertEqual("done\n", run.stdout)
        at_await = ("main", run.line("await"))
        records = [r for r in run.of_type("builtins.StopIteration") if run.where(r["stack"][-1]) == at_await]
        tallies = [t for t in run.conn.tallies
                   if t["type_name"] == "builtins.StopIteration" and run.where(t["raised_at"]) == at_await]
        self.assertGreaterEqual(len(records), 1)
        self.assertLessEqual(len(records), 40)
        self.assertEqual({at_await}, {run.where(r["handled_at"]) for r in records})
        self.assertEqual({"FATE_HANDLED"}, {r["fate"] for r in records} | {t["fate"] for t in tallies})
        self.assertEqual(3000, len(records) + sum(t["count"] for t in tallies))

    def test_generators_closed_at_a_yield_count_each_generator_exit_once_as_handled_by_the_closing_line(self):
        # close() throws a new GeneratorExit into a suspended generator: a RAISE at its yield, then
        # its cleanup's HANDLED and RERAISE events (compiler-made handlers, a finally, a with-block
        # that passes it to a contextmanager's generator) and a PY_UNWIND, and close() swallows it
        # in C. One exception raised at the yield and handled where the generator was closed, whatever
        # its cleanup does. (CPython 3.13 closes a generator suspended outside any handler without
        # raising: no exception then.)
        run = ExceptionRun(self, """
            import contextlib, sys
            data = [1, 7, 3]
            def with_finally():
                try:
                    yield 1  # @finally
                finally:
                    pass
            @contextlib.contextmanager
            def managed():
                yield
            def with_block():
                with managed():
                    yield 1  # @with
            def inner():
                yield 1  # @inner
            def outer():
                yield from inner()  # @outer
            for _ in range(300):
                any(x > 5 for x in data)  # @any
                for generator in (with_finally(), with_block(), outer()):
                    next(generator)
                    generator.close()  # @close
            print("done")
            """)
        self.assertEqual("done\n", run.stdout)
        generator_exits = run.of_type("builtins.GeneratorExit")
        tallies = [t for t in run.conn.tallies if t["type_name"] == "builtins.GeneratorExit"]
        self.assertEqual({"FATE_HANDLED"}, {r["fate"] for r in generator_exits} | {t["fate"] for t in tallies})
        counts = {}
        for record in generator_exits:
            raised_at = run.where(record["stack"][-1])
            counts[raised_at] = counts.get(raised_at, 0) + 1
            closed_by = "any" if raised_at[0] == "<genexpr>" else "close"
            self.assertEqual(("<module>", run.line(closed_by)), run.where(record["handled_at"]), raised_at)
        for tally in tallies:
            raised_at = run.where(tally["raised_at"])
            counts[raised_at] = counts.get(raised_at, 0) + tally["count"]
        expected = {("with_finally", run.line("finally")): 300, ("with_block", run.line("with")): 300,
                    ("outer", run.line("outer")): 300}
        if sys.version_info < (3, 13):  # 3.13 closes these without raising
            expected.update({("<genexpr>", run.line("any")): 300, ("inner", run.line("inner")): 300})
        self.assertEqual(expected, counts)
        self.assertEqual([], [r for r in run.all_records if r["fate"] == "FATE_IN_FLIGHT"])

    def test_web_service_example_leaves_no_exception_in_flight(self):
        # A real program mixing http.server, email.feedparser (StopIteration from a Python
        # __next__ ended by a for loop), json errors and hasattr(): every fate is known.
        example = os.path.join(support.REPO_ROOT, "examples", "web_service.py")
        run = ExceptionRun(self, "", args=["-m", "telemetry_shim", example, "--requests", "60"])
        self.assertIn("responses by status", run.stdout)
        fates = {r["fate"] for r in run.all_records} | {t["fate"] for t in run.conn.tallies}
        self.assertIn("FATE_HANDLED", fates)
        stuck = [(r["detail"]["type_name"], r["stack"][:1]) for r in run.all_records if r["fate"] == "FATE_IN_FLIGHT"]
        self.assertEqual([], stuck)
        self.assertEqual([], [t for t in run.conn.tallies if t["fate"] == "FATE_IN_FLIGHT"])


class ChainTests(unittest.TestCase):
    def test_raise_from_records_the_cause_and_suppresses_the_context(self):
        run = ExceptionRun(self, """
            def read():
                try:
                    {}["port"]  # @key
                except KeyError as missing:
                    raise RuntimeError("config incomplete") from missing  # @raise
            try:
                read()
            except RuntimeError:
                pass
            """)
        record = run.one("builtins.RuntimeError")
        detail = record["detail"]
        self.assertTrue(detail["suppress_context"])
        self.assertIsNone(detail["context"])
        cause = detail["cause"]
        self.assertEqual(("builtins.KeyError", "'port'", "MESSAGE_OK"),
                         (cause["type_name"], cause["message"], cause["message_status"]))
        self.assertEqual([("read", run.line("key"))], [run.where(l) for l in cause["traceback"]])
        # The KeyError has its own record: handled where it was caught.
        key_error = run.one("builtins.KeyError")
        self.assertEqual("FATE_HANDLED", key_error["fate"])
        self.assertEqual("read", run.where(key_error["handled_at"])[0])
        self.assertIsNone(key_error["detail"]["cause"])

    def test_implicit_context(self):
        run = ExceptionRun(self, """
            try:
                try:
                    1 / 0
                except ZeroDivisionError:
                    int("seven")
            except ValueError:
                pass
            """)
        detail = run.one("builtins.ValueError")["detail"]
        self.assertEqual("invalid literal for int() with base 10: 'seven'", detail["message"])
        self.assertFalse(detail["suppress_context"])
        self.assertIsNone(detail["cause"])
        self.assertEqual(("builtins.ZeroDivisionError", "division by zero"),
                         (detail["context"]["type_name"], detail["context"]["message"]))

    def test_raise_from_none(self):
        run = ExceptionRun(self, """
            try:
                try:
                    1 / 0
                except ZeroDivisionError:
                    raise ValueError("hidden") from None
            except ValueError:
                pass
            """)
        detail = run.one("builtins.ValueError")["detail"]
        self.assertEqual((True, None, None), (detail["suppress_context"], detail["cause"], detail["context"]))

    def test_exception_group_split_by_except_star(self):
        run = ExceptionRun(self, """
            class Invalid(ValueError):
                pass
            def validate():
                raise ExceptionGroup("2 fields invalid", [  # @raise
                    Invalid("name"), TypeError("age"), ExceptionGroup("address", [KeyError("zip")])])
            def check():
                try:
                    validate()  # @validate
                except* ValueError:
                    pass
            try:
                check()  # @call
            except* TypeError:
                pass
            except* KeyError:
                pass
            """)
        groups = run.of_type("builtins.ExceptionGroup")
        self.assertEqual(2, len(groups), groups)
        original = next(r for r in groups if r["detail"]["message"].startswith("2 fields invalid"))
        self.assertEqual("2 fields invalid (3 sub-exceptions)", original["detail"]["message"])
        self.assertEqual("FATE_HANDLED", original["fate"])
        self.assertEqual("check", run.where(original["handled_at"])[0])
        self.assertEqual(("validate", run.line("raise")), run.where(original["stack"][-1]))
        members = original["detail"]["members"]
        self.assertEqual(["__main__.Invalid", "builtins.TypeError", "builtins.ExceptionGroup"],
                         [m["type_name"] for m in members])
        self.assertEqual(["name", "age"], [m["message"] for m in members[:2]])
        self.assertEqual(["builtins.KeyError"], [m["type_name"] for m in members[2]["members"]])
        self.assertEqual("'zip'", members[2]["members"][0]["message"])
        # The part that except* ValueError did not match leaves check() as a new group object.
        rest = next(r for r in groups if r is not original)
        self.assertEqual("2 fields invalid (2 sub-exceptions)", rest["detail"]["message"])
        self.assertEqual(["builtins.TypeError", "builtins.ExceptionGroup"],
                         [m["type_name"] for m in rest["detail"]["members"]])
        self.assertEqual("FATE_HANDLED", rest["fate"])
        self.assertEqual("<module>", run.where(rest["handled_at"])[0])
        self.assertEqual(1, rest["frames_unwound"])
        self.assertEqual([("<module>", run.line("call")), ("check", run.line("validate"))],
                         [run.where(l) for l in rest["stack"]])
        run.assert_stacks_balanced()

    def test_group_members_and_notes_are_capped(self):
        run = ExceptionRun(self, """
            error = ExceptionGroup("many", [ValueError(i) for i in range(20)])
            for i in range(18):
                error.add_note("note %d" % i)
            error.__notes__.append(42)
            try:
                raise error
            except ExceptionGroup:
                pass
            """)
        detail = run.one("builtins.ExceptionGroup")["detail"]
        self.assertEqual(16, len(detail["members"]))
        self.assertEqual(4, detail["members_omitted"])
        self.assertEqual(["note %d" % i for i in range(16)], detail["notes"])
        self.assertEqual(3, detail["notes_omitted"])  # two beyond 16, and one that is not a str


class GeneratorTests(unittest.TestCase):
    def test_exception_thrown_into_a_generator_and_a_coroutine(self):
        run = ExceptionRun(self, """
            import types
            def worker():
                try:
                    yield 1  # @yield
                except KeyError:  # @gen_handler
                    yield 2
            g = worker()
            next(g)
            g.throw(KeyError("stop"))
            g.close()

            async def task():
                try:
                    await types.coroutine(lambda: (yield))()  # @await
                except TimeoutError:  # @coro_handler
                    return "timed out"
            c = task()
            c.send(None)
            try:
                c.throw(TimeoutError("slow"))
            except StopIteration as done:  # @stop
                print(done.value)
            """)
        self.assertEqual("timed out\n", run.stdout)
        key_error = run.one("builtins.KeyError")
        self.assertEqual(("worker", run.line("yield")), run.where(key_error["stack"][-1]))
        self.assertEqual(("worker", run.line("gen_handler")), run.where(key_error["handled_at"]))
        timeout = run.one("builtins.TimeoutError")
        self.assertEqual("FATE_HANDLED", timeout["fate"])
        self.assertEqual(("task", run.line("coro_handler")), run.where(timeout["handled_at"]))
        self.assertEqual("slow", timeout["detail"]["message"])
        stop = run.one("builtins.StopIteration")
        self.assertEqual(("<module>", run.line("stop")), run.where(stop["handled_at"]))
        run.assert_stacks_balanced()


class EscapeTests(unittest.TestCase):
    PROGRAM = """
        import sys
        def fail():
            raise PermissionError("no access to /srv/data")  # @raise
        def main():
            fail()  # @call
        main()  # @main
        """

    def test_escaping_the_program_exits_non_zero_with_the_same_traceback(self):
        run = ExceptionRun(self, self.PROGRAM, returncode=1)
        code, out, err = support.run_python(run.source.replace("assert telemetry_shim.start(), ", "assert True, "))
        self.assertEqual(1, code)
        self.assertEqual(err, run.stderr)
        self.assertIn("PermissionError: no access to /srv/data", run.stderr)
        record = run.one("builtins.PermissionError")
        self.assertEqual("FATE_ESCAPED_PROGRAM", record["fate"])
        self.assertIsNone(record["handled_at"])
        self.assertEqual(3, record["frames_unwound"])
        self.assertEqual([("<module>", run.line("main")), ("main", run.line("call")), ("fail", run.line("raise"))],
                         [run.where(l) for l in record["detail"]["traceback"]])
        run.assert_stacks_balanced()

    def test_escaping_a_script_run_by_the_runner(self):
        with support.RecordingAgent() as agent:
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                script = os.path.join(tmp, "app.py")
                with open(script, "w") as f:
                    f.write(textwrap.dedent(self.PROGRAM))
                plain = support.run_python([script])
                traced = support.run_python(["-m", "telemetry_shim", "--socket", agent.path, script])
            conn = agent.wait_for(1)[0]
        self.assertEqual((1, plain[2]), (traced[0], traced[2]))
        records = [r for r in conn.exception_records if r["detail"]["type_name"] == "builtins.PermissionError"]
        self.assertEqual(["FATE_ESCAPED_PROGRAM"], [r["fate"] for r in records])
        self.assertEqual(["<module>", "main", "fail"],
                         [conn.qualified_name(l["code_id"]) for l in records[0]["detail"]["traceback"]])

    def test_program_hook_installed_later_runs_and_the_escape_is_still_recorded(self):
        run = ExceptionRun(self, """
            import sys
            def mine(kind, value, tb):
                print("program hook:", kind.__name__)
            sys.excepthook = mine
            raise OSError("down")
            """, returncode=1)
        self.assertEqual("program hook: OSError\n", run.stdout)
        self.assertEqual("FATE_ESCAPED_PROGRAM", run.one("builtins.OSError")["fate"])

    def test_system_exit_escapes_the_program(self):
        run = ExceptionRun(self, "import sys\nsys.exit(3)\n", returncode=3)
        record = run.one("builtins.SystemExit")
        self.assertEqual("FATE_ESCAPED_PROGRAM", record["fate"])
        self.assertEqual("3", record["detail"]["message"])

    def test_exception_escaping_a_thread(self):
        run = ExceptionRun(self, """
            import threading
            def crash():
                raise ConnectionResetError("peer went away")  # @raise
            worker = threading.Thread(target=crash, name="net-worker")
            worker.start()
            worker.join()
            """)
        self.assertIn("ConnectionResetError: peer went away", run.stderr)
        self.assertIn('Exception in thread net-worker', run.stderr)
        record = run.one("builtins.ConnectionResetError")
        self.assertEqual("FATE_ESCAPED_THREAD", record["fate"])
        self.assertEqual(run.conn.thread_named("net-worker"), record["thread_id"])
        self.assertEqual(("crash", run.line("raise")), run.where(record["stack"][-1]))
        self.assertEqual("Thread._bootstrap", run.where(record["stack"][0])[0])
        run.assert_stacks_balanced()

    def test_thread_escape_without_our_hook_is_still_an_escape(self):
        run = ExceptionRun(self, """
            import threading
            threading.excepthook = lambda args: print("program hook:", args.exc_type.__name__)
            worker = threading.Thread(target=lambda: 1 / 0, name="calc")
            worker.start()
            worker.join()
            """)
        self.assertEqual("program hook: ZeroDivisionError\n", run.stdout)
        record = run.one("builtins.ZeroDivisionError")
        self.assertEqual(("FATE_ESCAPED_THREAD", run.conn.thread_named("calc")), (record["fate"], record["thread_id"]))

    def test_unraisable_exception_in_del(self):
        run = ExceptionRun(self, """
            class Handle:
                def __del__(self):
                    raise BufferError("flush failed")
            h = Handle()
            del h
            """)
        self.assertIn("Exception ignored in", run.stderr)
        self.assertIn("BufferError: flush failed", run.stderr)
        record = run.one("builtins.BufferError")
        self.assertEqual("FATE_UNRAISABLE", record["fate"])
        self.assertEqual("Handle.__del__", run.where(record["stack"][-1])[0])

    def test_asyncio_unhandled_in_a_callback_and_a_forgotten_task(self):
        run = ExceptionRun(self, """
            import asyncio, gc
            def callback():
                raise ArithmeticError("in callback")
            async def forgotten():
                raise EOFError("never awaited")
            async def main():
                loop = asyncio.get_running_loop()
                loop.call_soon(callback)
                task = asyncio.ensure_future(forgotten())
                await asyncio.sleep(0.05)
                del task
                gc.collect()
                await asyncio.sleep(0)
            asyncio.run(main())
            """)
        self.assertIn("in callback", run.stderr)
        self.assertIn("never awaited", run.stderr)
        self.assertEqual("FATE_ASYNCIO_UNHANDLED", run.one("builtins.ArithmeticError")["fate"])
        forgotten = run.one("builtins.EOFError")
        self.assertEqual("FATE_ASYNCIO_UNHANDLED", forgotten["fate"])
        self.assertEqual("forgotten", run.where(forgotten["stack"][-1])[0])

    def test_awaited_task_exception_continues_its_record(self):
        run = ExceptionRun(self, """
            import asyncio
            async def fetch():
                await asyncio.sleep(0.01)
                raise TimeoutError("upstream")  # @raise
            async def main():
                task = asyncio.create_task(fetch())
                await asyncio.sleep(0.3)  # longer than the sender's quiet period
                try:
                    await task
                except TimeoutError:  # @handler
                    return "recovered"
            print(asyncio.run(main()))
            """)
        self.assertEqual("recovered\n", run.stdout)
        record = run.one("builtins.TimeoutError")
        self.assertEqual(("main", run.line("handler")), run.where(record["handled_at"]))
        self.assertEqual(("fetch", run.line("raise")), run.where(record["stack"][-1]))


class LifetimeTests(unittest.TestCase):
    """No exception, traceback or frame outlives the program's last reference to it: objects held by
    the frames an exception passed through die where they die without the shim (no gc.collect())."""

    def test_frames_of_handled_exceptions_die_when_the_handler_ends(self):
        run = ExceptionRun(self, """
            import weakref
            class Resource:
                pass
            alive = []
            def fail(error_type, text):
                held = Resource()  # what the frame holds: a file, a lock, a buffer
                alive.append(weakref.ref(held))
                raise error_type(text)
            def check(label):
                dead = [r() is None for r in alive]
                print(label, all(dead))
                alive.clear()
            for i in range(30):  # the first ones detailed, the others counted
                try:
                    fail(KeyError, i)
                except KeyError:
                    pass
                check("handled")
            try:
                try:
                    fail(ValueError, "value")
                except ValueError as error:
                    error.add_note("note")
                    raise
            except ValueError:
                pass
            check("reraised")
            class Lazy:
                @property
                def value(self):
                    fail(AttributeError, "value")
            hasattr(Lazy(), "value")  # swallowed by C
            check("swallowed")
            """)
        self.assertEqual("handled True\n" * 30 + "reraised True\nswallowed True\n", run.stdout)
        self.assertEqual(30, len(run.of_type("builtins.KeyError")) + sum(
            t["count"] for t in run.conn.tallies if t["type_name"] == "builtins.KeyError"))

    def test_the_handler_sees_the_innermost_frame_which_dies_after_it(self):
        # test_exceptions' cleanup test, away from the recursion limit: the handler sees the innermost frame's
        # locals through the traceback, and they die after it.
        run = ExceptionRun(self, """
            import weakref
            class C:
                pass
            ref = None
            def inner(depth):
                global ref
                c = C()
                ref = weakref.ref(c)
                if depth:
                    inner(depth - 1)
                else:
                    raise LookupError("bottom")
            try:
                inner(50)
            except LookupError:
                print(ref() is not None)
            print(ref() is None)
            """)
        self.assertEqual("True\nTrue\n", run.stdout)


class AuditHookTests(unittest.TestCase):
    def test_the_programs_audit_hooks_never_see_the_shims_identity_lookups(self):
        # id() raises the `builtins.id` audit event: the shim's lookups (every call, every exception,
        # every tick of the sender) must not reach, or run, the program's hooks.
        run = ExceptionRun(self, """
            import sys
            seen = []
            sys.addaudithook(lambda event, args: event == "builtins.id" and seen.append(args))
            def f(n):
                return n and f(n - 1)
            for i in range(200):
                f(5)
                try:
                    {}[i]
                except KeyError as error:
                    error.add_note("missing")
            id(seen)  # the program's own call is seen
            print(len(seen))
            """)
        self.assertEqual("1\n", run.stdout)
        self.assertEqual(200, len(run.of_type("builtins.KeyError")) + sum(
            t["count"] for t in run.conn.tallies if t["type_name"] == "builtins.KeyError"))


class SafetyTests(unittest.TestCase):
    def test_hostile_exceptions_never_run_their_code_and_never_slow_the_program(self):
        run = ExceptionRun(self, """
            import time
            class Raising(Exception):
                def __str__(self):
                    raise RuntimeError("__str__ called")
                def __repr__(self):
                    raise RuntimeError("__repr__ called")
            class Sleeping(Exception):
                def __str__(self):
                    time.sleep(10)
                    return "late"
            class Hostile(Exception):
                def __getattribute__(self, name):
                    time.sleep(10)
                    raise RuntimeError("__getattribute__ called for " + name)
                def __getattr__(self, name):
                    time.sleep(10)
                    raise RuntimeError("__getattr__ called")
            class Odd:
                def __str__(self):
                    time.sleep(10)
                    return "odd"
            started = time.monotonic()
            for cls in (Raising, Sleeping):
                try:
                    raise cls("payload")
                except cls:
                    pass
            hostile = Hostile("payload")
            BaseException.__dict__["__dict__"].__get__(hostile)["__notes__"] = ["hostile note"]
            try:
                raise hostile
            except Hostile:
                pass
            try:
                raise ValueError(Odd())
            except ValueError:
                pass
            print("elapsed %.1f" % (time.monotonic() - started))
            """)
        self.assertLess(float(run.stdout.split()[1]), 2.0)
        self.assertLess(run.elapsed, 9.0)
        for name in ("__main__.Raising", "__main__.Sleeping", "builtins.ValueError"):
            detail = run.one(name)["detail"]
            self.assertEqual(("", "MESSAGE_UNAVAILABLE"), (detail["message"], detail["message_status"]), name)
        # Its __str__ is BaseException's (C, over a plain str): safe, and it never looks attributes up.
        hostile = run.one("__main__.Hostile")["detail"]
        self.assertEqual(("payload", "MESSAGE_OK", ["hostile note"]),
                         (hostile["message"], hostile["message_status"], hostile["notes"]))
        self.assertEqual("", run.stderr)

    def test_long_message_is_cut_at_1024_utf8_bytes(self):
        run = ExceptionRun(self, """
            try:
                raise ValueError("é" * 2000)
            except ValueError:
                pass
            """)
        detail = run.one("builtins.ValueError")["detail"]
        self.assertEqual("MESSAGE_TRUNCATED", detail["message_status"])
        self.assertEqual("é" * 512, detail["message"])

    def test_ten_thousand_distinct_messages_are_bounded_and_add_up(self):
        run = ExceptionRun(self, """
            for i in range(10000):
                try:
                    raise KeyError("user-%d" % i)  # @raise
                except KeyError:
                    pass
            """)
        records = run.of_type("builtins.KeyError")
        first = program_threads.FIRST_DETAILED_PER_SITE
        self.assertGreaterEqual(len(records), first)
        self.assertLessEqual(len(records), first + 30)
        self.assertEqual(["'user-%d'" % i for i in range(first)], [r["detail"]["message"] for r in records[:first]])
        tallies = [t for t in run.conn.tallies if t["type_name"] == "builtins.KeyError"
                   and t["raised_at"]["line"] == run.line("raise")]
        self.assertEqual({("<module>", run.line("raise"), "FATE_HANDLED")},  # noqa: E127
                         {(run.where(t["raised_at"]) + (t["fate"],)) for t in tallies})
        self.assertEqual(10000, len(records) + sum(t["count"] for t in tallies))
        self.assertEqual({"FATE_HANDLED"}, {r["fate"] for r in records})
        run.assert_stacks_balanced()

    def test_threads_record_their_own_exceptions(self):
        per_thread = program_threads.FIRST_DETAILED_PER_SITE // 3  # all of them detailed: one site, three threads
        run = ExceptionRun(self, """
            import threading
            def work(n):
                for i in range(n):
                    try:
                        raise ValueError(threading.current_thread().name)
                    except ValueError:
                        pass
            threads = [threading.Thread(target=work, args=(%d,), name="w%%d" %% i) for i in range(3)]
            for t in threads: t.start()
            for t in threads: t.join()
            """ % (per_thread,))
        by_thread = {}
        for record in run.of_type("builtins.ValueError"):
            by_thread.setdefault(record["thread_id"], []).append(record["detail"]["message"])
        self.assertEqual({run.conn.thread_named("w%d" % i): ["w%d" % i] * per_thread for i in range(3)}, by_thread)
        run.assert_stacks_balanced()


class ModeTests(unittest.TestCase):
    def test_exceptions_only(self):
        run = ExceptionRun(self, """
            def f():
                raise KeyError(1)
            try:
                f()
            except KeyError:
                pass
            """, start_args="calls=False")
        self.assertNotIn("EVENTS", run.conn.frame_types)
        record = run.one("builtins.KeyError")
        self.assertEqual((1, "FATE_HANDLED"), (record["frames_unwound"], record["fate"]))
        self.assertEqual(["<module>", "f"], [run.where(l)[0] for l in record["stack"]])

    def test_calls_only_leaves_the_hooks_alone(self):
        run = ExceptionRun(self, """
            import sys, threading
            try:
                raise KeyError(1)
            except KeyError:
                pass
            print(sys.excepthook is sys.__excepthook__, threading.excepthook is threading.__excepthook__,
                  sys.unraisablehook is sys.__unraisablehook__)
            """, start_args="exceptions=False")
        self.assertEqual("True True True\n", run.stdout)
        self.assertNotIn("EXCEPTIONS", run.conn.frame_types)
        self.assertIn("EVENTS", run.conn.frame_types)

    def test_hooks_chain_and_are_restored_on_stop(self):
        run = ExceptionRun(self, """
            import sys, threading, asyncio, telemetry_shim
            mine = lambda *args: None
            sys.unraisablehook = mine
            assert telemetry_shim.start()
            time_to_hook = asyncio.BaseEventLoop.call_exception_handler
            # Chained in front of each; an identity test against the interpreter's own hook answers as before:
            # not replaced for excepthook, replaced (by the program) for unraisablehook.
            print(sys.excepthook is sys.__excepthook__, sys.unraisablehook is mine,
                  sys.unraisablehook is sys.__unraisablehook__)
            telemetry_shim.stop()
            print(sys.excepthook is sys.__excepthook__, threading.excepthook is threading.__excepthook__,
                  sys.unraisablehook is mine,
                  asyncio.BaseEventLoop.call_exception_handler.__module__, hasattr(
                      asyncio.BaseEventLoop.call_exception_handler, "__wrapped__"))
            """, prelude="")
        self.assertEqual("True False False\nTrue True True asyncio.base_events False\n", run.stdout)

    def test_the_interactive_console_prints_what_it_prints_without_the_shim(self):
        # code.InteractiveInterpreter.showtraceback leaves its own frame out only when sys.excepthook is the
        # interpreter's own (CPython's test_code_module).
        program = textwrap.dedent("""
            import code, io, sys
            console = code.InteractiveConsole()
            out = io.StringIO()
            sys.stderr, stderr = out, sys.stderr
            console.runsource("raise ValueError('refused') from KeyError('order')")
            console.runsource("try:\\n    ham\\nexcept NameError:\\n    eggs")
            sys.stderr = stderr
            print(out.getvalue())
            """)
        code, out, err = support.run_python(program)
        self.assertEqual((0, ""), (code, err))
        self.assertIn('File "<input>", line 1, in <module>', out)
        self.assertNotIn("runcode", out)
        self.assertEqual(out, ExceptionRun(self, program).stdout)



class OpcodeTableTests(unittest.TestCase):
    def test_the_known_bytecode_formats_say_what_opcode_says(self):
        # program_threads has the opcodes of 3.12 and 3.13 by bytecode format, so that the start imports no opcode.py.
        import importlib.util
        import opcode

        magic = int.from_bytes(importlib.util.MAGIC_NUMBER[:2], "little")
        self.assertEqual(magic, program_threads._bytecode_magic())
        if sys.version_info[:2] in ((3, 12), (3, 13)):
            self.assertIn(magic, program_threads._KNOWN_OPCODES)
        known, caches = program_threads._KNOWN_OPCODES.get(magic, program_threads._opcode_tables())
        self.assertEqual({name: opcode.opmap[name] for name in program_threads._OPCODE_NAMES}, known)
        self.assertEqual(program_threads._inline_caches(opcode), caches)
        self.assertEqual((known, caches), (program_threads._OPCODES, program_threads._INLINE_CACHES))


if __name__ == "__main__":
    unittest.main()

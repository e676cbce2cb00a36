"""The C call callbacks (_native.c) against their Python twin: the choice (TELEMETRY_SHIM_NATIVE and
HELLO), the same records for the same program, the clock, their table of code keys (never a dead code's
key), memory over ten million events and over 10^5 exceptions, and the sender's outbox against its twin.
The whole suite also runs with TELEMETRY_SHIM_NATIVE=on and =off (scripts/test)."""

import json
import os
import shutil
import sys
import textwrap
import unittest
from _thread import get_ident
from array import array
from time import perf_counter_ns

from tests import support
from telemetry_shim import SHIM_PACKAGE_DIR, _native_path, _wire

NATIVE_BUILT = _native_path.load()[0] is not None
NEEDS_NATIVE = unittest.skipUnless(NATIVE_BUILT, "the C extension is not built for this Python "
                                                 "(python-shim/build_backend/telemetry_shim_native.py)")

WORK = textwrap.dedent("""
    import threading
    def leaf(i):
        return i
    def gen(n):
        for i in range(n):
            yield leaf(i)
    def fails():
        raise ValueError("x")
    def work():
        total = sum(gen(50))
        for _ in range(20):
            try:
                fails()
            except ValueError:
                pass
        return total
    threads = [threading.Thread(target=work, name="worker-%d" % n) for n in range(3)]
    for t in threads: t.start()
    for t in threads: t.join()
    work()
""")


def run_recorded(source, native, extra_env=None, before_start=""):
    with support.RecordingAgent() as agent:
        env = {"TELEMETRY_AGENT_SOCKET": agent.path, "TELEMETRY_SHIM_MODE": "full", "TELEMETRY_SHIM_NATIVE": native}
        env.update(extra_env or {})
        code, out, err = support.run_python(
            before_start + "import telemetry_shim\nassert telemetry_shim.start()\n" + source, env=env)
        conn = agent.wait_for(1)[0]
    return code, out, err, conn


def fates_by_site(conn):
    """{(type name, (function, line) it was raised at, fate): count}, from the detailed records and the tallies."""
    found = {}
    for record in conn.exception_records:
        where = conn.qualified_name(record["stack"][-1]["code_id"]), record["stack"][-1]["line"]
        key = (record["detail"]["type_name"], where, record["fate"])
        found[key] = found.get(key, 0) + 1
    for tally in conn.tallies:
        where = conn.qualified_name(tally["raised_at"]["code_id"]), tally["raised_at"]["line"]
        key = (tally["type_name"], where, tally["fate"])
        found[key] = found.get(key, 0) + tally["count"]
    return found


def shape(conn):
    """Per thread (by name): the (function, kind) of every record, in order; timestamps left out."""
    out = {}
    for _, thread, code, kind in conn.events:
        name = conn.threads[thread]["name"] if thread else ""
        out.setdefault(name, []).append((conn.qualified_name(code) if code else "", kind))
    return out


@unittest.skipIf(sys.version_info < (3, 12), "sys.monitoring is Python 3.12+")
class NativeChoiceTests(support.TempDirTestCase):
    @NEEDS_NATIVE
    def test_hello_says_which_callbacks_recorded_and_both_record_the_same_events(self):
        shapes = {}
        for native in ("on", "off"):
            code, out, err, conn = run_recorded(WORK, native)
            self.assertEqual((0, ""), (code, err))
            self.assertIsNone(conn.error)
            self.assertEqual({"on": "native", "off": "python"}[native], conn.hello["callbacks"])
            self.assertEqual(0, conn.goodbye["final_stats"]["events_dropped"])
            shapes[native] = shape(conn)
            for thread, (stack, problems) in support.replay_stacks(conn).items():
                self.assertEqual([], problems, conn.threads[thread])
        self.assertEqual(shapes["off"], shapes["on"])
        self.assertEqual((50, 20), tuple(shapes["on"]["worker-0"].count((name, "START")) for name in ("leaf", "fails")))

    def test_on_without_the_extension_says_so_once_and_records_with_python(self):
        # A copy of the package without any built extension.
        copy = os.path.join(self.tmp, "shim")
        shutil.copytree(SHIM_PACKAGE_DIR, os.path.join(copy, "telemetry_shim"),
                        ignore=shutil.ignore_patterns("*.so", "__pycache__"))
        with support.RecordingAgent() as agent:
            env = {"TELEMETRY_AGENT_SOCKET": agent.path, "TELEMETRY_SHIM_MODE": "full", "TELEMETRY_SHIM_NATIVE": "on",
                   "PYTHONPATH": copy}
            code, out, err = support.run_python(
                "import telemetry_shim\nprint(telemetry_shim.start())\ndef f(): pass\nf()\n", env=env, cwd=self.tmp)
            conn = agent.wait_for(1)[0]
        self.assertEqual((0, "True\n"), (code, out))
        self.assertEqual(1, len(err.splitlines()), err)
        self.assertIn("TELEMETRY_SHIM_NATIVE=on, but the C extension is not built", err)
        self.assertEqual("python", conn.hello["callbacks"])
        self.assertEqual(1, support.call_counts(conn).get("f"))

    @NEEDS_NATIVE
    def test_an_extension_built_from_another_version_of_the_shim_is_not_used(self):
        saved = _native_path._loaded, _native_path.API_VERSION
        try:
            _native_path._loaded, _native_path.API_VERSION = None, saved[1] + 1
            module, why_not = _native_path.load()
            self.assertIsNone(module)
            self.assertIn("built from another version of the shim", why_not)
            self.assertEqual(False, _native_path.choose("on")[0])
        finally:
            _native_path._loaded, _native_path.API_VERSION = saved

    def test_a_bad_value_is_reported_and_auto_used(self):
        from telemetry_shim._settings import read_settings

        settings = read_settings(environ={"TELEMETRY_SHIM_NATIVE": "fast"})
        self.assertEqual("auto", settings.native)
        self.assertEqual(["TELEMETRY_SHIM_NATIVE='fast' is not one of auto, on, off; using auto"], settings.problems)
        self.assertEqual("off", read_settings(environ={"TELEMETRY_SHIM_NATIVE": " OFF "}).native)
        self.assertEqual((False, ""), _native_path.choose("off"))


# Control-flow idioms whose exception events the C exception callbacks end themselves: generators closed
# at a yield (any() stopping early; close() through a finally, a with-block, a `yield from`) and a
# StopIteration raised by C code into a for loop (FOR_ITER ends it), while a handled ValueError is still
# in flight (so that `inflight` is not empty). Prints the C callbacks' counters, read in the running shim.
# contextlib is imported before the shim starts: which of its imports (and importlib's exceptions) come after
# the start depends on what the shim imported itself, which differs with the callbacks (the Python outbox
# imports array, and with it collections on 3.13).
CONTROL_FLOW_BEFORE_START = "import contextlib\n"
CONTROL_FLOW = textwrap.dedent("""
    from telemetry_shim import _control
    data = [1, 7, 3]
    def with_finally():
        try:
            yield 1
        finally:
            pass
    @contextlib.contextmanager
    def managed():
        yield
    def with_block():
        with managed():
            yield 1
    def inner():
        yield 1
    def outer():
        yield from inner()
    def drained():
        for _ in map(next, [iter(())]):
            pass
    for _ in range(300):
        try:
            raise ValueError("kept in flight while it is handled")
        except ValueError:
            any(x > 5 for x in data)
        for generator in (with_finally(), with_block(), outer()):
            next(generator)
            generator.close()
        drained()  # the ValueError settled by now (by outer()'s GeneratorExit): nothing for Python to settle
    native = _control._shim.recorder.exceptions.native
    print("python" if native is None else "%d %d" % (native.counted, native.passed))
""")


@NEEDS_NATIVE
@unittest.skipIf(sys.version_info < (3, 12), "sys.monitoring is Python 3.12+")
class NativeExceptionTests(unittest.TestCase):
    def fates_in_c_and_in_python(self, program, mode, functions=None):
        """Runs `program` in `mode` with the C and with the Python callbacks, each cleanly, and checks that both
        give the same fates per site (of `functions` only, when given): (what the C run printed, its counts by
        (type, fate)). The program prints "python" when the Python callbacks recorded."""
        counts = {}
        for native in ("on", "off"):
            code, out, err, conn = run_recorded(program, native, {"TELEMETRY_SHIM_MODE": mode})
            self.assertEqual((0, ""), (code, err))
            self.assertIsNone(conn.error)
            counts[native] = {key: n for key, n in fates_by_site(conn).items()
                              if functions is None or key[1][0] in functions}
            if native == "off":
                self.assertEqual("python\n", out)
            else:
                printed = out
        self.maxDiff = None
        self.assertEqual(counts["off"], counts["on"], mode)
        by_type = {}
        for (type_name, _, fate), n in counts["on"].items():
            by_type[type_name, fate] = by_type.get((type_name, fate), 0) + n
        return printed, by_type

    def test_control_flow_idioms_are_counted_in_c_as_the_python_callbacks_count_them(self):
        for mode in ("full", "exceptions", "burst"):
            counts = {}
            for native in ("on", "off"):
                code, out, err, conn = run_recorded(CONTROL_FLOW, native, {"TELEMETRY_SHIM_MODE": mode},
                                                    CONTROL_FLOW_BEFORE_START)
                self.assertEqual((0, ""), (code, err))
                self.assertIsNone(conn.error)
                # Exceptions mode too: its exception callbacks are C ones in front of the Python twin.
                self.assertEqual({"on": "native", "off": "python"}[native], conn.hello["callbacks"], mode)
                # Per raise site and fate: the detailed records and the tallies of each type.
                counts[native] = fates_by_site(conn)
                tallied_control_flow = sum(tally["count"] for tally in conn.tallies
                                           if tally["type_name"] in ("builtins.GeneratorExit", "builtins.StopIteration"))
                if native == "off":
                    self.assertEqual("python\n", out)
                    continue
                counted, passed = map(int, out.split())
                # Every closed generator and swallowed StopIteration past its site's detailed ones was counted
                # in C, none in Python.
                self.assertEqual(tallied_control_flow, counted, mode)
                self.assertGreater(counted, 4 * 290, mode)
                # Each closed generator's cleanup events (HANDLED, RERAISE, UNWIND) ended in C.
                self.assertGreater(passed, 3 * 290, mode)
            self.assertEqual(counts["off"], counts["on"], mode)
            generator_exits = {key[1][0]: n for key, n in counts["on"].items() if key[0] == "builtins.GeneratorExit"}
            self.assertEqual(300, generator_exits["with_finally"], mode)
            stop_iterations = {key[1][0]: n for key, n in counts["on"].items() if key[0] == "builtins.StopIteration"}
            self.assertEqual({"drained": 300}, stop_iterations, mode)
            value_errors = {key: n for key, n in counts["on"].items() if key[0] == "builtins.ValueError"}
            self.assertEqual([300], list(value_errors.values()), mode)
            self.assertEqual("FATE_HANDLED", next(iter(value_errors))[2], mode)


    def test_raised_and_handled_exceptions_are_followed_in_c_as_the_python_callbacks_follow_them(self):
        # The common path: a raise, a handler that does something, the handler's end seen at the thread's next
        # raise. Around it, what must still go to Python: a re-raise from the handler, an exception kept and
        # raised again later, a raise inside a handler, another thread's exceptions, one that escapes a thread.
        program = textwrap.dedent("""
            import threading
            from telemetry_shim import _control
            def handled(i, kept):
                try:
                    {}[i]
                except KeyError as error:
                    kept[:] = [error]
            def reraised(i):
                try:
                    try:
                        raise ValueError(i)
                    except ValueError:
                        raise
                except ValueError:
                    return i
            def raised_again(kept):
                try:
                    raise kept[0]
                except KeyError:
                    return 1
            def inside_a_handler(i):
                try:
                    raise LookupError(i)
                except LookupError:
                    try:
                        [][i]
                    except IndexError:
                        return i
            def work(n):
                kept = []
                for i in range(n):
                    handled(i, kept)
                    reraised(i)
                    raised_again(kept)
                    inside_a_handler(i)
            def escapes():
                raise RuntimeError("out")
            threading.excepthook = lambda args: None
            threads = [threading.Thread(target=work, args=(300,)) for _ in range(2)] + [threading.Thread(target=escapes)]
            for thread in threads:
                thread.start()
            work(300)
            for thread in threads:
                thread.join()
            native = _control._shim.recorder.exceptions.native
            print(*((native.flights_started, native.flights_handled, native.flights_settled) if native is not None
                    else ("python",)))
        """)
        for mode in ("exceptions", "full"):
            out, by_type = self.fates_in_c_and_in_python(program, mode)
            started, handled_in_c, settled = map(int, out.split())
            # Past each site's first detailed ones: the KeyErrors and IndexErrors of 3 threads, and each raise that
            # follows a handled one on its thread settled it.
            self.assertGreater(started, 2 * 3 * 290, mode)
            self.assertGreater(handled_in_c, 2 * 3 * 290, mode)
            self.assertGreater(settled, 3 * 290, mode)
            self.assertEqual({("builtins.KeyError", "FATE_HANDLED"): 2 * 900, ("builtins.ValueError", "FATE_HANDLED"): 900,
                              ("builtins.LookupError", "FATE_HANDLED"): 900, ("builtins.IndexError", "FATE_HANDLED"): 900,
                              ("builtins.RuntimeError", "FATE_ESCAPED_THREAD"): 1}, by_type, mode)

    def test_exceptions_that_cross_frames_are_followed_in_c_as_the_python_callbacks_follow_them(self):
        # A counted flight's PY_UNWIND, its RAISE in the caller it unwinds into and its re-raises are taken in C: an
        # exception raised in a callee and handled up the stack, through C code (sorted's key), out of a generator into
        # its loop, passed on by a bare `raise` or the end of a `finally` block (RERAISE), raised again by name from its
        # handler (`raise error`, also when C code up the stack swallows it), out of a coroutine, escaping a thread.
        # Python still takes a StopIteration that the caller's loop ends (it counts it where it ends).
        program = textwrap.dedent("""
            import asyncio, threading
            from telemetry_shim import _control
            def check(i):
                if i >= 0:
                    raise ValueError(i)
            def deeper(i):
                check(i)
            def callee_raises(i, kept):
                try:
                    deeper(i)
                except ValueError as error:
                    kept[:] = [error]
            def key(value):
                raise KeyError(value)
            def through_c(i):
                try:
                    sorted([i, i + 1], key=key)
                except KeyError as error:
                    return error
            def gen(i):
                yield i
                raise LookupError(i)
            def out_of_a_generator(i):
                try:
                    for _ in gen(i):
                        pass
                except LookupError as error:
                    return error
            def reraised(i):
                try:
                    try:
                        check(i)
                    except ValueError:
                        raise
                except ValueError as error:
                    return error
            def through_finally(i):
                try:
                    check(i)
                finally:
                    i += 1
            def after_finally(i):
                try:
                    through_finally(i)
                except ValueError as error:
                    return error
            def raised_by_name(i):
                try:
                    check(i)
                except ValueError as error:
                    raise error
            def after_raise_by_name(i):
                try:
                    raised_by_name(i)
                except ValueError as error:
                    return error
            def raised_again_from_its_handler(i):
                try:
                    raise AttributeError(i)
                except AttributeError as error:
                    raise error
            class Holder:
                @property
                def value(self):
                    raised_again_from_its_handler(0)
            def swallowed_by_c(i):
                return hasattr(Holder(), "value")
            def stops():
                raise StopIteration
            class Stops:
                def __iter__(self):
                    return self
                def __next__(self):
                    stops()
            def loop_ended(i):
                for _ in Stops():
                    pass
            async def failing(i):
                raise ArithmeticError(i)
            async def awaits(n):
                for i in range(n):
                    try:
                        await failing(i)
                    except ArithmeticError as error:
                        kept = error
            def work(n):
                kept = []
                for i in range(n):
                    callee_raises(i, kept)
                    through_c(i)
                    out_of_a_generator(i)
                    reraised(i)
                    after_finally(i)
                    after_raise_by_name(i)
                    swallowed_by_c(i)
                    loop_ended(i)
            def escapes():
                check(1)
            threading.excepthook = lambda args: None
            threads = [threading.Thread(target=work, args=(200,)) for _ in range(2)] + [threading.Thread(target=escapes)]
            for thread in threads:
                thread.start()
            work(200)
            asyncio.run(awaits(200))
            for thread in threads:
                thread.join()
            native = _control._shim.recorder.exceptions.native
            print(*((native.flights_unwound, native.flights_reached, native.flights_reraised) if native is not None
                    else ("python",)))
        """)
        for mode in ("exceptions", "full"):
            # The program's own sites (importing asyncio raises a varying number of exceptions, run to run).
            out, by_type = self.fates_in_c_and_in_python(
                program, mode, ("check", "key", "gen", "stops", "failing", "raised_again_from_its_handler"))
            unwound, reached, reraised = map(int, out.split())
            # Past each site's first detailed ones, on 3 threads: callee_raises' two frames, sorted's key, the
            # generator's frame, the frames below the bare raise, the finally and the raise by name; the RAISE in each
            # caller; the bare raise, the end of the finally block, the raises by name (two functions).
            self.assertGreater(unwound, 3 * 190 * 7, mode)
            self.assertGreater(reached, 3 * 190 * 7, mode)
            self.assertGreater(reraised, 3 * 190 * 4, mode)
            self.assertEqual({("builtins.ValueError", "FATE_HANDLED"): 4 * 600, ("builtins.KeyError", "FATE_HANDLED"): 600,
                              ("builtins.LookupError", "FATE_HANDLED"): 600,
                              ("builtins.StopIteration", "FATE_HANDLED"): 600,
                              ("builtins.ArithmeticError", "FATE_HANDLED"): 200,
                              ("builtins.AttributeError", "FATE_HANDLED"): 600,
                              ("builtins.ValueError", "FATE_ESCAPED_THREAD"): 1}, by_type, mode)

    def test_an_exception_left_in_its_task_is_marked_as_a_coroutines_by_both_callbacks(self):
        # Unwinding out of a coroutine, a flight is marked so (its task keeps the exception: the sender holds it for
        # an `await` that raises it again), in C as in Python.
        program = textwrap.dedent("""
            import asyncio
            from telemetry_shim import _control
            from telemetry_shim._tables import identity
            async def fails(i):
                raise KeyError(i)
            async def main():
                for i in range(10):  # past the site's first detailed ones
                    task = asyncio.ensure_future(fails(i))
                    try:
                        await task
                    except KeyError:
                        pass
                task = asyncio.ensure_future(fails(99))
                await asyncio.sleep(0)  # the task has run: its exception is in it
                flight = _control._shim.recorder.exceptions.flights.inflight.get(identity(task.exception()))
                print(flight is not None and not flight.detailed, flight is not None and flight.coroutine)
                try:
                    await task
                except KeyError:
                    pass
            asyncio.run(main())
        """)
        for native in ("on", "off"):
            code, out, err, conn = run_recorded(program, native, {"TELEMETRY_SHIM_MODE": "exceptions",
                                                                  "TELEMETRY_SHIM_SLOWDOWN": "100"})
            self.assertEqual((0, "", "True True\n"), (code, err, out), native)

    def test_a_raise_point_the_table_drops_is_looked_up_again_not_kept(self):
        # The C callbacks keep what they found in the table's dicts of points until one of those changes (its
        # version tells): once the table drops a point (as it does when a handler there becomes empty), the
        # next RAISE at the point goes to Python again, which puts it back, and the C callbacks follow on.
        source = textwrap.dedent("""
            from telemetry_shim import _control
            from telemetry_shim._tables import identity
            def work(n):
                for i in range(n):
                    try:
                        [][i]
                    except IndexError as error:
                        kept = error
                    try:
                        int("x")
                    except ValueError as error:
                        kept = error
            work(10)  # past the sites' first detailed ones
            exceptions = _control._shim.recorder.exceptions
            native = exceptions.native
            started = native.flights_started
            work(3)
            found = native.flights_started - started
            points = exceptions.flights.raise_points
            for point in [point for point in points if point[2] == identity(IndexError)]:
                del points[point]
            assert len(points) == 1  # the ValueError's
            started = native.flights_started
            work(1)
            dropped = native.flights_started - started
            work(3)
            print(found, dropped, native.flights_started - started)
        """)
        code, out, err, conn = run_recorded(source, "on", {"TELEMETRY_SHIM_MODE": "exceptions",
                                                           "TELEMETRY_SHIM_SLOWDOWN": "100"})
        self.assertEqual((0, ""), (code, err))
        self.assertEqual("6 1 7\n", out)  # the ValueErrors' in C throughout
        self.assertEqual({("builtins.IndexError", ("work", 9), "FATE_HANDLED"): 17,
                          ("builtins.ValueError", ("work", 13), "FATE_HANDLED"): 17}, fates_by_site(conn))

    def test_a_flight_the_table_drops_is_not_concluded_from_what_the_callbacks_last_found(self):
        # The C callbacks keep the flight they last started or found until `inflight` changes (its version tells):
        # a flight removed behind their back (here by the handler itself) is looked up at the thread's next RAISE,
        # not found, and neither concluded nor counted there.
        source = textwrap.dedent("""
            from telemetry_shim import _control
            from telemetry_shim._tables import identity
            def work(n, drop=False):
                for i in range(n):
                    try:
                        [][i]
                    except IndexError as error:
                        if drop:
                            inflight.pop(identity(error), None)
                        kept = error
            exceptions = _control._shim.recorder.exceptions
            inflight = exceptions.flights.inflight
            native = exceptions.native
            work(10)  # past the site's first detailed ones
            settled = native.flights_settled
            work(5)
            kept_ones = native.flights_settled - settled
            settled = native.flights_settled
            work(5, drop=True)
            dropped_ones = native.flights_settled - settled
            print(kept_ones, dropped_ones)
        """)
        code, out, err, conn = run_recorded(source, "on", {"TELEMETRY_SHIM_MODE": "exceptions",
                                                           "TELEMETRY_SHIM_SLOWDOWN": "100"})
        self.assertEqual((0, ""), (code, err))
        # Each RAISE concludes the flight before it: the first of the dropped ones still concludes the last kept one.
        self.assertEqual("5 1\n", out)
        self.assertEqual({("builtins.IndexError", ("work", 9), "FATE_HANDLED"): 15}, fates_by_site(conn))

    def test_a_thread_the_shim_takes_as_its_own_is_passed_to_python_from_then_on(self):
        # Whether the thread is one of the shim's own is kept until ignored_idents changes (its version tells).
        source = textwrap.dedent("""
            from _thread import get_ident
            from telemetry_shim import _control
            def work(n):
                for i in range(n):
                    try:
                        [][i]
                    except IndexError as error:
                        kept = error
            exceptions = _control._shim.recorder.exceptions
            ignored = _control._shim.recorder.threads.ignored_idents
            native = exceptions.native
            work(10)  # past the site's first detailed ones
            counts = []
            for own in (False, True, False):
                if own:
                    ignored[get_ident()] = None
                else:
                    ignored.pop(get_ident(), None)
                started = native.flights_started
                work(5)
                counts.append(native.flights_started - started)
            print(*counts)
        """)
        code, out, err, conn = run_recorded(source, "on", {"TELEMETRY_SHIM_MODE": "exceptions",
                                                           "TELEMETRY_SHIM_SLOWDOWN": "100"})
        self.assertEqual((0, ""), (code, err))
        self.assertEqual("5 0 5\n", out)

    def test_a_sites_handled_counter_is_the_extensions_counter_with_the_c_callbacks(self):
        from itertools import count
        from telemetry_shim._exceptions.program_threads import Site
        from telemetry_shim._tables import AtomicCounter

        counter_type = _native_path.load()[0].Counter
        counter = counter_type()
        self.assertEqual([0, 1, 2], [next(counter), next(counter), next(counter)])
        self.assertEqual("Counter(3)", repr(counter))
        self.assertIs(counter, iter(counter))
        with self.assertRaises(TypeError):
            counter_type(5)
        tally = AtomicCounter(counter_type)
        tally.add(4)
        self.assertEqual((4, 4), (tally.value(), tally.value()))  # a read advances it and is compensated
        self.assertIsInstance(Site(KeyError, 256, 1).handled_counter, count)  # the Python callbacks' twin
        self.assertIsInstance(Site(KeyError, 256, 1, counter_type).handled_counter, counter_type)
        source = textwrap.dedent("""
            from telemetry_shim import _control
            def work(n):
                for i in range(n):
                    try:
                        [][i]
                    except IndexError as error:
                        kept = error
            work(20)
            sites = _control._shim.recorder.exceptions.flights.sites.values()
            print(sorted({type(site.handled_counter).__name__ for site in sites}))
        """)
        for native, expected in (("on", "['Counter']"), ("off", "['count']")):
            code, out, err, conn = run_recorded(source, native, {"TELEMETRY_SHIM_MODE": "exceptions",
                                                                 "TELEMETRY_SHIM_SLOWDOWN": "100"})
            self.assertEqual((0, "", expected + "\n"), (code, err, out), native)
            self.assertEqual({("builtins.IndexError", ("work", 8), "FATE_HANDLED"): 20}, fates_by_site(conn), native)

    def test_in_a_fork_child_the_c_callbacks_count_into_the_childs_table(self):
        # The C callbacks hold the flight table's containers; a fork child's reset empties those same objects.
        program = textwrap.dedent("""
            import json, os, sys
            from telemetry_shim import _control

            def gen():
                try:  # suspended inside a handler: close() throws GeneratorExit on 3.13 too
                    yield 1
                finally:
                    pass

            def close_generators():
                for _ in range(300):
                    g = gen()
                    next(g)
                    g.close()

            close_generators()
            native = _control._shim.recorder.exceptions.native
            read_end, write_end = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(read_end)
                flights = _control._shim.recorder.exceptions.flights
                before = native.counted
                close_generators()
                os.write(write_end, json.dumps({"counted": native.counted - before,
                                                "sites": len(flights.closed_points)}).encode())
                sys.exit(0)
            os.close(write_end)
            child = json.loads(os.read(read_end, 1000))
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
            print(json.dumps(dict(child, pid=pid, parent_counted=native.counted)))
        """)
        with support.RecordingAgent() as agent:
            env = {"TELEMETRY_AGENT_SOCKET": agent.path, "TELEMETRY_SHIM_MODE": "exceptions", "TELEMETRY_SHIM_NATIVE": "on"}
            code, out, err = support.run_python("import telemetry_shim\nassert telemetry_shim.start()\n" + program, env=env)
            self.assertEqual((0, ""), (code, err))
            conns = agent.wait_for(2)
        result = json.loads(out)
        # The parent's first ones were detailed (in Python), the rest counted in C; the child starts again.
        # Past the site's detailed ones, counted in C in both processes.
        self.assertGreaterEqual(result["parent_counted"], 290)
        self.assertGreaterEqual(result["counted"], 290)
        self.assertEqual(1, result["sites"])  # the child's site, learnt again after the parent's was cleared
        child = next(conn for conn in conns if conn.hello["pid"] == result["pid"])
        closed = sum(tally["count"] for tally in child.tallies if tally["type_name"] == "builtins.GeneratorExit")
        closed += sum(1 for record in child.exception_records if record["detail"]["type_name"] == "builtins.GeneratorExit")
        self.assertEqual(300, closed)


@NEEDS_NATIVE
@unittest.skipIf(sys.version_info < (3, 12), "sys.monitoring is Python 3.12+")
class NativeRecordTests(unittest.TestCase):
    def setUp(self):
        from telemetry_shim._monitor import Recorder

        self.recorder = Recorder(4096, SHIM_PACKAGE_DIR, lambda: None, exceptions=False, native=True)

    def test_records_are_the_python_twins_words_on_perf_counter_ns_clock(self):
        recorder = self.recorder
        code = sys._getframe().f_code
        tk = 5 << _wire.THREAD_ID_SHIFT
        ck = recorder.codes.define(code, sys._getframe())
        recorder.thread_keys[get_ident()] = tk
        start, resume, throw, ret, yld, unwind = recorder._callbacks
        before = perf_counter_ns()
        start(code, 0)
        resume(code, 0)
        throw(code, 0, ValueError())
        ret(code, 0, None)
        yld(code, 0, None)
        unwind(code, 0, ValueError())
        after = perf_counter_ns()
        words = [recorder.buffer[i] for i in range(len(recorder.buffer))]
        self.assertEqual([tk | ck | kind for kind in range(1, 7)], words[1::2])
        self.assertEqual(sorted(words[0::2]), words[0::2])
        self.assertTrue(before <= words[0] and words[-2] <= after, (before, words[0::2], after))

    def test_the_buffers_default_size_is_the_recording_callbacks_one(self):
        from telemetry_shim._monitor import Recorder
        from telemetry_shim._settings import DEFAULT_BUFFER_EVENTS, DEFAULT_BUFFER_EVENTS_NATIVE

        for native, calls, events in ((True, True, DEFAULT_BUFFER_EVENTS_NATIVE), (False, True, DEFAULT_BUFFER_EVENTS),
                                      (True, False, DEFAULT_BUFFER_EVENTS)):
            with self.subTest(native=native, calls=calls):
                recorder = Recorder(None, SHIM_PACKAGE_DIR, lambda: None, calls=calls, native=native)
                self.assertEqual(2 * events, recorder.capacity_words)
        self.assertEqual(2 * 2048, Recorder(2048, SHIM_PACKAGE_DIR, lambda: None, native=True).capacity_words)

    def test_the_buffer_takes_and_gives_words_like_the_list_it_replaces(self):
        buf = self.recorder.buffer
        buf.extend((1, 2, 3, 4, 5, 6))
        self.assertEqual(6, len(buf))
        self.assertEqual([1, 2, 3, 4], list(array("Q", buf[:4])))
        del buf[:4]
        self.assertEqual([5, 6], [buf[0], buf[1]])
        with self.assertRaises(OverflowError):
            buf.extend((7, -1))
        self.assertEqual(2, len(buf), "a bad value adds nothing")
        with self.assertRaises(TypeError):
            buf[0] = 1

    def test_a_known_code_object_is_found_by_the_tables_identity_without_the_slow_path(self):
        # The C side looks codes up in CodeTable.call_keys by the same key the Python side writes there.
        from telemetry_shim._tables import identity

        module = _native_path.load()[0]
        code = sys._getframe().f_code
        slow_calls = []
        scratch = module.RecordBuffer(64)
        code_keys = module.CodeKeys(16)
        callbacks = module.Callbacks(buffer=scratch, thread_keys={get_ident(): 1 << 40},
                                     call_keys={identity(code): 3 << 8}, code_keys=code_keys,
                                     slow_path=lambda *args: slow_calls.append(args), unwind_hook=None,
                                     failed=lambda *args: None, limit=64)
        callbacks.py_start(code, 0)
        callbacks.py_start(code, 0)
        self.assertEqual([], slow_calls, "a known code on a known thread never calls into Python")
        self.assertEqual(4, len(scratch))
        self.assertEqual(3 << 8, code_keys.get(identity(code)), "copied into the C table at its first event")

    def test_the_c_table_of_code_keys_matches_the_dict_through_growth_removals_and_its_limit(self):
        # The table reads only the address of what it is given: plain objects stand for code objects, their keys
        # written in the dict as the code table would. Thousands of entries: the table grows, its runs of
        # neighbouring slots get long, and every removal shifts entries back; each must stay findable.
        from telemetry_shim._tables import identity

        module = _native_path.load()[0]
        limit = 3000
        objects = [object() for _ in range(5000)]
        call_keys = {identity(o): (n + 1) << 8 for n, o in enumerate(objects)}
        code_keys = module.CodeKeys(limit)
        scratch = module.RecordBuffer(1 << 16)
        slow_calls = []
        callbacks = module.Callbacks(buffer=scratch, thread_keys={get_ident(): 1 << 40}, call_keys=call_keys,
                                     code_keys=code_keys, slow_path=lambda *args: slow_calls.append(args),
                                     unwind_hook=None, failed=lambda *args: None, limit=1 << 16)

        def check(expected_in_table):
            for o in objects:
                ck = call_keys.get(identity(o))
                self.assertEqual(ck if identity(o) in expected_in_table else None, code_keys.get(identity(o)))
            self.assertEqual(len(expected_in_table), len(code_keys))

        for o in objects:
            callbacks.py_start(o, 0)
        held = {identity(o) for o in objects[:limit]}
        check(held)
        self.assertEqual(4096 * 2, code_keys.slots, "at most half full: 3000 entries take 8192 slots")
        for o in objects[::3]:  # a third of them die: their lifelines' steps
            code_keys.forget(identity(o))
            call_keys.pop(identity(o))
            held.discard(identity(o))
        check(held)
        code_keys.forget(identity(objects[0]))  # forgetting twice, or what was never held, changes nothing
        code_keys.forget(identity(objects[-1]))
        code_keys.forget(0)
        check(held)
        # Room again: the codes it had no room for are copied at their next event, up to the limit.
        del scratch[:]
        for o in objects:
            if identity(o) in call_keys:
                callbacks.py_start(o, 0)
        room = [identity(o) for n, o in enumerate(objects) if n >= limit and n % 3]
        held.update(room[:limit - len(held)])
        check(held)
        self.assertEqual(limit, len(code_keys))
        words = [scratch[i] for i in range(1, len(scratch), 2)]
        self.assertEqual([(1 << 40) | ck | _wire.KIND_START for ck in call_keys.values()], words,
                         "every event of a known code recorded with its own key, from the table or the dict")
        self.assertEqual([], slow_calls)

    def test_a_codes_key_leaves_the_c_table_when_the_code_dies(self):
        from telemetry_shim._tables import identity

        recorder = self.recorder
        code_keys = recorder.native.code_keys
        code = compile("pass", "<short-lived>", "exec")
        start = recorder._callbacks[0]
        start(code, 0)  # defined by the slow path
        start(code, 0)  # copied into the C table
        cid = identity(code)
        self.assertEqual(recorder.codes.call_keys[cid], code_keys.get(cid))
        before = len(code_keys)
        del code
        self.assertIsNone(code_keys.get(cid))
        self.assertEqual(before - 1, len(code_keys))
        self.assertNotIn(cid, recorder.codes.call_keys)

    def test_lifelines_cannot_be_armed_without_the_c_tables_step(self):
        from telemetry_shim._tables import CodeTable

        codes = CodeTable(SHIM_PACKAGE_DIR)
        code = compile("pass", "<early>", "exec")
        codes.define(code, None)
        with self.assertRaises(RuntimeError):
            codes.forget_also(_native_path.load()[0].CodeKeys(1).forget)

    def test_a_new_code_object_or_thread_goes_through_the_python_slow_path(self):
        recorder = self.recorder
        from telemetry_shim._tables import identity

        code = compile("pass", "<fresh>", "exec")
        self.assertNotIn(identity(code), recorder.codes.keys)
        recorder._callbacks[0](code, 0)
        self.assertIn(identity(code), recorder.codes.keys)
        self.assertIn(get_ident(), recorder.thread_keys, "the thread was registered and seeded")

    def test_a_full_buffer_counts_drops_instead_of_growing(self):
        recorder = self.recorder
        code = sys._getframe().f_code
        recorder.codes.define(code, sys._getframe())
        recorder.thread_keys[get_ident()] = 1 << _wire.THREAD_ID_SHIFT
        for _ in range(recorder.capacity_words):
            recorder._callbacks[0](code, 0)
        self.assertEqual(recorder.capacity_words, len(recorder.buffer))
        self.assertEqual(recorder.capacity_words // 2, recorder.dropped_in_callbacks())
        self.assertEqual(recorder.capacity_words // 2, recorder.native.dropped, "counted in C: no slow path")


# Many short-lived functions, each compiled, called once and freed: CPython gives a freed code object's memory to
# the next, so the same addresses come back again and again. A key found under a reused address that outlived its
# code would record a call under another function's name.
SHORT_LIVED_FUNCTIONS = textwrap.dedent("""
    import sys, telemetry_shim
    from telemetry_shim._tables import identity
    assert telemetry_shim.start()
    addresses, reused = set(), 0
    for i in range(%(count)d):
        namespace = {}
        exec(compile("def f_%%d():\\n    return %%d\\n" %% (i, i), "<generated %%d>" %% i, "exec"), namespace)
        function = namespace.pop("f_%%d" %% i)
        assert function() == i and function() == i
        reused += identity(function.__code__) in addresses
        addresses.add(identity(function.__code__))
        del function, namespace
    print(reused)
""")


@NEEDS_NATIVE
@unittest.skipIf(sys.version_info < (3, 12), "sys.monitoring is Python 3.12+")
class NativeCodeLifetimeTests(unittest.TestCase):
    def test_a_code_object_at_a_dead_ones_address_is_recorded_under_its_own_name(self):
        count = 3000
        code, out, err, conn = run_recorded(SHORT_LIVED_FUNCTIONS % {"count": count}, "on")
        self.assertEqual((0, ""), (code, err))
        self.assertIsNone(conn.error)
        self.assertEqual("native", conn.hello["callbacks"])
        reused = int(out)
        print("\n  %d short-lived functions, %d of them at a dead one's address" % (count, reused), file=sys.stderr)
        self.assertGreater(reused, count // 2, "addresses were not reused: this test would prove nothing")
        generated = [(conn.codes[c]["qualified_name"], conn.codes[c]["file_name"], kind)
                     for _, _, c, kind in conn.events if conn.codes[c]["file_name"].startswith("<generated ")]
        expected = []
        for i in range(count):
            expected.append(("<module>", "<generated %d>" % i, "START"))
            expected.append(("<module>", "<generated %d>" % i, "RETURN"))
            expected.extend([("f_%d" % i, "<generated %d>" % i, "START"), ("f_%d" % i, "<generated %d>" % i, "RETURN")] * 2)
        # The first difference only: unittest's diff of two lists this long would take minutes.
        wrong = next((n for n, (want, got) in enumerate(zip(expected, generated)) if want != got), None)
        self.assertIsNone(wrong, "event %s: expected %s, recorded %s" % (
            wrong, expected[wrong] if wrong is not None else "", generated[wrong] if wrong is not None else ""))
        self.assertEqual(len(expected), len(generated))
        self.assertEqual(0, conn.goodbye["final_stats"]["events_dropped"])


@NEEDS_NATIVE
@unittest.skipIf(sys.version_info < (3, 12), "sys.monitoring is Python 3.12+")
class NoteWatchTests(unittest.TestCase):
    """The notes watch's CALL and C_RETURN callbacks in C against what the Python CALL callback decides."""

    def setUp(self):
        self.calls, self.notes = [], []
        self.watch = _native_path.note_watch(lambda *args: self.calls.append(args) or "python",
                                             lambda *args: self.notes.append(args))

    def test_add_note_is_kept_and_every_other_call_site_disabled(self):
        error = ValueError("x")
        code = self.test_add_note_is_kept_and_every_other_call_site_disabled.__code__
        add_note = BaseException.add_note
        for callable_, arg0, kept in ((add_note, error, True), (error.add_note, sys.monitoring.MISSING, True),
                                      (len, [], False), (print, sys.monitoring.MISSING, False),
                                      (ValueError, "x", False), (lambda: None, sys.monitoring.MISSING, False)):
            with self.subTest(callable=callable_):
                self.assertIs(None if kept else sys.monitoring.DISABLE, self.watch.call(code, 4, callable_, arg0))
                self.assertIsNone(self.watch.c_return(code, 4, callable_, arg0))
        self.assertEqual([], self.calls)
        self.assertEqual([(code, 4, add_note, error), (code, 4, error.add_note, sys.monitoring.MISSING)], self.notes)

    def test_armed_every_call_goes_to_the_python_callback(self):
        code = self.test_armed_every_call_goes_to_the_python_callback.__code__
        self.watch.armed = True
        self.assertEqual("python", self.watch.call(code, 2, len, []))
        self.watch.armed = False
        self.assertIs(sys.monitoring.DISABLE, self.watch.call(code, 2, len, []))
        self.assertEqual([(code, 2, len, [])], self.calls)

    def test_no_python_frame_runs_at_a_new_call_site(self):
        # A PEP 523 frame evaluator (here _testinternalcapi's, as CPython's test_capi uses it) sees every
        # Python frame the interpreter runs: with the C callbacks, none of the shim's at a call site's first
        # execution, in every mode.
        support.skip_without_frame_recorder(self)
        # The evaluator sees every thread's frames: the sender thread leaves meanwhile, as it does for a fork.
        source = textwrap.dedent("""
            import sys, _testinternalcapi
            from telemetry_shim import _control
            def leaf():
                return len([1])
            def work():
                leaf()
                return sorted([2, 1])
            for _ in range(3):
                work()
            shim = _control._shim
            if not shim.sender.pause_for_fork():
                shim.sender._left.acquire()  # it leaves at its next tick: its last Python code has run then
            frames = []
            _testinternalcapi.set_eval_frame_record(frames)
            work()
            print(len([]), max(1, 2), work())  # call sites run for the first time
            _testinternalcapi.set_eval_frame_default()
            shim.sender.lock.acquire()
            shim.after_fork_in_parent(sys._getframe())
            print(frames)
        """)
        for mode in ("exceptions", "burst", "full"):
            with self.subTest(mode=mode):
                code, out, err, conn = run_recorded(source, "on", {"TELEMETRY_SHIM_MODE": mode})
                self.assertEqual((0, ""), (code, err))
                self.assertEqual("native", conn.hello["callbacks"])
                self.assertEqual("0 2 [1, 2]\n['work', 'leaf', 'work', 'leaf']\n", out)

    def test_no_python_frame_runs_for_an_exception_counted_in_c(self):
        # Past its site's first detailed ones, an exception raised and handled is followed in C: its RAISE makes
        # its flight, its EXCEPTION_HANDLED marks it and the thread's next RAISE concludes it, with no Python frame
        # (a frame of the shim there would see signals and the recursion limit where the program would).
        support.skip_without_frame_recorder(self)
        source = textwrap.dedent("""
            import sys, _testinternalcapi
            from telemetry_shim import _control
            def work(n):
                for i in range(n):
                    try:
                        [][i]
                    except IndexError as error:
                        kept = error
            work(10)  # past the site's first detailed ones
            shim = _control._shim
            native = shim.recorder.exceptions.native
            if not shim.sender.pause_for_fork():
                shim.sender._left.acquire()  # it leaves at its next tick: its last Python code has run then
            started, settled = native.flights_started, native.flights_settled
            frames = []
            _testinternalcapi.set_eval_frame_record(frames)
            work(50)
            _testinternalcapi.set_eval_frame_default()
            shim.sender.lock.acquire()
            shim.after_fork_in_parent(sys._getframe())
            # Each RAISE settles the one before it; the first may find it concluded by the sender already.
            print(native.flights_started - started, native.flights_settled - settled in (49, 50), frames)
        """)
        for mode in ("exceptions", "full"):
            with self.subTest(mode=mode):
                # Intervals stretched: no site comes due for another detailed exception meanwhile.
                code, out, err, conn = run_recorded(source, "on", {"TELEMETRY_SHIM_MODE": mode,
                                                                   "TELEMETRY_SHIM_SLOWDOWN": "100"})
                self.assertEqual((0, ""), (code, err))
                self.assertEqual("native", conn.hello["callbacks"])
                self.assertEqual("50 True ['work']\n", out)

    def test_no_python_frame_runs_for_an_exception_handled_up_the_stack(self):
        # Past its site's first detailed ones, an exception raised two frames down, passed on by a bare `raise`, by
        # `raise error` inside its handler or by the end of a `finally` block, and handled up the stack is followed in
        # C through every RAISE, RERAISE, PY_UNWIND and EXCEPTION_HANDLED: only the program's frames run.
        support.skip_without_frame_recorder(self)
        source = textwrap.dedent("""
            import sys, _testinternalcapi
            from telemetry_shim import _control
            def check(i):
                raise ValueError(i)
            def deeper(i):
                check(i)
            def bare(i):
                try:
                    deeper(i)
                except ValueError:
                    raise
            def by_name(i):
                try:
                    check(i)
                except ValueError as error:
                    raise error
            def through_finally(i):
                try:
                    check(i)
                finally:
                    i += 1
            def work(n):
                for i in range(n):
                    for passes_on in (bare, by_name, through_finally):
                        try:
                            passes_on(i)
                        except ValueError as error:
                            kept = error
            work(10)  # past the site's first detailed ones
            shim = _control._shim
            native = shim.recorder.exceptions.native
            if not shim.sender.pause_for_fork():
                shim.sender._left.acquire()  # it leaves at its next tick: its last Python code has run then
            started = native.flights_started
            frames = []
            _testinternalcapi.set_eval_frame_record(frames)
            work(50)
            _testinternalcapi.set_eval_frame_default()
            shim.sender.lock.acquire()
            shim.after_fork_in_parent(sys._getframe())
            print(native.flights_started - started, sorted(set(frames)))
        """)
        for mode in ("exceptions", "full"):
            with self.subTest(mode=mode):
                code, out, err, conn = run_recorded(source, "on", {"TELEMETRY_SHIM_MODE": mode,
                                                                   "TELEMETRY_SHIM_SLOWDOWN": "100"})
                self.assertEqual((0, ""), (code, err))
                self.assertEqual("150 ['bare', 'by_name', 'check', 'deeper', 'through_finally', 'work']\n", out)


@NEEDS_NATIVE
@unittest.skipIf(sys.version_info < (3, 12), "sys.monitoring is Python 3.12+")
class ThreadStatesTests(unittest.TestCase):
    """current_frames() and current_exceptions(): sys._current_frames() and sys._current_exceptions() for this
    interpreter's threads only (the others' are for their own GIL to guard)."""

    def test_the_same_frames_and_exceptions_as_sys_when_this_interpreter_is_the_only_one(self):
        import threading
        from telemetry_shim import _native

        inside = threading.Barrier(4)
        leave = threading.Event()

        def handling(exception):
            try:
                raise exception
            except type(exception):
                inside.wait()
                leave.wait()

        def handling_inside_another():
            try:
                raise KeyError("outer")
            except KeyError:
                handling(ValueError("inner"))

        def idle():
            inside.wait()
            leave.wait()

        threads = [threading.Thread(target=handling, args=(LookupError("one"),)),
                   threading.Thread(target=handling_inside_another), threading.Thread(target=idle)]
        for thread in threads:
            thread.start()
        try:
            inside.wait()
            frames, expected_frames = _native.current_frames(), sys._current_frames()
            exceptions, expected_exceptions = _native.current_exceptions(), sys._current_exceptions()
        finally:
            leave.set()
            for thread in threads:
                thread.join()
        self.assertEqual(set(expected_frames), set(frames))
        self.assertGreaterEqual(len(frames), 4)
        for ident, frame in expected_frames.items():
            self.assertIs(frame, frames[ident], ident)
        self.assertEqual(set(expected_exceptions), set(exceptions))
        for ident, exception in expected_exceptions.items():
            self.assertIs(exception, exceptions[ident], ident)
        # The innermost exception each thread handles; the idle threads handle none.
        self.assertEqual(["inner", "one"], sorted(e.args[0] for e in exceptions.values() if e is not None))


@NEEDS_NATIVE
@unittest.skipIf(sys.version_info < (3, 12), "sys.monitoring is Python 3.12+")
@unittest.skipIf("libasan" in os.environ.get("LD_PRELOAD", ""),
                 "under AddressSanitizer freed memory stays in its quarantine: RSS measures that")
class NativeMemoryTests(unittest.TestCase):
    """The resident memory before and after a long run of the same work, with the C callbacks in full mode
    streaming to an agent that reads and discards. Each figure is the floor of 20 samples, each taken after a
    short stretch of that work: a leak raises the floor. glibc's mmap threshold is fixed (it rises with every
    large block freed otherwise, and blocks below it stay in the heap), so that large blocks leave the process
    when freed."""

    def measure(self, workload):
        program = "import sys, telemetry_shim\nassert telemetry_shim.start()\n" + textwrap.dedent("""
            def rss_kib():
                with open("/proc/self/statm") as f:
                    return int(f.read().split()[1]) * 4096 // 1024
            def floor_kib(stretch):
                samples = []
                for _ in range(20):
                    stretch()
                    samples.append(rss_kib())
                return min(samples)
        """) + textwrap.dedent(workload) + "telemetry_shim.stop()\nprint(before, after)\n"
        with support.DiscardingAgent() as agent:
            # A buffer of 2 MiB: its pages, and the outbox's, are touched as far as it fills, once.
            env = {"TELEMETRY_AGENT_SOCKET": agent.path, "TELEMETRY_SHIM_MODE": "full", "TELEMETRY_SHIM_NATIVE": "on",
                   "TELEMETRY_SHIM_BUFFER_EVENTS": "131072", "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
            code, out, err = support.run_python(program, env=env, timeout=300)
        self.assertEqual((0, ""), (code, err))
        before, after = map(int, out.split())
        return before, after

    def test_ten_million_events_leave_the_process_memory_flat(self):
        before, after = self.measure("""
            def leaf():
                return None
            def burn(n):
                for _ in range(n):
                    leaf()
            burn(500_000)                                # warm: buffers, code keys, the sender's first sends
            before = floor_kib(lambda: burn(25_000))
            burn(5_000_000)                              # 2 events per call: 10^7 events
            after = floor_kib(lambda: burn(25_000))
        """)
        print("\n  native path, 10^7 events: RSS %d KiB before, %d KiB after (%+d KiB)" % (before, after, after - before),
              file=sys.stderr)
        # 160 MB of records went through: keeping one byte per event would be 10 MB. What may grow is the pages
        # of the preallocated buffer (2 MiB here) and of the outbox touched for the first time, and the allocator's noise.
        self.assertLess(after - before, 6 * 1024, "RSS grew by %d KiB" % (after - before))

    def test_a_hundred_thousand_handled_exceptions_leave_the_process_memory_flat(self):
        # Raised in one function, handled in its caller: PY_UNWIND goes through the C callback (which calls the
        # exception tracker's hook), RAISE and EXCEPTION_HANDLED through the tracker's Python callbacks.
        before, after = self.measure("""
            def fails(i):
                raise ValueError(i)
            def handle(n):
                for i in range(n):
                    try:
                        fails(i)
                    except ValueError:
                        pass
            handle(10_000)                               # warm: the exception's group, its sampled records
            before = floor_kib(lambda: handle(500))
            handle(100_000)
            after = floor_kib(lambda: handle(500))
        """)
        print("\n  native path, 10^5 exceptions: RSS %d KiB before, %d KiB after (%+d KiB)"
              % (before, after, after - before), file=sys.stderr)
        # Keeping 100 bytes per exception would be 10 MB.
        self.assertLess(after - before, 4 * 1024, "RSS grew by %d KiB" % (after - before))


if __name__ == "__main__":
    unittest.main()


@unittest.skipIf(sys.version_info < (3, 12), "sys.monitoring is Python 3.12+")
@NEEDS_NATIVE
class OutboxTests(unittest.TestCase):
    """_native.Outbox against its twin _sender.PythonOutbox, over real socket pairs."""

    MAX_RECORDS = 3  # small, so that a handful of records makes several EVENTS frames

    def outboxes(self):
        from telemetry_shim._sender import PythonOutbox

        native = _native_path.load()[0]
        return ((native.Outbox(_wire.FRAME_EVENTS, self.MAX_RECORDS), native.RecordBuffer(64)),
                (PythonOutbox(self.MAX_RECORDS), []))

    @staticmethod
    def send(outbox, sock, timeout_ms=2000):
        from telemetry_shim._sender import PythonOutbox

        if isinstance(outbox, PythonOutbox):
            sock.settimeout(timeout_ms / 1000)
            return outbox.send(sock)
        sock.settimeout(timeout_ms / 1000)  # as the sender's socket: non-blocking underneath
        return outbox.send(sock.fileno(), timeout_ms)

    def fill(self, outbox, buf, words):
        buf.extend(words)
        outbox.add_frame(b"\x01definitions")
        outbox.take_records(buf, 2 * 7)  # 7 records: frames of 3, 3 and 1
        outbox.add_records()
        outbox.add_frame(b"\x04exceptions")

    def test_its_memory_and_the_buffers_are_the_shims_not_the_programs_for_tracemalloc(self):
        # A program that measures its own memory with tracemalloc (CPython's test_tracemalloc does) must not see
        # the shim's buffers grow: they come from the C allocator, which tracemalloc does not hook.
        import tracemalloc

        native = _native_path.load()[0]
        words = list(range(1 << 20))  # 8 MiB of records, made before tracing starts
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            buf = native.RecordBuffer(1024)
            buf.extend(words)
            outbox = native.Outbox(_wire.FRAME_EVENTS, 4096)
            outbox.take_records(buf, len(words))
            outbox.add_records()
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        self.assertEqual(128, len(outbox))  # the records are there: 2^19 of them in frames of 4096
        self.assertLess(grown, 64 * 1024, "tracemalloc counted %d bytes of the shim's" % grown)

    def test_both_write_the_same_frames_and_count_the_same_records(self):
        import socket

        words = list(range(1, 19))  # 9 records; 7 taken, 2 stay in the buffer
        results = []
        for outbox, buf in self.outboxes():
            self.fill(outbox, buf, words)
            self.assertEqual(5, len(outbox))
            a, b = socket.socketpair()
            with a, b:
                result = self.send(outbox, a)
                a.close()
                received = b"".join(iter(lambda: b.recv(65536), b""))
            self.assertEqual(0, len(outbox), "a send empties the outbox")
            self.assertEqual([15, 16, 17, 18], [buf[i] for i in range(len(buf))], "what was not taken stays")
            results.append((result, received))
        self.assertEqual(results[0], results[1])
        (frames, records, error), received = results[0]
        self.assertEqual((5, 7, 0), (frames, records, error))
        events, _ = _wire.encode_events_frames(array("Q", words[:14]), max_records=self.MAX_RECORDS)
        self.assertEqual(b"".join([b"\x01definitions", *events, b"\x04exceptions"]), received)

    def test_a_stalled_reader_gives_an_error_and_counts_only_whole_frames(self):
        import socket

        for outbox, buf in self.outboxes():
            with self.subTest(type(outbox).__name__):
                a, b = socket.socketpair()
                with a, b:
                    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
                    big = b"\x01" + bytes(1 << 20)
                    outbox.add_frame(b"\x01small")
                    outbox.add_frame(big)
                    frames, records, error = self.send(outbox, a, timeout_ms=200)
                self.assertEqual((1, 0), (frames, records), "the big frame was cut: not counted")
                self.assertNotEqual(0, error)

    def test_a_closed_peer_is_an_error_not_a_signal(self):
        import socket

        for outbox, buf in self.outboxes():
            with self.subTest(type(outbox).__name__):
                a, b = socket.socketpair()
                b.close()
                with a:
                    outbox.add_frame(b"\x01frame")
                    frames, records, error = self.send(outbox, a)
                self.assertEqual((0, 0), (frames, records))
                self.assertNotEqual(0, error)

    def test_the_native_send_lets_other_threads_run_while_it_waits(self):
        import socket
        import threading

        outbox, _ = self.outboxes()[0]
        counted = [0]
        stop = threading.Event()

        def count():
            while not stop.is_set():
                counted[0] += 1

        a, b = socket.socketpair()
        with a, b:
            a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            outbox.add_frame(b"\x01" + bytes(1 << 20))  # more than the socket takes: send waits
            counter = threading.Thread(target=count)
            counter.start()
            try:
                while counted[0] == 0:
                    pass
                before = counted[0]
                frames, _, error = self.send(outbox, a, timeout_ms=300)
                during = counted[0] - before
            finally:
                stop.set()
                counter.join()
        self.assertEqual(0, frames)
        self.assertNotEqual(0, error)
        self.assertGreater(during, 1000, "the counting thread ran while send waited for room")

    def test_take_records_refuses_what_the_buffer_does_not_hold(self):
        outbox, buf = self.outboxes()[0]
        buf.extend((1, 2, 3, 4))
        for words in (3, 6, -2):
            with self.subTest(words=words), self.assertRaises(ValueError):
                outbox.take_records(buf, words)
        self.assertEqual(4, len(buf))
        outbox.take_records(buf, 2)
        self.assertEqual([3, 4], [buf[0], buf[1]])
        outbox.discard()
        outbox.add_records()
        self.assertEqual(0, len(outbox), "discard() forgets staged records")

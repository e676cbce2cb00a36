"""Empty handlers (`except C: pass`, `return False`, `continue`, `break`): an exception raised in the frame
of such a handler that catches it can never be re-raised, so the shim counts it as handled at its RAISE
(program_threads.empty_handler, handler_catches) instead of following it until the thread's next exception.
The decoder on functions compiled by the running Python, then real programs with the C callbacks on and
off: the same counts and fates as following each exception, the handler's line, no flight left behind."""

import builtins
import contextlib
import dis
import inspect
import sys
import textwrap
import unittest

from tests import support
from tests.test_exceptions import ExceptionRun
from telemetry_shim import _native_path
from telemetry_shim._exceptions import program_threads

NATIVE_BUILT = _native_path.load()[0] is not None

# Every case, one function each; `# @<case>_raise` marks the raising line, `# @<case>_handler` the except line.
CASES = textwrap.dedent("""
    class Quiet(Exception):
        pass
    Stop = StopIteration  # rebound by the programs below
    def passes(it):
        try:
            next(it)  # @passes_raise
        except StopIteration:  # @passes_handler
            pass
    def returns(it):
        try:
            next(it)  # @returns_raise
        except StopIteration:  # @returns_handler
            return False
    def continues(its):
        for it in its:
            try:
                next(it)  # @continues_raise
            except StopIteration:  # @continues_handler
                continue
    def breaks(its):
        for it in its:
            try:
                next(it)  # @breaks_raise
            except StopIteration:  # @breaks_handler
                break
    def in_tuple(table):
        try:
            table["missing"]  # @in_tuple_raise
        except (Quiet, KeyError):  # @in_tuple_handler
            pass
    def subclass(it):
        try:
            raise Quiet()  # @subclass_raise
        except Exception:  # @subclass_handler
            pass
    def named(it):
        try:
            next(it)  # @named_raise
        except StopIteration as error:  # @named_handler
            pass
    def with_body(it, log):
        try:
            next(it)  # @with_body_raise
        except StopIteration:  # @with_body_handler
            log.append(1)
    def second_clause(it):
        try:
            next(it)  # @second_clause_raise
        # Handled at the first clause's line: EXCEPTION_HANDLED comes before any clause is tested.
        except KeyError:  # @second_clause_handler
            pass
        except StopIteration:
            pass
    def nested(it):
        try:
            try:
                next(it)  # @nested_raise
            except StopIteration:  # @nested_handler
                pass
        except KeyError:
            return 1
    def rebound(it):
        try:
            next(it)  # @rebound_raise
        except Stop:  # @rebound_handler
            pass
    def raises(it):
        next(it)  # @raises_raise
    def callee(it):
        try:
            raises(it)  # @callee_raise
        except StopIteration:  # @callee_handler
            pass
""")

SUPPORTED = ("passes", "returns", "continues", "breaks", "in_tuple", "subclass", "nested", "rebound", "callee")
REJECTED = ("named", "with_body", "second_clause")


def compiled_cases():
    namespace = {}
    exec(compile(CASES, "<cases>", "exec"), namespace)
    return namespace


def marked_line(source, marker):
    lines = [n for n, text in enumerate(source.splitlines(), 1) if text.rstrip().endswith("# @" + marker)]
    assert len(lines) == 1, marker
    return lines[0]


def raising_offset(function, line):
    """The offset of the instruction that raises on `line` (the call, the subscript, the raise)."""
    kinds = ("CALL", "BINARY_SUBSCR", "RAISE_VARARGS")
    found = [i.offset for i in dis.get_instructions(function) if i.positions.lineno == line and i.opname in kinds]
    return found[-1]


@unittest.skipIf(sys.version_info < (3, 12), "sys.monitoring is Python 3.12+")
class DecoderTests(unittest.TestCase):
    """empty_handler on the code the running Python compiled, handler_catches on real namespaces."""

    def setUp(self):
        self.namespace = compiled_cases()

    def decoded(self, case):
        function = self.namespace[case]
        line = marked_line(CASES, case + "_raise")
        return function, program_threads.empty_handler(function.__code__, raising_offset(function, line))

    def test_empty_handlers_are_found_with_their_names_and_the_except_line(self):
        names = {"in_tuple": ("Quiet", "KeyError"), "subclass": ("Exception",), "rebound": ("Stop",)}
        for case in SUPPORTED:
            function, found = self.decoded(case)
            self.assertIsNotNone(found, case)
            handler, matched = found
            self.assertEqual(names.get(case, ("StopIteration",)), matched, case)
            # The handler's first instruction with a line is the except clause's test.
            lines = [i.positions.lineno for i in dis.get_instructions(function) if i.offset >= handler]
            self.assertEqual(marked_line(CASES, case + "_handler"), next(line for line in lines if line), case)

    def test_the_innermost_handler_is_the_one_read(self):
        function, (handler, _) = self.decoded("nested")
        outer = [i.offset for i in dis.get_instructions(function) if i.argval == "KeyError"][0]
        self.assertLess(handler, outer)

    def test_handlers_that_keep_or_use_the_exception_or_test_other_clauses_first_are_not(self):
        for case in ("named", "with_body"):
            self.assertIsNone(self.decoded(case)[1], case)
        # Only the first clause is read: it names KeyError, which never catches a StopIteration.
        _, (_, matched) = self.decoded("second_clause")
        self.assertEqual(("KeyError",), matched)
        self.assertFalse(program_threads.handler_catches(matched, StopIteration, self.namespace, builtins.__dict__))

    def test_instructions_outside_a_try_or_in_a_handler_have_no_empty_handler(self):
        self.assertIsNone(self.decoded("raises")[1])
        function = self.namespace["with_body"]
        append = [i.offset for i in dis.get_instructions(function) if i.opname == "CALL"][-1]  # log.append(1)
        self.assertIsNone(program_threads.empty_handler(function.__code__, append))

    def test_a_name_past_the_first_128_is_read_through_its_extended_argument(self):
        source = "def far(it):\n%s\n    try:\n        next(it)\n    except StopIteration:\n        pass\n" % (
            "\n".join("    global_%d" % n for n in range(200)))
        namespace = {}
        exec(compile(source, "<far>", "exec"), namespace)
        far = namespace["far"]
        self.assertIn("EXTENDED_ARG", [i.opname for i in dis.get_instructions(far)])
        found = program_threads.empty_handler(far.__code__, raising_offset(far, 2 + 200 + 1))
        self.assertEqual(("StopIteration",), found[1])

    def test_contextmanagers_exit_catches_the_generators_stop_iteration_in_an_empty_handler(self):
        exit_function = contextlib._GeneratorContextManager.__exit__
        source, first = inspect.getsourcelines(exit_function)
        call = first + next(n for n, text in enumerate(source) if "next(self.gen)" in text)
        found = program_threads.empty_handler(exit_function.__code__, raising_offset(exit_function, call))
        self.assertEqual(("StopIteration",), found[1])

    def test_names_are_checked_as_the_handler_would_find_them_now(self):
        catches = program_threads.handler_catches
        namespace, builtin = self.namespace, builtins.__dict__
        self.assertTrue(catches(("Stop",), StopIteration, namespace, builtin))
        self.assertTrue(catches(("StopIteration",), StopIteration, namespace, builtin))  # a builtin
        self.assertTrue(catches(("Quiet", "KeyError"), KeyError, namespace, builtin))
        self.assertTrue(catches(("Exception",), namespace["Quiet"], namespace, builtin))
        namespace["Stop"] = KeyError  # rebound: the handler no longer catches it
        self.assertFalse(catches(("Stop",), StopIteration, namespace, builtin))
        namespace["StopIteration"] = KeyError  # a module global shadows the builtin
        self.assertFalse(catches(("StopIteration",), StopIteration, namespace, builtin))
        del namespace["StopIteration"]
        namespace["Stop"] = int  # not an exception class: CHECK_EXC_MATCH raises TypeError
        self.assertFalse(catches(("Stop",), StopIteration, namespace, builtin))
        self.assertFalse(catches(("Stop", "StopIteration"), StopIteration, namespace, builtin))
        del namespace["Stop"]  # unbound: NameError
        self.assertFalse(catches(("Stop",), StopIteration, namespace, builtin))

        class Namespace(dict):
            pass
        # A dict subclass's lookup could run the program's code: never read.
        self.assertFalse(catches(("StopIteration",), StopIteration, Namespace(namespace), builtin))

    def test_a_metaclass_subclass_check_is_neither_called_nor_believed(self):
        # CHECK_EXC_MATCH tests the classes themselves (PyType_IsSubtype), as handler_catches does.
        calls = []

        class Claims(type):
            def __subclasscheck__(cls, subclass):
                calls.append(subclass)
                return True

        class Everything(Exception, metaclass=Claims):
            pass
        namespace = {"Everything": Everything}
        self.assertFalse(program_threads.handler_catches(("Everything",), KeyError, namespace, builtins.__dict__))
        try:
            raise KeyError
        except Everything:
            self.fail("CPython believed the metaclass")
        except KeyError:
            pass
        self.assertEqual([], calls)


# The cases, each used USES times: first those the shim follows until the thread's next exception, then
# the contextmanager and the empty handlers (the first of which settles what the others left), then the
# rebound name's handler catching another class: its StopIterations escape the threads that run it.
# Prints what the shim holds: the flights left for the empty handlers' exceptions right after them, the
# empty-handler points of these functions, the C callbacks' count.
PROGRAM = CASES + textwrap.dedent("""
    import contextlib, threading
    from telemetry_shim import _control
    from telemetry_shim._tables import identity
    USES = 200
    @contextlib.contextmanager
    def managed():
        yield
    log = []
    empty = ()
    for _ in range(USES):
        named(iter(empty))
        with_body(iter(empty), log)
        second_clause(iter(empty))
        callee(iter(empty))
    for _ in range(USES):
        with managed():
            pass
        passes(iter(empty))
        returns(iter(empty))
        continues([iter(empty)])
        breaks([iter(empty)])
        in_tuple({})
        subclass(None)
        nested(iter(empty))
        rebound(iter(empty))
    flights = _control._shim.recorder.exceptions.flights
    left = sorted(f.site.name for f in list(flights.inflight.values())
                  if f.site.name in ("builtins.StopIteration", "builtins.KeyError") or f.site.name.endswith("Quiet"))
    Stop = LookupError
    for _ in range(3):
        thread = threading.Thread(target=rebound, args=(iter(empty),))
        thread.start()
        thread.join()
    names = {identity(f.__code__): f.__name__ for f in list(globals().values()) if hasattr(f, "__code__")}
    keys = {flights._code_keys.get(code_id): name for code_id, name in names.items()}
    points = sorted("%s:%d" % (keys[site.code_key], site.line)
                    for site, _ in list(flights.empty_handler_points.values()) if site.code_key in keys)
    native = _control._shim.recorder.exceptions.native
    print(left)
    print(" ".join(points))
    print("python" if native is None else native.counted)
""")
USES = 200
EXIT = "_GeneratorContextManager.__exit__"


@unittest.skipIf(sys.version_info < (3, 12), "sys.monitoring is Python 3.12+")
class EmptyHandlerProgramTests(unittest.TestCase):
    def run_program(self, mode, native):
        run = ExceptionRun(self, PROGRAM, env={"TELEMETRY_SHIM_MODE": mode, "TELEMETRY_SHIM_NATIVE": native})
        left, points, counted = run.stdout.splitlines()
        return run, left, points.split(), counted

    def fates(self, run, type_name):
        """(raise site, fate) -> count, of the detailed records and the tallies of `type_name` raised by the
        program or by the contextmanager's __exit__ (not by the imports)."""
        found = {}
        counted = [(record["stack"][-1], record["fate"], 1) for record in run.all_records
                   if record["detail"]["type_name"] == type_name]
        counted += [(tally["raised_at"], tally["fate"], tally["count"]) for tally in run.conn.tallies
                    if tally["type_name"] == type_name]
        for raised_at, fate, count in counted:
            where = run.where(raised_at)
            if run.conn.codes[raised_at["code_id"]]["file_name"] == "<string>" or where[0] == EXIT:
                found[(where, fate)] = found.get((where, fate), 0) + count
        return found

    def test_each_case_keeps_its_counts_and_fates_and_empty_handlers_leave_no_flight(self):
        for mode in ("exceptions", "full"):
            self.check_program(mode)

    def check_program(self, mode):
        variants = ("on", "off") if NATIVE_BUILT else ("off",)
        outcomes = {}
        for native in variants:
            run, left, points, counted = self.run_program(mode, native)
            label = "%s mode, C callbacks %s" % (mode, native)
            line = run.line
            stop_iterations = self.fates(run, "builtins.StopIteration")
            # Every StopIteration of the cases handled where it was raised, USES of each, whichever way the
            # shim followed it; the rebound handler's last three escaped their threads.
            expected = {((case, line(case + "_raise")), "FATE_HANDLED"): USES
                        for case in ("passes", "returns", "continues", "breaks", "named", "with_body",
                                     "second_clause", "nested", "rebound", "raises")}
            expected[(("rebound", line("rebound_raise")), "FATE_ESCAPED_THREAD")] = 3
            exit_sites = {key: n for key, n in stop_iterations.items() if key[0][0] == EXIT}
            program_sites = {key: n for key, n in stop_iterations.items() if key not in exit_sites}
            self.assertEqual(expected, program_sites, label)
            # The contextmanager's: USES, handled in __exit__, at its `except StopIteration` line.
            self.assertEqual([USES], list(exit_sites.values()), label)
            self.assertEqual("FATE_HANDLED", next(iter(exit_sites))[1], label)
            exit_source, first = inspect.getsourcelines(contextlib._GeneratorContextManager.__exit__)
            except_line = first + next(n for n, text in enumerate(exit_source) if "except StopIteration:" in text)
            for record in run.all_records:
                if record["detail"]["type_name"] == "builtins.StopIteration":
                    raised_at = run.where(record["stack"][-1])
                    case = raised_at[0]
                    if case == EXIT:
                        self.assertEqual((case, except_line), run.where(record["handled_at"]), label)
                    elif case == "raises":
                        self.assertEqual(("callee", line("callee_handler")), run.where(record["handled_at"]), label)
                    elif case in SUPPORTED + REJECTED:
                        self.assertEqual((case, line(case + "_handler")), run.where(record["handled_at"]),
                                         (label, case))
            self.assertEqual({(("in_tuple", line("in_tuple_raise")), "FATE_HANDLED"): USES},
                             self.fates(run, "builtins.KeyError"), label)
            self.assertEqual({(("subclass", line("subclass_raise")), "FATE_HANDLED"): USES},
                             self.fates(run, "__main__.Quiet"), label)
            # The empty handlers' exceptions were concluded at their RAISE: no flight waits for the next one.
            # (Those of `as`, of a body, of a second clause and the callee's wait until the next exception.)
            self.assertEqual("[]", left, label)
            expected_points = {"%s:%d" % (case, line(case + "_raise"))
                               for case in ("passes", "returns", "continues", "breaks", "in_tuple", "subclass",
                                            "nested")}
            self.assertEqual(expected_points, set(points), label)  # rebound's: dropped when Stop changed
            if native == "on":
                # All but the first detailed ones of the contextmanager and of the 7 empty handlers, in C.
                self.assertGreaterEqual(int(counted), 8 * (USES - program_threads.FIRST_DETAILED_PER_SITE), label)
            outcomes[native] = (stop_iterations, self.fates(run, "builtins.KeyError"))
        if len(outcomes) == 2:
            self.assertEqual(outcomes["off"], outcomes["on"], mode)

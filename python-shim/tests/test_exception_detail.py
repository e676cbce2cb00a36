"""What the shim reads from an exception object, in process: only safe reads (never the class's
own __str__, __repr__, __getattribute__ or properties), the documented cuts and caps."""

import sys
import unittest

if sys.version_info >= (3, 12):
    from telemetry_shim import SHIM_PACKAGE_DIR, _wire
    from telemetry_shim._exceptions import details, safe_reads
    from telemetry_shim._monitor import Recorder

OK, TRUNCATED, UNAVAILABLE = 0, 1, 2


class Trap(Exception):
    """Any use of this object's Python-level code fails the test."""


class Hostile(Exception):
    def __getattribute__(self, name):
        raise Trap("__getattribute__(%s)" % name)

    def __getattr__(self, name):
        raise Trap("__getattr__(%s)" % name)

    def __repr__(self):
        raise Trap("__repr__")


class CustomStr(Exception):
    def __str__(self):
        raise Trap("__str__")


class TrappedValue:
    def __str__(self):
        raise Trap("value __str__")

    __repr__ = __str__


class LoudStr(str):
    def __str__(self):
        raise Trap("str subclass __str__")

    __repr__ = __str__


class HostileMeta(type):
    def __getattribute__(cls, name):
        raise Trap("metaclass __getattribute__(%s)" % name)


class MetaHostile(Exception, metaclass=HostileMeta):
    pass


def raised(exc):
    try:
        raise exc
    except BaseException as caught:
        return caught


@unittest.skipUnless(sys.version_info >= (3, 12), "sys.monitoring needs Python 3.12+")
class MessageTests(unittest.TestCase):
    def test_plain_arguments_give_the_message(self):
        self.assertEqual(("bad value", OK), safe_reads.safe_message(ValueError("bad value")))
        self.assertEqual(("'key'", OK), safe_reads.safe_message(KeyError("key")))
        self.assertEqual(("(1, 'a', None, b'x')", OK), safe_reads.safe_message(ValueError(1, "a", None, b"x")))
        self.assertEqual(("", OK), safe_reads.safe_message(RuntimeError()))
        self.assertEqual(("[Errno 2] No such file: 'a.txt'", OK),
                         safe_reads.safe_message(FileNotFoundError(2, "No such file", "a.txt")))
        self.assertEqual(("'utf-8' codec can't decode byte 0xff in position 0: invalid start byte", OK),
                         safe_reads.safe_message(raised_decode_error()))
        self.assertEqual(("g (1 sub-exception)", OK), safe_reads.safe_message(ExceptionGroup("g", [Hostile()])))

    def test_anything_that_could_run_program_code_is_unavailable(self):
        cases = [
            CustomStr("x"),
            ValueError(TrappedValue()),
            ValueError(LoudStr("x")),
            ValueError([1, 2]),
            OSError(2, "missing", TrappedValue()),
            ExceptionGroup(LoudStr("g"), [ValueError()]),
        ]
        syntax = SyntaxError("bad")
        syntax.msg = TrappedValue()
        cases.append(syntax)
        for exc in cases:
            with self.subTest(type(exc).__name__):
                self.assertEqual(("", UNAVAILABLE), safe_reads.safe_message(exc))

    def test_a_failing_c_conversion_is_unavailable(self):
        # int -> str beyond the interpreter's digit limit raises inside str(): no message.
        self.assertEqual(("", UNAVAILABLE), safe_reads.safe_message(ValueError(10 ** 5000)))

    def test_hostile_getattribute_is_never_called(self):
        exc = raised(Hostile("payload"))
        self.assertEqual(("payload", OK), safe_reads.safe_message(exc))
        self.assertEqual(([], 0), safe_reads.safe_notes(exc))
        self.assertEqual(__name__ + ".Hostile", safe_reads.type_name(type(exc)))

    def test_metaclass_getattribute_is_never_called(self):
        self.assertEqual(__name__ + ".MetaHostile", safe_reads.type_name(MetaHostile))
        self.assertEqual(("m", OK), safe_reads.safe_message(MetaHostile("m")))

    def test_cut_on_a_character_boundary(self):
        self.assertEqual(("abc", False), safe_reads.cut_text("abc"))
        self.assertEqual(("é" * 512, True), safe_reads.cut_text("é" * 513))
        self.assertEqual(("a" + "€" * 341, True), safe_reads.cut_text("a" + "€" * 400))  # 1 + 3*341 = 1024
        self.assertEqual(("x" * 1023, True), safe_reads.cut_text("x" * 1023 + "é"))
        self.assertEqual(("\\udc80", False), safe_reads.cut_text("\udc80"))
        text, cut = safe_reads.cut_text("y" * 5_000_000)
        self.assertEqual((1024, True), (len(text.encode()), cut))
        self.assertEqual(("é" * 512, TRUNCATED), safe_reads.safe_message(ValueError("é" * 600)))


@unittest.skipUnless(sys.version_info >= (3, 12), "sys.monitoring needs Python 3.12+")
class NotesTests(unittest.TestCase):
    def test_notes_kept_cut_and_counted(self):
        exc = ValueError()
        exc.add_note("first")
        exc.add_note("é" * 600)
        exc.__notes__.append(b"bytes are not notes")
        exc.__notes__.append(LoudStr("a str subclass keeps its text, never its __str__"))
        self.assertEqual((["first", "é" * 512, "a str subclass keeps its text, never its __str__"], 1),
                         safe_reads.safe_notes(exc))

    def test_notes_that_are_not_a_list(self):
        exc = ValueError()
        exc.__notes__ = "not a list"
        self.assertEqual(([], 1), safe_reads.safe_notes(exc))

    def test_at_most_sixteen(self):
        exc = ValueError()
        for i in range(20):
            exc.add_note(str(i))
        self.assertEqual(([str(i) for i in range(16)], 4), safe_reads.safe_notes(exc))


@unittest.skipUnless(sys.version_info >= (3, 12), "sys.monitoring needs Python 3.12+")
class DetailTests(unittest.TestCase):
    def setUp(self):
        self.recorder = Recorder(1024, SHIM_PACKAGE_DIR, lambda: None)
        self.tracker = self.recorder.exceptions

    def test_cause_chain_deeper_than_eight_is_truncated(self):
        exc = ValueError(0)
        for i in range(1, 12):
            outer = ValueError(i)
            outer.__cause__ = exc
            exc = outer
        detail = self.tracker.detail(exc)
        depth = 1
        while detail["cause"] is not None:
            self.assertFalse(detail["nesting_truncated"])
            detail = detail["cause"]
            depth += 1
        self.assertEqual(8, depth)
        self.assertTrue(detail["nesting_truncated"])
        self.assertEqual("4", detail["message"])  # 11 is the top, 4 is the eighth

    def test_context_cycle_ends(self):
        first, second = ValueError("a"), ValueError("b")
        first.__context__ = second
        second.__context__ = first
        detail = self.tracker.detail(first)
        self.assertEqual("b", detail["context"]["message"])

    def test_context_equal_to_cause_is_left_out(self):
        cause = KeyError("k")
        exc = ValueError("v")
        exc.__cause__ = cause
        exc.__context__ = cause
        exc.__suppress_context__ = False
        detail = self.tracker.detail(exc)
        self.assertEqual(("builtins.KeyError", None), (detail["cause"]["type_name"], detail["context"]))

    def test_record_size_is_bounded_by_the_node_budget(self):
        note = "n" * 1024
        leaves = []
        for i in range(16):
            leaf = ValueError("x" * 2000)
            for _ in range(20):
                leaf.add_note(note)
            leaves.append(leaf)
        group = ExceptionGroup("top", [ExceptionGroup("g%d" % i, leaves) for i in range(16)])
        detail = self.tracker.detail(group)
        nodes = []
        pending = [detail]
        while pending:
            node = pending.pop()
            nodes.append(node)
            pending.extend(node["members"])
        self.assertEqual(details.MAX_DETAILS_PER_RECORD, len(nodes))
        self.assertEqual(16, len(detail["members"]))
        size = len(_wire.encode_message("ExceptionDetail", detail))
        self.assertLess(size, _wire.MAX_FRAME_PAYLOAD // 2)

    def test_traceback_keeps_the_innermost_entries(self):
        def dive(n):
            if n == 0:
                raise LookupError("deep")
            dive(n - 1)

        try:
            dive(200)
        except LookupError as exc:
            detail = self.tracker.detail(exc)
        self.assertEqual(details.MAX_TRACEBACK_ENTRIES, len(detail["traceback"]))
        definitions = {d[0]: d[1] for d in self.recorder.codes.definitions}
        self.assertEqual({"DetailTests.test_traceback_keeps_the_innermost_entries.<locals>.dive"},
                         {definitions[l["code_id"]] for l in detail["traceback"]})


def raised_decode_error():
    try:
        b"\xff".decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc


if __name__ == "__main__":
    unittest.main()

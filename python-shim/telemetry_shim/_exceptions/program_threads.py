"""The exception callbacks, run on the program's threads: RAISE, RERAISE, EXCEPTION_HANDLED, the
PY_UNWIND bookkeeping and the notes watch (C_RETURN of `add_note`), and the state they keep. Every
exception is followed as a Flight from its first RAISE until its fate is known; concluded flights
go to the sender (detailed ones, in `finished`) or to their site's counters (the others, listed in
`dirty_sites`). The sender's side (sender_thread.py) reads those two lists and concludes, from a
tick, flights that went quiet.

No reference to an exception, its traceback, a frame or a class outlives the callback that saw it:
an exception holds its traceback, the traceback its frames, the frames their locals, and the
program must see all of them freed when it lets go, as it would without the shim. A flight is
keyed by id(exc) and remembers ids (of the exception, of its traceback at the last event, of the
Python frame it unwound into and that frame's code) and plain values. An id is only meaningful
while its object lives, and the shim cannot tell when the program lets go; so every event that
finds a flight first checks that it is about the same object, with objects that are alive at that
moment: the same class (by id, the site's), and either the traceback seen at the previous event (a
new frame's entry links to it, RERAISE and EXCEPTION_HANDLED keep it) or the exception being what
the thread handles (sys.exception(), an identity test). Otherwise the flight's exception has died
and a new one took its address: the flight is concluded and the event is about a new exception.

What sys.monitoring tells us (measured on 3.12 and 3.13):
- RAISE fires in every frame an exception passes through: first where it is raised (its
  traceback has one entry then), then in each Python caller it reaches (with one more entry,
  whose tb_next is the previous one). PY_UNWIND fires in each frame it leaves.
- EXCEPTION_HANDLED also fires for compiler-made handlers (the cleanup of `except ... as e`, a
  with-block's exit, Thread._bootstrap_inner), which re-raise right away (RERAISE). So HANDLED
  only makes the flight "pending"; it is concluded lazily, once it can no longer be re-raised:
  on the thread's next new exception when it is no longer among the exceptions the thread is
  handling (sys.exception() and its __context__ chain), by the sender after a quiet period (with
  sys._current_exceptions()), or at the end. Its fate time is the HANDLED event's time.
  Except where its handler cannot re-raise it: an empty handler (`except C: pass`, no `as`, see
  empty_handler) in the frame that raised it, whose names catch its class at the RAISE, drops it at
  POP_EXCEPT before any code of the program runs. Such a RAISE (a contextmanager's StopIteration in
  `__exit__`) is handled at once, at the `except` line, and counted like a loop's StopIteration.
- An exception that leaves a frame into C code which swallows it (hasattr(), getattr() with a
  default, ...) shows no further event: the sender concludes it once the thread has moved on
  from that call (sys._current_frames()), as handled at the Python line that made the C call. One
  that ends a coroutine is stored in its task: its flight stays open longer, so that `await task`
  continues its record.
- The import system rewrites an exception's traceback on its way out (importlib's frames are
  dropped): the next RAISE is recognised by its frame instead (the caller it unwound into, at the
  call it made).
- Returning DISABLE from these events raises inside the program: the callbacks never do.

Detail (DetailReader): a detailed flight copies what its record says at its first RAISE and
refreshes what can change at its later events (a traceback entry per frame; the notes, also at
each `add_note` that returns, see the notes watch in _monitor.Recorder; everything again when it
is re-raised inside its handler). It is kept for the first FIRST_DETAILED_PER_SITE exceptions of
each (type, raise code, raise line), then at most one per second per site and
MAX_DETAILED_PER_SECOND overall (after a burst of DETAILED_BURST); the others are counted in
ExceptionTally. The common case, a new exception at a known raise point whose site has had its
detail, takes two dict lookups to find its site and one small object to follow it; everything
else (a new raise point, a detailed exception, the tables full) goes to _new_flight.
"""

import sys
import threading
from _thread import get_ident
from itertools import count
from time import perf_counter_ns
from _weakref import ref  # weakref.ref itself: see _tables

from .. import _wire
from .._tables import AtomicCounter, identity
from .safe_reads import being_handled, get_traceback, handled_ids, type_name
from .safe_reads import MAX_HANDLED_DEPTH  # being_handled's depth, read here by the C callbacks with the other limits

_events = sys.monitoring.events

# Limits (README "Exceptions").
MAX_STACK_FRAMES = 128           # the innermost ones are kept (stack_truncated)
FIRST_DETAILED_PER_SITE = 5    # as many as the agent keeps sample messages per group
SITE_DETAIL_INTERVAL_NS = 1_000_000_000
MAX_DETAILED_PER_SECOND = 100   # sustained, over all sites (a token bucket) ...
DETAILED_BURST = 1000           # ... after a burst of this many (e.g. the imports at start-up)
MAX_SITES = 16384
MAX_IN_FLIGHT = 4096
MAX_TRACEBACK_WORDS = 2 * 128   # a detailed flight's traceback entries (code key, line), innermost first
_NORMAL_TIMING = (SITE_DETAIL_INTERVAL_NS, MAX_DETAILED_PER_SECOND)

# What the notes watch looks for (PEP 678). `e.add_note(x)`: the callable is this method
# descriptor and the exception is the first argument; `g = e.add_note; g(x)`: the callable is a
# builtin method named add_note whose __self__ is the exception.
ADD_NOTE = BaseException.add_note
ADD_NOTE_NAME = "add_note"
BUILTIN_METHOD = type(len)


def stretch_intervals(slowdown):
    """The interval and the rate above, for a process `slowdown` times slower than a normal run.
    Module constants, so that the callbacks read them at no extra cost."""
    global SITE_DETAIL_INTERVAL_NS, MAX_DETAILED_PER_SECOND
    site_interval, per_second = _NORMAL_TIMING
    SITE_DETAIL_INTERVAL_NS = int(site_interval * slowdown)
    MAX_DETAILED_PER_SECOND = per_second / slowdown


PROPAGATING = 0
HANDLED = 1

_CO_COROUTINE = 0x80
_THREAD_BOOTSTRAP_INNER_CODE = getattr(getattr(threading.Thread, "_bootstrap_inner", None), "__code__", None)


class Site:
    """One (exception type, raise code, raise line): sampling state and tally counters."""

    __slots__ = ("type_ref", "type_id", "name", "code_key", "line", "detailed", "last_detail_ns", "counters",
                 "sent", "dirty", "stop_iteration", "generator_exit", "count_handled", "handled_counter")

    def __init__(self, exc_type, code_key, line, new_counter=count):
        # A weak reference: a class created at run time must be able to die. Its id() is part of
        # the keys; type_ref() tells whether that id still means this class.
        self.type_ref = ref(exc_type) if exc_type is not None else _no_type
        self.type_id = identity(exc_type) if exc_type is not None else 0
        self.name = type_name(exc_type) if exc_type is not None else ""
        self.code_key = code_key
        self.line = line
        self.detailed = 0
        self.last_detail_ns = 0
        handled = AtomicCounter(new_counter)
        self.counters = {_wire.FATE_HANDLED: handled}  # fate -> AtomicCounter (program threads bump, the sender reads)
        self.count_handled = handled.increment  # the common fate, one C call
        self.handled_counter = handled.counter  # what count_handled advances, for the C callbacks
        self.sent = {}  # fate -> total already tallied (sender only)
        self.dirty = False
        # A for loop or `yield from` ends it silently (FOR_ITER/SEND swallow it in C).
        self.stop_iteration = exc_type is not None and issubclass(exc_type, StopIteration)
        # close() throws a new GeneratorExit into a suspended generator, and swallows it in C.
        self.generator_exit = exc_type is GeneratorExit


class Flight:
    """One exception from its first RAISE until its fate is known, by ids and plain values (the
    module's docstring). `info`, `raised_ns`, `stack`, `detail`, `traceback`, `handler` and
    `caller_site` only matter for a detailed one. Slots: the C callbacks make a counted flight
    without running Python (a copy of a prototype's slots, then the five given fields) and read and
    write its fields at their offsets."""

    __slots__ = ("exc_id", "tb_id", "ident", "site", "last_ns", "detailed", "info", "raised_ns", "stack",
                 "stack_truncated", "detail", "traceback", "state", "frames_unwound", "reraises", "escaped_thread",
                 "handler", "caller_id", "caller_code_id", "caller_lasti", "caller_site", "outermost", "coroutine",
                 "pending", "fate", "fate_ns", "handled_at")

    def __init__(self, exc_id, tb_id, ident, site, now):
        self.exc_id = exc_id
        self.tb_id = tb_id  # id of the exception's traceback at its last event
        self.ident = ident
        self.site = site
        self.last_ns = now
        self.detailed = False
        self.info = None
        self.raised_ns = 0
        self.stack = None
        self.stack_truncated = False
        self.detail = None  # the ExceptionDetail dict, top node's traceback apart (DetailReader)
        self.traceback = None  # [code key, line, ...] innermost first
        self.state = PROPAGATING
        self.frames_unwound = 0
        self.reraises = 0
        self.escaped_thread = False  # handled by Thread._bootstrap_inner: an escape from its thread
        self.handler = None  # (code key, line) of the handler it last reached
        self.caller_id = 0  # the Python frame it last unwound into (0: none), that frame's code and instruction
        self.caller_code_id = 0
        self.caller_lasti = -1
        self.caller_site = None  # (code key, line) of that instruction
        self.outermost = False  # it last left the thread's outermost program frame
        self.coroutine = False  # it last ended a coroutine (its task keeps it)
        self.pending = False  # in its thread's list of handled flights to conclude
        self.fate = None
        self.fate_ns = 0
        self.handled_at = None  # (code key, line) where it was handled, once concluded (detailed only)


# The opcodes read here, and the CACHE entries that follow each opcode in co_code (3.12 and 3.13), as the
# module `opcode` gives them, by bytecode format (the magic number of .pyc files, the same in every release of a
# minor version): importing opcode.py (what dis.opmap is) and _opcode costs about 1 ms of every start.
# Another format takes them from `opcode` (tests/test_exceptions checks these against it).
_OPCODE_NAMES = ("FOR_ITER", "SEND", "YIELD_VALUE", "PUSH_EXC_INFO", "LOAD_GLOBAL", "BUILD_TUPLE", "CHECK_EXC_MATCH",
                 "POP_JUMP_IF_FALSE", "POP_TOP", "POP_EXCEPT", "NOP", "EXTENDED_ARG")
_KNOWN_OPCODES = {
    3531: (  # 3.12
        dict(FOR_ITER=93, SEND=123, YIELD_VALUE=150, PUSH_EXC_INFO=35, LOAD_GLOBAL=116, BUILD_TUPLE=102,
             CHECK_EXC_MATCH=36, POP_JUMP_IF_FALSE=114, POP_TOP=1, POP_EXCEPT=89, NOP=9, EXTENDED_ARG=144),
        {25: 1, 60: 1, 92: 1, 93: 1, 95: 4, 106: 9, 107: 1, 116: 4, 122: 1, 123: 1, 141: 1, 171: 3},
    ),
    3571: (  # 3.13
        dict(FOR_ITER=72, SEND=104, YIELD_VALUE=118, PUSH_EXC_INFO=33, LOAD_GLOBAL=91, BUILD_TUPLE=52,
             CHECK_EXC_MATCH=7, POP_JUMP_IF_FALSE=97, POP_TOP=32, POP_EXCEPT=31, NOP=30, EXTENDED_ARG=71),
        {5: 1, 39: 1, 40: 3, 45: 1, 53: 3, 58: 1, 59: 1, 72: 1, 77: 1, 82: 9, 91: 4, 93: 1, 97: 1, 98: 1, 99: 1,
         100: 1, 104: 1, 108: 4, 117: 1},
    ),
}


def _bytecode_magic():
    """The magic number of this interpreter's bytecode (importlib.util.MAGIC_NUMBER), or None."""
    bootstrap = sys.modules.get("_frozen_importlib_external")
    magic = getattr(bootstrap, "MAGIC_NUMBER", None)
    return int.from_bytes(magic[:2], "little") if isinstance(magic, bytes) and len(magic) >= 2 else None


def _opcode_tables():
    """({name: opcode} of _OPCODE_NAMES, the CACHE entries by opcode or None), from `opcode` itself unless the
    bytecode format is one of _KNOWN_OPCODES."""
    known = _KNOWN_OPCODES.get(_bytecode_magic())
    if known is not None:
        return known
    import opcode

    return {name: opcode.opmap[name] for name in _OPCODE_NAMES}, _inline_caches(opcode)


def _inline_caches(opcode):
    """opcode -> the CACHE entries that follow it in co_code: a list by opcode on 3.12, a dict by name on
    3.13 (opcode._inline_cache_entries, private). None when neither: no handler is recognised then."""
    opmap = opcode.opmap
    entries = getattr(opcode, "_inline_cache_entries", None)
    if isinstance(entries, dict):
        return {opmap[name]: count for name, count in entries.items() if name in opmap and count}
    if isinstance(entries, list):
        return {op: count for op, count in enumerate(entries) if count}
    return None


_OPCODES, _INLINE_CACHES = _opcode_tables()

# Instructions that end a StopIteration in C right after its RAISE event in their frame.
SWALLOWS_STOP_ITERATION = frozenset(_OPCODES[name] for name in ("FOR_ITER", "SEND"))
_YIELD_VALUE = _OPCODES["YIELD_VALUE"]


def _swallows_stop_iteration(code, offset):
    raw = code.co_code  # without specialisation or instrumentation
    return 0 <= offset < len(raw) and raw[offset] in SWALLOWS_STOP_ITERATION


# An empty handler: `except NAME: ...` or `except (NAME, ...): ...`, without `as`, whose body ends the
# exception before any code of the program runs (pass, return of a constant, continue, break). Its
# instructions in co_code on CPython 3.12 and 3.13: PUSH_EXC_INFO, LOAD_GLOBAL of each name (BUILD_TUPLE
# of them), CHECK_EXC_MATCH, POP_JUMP_IF_FALSE (to the next clause), POP_TOP, POP_EXCEPT. Once it
# matches, the exception is dropped at POP_EXCEPT: it can never be re-raised, its fate is final at the
# RAISE. Other versions compile handlers differently: none is recognised there.
_HANDLER_OPCODES = sys.version_info[:2] in ((3, 12), (3, 13))
_PUSH_EXC_INFO, _LOAD_GLOBAL, _BUILD_TUPLE, _CHECK_EXC_MATCH, _POP_JUMP_IF_FALSE, _POP_TOP, _POP_EXCEPT, _NOP, \
    _EXTENDED_ARG = (_OPCODES[name] for name in ("PUSH_EXC_INFO", "LOAD_GLOBAL", "BUILD_TUPLE", "CHECK_EXC_MATCH",
                                                 "POP_JUMP_IF_FALSE", "POP_TOP", "POP_EXCEPT", "NOP", "EXTENDED_ARG"))
_CACHE_ENTRIES = _INLINE_CACHES if _HANDLER_OPCODES else None


def _varint(table, at):
    """A value of co_exceptiontable (6 bits a byte, 0x40: more follow) and where the next one starts."""
    byte = table[at]
    value = byte & 63
    while byte & 64:
        at += 1
        byte = table[at]
        value = (value << 6) | (byte & 63)
    return value, at + 1


def _handler_at(code, offset):
    """The byte offset of the handler of the instruction at `offset` (the compiler flattens the table: its
    one entry there is the innermost handler), or None: no handler, or a cleanup that keeps the raising
    instruction's offset (lasti), which no `except` clause is."""
    table = code.co_exceptiontable
    unit = offset // 2
    at = 0
    while at < len(table):
        start, at = _varint(table, at)
        length, at = _varint(table, at)
        target, at = _varint(table, at)
        depth_and_lasti, at = _varint(table, at)
        if start <= unit < start + length:
            return None if depth_and_lasti & 1 else 2 * target
        if start > unit:  # the entries are in order
            return None
    return None


def empty_handler(code, offset):
    """(handler offset, names) when the innermost handler of the instruction at `offset` in `code` is an empty
    handler (above) of global names; None otherwise, and whenever in doubt."""
    if _CACHE_ENTRIES is None:
        return None
    try:
        at = _handler_at(code, offset)
        if at is None:
            return None
        raw = code.co_code  # without specialisation or instrumentation
        names = code.co_names
        caches = _CACHE_ENTRIES
        handler = at
        decoded = []  # (opcode, argument), EXTENDED_ARG folded in, CACHE entries skipped
        extended = 0
        while at + 1 < len(raw) and len(decoded) < 40:
            op = raw[at]
            argument = raw[at + 1] | extended
            at += 2 + 2 * caches.get(op, 0)
            if op == _EXTENDED_ARG:
                extended = argument << 8
                continue
            extended = 0
            decoded.append((op, argument))
            if op == _POP_EXCEPT:
                break
        if len(decoded) < 6 or decoded[0][0] != _PUSH_EXC_INFO:
            return None
        matched = []
        i = 1
        while decoded[i][0] == _LOAD_GLOBAL and not decoded[i][1] & 1:  # bit 0: a NULL pushed for a call
            matched.append(names[decoded[i][1] >> 1])
            i += 1
        if not matched:
            return None
        if decoded[i] == (_BUILD_TUPLE, len(matched)):
            i += 1
        elif len(matched) != 1:
            return None
        if [op for op, _ in decoded[i:i + 3]] != [_CHECK_EXC_MATCH, _POP_JUMP_IF_FALSE, _POP_TOP]:
            return None
        i += 3
        while i < len(decoded) and decoded[i][0] == _NOP:
            i += 1
        if i != len(decoded) - 1 or decoded[i][0] != _POP_EXCEPT:
            return None
        return handler, tuple(matched)
    except (IndexError, KeyError):  # a table or code this reading does not know: not an empty handler
        return None


_subclass_check = type.__subclasscheck__  # type's own test, never a metaclass's __subclasscheck__
_MISSING = object()


def handler_catches(names, cls, globals_, builtins_):
    """Does the handler `except names` catch `cls` now, as LOAD_GLOBAL and CHECK_EXC_MATCH would find
    its names in these namespaces: each an exception class (else CHECK_EXC_MATCH raises), one of them a
    base of `cls`. Only plain dicts are read (a subclass's lookup is the program's code)."""
    if type(globals_) is not dict or type(builtins_) is not dict:
        return False
    caught = False
    for name in names:
        value = globals_.get(name, _MISSING)
        if value is _MISSING:
            value = builtins_.get(name, _MISSING)
        if not issubclass(type(value), type) or not _subclass_check(BaseException, value):
            return False
        if _subclass_check(value, cls):
            caught = True
    return caught


def _closed_at(code, offset, tb):
    """Is this the first RAISE of a GeneratorExit that close() threw into a generator suspended at
    `offset`: raised at a yield, with one traceback entry (one passed on by throw() has more)."""
    raw = code.co_code
    return (tb is not None and tb.tb_next is None and 0 <= offset < len(raw) and raw[offset] == _YIELD_VALUE)


class FlightTable:
    """The exceptions followed on the program's threads (in flight, by id), their sites and
    counters, and the callbacks that keep them. The sender reads `inflight`, `finished` and
    `dirty_sites`, and concludes quiet flights through conclude()."""

    def __init__(self, codes, threads, failures, lines, reader):
        # inflight, pending_by_ident, the four *_points dicts and dirty_sites are held by the C callbacks
        # (_native.ExceptionCallbacks): cleared in place, never rebound.
        self.inflight = {}  # id(exc) -> Flight
        self.pending_by_ident = {}  # ident -> [Flight] handled, to conclude lazily (owner thread only)
        self.sites = {}  # (id(type), code key, line) -> Site
        # (code key, offset, id(type)) -> Site: the raising instruction's site, without a frame or a
        # line lookup. A code key is never reused; the type's id is checked with Site.type_ref.
        self.raise_points = {}
        # The same for a StopIteration that the raising instruction itself ends in C (SEND, FOR_ITER:
        # an `await` of a finished future): handled where it was raised, so it is counted at once.
        self.swallow_points = {}
        # (code key, offset) -> Site: the yields at which close() has thrown GeneratorExit into a generator.
        self.closed_points = {}
        # (code key, offset, id(type)) -> (Site, names): raise points whose handler in the same frame is
        # an empty one (empty_handler) that caught that class: handled there, counted at once while the
        # names still catch it (handler_catches) and the exception is raised in that frame.
        self.empty_handler_points = {}
        self.new_counter = count  # a site's handled counter: the C extension's Counter with the C callbacks
        self.overflow_site = Site(None, 0, 0)  # counts exceptions not tracked (tables full)
        self.dirty_sites = []
        self.finished = []  # concluded detailed flights, drained by the sender
        self._tokens = float(DETAILED_BURST)
        self._tokens_at_ns = perf_counter_ns()
        # asyncio's loop handler: wrapped by the escape hooks once asyncio is imported. The
        # tracker sets hook_asyncio, which keeps asyncio_hooked up to date.
        self.asyncio_hooked = False
        self.hook_asyncio = _no_hook
        self._codes = codes
        self._threads = threads
        self._thread_infos = threads.by_ident  # never replaced
        self._failures = failures
        self._failed = failures.failed
        self._code_keys = codes.keys  # never replaced
        self._code_key_of = codes.key_of
        self._ignored_idents = threads.ignored_idents  # never replaced
        self._lines = lines
        self._reader = reader

    def callbacks(self, unwind):
        """(event, callback) pairs to register; PY_UNWIND only when the call callbacks do not
        already forward it (see _monitor.Recorder._make_callback). The callbacks never return DISABLE
        (not allowed for these events) and hand internal errors to CallbackFailures."""
        failures = self._failures
        failed = failures.failed
        on_unwind = self.on_unwind

        table = self  # its inflight dict is replaced after a fork

        def unwind_callback(code, offset, exc):
            try:
                if identity(exc) not in table.inflight:
                    return None  # the common case, without a call: not followed (a closed generator's GeneratorExit)
                on_unwind(code, exc)  # finds the frame two calls up, as under the call recorder
            except RecursionError:
                failures.dropped.increment()  # at the limit: no Python call here (CallbackFailures)
            except BaseException as error:
                if failed(error):
                    raise

        pairs = [(_events.RAISE, self.on_raise), (_events.RERAISE, self.on_reraise),
                 (_events.EXCEPTION_HANDLED, self.on_handled)]
        if unwind:
            pairs.append((_events.PY_UNWIND, unwind_callback))
        return pairs

    # The callbacks below are registered as they are: the event's frame is one call up.

    def on_raise(self, code, offset, exc):
        try:
            if type(exc) is GeneratorExit:
                # A generator closed at a yield, at a known one: counted, with no flight (_new_flight).
                site = self.closed_points.get((self._code_keys.get(identity(code)), offset))
                if site is not None and get_traceback(exc).tb_next is None:
                    now = perf_counter_ns()
                    if ((site.detailed >= FIRST_DETAILED_PER_SITE and now - site.last_detail_ns < SITE_DETAIL_INTERVAL_NS)
                            or not self._sample(site, now)):
                        site.count_handled()
                        if not site.dirty:
                            site.dirty = True
                            self.dirty_sites.append(site)
                        return None
            inflight = self.inflight
            exc_id = identity(exc)
            flight = inflight.get(exc_id)
            ident = get_ident()
            tb = get_traceback(exc)
            if flight is not None:
                if flight.ident == ident and identity(type(exc)) == flight.site.type_id:
                    if flight.state == PROPAGATING:
                        linked = tb is not None and identity(tb.tb_next) == flight.tb_id
                        if linked or (offset == flight.caller_lasti and identity(code) == flight.caller_code_id
                                      and identity(sys._getframe(1)) == flight.caller_id):
                            # It reached a Python caller: not swallowed by C on the way ...
                            flight.caller_id = 0
                            flight.tb_id = identity(tb)
                            if flight.detailed:
                                self._reached_caller(flight, exc, code, linked)
                            if flight.site.stop_iteration and _swallows_stop_iteration(code, offset):
                                self._swallowed_here(flight, code, offset)  # ... unless by this loop
                            return None
                    elif being_handled(sys.exception(), exc):  # `raise err` inside its own handler
                        flight.state = PROPAGATING
                        flight.reraises += 1
                        flight.last_ns = perf_counter_ns()
                        flight.tb_id = identity(tb)
                        if flight.detailed:  # its context may be new, its traceback has grown
                            flight.detail = self._reader.detail(exc)
                            flight.traceback = self._reader.traceback_entries(exc)
                        return None
                # Another exception at the address of the flight's, which died; or the same one
                # raised again after its handler ended, or on another thread: that flight is over.
                if inflight.pop(exc_id, None) is flight:
                    self.conclude(flight, at_end=False)
            if ident in self._ignored_idents:
                return None
            pending = self.pending_by_ident.get(ident)
            if pending:
                if len(pending) == 1 and sys.exception() is None:
                    # The common case, inline: the thread's one handled exception is final.
                    handled = pending.pop()
                    handled.pending = False
                    if (handled.state == HANDLED and handled.fate is None
                            and inflight.pop(handled.exc_id, None) is handled):
                        if handled.detailed or handled.escaped_thread:
                            self.conclude(handled, at_end=False)
                        else:
                            handled.fate = _wire.FATE_HANDLED
                            site = handled.site
                            site.count_handled()
                            if not site.dirty:
                                site.dirty = True
                                self.dirty_sites.append(site)
                else:
                    self._settle_handled(pending)
            ck = self._code_keys.get(identity(code))
            if ck:
                cls = type(exc)
                point = (ck, offset, identity(cls))
                site = self.raise_points.get(point)
                if site is not None and site.type_ref() is cls:
                    if len(inflight) < MAX_IN_FLIGHT:
                        now = perf_counter_ns()
                        if ((site.detailed >= FIRST_DETAILED_PER_SITE
                             and now - site.last_detail_ns < SITE_DETAIL_INTERVAL_NS) or not self._sample(site, now)):
                            # Counted, not detailed: the fields the fate needs, nothing else.
                            inflight[exc_id] = Flight(exc_id, identity(tb), ident, site, now)
                            return None
                        self._new_flight(code, offset, exc, ident, sys._getframe(1), sampled=True)
                        return None
                else:
                    site = self.swallow_points.get(point)
                    if site is None:
                        caught = self.empty_handler_points.get(point)
                        if caught is not None and tb is not None and tb.tb_next is None:
                            frame = sys._getframe(1)
                            if handler_catches(caught[1], cls, frame.f_globals, frame.f_builtins):
                                site = caught[0]
                    if site is not None and site.type_ref() is cls:
                        # Inline like the path above: asyncio takes it on every await of a done future.
                        now = perf_counter_ns()
                        if ((site.detailed >= FIRST_DETAILED_PER_SITE
                             and now - site.last_detail_ns < SITE_DETAIL_INTERVAL_NS) or not self._sample(site, now)):
                            site.count_handled()
                            if not site.dirty:
                                site.dirty = True
                                self.dirty_sites.append(site)
                            return None
                        self._new_flight(code, offset, exc, ident, sys._getframe(1), sampled=True)
                        return None
            if type(exc) is GeneratorExit and tb is not None and tb.tb_next is not None:
                return None  # passed on from a generator closed at a yield, counted there (see _new_flight)
            self._new_flight(code, offset, exc, ident, sys._getframe(1))
        except RecursionError:
            self._failures.dropped.increment()
        except BaseException as error:
            if self._failed(error):
                raise
        return None

    def _reached_caller(self, flight, exc, code, linked):
        """A detailed flight's RAISE in the next Python caller: one more traceback entry (all of them
        again when C code rewrote the chain), and notes that C code may have added meanwhile."""
        reader = self._reader
        if not linked:
            flight.traceback = reader.traceback_entries(exc)
        elif len(flight.traceback) < MAX_TRACEBACK_WORDS:
            tb = get_traceback(exc)
            ck = self._code_keys.get(identity(code))
            if ck is None:
                ck = self._code_key_of(code, tb.tb_frame)
            if ck:
                flight.traceback.append(ck)
                flight.traceback.append(tb.tb_lineno or 0)
        reader.refresh_notes(flight.detail, exc)

    def _new_flight(self, code, offset, exc, ident, frame, sampled=False):
        """The slow path of a new exception: defines its code and site, decides its detail
        (unless `sampled` already did: then it is detailed), reads the stack and the detail."""
        if frame.f_code is not code:
            frame = None
        ck = self._code_key_of(code, frame)
        if not ck:
            return  # the shim's own code
        line = frame.f_lineno if frame is not None else None
        known_line = line is not None
        tb = get_traceback(exc)
        if line is None and frame is not None:
            # An instruction without a line (e.g. the re-raise of what except* left): the line
            # its traceback gives for this frame.
            line = tb.tb_lineno if tb is not None and tb.tb_frame is frame else None
        line = line or 0
        cls = type(exc)
        site = self._site(cls, ck, line)
        if site is None:
            self._count(self.overflow_site, _wire.FATE_UNSPECIFIED)
            return
        # Control flow that C code ends at once: a loop's StopIteration, a closed generator's GeneratorExit
        # (handled by close(), counted at once with no flight; its later events in the generator's cleanup,
        # and any RAISE of it passed on elsewhere, find no flight and are not counted again).
        closed = site.generator_exit and _closed_at(code, offset, tb)
        swallowed = closed or (site.stop_iteration and _swallows_stop_iteration(code, offset))
        # Or an empty handler of this frame catches it, raised here (one traceback entry): handled there.
        caught = None
        if not swallowed and frame is not None and tb is not None and tb.tb_next is None and tb.tb_frame is frame:
            caught = empty_handler(code, offset)
            if caught is not None and not handler_catches(caught[1], cls, frame.f_globals, frame.f_builtins):
                caught = None
        if known_line and ck != self._codes.overflow_code_key:  # that key is shared by many codes
            if closed:
                points, point, entry = self.closed_points, (ck, offset), site
            else:
                point, entry = (ck, offset, identity(cls)), site
                if caught is not None:
                    points, entry = self.empty_handler_points, (site, caught[1])
                    self.raise_points.pop(point, None)
                elif swallowed:
                    points = self.swallow_points
                else:
                    points = self.raise_points
                    self.empty_handler_points.pop(point, None)  # its names no longer catch it: never again
            if len(points) >= 4 * MAX_SITES:
                points.clear()
            points[point] = entry
        if len(self.inflight) >= MAX_IN_FLIGHT:
            self._count(site, _wire.FATE_UNSPECIFIED)
            return
        now = perf_counter_ns()
        flight = Flight(identity(exc), identity(tb), ident, site, now)
        if sampled or self._sample(site, now):
            info = self._thread_infos.get(ident) or self._threads.info(ident, code, frame)
            if info is not None:
                flight.detailed = True
                flight.info = info
                flight.raised_ns = now
                if frame is not None:
                    flight.stack, flight.stack_truncated = self._stack(frame)
                    if flight.stack:
                        flight.stack[1] = line  # the raising frame's line, as found above
                flight.detail = self._reader.detail(exc)
                flight.traceback = self._reader.traceback_entries(exc)
        self.inflight[identity(exc)] = flight
        if closed:
            self._closed_by_caller(flight, frame)
        elif swallowed:  # raised by C code (e.g. next() under map()) into a for loop that ends it
            self._swallowed_here(flight, code, offset)
        elif caught is not None:
            self._swallowed_here(flight, code, caught[0], by_handler=True)

    def _site(self, cls, ck, line):
        """The Site of (cls, ck, line), made when new; None when the table is full."""
        key = (identity(cls), ck, line)
        site = self.sites.get(key)
        if site is not None and site.type_ref() is cls:
            return site
        if site is None:
            if len(self.sites) >= MAX_SITES:
                return None
            return self.sites.setdefault(key, Site(cls, ck, line, self.new_counter))
        site = self.sites[key] = Site(cls, ck, line, self.new_counter)  # the class that id meant has died
        return site

    def _swallowed_here(self, flight, code, offset, by_handler=False):
        """A StopIteration that the loop instruction at `offset` ends in C, or an exception that the empty
        handler at `offset` ends (by_handler): handled there, at the loop's line or the `except` line."""
        if self.inflight.pop(flight.exc_id, None) is not flight:
            return
        now = perf_counter_ns()
        if flight.detailed:
            ck = self._code_key_of(code, None)
            if ck:
                lines = self._lines
                line = lines.handler_line(code, ck, offset) if by_handler else lines.line_at(code, ck, offset) or 0
                flight.handled_at = (ck, line)
        self.conclude(flight, at_end=False, fate=_wire.FATE_HANDLED, fate_ns=now)

    def _closed_by_caller(self, flight, frame):
        """A GeneratorExit that close() threw into the generator `frame`: handled by close(), at the line of
        the Python frame that closed it (the generator's caller: the line of the close(), of the any() that
        stopped early, of the loop that broke off)."""
        if self.inflight.pop(flight.exc_id, None) is not flight:
            return
        now = perf_counter_ns()
        if flight.detailed:
            caller = frame.f_back if frame is not None else None
            ck = self._code_key_of(caller.f_code, caller) if caller is not None else 0
            if ck:
                flight.handled_at = (ck, caller.f_lineno or 0)
        self.conclude(flight, at_end=False, fate=_wire.FATE_HANDLED, fate_ns=now)

    def _sample(self, site, now):
        if site.detailed >= FIRST_DETAILED_PER_SITE and now - site.last_detail_ns < SITE_DETAIL_INTERVAL_NS:
            return False
        # Racing threads may both take the last token: the bound is approximate by design.
        tokens = min(DETAILED_BURST, self._tokens + (now - self._tokens_at_ns) * (MAX_DETAILED_PER_SECOND / 1e9))
        self._tokens_at_ns = now
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        site.detailed += 1
        site.last_detail_ns = now
        return True

    def _stack(self, frame):
        """Code keys and lines from the raising frame outwards (innermost first), at most
        MAX_STACK_FRAMES; stops at the shim's own frames (the runner)."""
        code_keys = self._code_keys
        code_key_of = self._code_key_of
        entries = []
        truncated = False
        while frame is not None:
            if len(entries) >= 2 * MAX_STACK_FRAMES:
                truncated = True
                break
            code = frame.f_code
            ck = code_keys.get(identity(code))
            if ck is None:
                ck = code_key_of(code, frame)
            if not ck:
                break
            entries.append(ck)
            entries.append(frame.f_lineno or 0)
            frame = frame.f_back
        return entries, truncated

    def on_reraise(self, code, offset, exc):
        try:
            inflight = self.inflight
            flight = inflight.get(identity(exc))
            if flight is None and type(exc) is GeneratorExit:
                return None  # a closed generator's cleanup re-raising it: counted when close() threw it
            ident = get_ident()
            tb = get_traceback(exc)
            if flight is not None and not (flight.ident == ident and identity(type(exc)) == flight.site.type_id
                                           and (identity(tb) == flight.tb_id or being_handled(sys.exception(), exc))):
                # Another exception at a dead one's address, or the same one on another thread.
                if inflight.pop(identity(exc), None) is flight:
                    self.conclude(flight, at_end=False)
                flight = None
            if flight is None:
                # First seen here: e.g. the unmatched part of a group, split off by `except*`.
                if ident not in self._ignored_idents:
                    pending = self.pending_by_ident.get(ident)
                    if pending:
                        self._settle_handled(pending)
                    self._new_flight(code, offset, exc, ident, sys._getframe(1))
                return None
            ck = self._code_keys.get(identity(code))
            if ck == 0:
                return None  # the shim's own frame
            flight.state = PROPAGATING
            flight.last_ns = perf_counter_ns()
            if flight.detailed:
                if ck is None:
                    ck = self._code_key_of(code, None)
                # Compiler-made cleanups re-raise from instructions without a line: not the program's.
                if self._lines.line_at(code, ck, offset) is not None:
                    flight.reraises += 1
                if identity(tb) != flight.tb_id:  # the handler gave it another traceback
                    flight.traceback = self._reader.traceback_entries(exc)
                self._reader.refresh_notes(flight.detail, exc)  # a finally block or __exit__ ran
            flight.tb_id = identity(tb)
        except RecursionError:
            self._failures.dropped.increment()
        except BaseException as error:
            if self._failed(error):
                raise
        return None

    def on_handled(self, code, offset, exc):
        try:
            flight = self.inflight.get(identity(exc))
            if flight is None:
                return None
            ident = get_ident()
            if flight.ident != ident:
                return None
            if identity(type(exc)) != flight.site.type_id or identity(get_traceback(exc)) != flight.tb_id:
                # Not the flight's exception (never seen raised; the flight's has died).
                if self.inflight.pop(identity(exc), None) is flight:
                    self.conclude(flight, at_end=False)
                return None
            ck = self._code_keys.get(identity(code))
            if ck is None:
                frame = sys._getframe(1)
                ck = self._code_key_of(code, frame if frame.f_code is code else None)
            if not ck:
                return None  # the shim's runner passes the program's escaping exception on
            if not self.asyncio_hooked and "asyncio.base_events" in sys.modules:
                self.hook_asyncio()  # asyncio just imported: its loop may be about to report this
            flight.state = HANDLED
            flight.escaped_thread = code is _THREAD_BOOTSTRAP_INNER_CODE
            if flight.detailed:
                flight.last_ns = perf_counter_ns()  # its fate_ns
                flight.handler = (ck, self._lines.handler_line(code, ck, offset))
            if not flight.pending:
                flight.pending = True
                pending = self.pending_by_ident.get(ident)
                if pending is None:
                    pending = self.pending_by_ident.setdefault(ident, [])
                pending.append(flight)
        except RecursionError:
            self._failures.dropped.increment()
        except BaseException as error:
            if self._failed(error):
                raise
        return None

    def on_unwind(self, code, exc):
        """PY_UNWIND bookkeeping (also called by the call recorder's unwind callback)."""
        flight = self.inflight.get(identity(exc))
        if flight is None or flight.ident != get_ident():
            return
        code_keys = self._code_keys
        if not code_keys.get(identity(code), 1):
            return  # the shim's own frame
        if identity(type(exc)) != flight.site.type_id or identity(get_traceback(exc)) != flight.tb_id:
            if self.inflight.pop(identity(exc), None) is flight:  # not the flight's exception (see on_handled)
                self.conclude(flight, at_end=False)
            return
        frame = sys._getframe(2)
        flight.frames_unwound += 1
        flight.last_ns = perf_counter_ns()
        if code.co_flags & _CO_COROUTINE:
            flight.coroutine = True
            if not self.asyncio_hooked:
                self.hook_asyncio()  # its task may report it to the loop's handler
        elif flight.coroutine:
            flight.coroutine = False
        caller = frame.f_back if frame.f_code is code else None
        caller_key = 0
        if caller is not None:
            caller_code = caller.f_code
            caller_key = code_keys.get(identity(caller_code)) or self._code_key_of(caller_code, caller)
        if not caller_key:
            flight.outermost = True
            flight.caller_id = 0
        else:
            flight.outermost = False
            flight.caller_id = identity(caller)
            flight.caller_code_id = identity(caller_code)
            flight.caller_lasti = lasti = caller.f_lasti
            if flight.detailed:
                flight.caller_site = (caller_key, self._lines.line_at(caller_code, caller_key, lasti) or 0)

    def on_note_added(self, code, offset, callable, arg0):
        """C_RETURN: after `exc.add_note(...)` returns, a detailed flight takes the exception's notes
        as they are now (the watch keeps CALL, and so C_RETURN, only at such call sites). Never
        returns DISABLE (not allowed for C_RETURN)."""
        try:
            if callable is ADD_NOTE:
                exc = arg0
            elif type(callable) is BUILTIN_METHOD and callable.__name__ == ADD_NOTE_NAME:
                exc = callable.__self__
            else:
                return None
            flight = self.inflight.get(identity(exc))
            if (flight is not None and flight.detailed and issubclass(type(exc), BaseException)
                    and identity(type(exc)) == flight.site.type_id
                    and (identity(get_traceback(exc)) == flight.tb_id or being_handled(sys.exception(), exc))):
                self._reader.refresh_notes(flight.detail, exc)
        except RecursionError:
            self._failures.dropped.increment()
        except BaseException as error:
            if self._failed(error):
                raise
        return None

    def _settle_handled(self, pending):
        """On a thread's new exception: its handled flights that it no longer handles are final."""
        current = sys.exception()
        inflight = self.inflight
        if current is None:  # the common case: outside any handler, all of them are final
            for flight in pending:
                flight.pending = False
                if flight.state == HANDLED and flight.fate is None and inflight.pop(flight.exc_id, None) is flight:
                    self.conclude(flight, at_end=False)
            pending.clear()
            return
        handling = handled_ids(current)
        del current
        keep = []
        for flight in pending:
            if flight.state != HANDLED or flight.fate is not None:
                flight.pending = False
            elif flight.exc_id in handling:
                keep.append(flight)
            else:
                flight.pending = False
                if inflight.pop(flight.exc_id, None) is flight:
                    self.conclude(flight, at_end=False)
        pending[:] = keep

    # ---- conclusions ----------------------------------------------------------------------------

    def conclude(self, flight, at_end, fate=None, fate_ns=0):
        """Decides the fate from what was seen (unless given) and hands the flight on: detailed
        ones to the sender, the others to their site's tally. The caller has claimed the flight
        (popped it from inflight), so this runs once per flight."""
        if fate is None:
            if flight.state == HANDLED:
                fate = _wire.FATE_ESCAPED_THREAD if flight.escaped_thread else _wire.FATE_HANDLED
                fate_ns = flight.last_ns
                if fate == _wire.FATE_HANDLED:
                    flight.handled_at = flight.handler
            elif flight.outermost:
                main = threading.main_thread()
                is_main = main is not None and main.ident == flight.ident
                fate = _wire.FATE_ESCAPED_PROGRAM if is_main else _wire.FATE_ESCAPED_THREAD
                fate_ns = flight.last_ns
            elif at_end or not flight.caller_id:
                fate = _wire.FATE_IN_FLIGHT
                fate_ns = perf_counter_ns()
            else:
                # Swallowed by C code that the caller frame called (hasattr(), getattr(x, y, z)...).
                fate = _wire.FATE_HANDLED
                fate_ns = flight.last_ns
                flight.handled_at = flight.caller_site
        flight.fate = fate
        flight.fate_ns = fate_ns
        if flight.detailed:
            self.finished.append(flight)
        else:
            self._count(flight.site, fate)

    def _count(self, site, fate):
        counter = site.counters.get(fate)
        if counter is None:
            counter = site.counters.setdefault(fate, AtomicCounter())
        counter.increment()
        if not site.dirty:
            site.dirty = True
            self.dirty_sites.append(site)

    # ---- escape hooks (escape_hooks.py calls these on the thread of the escape) -------------------

    def escaped_program(self, exc):
        """sys.excepthook saw `exc`. The program may call the hook itself for an exception that is
        still in its frames: not an escape."""
        flight = self.inflight.get(identity(exc))
        if flight is None or not _same(flight, exc) or (flight.state == PROPAGATING and flight.outermost):
            self.escaped(exc, _wire.FATE_ESCAPED_PROGRAM)

    def escaped(self, exc, fate):
        """An escape hook saw `exc`: its fate is `fate`, now."""
        if exc is None or not issubclass(type(exc), BaseException):
            return
        ident = get_ident()
        if ident in self._ignored_idents:
            return
        now = perf_counter_ns()
        flight = self.inflight.pop(identity(exc), None)
        if flight is not None and not _same(flight, exc):
            self.conclude(flight, at_end=False)  # its exception died; this one took its address
            flight = None
        if flight is None:
            flight = self._flight_at_hook(exc, ident, now)
            if flight is None:
                return
        elif flight.detailed:
            self._reader.refresh_notes(flight.detail, exc)
        self.conclude(flight, at_end=False, fate=fate, fate_ns=now)

    def _flight_at_hook(self, exc, ident, now):
        """A flight for an exception first seen by a hook (raised before the shim started, or
        untracked): its site is the innermost traceback entry."""
        tb = innermost = get_traceback(exc)
        ck = line = 0
        if innermost is not None:
            while innermost.tb_next is not None:
                innermost = innermost.tb_next
            ck = self._code_key_of(innermost.tb_frame.f_code, innermost.tb_frame)
            line = innermost.tb_lineno or 0
        info = self._thread_infos.get(ident) or self._threads.info(ident)
        if info is None:
            return None
        cls = type(exc)
        site = self._site(cls, ck, line)
        flight = Flight(identity(exc), identity(tb), ident, site or self.overflow_site, now)
        if site is not None and self._sample(site, now):
            flight.detailed = True
            flight.info = info
            flight.raised_ns = now
            flight.detail = self._reader.detail(exc)
            flight.traceback = self._reader.traceback_entries(exc)
        return flight

    def reset_after_fork(self):
        """In a fork child: the parent's flights and counts are not this process's. The containers the C
        callbacks read (_native.ExceptionCallbacks) are cleared in place, never rebound."""
        for container in (self.inflight, self.pending_by_ident, self.raise_points, self.swallow_points,
                          self.closed_points, self.empty_handler_points, self.dirty_sites):
            container.clear()
        self.sites = {}
        self.overflow_site = Site(None, 0, 0)
        self.finished = []


def _same(flight, exc):
    """Is `exc`, given to an escape hook, the flight's exception: the same class, and the traceback
    of its last event or the flight having left the thread's outermost frame (the runner's
    sys.excepthook drops its own frames from the traceback before ours sees it)."""
    return identity(type(exc)) == flight.site.type_id and (
        identity(get_traceback(exc)) == flight.tb_id or (flight.state == PROPAGATING and flight.outermost))


def _no_type():
    return None


def _no_hook():
    return None

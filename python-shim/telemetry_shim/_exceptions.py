"""Exception capture: one record per exception object, sent once its fate is known.

What sys.monitoring tells us (measured on 3.12 and 3.13):
- RAISE fires in every frame an exception passes through: first where it is raised (its
  traceback has one entry then), then in each Python caller it reaches. PY_UNWIND fires in each
  frame it leaves. So an exception object is tracked from its first RAISE, keyed by id() while
  the shim holds a reference to it, and the later events update that one "flight".
- EXCEPTION_HANDLED also fires for compiler-made handlers (the cleanup of `except ... as e`, a
  with-block's exit, Thread._bootstrap_inner), which re-raise right away (RERAISE). So HANDLED
  only makes the flight "pending"; it is concluded lazily, once it can no longer be re-raised:
  on the thread's next new exception when it is no longer among the exceptions the thread is
  handling (sys.exception() and its __context__ chain), by the sender after a quiet period (with
  sys._current_exceptions()), or at the end. Its fate time is the HANDLED event's time.
- An exception that leaves a frame into C code which swallows it (hasattr(), getattr() with a
  default, ...) shows no further event: the sender concludes it once the thread has moved on
  (sys._current_frames()), as handled at the Python line that made the C call. One that ends a
  coroutine is stored in its task: it is held longer, so that `await task` continues its record.
- Returning DISABLE from these events raises inside the program: the callbacks never do.

Cost: the callbacks only touch dicts and small objects. Full detail (the stack at raise time,
then type, message, notes, chain, members, traceback, built by the sender) is kept for the first
FIRST_DETAILED_PER_SITE exceptions of each (type, raise code, raise line), then at most one per
second per site and MAX_DETAILED_PER_SECOND overall (after a burst of DETAILED_BURST); the others are counted in ExceptionTally.

Nothing here may run the program's code: attributes are read through BaseException's and
type's own descriptors, and str() is called only when it is a C slot over plain builtin values.
"""

import sys
import threading
from collections import deque
from opcode import opmap  # what dis.opmap is, without importing dis at every start-up
from _thread import get_ident
from time import perf_counter_ns

from . import _wire
from ._tables import AtomicCounter

_monitoring = sys.monitoring
_events = _monitoring.events

# Limits (README "Exceptions").
MAX_TEXT_BYTES = 1024            # message and each note, cut on a character boundary
MAX_NOTES = 16
MAX_NESTING_DEPTH = 8            # a record's detail is depth 1; cause/context/members below it
MAX_GROUP_MEMBERS = 16
MAX_DETAILS_PER_RECORD = 32      # ExceptionDetail nodes in one record (keeps a record far below 1 MiB)
MAX_TRACEBACK_ENTRIES = 128      # the innermost ones are kept
MAX_STACK_FRAMES = 128           # the innermost ones are kept (stack_truncated)
FIRST_DETAILED_PER_SITE = 5    # as many as the agent keeps sample messages per group
SITE_DETAIL_INTERVAL_NS = 1_000_000_000
MAX_DETAILED_PER_SECOND = 100   # sustained, over all sites (a token bucket) ...
DETAILED_BURST = 1000           # ... after a burst of this many (e.g. the imports at start-up)
MAX_SITES = 16384
MAX_IN_FLIGHT = 4096
QUIET_NS = 100_000_000           # the sender concludes a flight after this long without events
HANDLED_HOLD_MAX_NS = 30_000_000_000   # ... even if its handler is still running
COROUTINE_HOLD_NS = 10_000_000_000     # an exception that ended a coroutine waits for `await`
_NORMAL_TIMING = (SITE_DETAIL_INTERVAL_NS, MAX_DETAILED_PER_SECOND, QUIET_NS, HANDLED_HOLD_MAX_NS, COROUTINE_HOLD_NS)


def stretch_intervals(slowdown):
    """The intervals and the rate above, for a process `slowdown` times slower than a normal run
    (TELEMETRY_SHIM_SLOWDOWN). Module constants, so that the callbacks read them at no extra cost."""
    global SITE_DETAIL_INTERVAL_NS, MAX_DETAILED_PER_SECOND, QUIET_NS, HANDLED_HOLD_MAX_NS, COROUTINE_HOLD_NS
    site_interval, per_second, quiet, handled_hold, coroutine_hold = _NORMAL_TIMING
    SITE_DETAIL_INTERVAL_NS = int(site_interval * slowdown)
    MAX_DETAILED_PER_SECOND = per_second / slowdown
    QUIET_NS = int(quiet * slowdown)
    HANDLED_HOLD_MAX_NS = int(handled_hold * slowdown)
    COROUTINE_HOLD_NS = int(coroutine_hold * slowdown)

PROPAGATING = 0
HANDLED = 1

_CO_COROUTINE = 0x80
_LINE_CACHE_LIMIT = 1 << 16

# Descriptors that read an exception without its class's __getattribute__ or properties.
_exc_dict = BaseException.__dict__
_get_traceback = _exc_dict["__traceback__"].__get__
_get_cause = _exc_dict["__cause__"].__get__
_get_context = _exc_dict["__context__"].__get__
_get_suppress_context = _exc_dict["__suppress_context__"].__get__
_get_args = _exc_dict["args"].__get__
_get_instance_dict = _exc_dict["__dict__"].__get__
_get_members = BaseExceptionGroup.__dict__["exceptions"].__get__
_get_group_message = BaseExceptionGroup.__dict__["message"].__get__
_type_module = type.__dict__["__module__"].__get__
_type_qualname = type.__dict__["__qualname__"].__get__
_type_mro = type.__dict__["__mro__"].__get__
_type_vars = type.__dict__["__dict__"].__get__
_dict_get = dict.get
_SLOT_WRAPPER = type(BaseException.__dict__["__str__"])
_PLAIN_TYPES = frozenset((str, int, float, bool, type(None), bytes))
# Fields that the C __str__ of these types formats besides args (all writable by the program).
_STR_FIELDS = (
    (OSError, tuple(OSError.__dict__[name].__get__ for name in ("errno", "strerror", "filename", "filename2"))),
    (SyntaxError, (SyntaxError.__dict__["msg"].__get__,)),
    (UnicodeError, tuple(UnicodeError.__dict__[name].__get__ for name in ("encoding", "object", "reason")
                         if name in UnicodeError.__dict__)),
)

_THREAD_BOOTSTRAP_INNER_CODE = getattr(getattr(threading.Thread, "_bootstrap_inner", None), "__code__", None)


def _is_plain(value):
    kind = type(value)
    if kind in _PLAIN_TYPES:
        return True
    if kind is tuple:
        return all(type(item) in _PLAIN_TYPES for item in value)
    return False


def cut_text(text, limit=MAX_TEXT_BYTES):
    """(text cut to at most `limit` UTF-8 bytes on a character boundary, whether it was cut).
    Lone surrogates become backslash escapes, so the result always encodes."""
    head = text[:limit]
    data = head.encode("utf-8", "backslashreplace")
    if len(data) <= limit:
        return data.decode("utf-8"), len(head) < len(text)
    return data[:limit].decode("utf-8", "ignore"), True


def safe_message(exc):
    """(message, MessageStatus) of str(exc), computed only when that runs no Python code: the
    class's __str__ is a C slot and every value it formats is a plain builtin."""
    cls = type(exc)
    slot = None
    for klass in _type_mro(cls):
        namespace = _type_vars(klass)
        if "__str__" in namespace:
            slot = namespace["__str__"]
            break
    if type(slot) is not _SLOT_WRAPPER:
        return "", _wire.MESSAGE_UNAVAILABLE
    if issubclass(cls, BaseExceptionGroup):
        # Its __str__ formats only its message and how many members it has.
        if type(_get_group_message(exc)) is not str:
            return "", _wire.MESSAGE_UNAVAILABLE
    elif not all(_is_plain(arg) for arg in _get_args(exc)):
        return "", _wire.MESSAGE_UNAVAILABLE
    for base, getters in _STR_FIELDS:
        if issubclass(cls, base) and not all(_is_plain(get(exc)) for get in getters):
            return "", _wire.MESSAGE_UNAVAILABLE
    try:
        text = slot(exc)
    except Exception:  # C code over plain values; e.g. int too large to convert
        return "", _wire.MESSAGE_UNAVAILABLE
    if type(text) is not str:
        return "", _wire.MESSAGE_UNAVAILABLE
    text, cut = cut_text(text)
    return text, _wire.MESSAGE_TRUNCATED if cut else _wire.MESSAGE_OK


def safe_notes(exc):
    """(notes, omitted): __notes__ from the instance dict (never through attribute lookup);
    notes that are not str, and those beyond MAX_NOTES, are omitted."""
    try:
        namespace = _get_instance_dict(exc)
    except Exception:
        return [], 0
    if not isinstance(namespace, dict):
        return [], 0
    notes = _dict_get(namespace, "__notes__")
    if notes is None:
        return [], 0
    if type(notes) is not list and type(notes) is not tuple:
        return [], 1
    kept = []
    omitted = 0
    for note in tuple(notes):
        if len(kept) < MAX_NOTES and issubclass(type(note), str):
            kept.append(cut_text(str.__str__(note))[0])
        else:
            omitted += 1
    return kept, omitted


def type_name(cls):
    """module.QualName of an exception class, read through type's own descriptors."""
    try:
        module = _type_module(cls)
        qualname = _type_qualname(cls)
    except Exception:
        return "<unknown>"
    qualname = qualname if type(qualname) is str else "<unknown>"
    if type(module) is not str or not module:
        return qualname
    return module + "." + qualname


class Site:
    """One (exception type, raise code, raise line): sampling state and tally counters."""

    __slots__ = ("exc_type", "code_key", "line", "detailed", "last_detail_ns", "counters", "sent", "dirty",
                 "name", "stop_iteration", "count_handled")

    def __init__(self, exc_type, code_key, line):
        self.exc_type = exc_type  # kept alive: its id() is part of the key
        self.code_key = code_key
        self.line = line
        self.detailed = 0
        self.last_detail_ns = 0
        handled = AtomicCounter()
        self.counters = {_wire.FATE_HANDLED: handled}  # fate -> AtomicCounter (program threads bump, the sender reads)
        self.count_handled = handled.increment  # the common fate, one C call
        self.sent = {}  # fate -> total already tallied (sender only)
        self.dirty = False
        self.name = None
        # A for loop or `yield from` ends it silently (FOR_ITER/SEND swallow it in C).
        self.stop_iteration = exc_type is not None and issubclass(exc_type, StopIteration)


class Flight:
    """One exception object from its first RAISE until its fate is known. Fields that start at
    their class default are only written when they change (creating a flight is on the
    exception path); `info`, `raised_ns` and `stack` only matter for a detailed one."""

    detailed = False
    info = None
    raised_ns = 0
    stack = None
    stack_truncated = False
    state = PROPAGATING
    frames_unwound = 0
    reraises = 0
    handled_code = None
    handled_key = 0
    handled_offset = -1
    caller = None  # the Python frame it last unwound into, and that frame's instruction then
    caller_lasti = -1
    outermost = False  # it last left the thread's outermost program frame
    coroutine = False  # it last ended a coroutine (its task keeps it)
    pending = False  # in its thread's list of handled flights to conclude
    fate = None
    fate_ns = 0
    # Where it was handled, once concluded (detailed only): (code key, code, offset, how the
    # line is found); the sender turns it into a Location (_handled_location).
    handled_at = None

    def __init__(self, exc, ident, site, now):
        self.exc = exc
        self.ident = ident
        self.site = site
        self.last_ns = now


# How a handled_at offset becomes a line: the first line of the handler that starts there
# (EXCEPTION_HANDLED), or the line of the instruction itself (a call or loop that swallowed it).
_HANDLER_LINE = 0
_INSTRUCTION_LINE = 1
_new_object = object.__new__

# Instructions that end a StopIteration in C right after its RAISE event in their frame.
_SWALLOWS_STOP_ITERATION = frozenset(opmap[name] for name in ("FOR_ITER", "SEND"))


def _swallows_stop_iteration(code, offset):
    raw = code.co_code  # without specialisation or instrumentation
    return 0 <= offset < len(raw) and raw[offset] in _SWALLOWS_STOP_ITERATION


class ExceptionTracker:
    """Callbacks, escape hooks and the in-flight table; collect() is the sender's side.

    The common case, a new exception at a known raise point whose site has had its detail,
    takes one dict lookup to find its site and one small object to follow it; everything
    else (a new raise point, a detailed exception, the tables full) goes to _new_flight."""

    def __init__(self, codes, threads, failures):
        self.codes = codes
        self.threads = threads
        self.active = False
        self.inflight = {}  # id(exc) -> Flight (the Flight holds exc, so the id stays valid)
        self.pending_by_ident = {}  # ident -> [Flight] handled, to conclude lazily (owner thread only)
        self.sites = {}  # (id(type), code key, line) -> Site
        # (id(code), offset, type) -> Site: the raising instruction's site, without a frame or a
        # line lookup (a type hashes by identity; a code would hash its contents). Codes stay
        # alive in the code table.
        self.raise_points = {}
        # The same for a StopIteration that the raising instruction itself ends in C (SEND, FOR_ITER:
        # an `await` of a finished future): handled where it was raised, so it is counted at once.
        self.swallow_points = {}
        self.overflow_site = Site(None, 0, 0)  # counts exceptions not tracked (tables full)
        self.dirty_sites = []
        self.finished = []  # concluded detailed flights, drained by the sender
        self._tokens = float(DETAILED_BURST)
        self._tokens_at_ns = perf_counter_ns()
        self._line_cache = {}
        self._type_names = {}
        self._asyncio_loop_class = None
        self._asyncio_original = None
        self._previous = {}
        self._failed = failures.failed
        self._code_keys = codes.keys  # never replaced
        self._code_key_of = codes.key_of
        self._ignored_idents = threads.ignored_idents  # never replaced
        self._make_hooks()

    # ---- callbacks (program threads) ----------------------------------------------------------

    def callbacks(self, unwind):
        """(event, callback) pairs to register; PY_UNWIND only when the call callbacks do not
        already forward it (see Recorder._make_callback). The callbacks never return DISABLE
        (not allowed for these events) and hand internal errors to CallbackFailures."""
        failed = self._failed
        on_unwind = self.on_unwind

        def unwind_callback(code, offset, exc):
            try:
                on_unwind(code, exc)  # finds the frame two calls up, as under the call recorder
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
            flight = self.inflight.get(id(exc))
            ident = get_ident()
            if flight is not None:
                if flight.ident == ident:
                    if flight.state == PROPAGATING:
                        # It reached a Python caller: not swallowed by C on the way ...
                        flight.caller = None
                        if flight.site.stop_iteration and _swallows_stop_iteration(code, offset):
                            self._swallowed_here(flight, code, offset)  # ... unless by this loop
                        return None
                    if _being_handled(sys.exception(), exc):  # `raise err` inside its own handler
                        flight.state = PROPAGATING
                        flight.reraises += 1
                        flight.last_ns = perf_counter_ns()
                        return None
                # Raised again after its handler ended, or on another thread: that raise is over.
                if self.inflight.pop(id(exc), None) is flight:
                    self._conclude(flight, at_end=False)
            if ident in self._ignored_idents:
                return None
            pending = self.pending_by_ident.get(ident)
            if pending:
                if len(pending) == 1 and sys.exception() is None:
                    # The common case, inline: the thread's one handled exception is final.
                    handled = pending.pop()
                    handled.pending = False
                    if (handled.state == HANDLED and handled.fate is None
                            and self.inflight.pop(id(handled.exc), None) is handled):
                        if handled.detailed or handled.handled_code is _THREAD_BOOTSTRAP_INNER_CODE:
                            self._conclude(handled, at_end=False)
                        else:
                            handled.fate = _wire.FATE_HANDLED
                            handled.exc = None
                            site = handled.site
                            site.count_handled()
                            if not site.dirty:
                                site.dirty = True
                                self.dirty_sites.append(site)
                else:
                    self._settle_handled(pending)
            point = (id(code), offset, type(exc))
            site = self.raise_points.get(point)
            if site is not None and len(self.inflight) < MAX_IN_FLIGHT:
                now = perf_counter_ns()
                if ((site.detailed >= FIRST_DETAILED_PER_SITE and now - site.last_detail_ns < SITE_DETAIL_INTERVAL_NS)
                        or not self._sample(site, now)):
                    # Counted, not detailed: the fields the fate needs, nothing else.
                    flight = _new_object(Flight)
                    flight.exc = exc
                    flight.ident = ident
                    flight.site = site
                    flight.last_ns = now
                    self.inflight[id(exc)] = flight
                    return None
                self._new_flight(code, offset, exc, ident, sys._getframe(1), sampled=True)
                return None
            site = self.swallow_points.get(point)
            if site is not None:  # inline like the path above: asyncio takes it on every await of a done future
                now = perf_counter_ns()
                if ((site.detailed >= FIRST_DETAILED_PER_SITE and now - site.last_detail_ns < SITE_DETAIL_INTERVAL_NS)
                        or not self._sample(site, now)):
                    site.count_handled()
                    if not site.dirty:
                        site.dirty = True
                        self.dirty_sites.append(site)
                    return None
                self._new_flight(code, offset, exc, ident, sys._getframe(1), sampled=True)
                return None
            self._new_flight(code, offset, exc, ident, sys._getframe(1))
        except BaseException as error:
            if self._failed(error):
                raise
        return None

    def _new_flight(self, code, offset, exc, ident, frame, sampled=False):
        """The slow path of a new exception: defines its code and site, decides its detail
        (unless `sampled` already did: then it is detailed), records the stack."""
        if frame.f_code is not code:
            frame = None
        ck = self._code_key_of(code, frame)
        if not ck:
            return  # the shim's own code
        line = frame.f_lineno if frame is not None else None
        known_line = line is not None
        if line is None and frame is not None:
            # An instruction without a line (e.g. the re-raise of what except* left): the line
            # its traceback gives for this frame.
            tb = _get_traceback(exc)
            line = tb.tb_lineno if tb is not None and tb.tb_frame is frame else None
        line = line or 0
        cls = type(exc)
        key = (id(cls), ck, line)
        site = self.sites.get(key)
        if site is None:
            if len(self.sites) >= MAX_SITES:
                self._count(self.overflow_site, _wire.FATE_UNSPECIFIED)
                return
            site = self.sites.setdefault(key, Site(cls, ck, line))
        swallowed = site.stop_iteration and _swallows_stop_iteration(code, offset)
        if known_line:
            points = self.swallow_points if swallowed else self.raise_points
            if len(points) >= 4 * MAX_SITES:
                points.clear()
            points[(id(code), offset, cls)] = site
        if len(self.inflight) >= MAX_IN_FLIGHT:
            self._count(site, _wire.FATE_UNSPECIFIED)
            return
        now = perf_counter_ns()
        flight = Flight(exc, ident, site, now)
        if sampled or self._sample(site, now):
            info = self.threads.info(ident, code, frame)
            if info is not None:
                flight.detailed = True
                flight.info = info
                flight.raised_ns = now
                if frame is not None:
                    flight.stack, flight.stack_truncated = self._stack(frame)
                    if flight.stack:
                        flight.stack[1] = line  # the raising frame's line, as found above
        self.inflight[id(exc)] = flight
        if swallowed:  # raised by C code (e.g. next() under map()) into a for loop that ends it
            self._swallowed_here(flight, code, offset)

    def _swallowed_here(self, flight, code, offset):
        """A StopIteration that the loop instruction at `offset` ends in C: handled there."""
        if self.inflight.pop(id(flight.exc), None) is not flight:
            return
        now = perf_counter_ns()
        ck = self._code_key_of(code, None) if flight.detailed else 0
        if ck:
            flight.handled_at = (ck, code, offset, _INSTRUCTION_LINE)
        self._conclude(flight, at_end=False, fate=_wire.FATE_HANDLED, fate_ns=now)

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
            ck = code_keys.get(id(code))
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
            flight = self.inflight.get(id(exc))
            ident = get_ident()
            if flight is None:
                # First seen here: e.g. the unmatched part of a group, split off by `except*`.
                if ident not in self._ignored_idents:
                    pending = self.pending_by_ident.get(ident)
                    if pending:
                        self._settle_handled(pending)
                    self._new_flight(code, offset, exc, ident, sys._getframe(1))
                return None
            if flight.ident != ident or not self._code_keys.get(id(code), 1):
                return None
            flight.state = PROPAGATING
            flight.last_ns = perf_counter_ns()
            # Compiler-made cleanups re-raise from instructions without a line: not the program's.
            if flight.detailed and self._line_at(code, offset) is not None:
                flight.reraises += 1
        except BaseException as error:
            if self._failed(error):
                raise
        return None

    def on_handled(self, code, offset, exc):
        try:
            flight = self.inflight.get(id(exc))
            if flight is None:
                return None
            ident = get_ident()
            if flight.ident != ident:
                return None
            ck = self._code_keys.get(id(code))
            if ck is None:
                frame = sys._getframe(1)
                ck = self._code_key_of(code, frame if frame.f_code is code else None)
            if not ck:
                return None  # the shim's runner passes the program's escaping exception on
            if self._asyncio_loop_class is None and "asyncio.base_events" in sys.modules:
                self.hook_asyncio()  # asyncio just imported: its loop may be about to report this
            flight.state = HANDLED
            flight.handled_code = code  # Thread._bootstrap_inner's is an escape from its thread
            if flight.detailed:
                flight.last_ns = perf_counter_ns()  # its fate_ns
                flight.handled_key = ck
                flight.handled_offset = offset
            if not flight.pending:
                flight.pending = True
                pending = self.pending_by_ident.get(ident)
                if pending is None:
                    pending = self.pending_by_ident.setdefault(ident, [])
                pending.append(flight)
        except BaseException as error:
            if self._failed(error):
                raise
        return None

    def on_unwind(self, code, exc):
        """PY_UNWIND bookkeeping (also called by the call recorder's unwind callback)."""
        flight = self.inflight.get(id(exc))
        if flight is None or flight.ident != get_ident():
            return
        code_keys = self._code_keys
        if not code_keys.get(id(code), 1):
            return  # the shim's own frame
        frame = sys._getframe(2)
        flight.frames_unwound += 1
        flight.last_ns = perf_counter_ns()
        if code.co_flags & _CO_COROUTINE:
            flight.coroutine = True
            if self._asyncio_loop_class is None:
                self.hook_asyncio()  # its task may report it to the loop's handler
        elif flight.coroutine:
            flight.coroutine = False
        caller = frame.f_back if frame.f_code is code else None
        if caller is None or not (code_keys.get(id(caller.f_code)) or self._code_key_of(caller.f_code, caller)):
            flight.outermost = True
            flight.caller = None
        else:
            flight.outermost = False
            flight.caller = caller
            flight.caller_lasti = caller.f_lasti

    def _settle_handled(self, pending):
        """On a thread's new exception: its handled flights that it no longer handles are final."""
        current = sys.exception()
        inflight = self.inflight
        if current is None:  # the common case: outside any handler, all of them are final
            for flight in pending:
                flight.pending = False
                if flight.state == HANDLED and flight.fate is None and inflight.pop(id(flight.exc), None) is flight:
                    self._conclude(flight, at_end=False)
            pending.clear()
            return
        keep = []
        for flight in pending:
            if flight.state != HANDLED or flight.fate is not None:
                flight.pending = False
            elif _being_handled(current, flight.exc):
                keep.append(flight)
            else:
                flight.pending = False
                if inflight.pop(id(flight.exc), None) is flight:
                    self._conclude(flight, at_end=False)
        pending[:] = keep

    # ---- conclusions ----------------------------------------------------------------------------

    def _conclude(self, flight, at_end, fate=None, fate_ns=0):
        """Decides the fate from what was seen (unless given) and hands the flight on: detailed
        ones to the sender, the others to their site's tally. The caller has claimed the flight
        (popped it from inflight), so this runs once per flight."""
        if fate is None:
            if flight.state == HANDLED:
                fate = (_wire.FATE_ESCAPED_THREAD if flight.handled_code is _THREAD_BOOTSTRAP_INNER_CODE
                        and _THREAD_BOOTSTRAP_INNER_CODE is not None else _wire.FATE_HANDLED)
                fate_ns = flight.last_ns
                if fate == _wire.FATE_HANDLED and flight.detailed:
                    flight.handled_at = (flight.handled_key, flight.handled_code, flight.handled_offset,
                                         _HANDLER_LINE)
            elif flight.outermost:
                main = threading.main_thread()
                is_main = main is not None and main.ident == flight.ident
                fate = _wire.FATE_ESCAPED_PROGRAM if is_main else _wire.FATE_ESCAPED_THREAD
                fate_ns = flight.last_ns
            elif at_end or flight.caller is None:
                fate = _wire.FATE_IN_FLIGHT
                fate_ns = perf_counter_ns()
            else:
                # Swallowed by C code that the caller frame called (hasattr(), getattr(x, y, z)...).
                fate = _wire.FATE_HANDLED
                fate_ns = flight.last_ns
                if flight.detailed:
                    caller = flight.caller
                    flight.handled_at = (self._code_key_of(caller.f_code, caller), caller.f_code,
                                         flight.caller_lasti, _INSTRUCTION_LINE)
        flight.fate = fate
        flight.fate_ns = fate_ns
        flight.caller = None
        if flight.detailed:
            self.finished.append(flight)
        else:
            flight.exc = None
            self._count(flight.site, fate)

    def _count(self, site, fate):
        counter = site.counters.get(fate)
        if counter is None:
            counter = site.counters.setdefault(fate, AtomicCounter())
        counter.increment()
        if not site.dirty:
            site.dirty = True
            self.dirty_sites.append(site)

    def escaped(self, exc, fate):
        """An escape hook saw `exc`: its fate is `fate`, now."""
        if not self.active or exc is None or not issubclass(type(exc), BaseException):
            return
        ident = get_ident()
        if ident in self._ignored_idents:
            return
        now = perf_counter_ns()
        flight = self.inflight.pop(id(exc), None)
        if flight is None:
            flight = self._flight_at_hook(exc, ident, now)
            if flight is None:
                return
        self._conclude(flight, at_end=False, fate=fate, fate_ns=now)

    def _flight_at_hook(self, exc, ident, now):
        """A flight for an exception first seen by a hook (raised before the shim started, or
        untracked): its site is the innermost traceback entry."""
        tb = _get_traceback(exc)
        ck = line = 0
        if tb is not None:
            while tb.tb_next is not None:
                tb = tb.tb_next
            ck = self._code_key_of(tb.tb_frame.f_code, tb.tb_frame)
            line = tb.tb_lineno or 0
        info = self.threads.info(ident)
        if info is None:
            return None
        cls = type(exc)
        key = (id(cls), ck, line)
        site = self.sites.get(key)
        if site is None:
            site = self.overflow_site if len(self.sites) >= MAX_SITES else self.sites.setdefault(key, Site(cls, ck, line))
        flight = Flight(exc, ident, site, now)
        if site is not self.overflow_site and self._sample(site, now):
            flight.detailed = True
            flight.info = info
            flight.raised_ns = now
        return flight

    # ---- escape hooks ---------------------------------------------------------------------------

    def _make_hooks(self):
        tracker = self

        def excepthook(exc_type, exc_value, exc_traceback):
            try:
                flight = tracker.inflight.get(id(exc_value))
                # Called by the program itself for an exception still in its frames: not an escape.
                if flight is None or (flight.state == PROPAGATING and flight.outermost):
                    tracker.escaped(exc_value, _wire.FATE_ESCAPED_PROGRAM)
            except BaseException:
                pass
            return tracker._previous["sys.excepthook"](exc_type, exc_value, exc_traceback)

        def threading_excepthook(args):
            try:
                tracker.escaped(args.exc_value, _wire.FATE_ESCAPED_THREAD)
            except BaseException:
                pass
            return tracker._previous["threading.excepthook"](args)

        def unraisablehook(unraisable):
            try:
                tracker.escaped(unraisable.exc_value, _wire.FATE_UNRAISABLE)
            except BaseException:
                pass
            return tracker._previous["sys.unraisablehook"](unraisable)

        self._hooks = {"sys.excepthook": excepthook, "threading.excepthook": threading_excepthook,
                       "sys.unraisablehook": unraisablehook}

    def install_hooks(self):
        """Chains our hooks in front of those installed now; each calls the previous one with
        the same arguments, so the program sees and prints exactly what it would without us."""
        self.active = True
        for name, hook in self._hooks.items():
            owner, attribute = (sys, name[4:]) if name.startswith("sys.") else (threading, name[10:])
            current = getattr(owner, attribute)
            if current is hook:
                continue
            self._previous[name] = current
            setattr(owner, attribute, hook)
        self.hook_asyncio()

    def uninstall_hooks(self):
        """Restores each hook that is still ours; one the program replaced since stays as it is
        (ours, left in its chain, then only passes through)."""
        self.active = False
        for name, hook in self._hooks.items():
            owner, attribute = (sys, name[4:]) if name.startswith("sys.") else (threading, name[10:])
            if getattr(owner, attribute, None) is hook and name in self._previous:
                setattr(owner, attribute, self._previous[name])
        loop_class = self._asyncio_loop_class
        if loop_class is not None:
            if loop_class.__dict__.get("call_exception_handler") is self._asyncio_wrapper:
                loop_class.call_exception_handler = self._asyncio_original
            self._asyncio_loop_class = None

    def hook_asyncio(self):
        """Wraps asyncio.BaseEventLoop.call_exception_handler once asyncio is imported (the shim
        never imports it itself; the sender checks every tick)."""
        if self._asyncio_loop_class is not None or not self.active:
            return
        base_events = sys.modules.get("asyncio.base_events")
        loop_class = getattr(base_events, "BaseEventLoop", None) if base_events is not None else None
        if loop_class is None:
            return
        original = loop_class.__dict__.get("call_exception_handler")
        if original is None:
            return
        tracker = self

        def call_exception_handler(loop, context):
            try:
                if type(context) is dict:
                    tracker.escaped(_dict_get(context, "exception"), _wire.FATE_ASYNCIO_UNHANDLED)
            except BaseException:
                pass
            return original(loop, context)

        for attribute in ("__name__", "__qualname__", "__doc__", "__module__"):
            setattr(call_exception_handler, attribute, getattr(original, attribute, None))
        call_exception_handler.__wrapped__ = original
        self._asyncio_original = original
        self._asyncio_wrapper = call_exception_handler
        self._asyncio_loop_class = loop_class
        loop_class.call_exception_handler = call_exception_handler

    # ---- the sender's side ----------------------------------------------------------------------

    def collect(self, final=False):
        """Concludes what is due (everything when `final`) and returns (ExceptionRecord dicts,
        ExceptionTally dicts, ThreadInfos the records use). Defines the codes they use, so the
        sender must take the code definitions after calling this."""
        self.hook_asyncio()
        if self.inflight:
            self._settle(perf_counter_ns(), final)
        finished = self.finished
        count = len(finished)
        flights = finished[:count]
        del finished[:count]
        records = []
        threads = {}
        for flight in flights:
            records.append(self._record(flight))
            threads[flight.info.thread_id] = flight.info
            flight.exc = None
        return records, self._tallies(), list(threads.values())

    def _settle(self, now, final):
        """Concludes the flights that went quiet (all of them when `final`) and can no longer
        continue: handled ones their thread no longer handles, propagating ones whose thread has
        moved on from the call they left (swallowed by C code there)."""
        flights = list(self.inflight.values())
        if not final:
            flights = [flight for flight in flights if now - flight.last_ns >= QUIET_NS]
            if not flights:
                return
        frames = sys._current_frames()
        handling = sys._current_exceptions()
        for flight in flights:
            alive = flight.ident in frames
            at_end = False
            if flight.state == HANDLED:
                if (not final and alive and now - flight.last_ns < HANDLED_HOLD_MAX_NS
                        and _being_handled(handling.get(flight.ident), flight.exc)):
                    continue
            elif flight.outermost:
                if not final and alive:
                    continue  # an escape: the hooks or the end decide
            elif flight.caller is None and alive and not final:
                continue  # in a Python frame right now: HANDLED or PY_UNWIND follows
            elif alive and frames[flight.ident] is flight.caller and flight.caller.f_lasti == flight.caller_lasti:
                if not final:
                    continue  # still inside the call it left (e.g. waiting for the GIL)
                at_end = True
            elif flight.coroutine:
                if not final and now - flight.last_ns < COROUTINE_HOLD_NS:
                    continue  # its task holds it: `await` may raise it again
                at_end = final
            if self.inflight.pop(id(flight.exc), None) is flight:
                self._conclude(flight, at_end=at_end)
        del frames, handling

    def _record(self, flight):
        location = self._location
        stack = flight.stack or ()
        record = {
            "thread_id": flight.info.thread_id,
            "raised_ns": flight.raised_ns,
            "fate_ns": flight.fate_ns,
            "fate": flight.fate,
            "handled_at": self._handled_location(flight.handled_at),
            "stack": [location(stack[i], stack[i + 1]) for i in range(len(stack) - 2, -1, -2)],
            "stack_truncated": flight.stack_truncated,
            "frames_unwound": flight.frames_unwound,
            "reraises": flight.reraises,
            "detail": self.detail(flight.exc),
        }
        return record

    def _handled_location(self, handled_at):
        if handled_at is None:
            return None
        code_key, code, offset, how = handled_at
        if how == _HANDLER_LINE:
            line = self._handler_line(code, offset)
        else:
            line = self._line_at(code, offset) or 0
        return self._location(code_key, line)

    @staticmethod
    def _location(code_key, line):
        return {"code_id": code_key >> _wire.CODE_ID_SHIFT, "line": max(int(line or 0), 0)}

    def detail(self, exc):
        """The ExceptionDetail dict of `exc` with its cause, context and group members, built
        breadth first so that the MAX_DETAILS_PER_RECORD nodes go to the levels nearest the top
        (and never deeper than MAX_NESTING_DEPTH)."""
        budget = MAX_DETAILS_PER_RECORD - 1
        top = self._detail_node(exc)
        queue = deque(self._nested(exc, top, 1))
        while queue:
            inner, parent, field, depth = queue.popleft()
            if depth > MAX_NESTING_DEPTH or budget <= 0:
                if field == "members":
                    parent["members_omitted"] += 1  # a member left out for the budget is only counted
                if field != "members" or depth > MAX_NESTING_DEPTH:
                    parent["nesting_truncated"] = True
                continue
            budget -= 1
            node = self._detail_node(inner)
            if field == "members":
                parent["members"].append(node)
            else:
                parent[field] = node
            queue.extend(self._nested(inner, node, depth))
        return top

    def _detail_node(self, exc):
        message, status = safe_message(exc)
        notes, notes_omitted = safe_notes(exc)
        return {"type_name": self._type_name(type(exc)), "message": message, "message_status": status,
                "notes": notes, "notes_omitted": notes_omitted, "traceback": self._traceback(exc),
                "cause": None, "context": None, "suppress_context": bool(_get_suppress_context(exc)),
                "members": [], "members_omitted": 0, "nesting_truncated": False}

    @staticmethod
    def _nested(exc, node, depth):
        """(inner exception, parent node, field, depth) for what `exc` carries: its cause, its
        context when not suppressed and not the cause, its first MAX_GROUP_MEMBERS members."""
        cause = _get_cause(exc)
        context = _get_context(exc)
        if node["suppress_context"] or context is cause:
            context = None
        nested = [(inner, node, field, depth + 1) for field, inner in (("cause", cause), ("context", context))
                  if inner is not None]
        if issubclass(type(exc), BaseExceptionGroup):
            members = _get_members(exc)
            if type(members) is tuple:
                nested.extend((member, node, "members", depth + 1) for member in members[:MAX_GROUP_MEMBERS])
                node["members_omitted"] = max(len(members) - MAX_GROUP_MEMBERS, 0)
        return nested

    def _traceback(self, exc):
        entries = deque(maxlen=MAX_TRACEBACK_ENTRIES)
        tb = _get_traceback(exc)
        while tb is not None:
            entries.append(tb)
            tb = tb.tb_next
        code_key_of = self._code_key_of
        out = []
        for tb in entries:
            frame = tb.tb_frame
            ck = code_key_of(frame.f_code, frame)
            if ck:  # the shim's own frames (the runner) are not the program's
                out.append(self._location(ck, tb.tb_lineno))
        return out

    def _type_name(self, cls):
        entry = self._type_names.get(id(cls))
        if entry is None or entry[0] is not cls:
            entry = self._type_names[id(cls)] = (cls, type_name(cls))
        return entry[1]

    def _tallies(self):
        dirty = self.dirty_sites
        count = len(dirty)
        sites = dirty[:count]
        del dirty[:count]
        tallies = []
        for site in sites:
            site.dirty = False  # before reading: a later bump marks it again
            for fate, counter in list(site.counters.items()):
                total = counter.value()
                delta = total - site.sent.get(fate, 0)
                if delta <= 0:
                    continue
                site.sent[fate] = total
                if site.name is None:
                    site.name = self._type_name(site.exc_type) if site.exc_type is not None else ""
                tallies.append({"type_name": site.name,
                                "raised_at": self._location(site.code_key, site.line) if site.code_key else None,
                                "fate": fate, "count": delta})
        return tallies

    # ---- lines ------------------------------------------------------------------------------------

    def _line_at(self, code, offset):
        """The source line of the instruction at `offset`, None when it has none."""
        return self._lines(code, offset)[0]

    def _handler_line(self, code, offset):
        """The line of a handler: its first instruction with a line (PUSH_EXC_INFO has none;
        the `except` test or the with statement's exit follows)."""
        return self._lines(code, offset)[1] or 0

    def _lines(self, code, offset):
        key = (id(code), offset)
        cached = self._line_cache.get(key)
        if cached is not None and cached[0] is code:
            return cached[1]
        at = following = None
        for start, end, line in code.co_lines():
            if start <= offset < end:
                at = line
                if line is not None:
                    following = line
                    break
            elif start > offset and line is not None:
                following = line
                break
        if len(self._line_cache) >= _LINE_CACHE_LIMIT:
            self._line_cache.clear()
        self._line_cache[key] = (code, (at, following))
        return at, following

    def reset_after_fork(self):
        """In a fork child: the parent's flights and counts are not this process's."""
        self.inflight = {}
        self.pending_by_ident = {}
        self.sites = {}
        self.raise_points = {}
        self.swallow_points = {}
        self.overflow_site = Site(None, 0, 0)
        self.dirty_sites = []
        self.finished = []


def _being_handled(current, exc):
    """Is `exc` among the exceptions a thread is handling: `current` (sys.exception() of that
    thread) or its __context__ chain (handlers nested inside handlers)."""
    depth = 0
    while current is not None and depth < 32:
        if current is exc:
            return True
        current = _get_context(current)
        depth += 1
    return False

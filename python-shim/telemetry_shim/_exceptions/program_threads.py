"""The exception callbacks, run on the program's threads: RAISE, RERAISE, EXCEPTION_HANDLED and
the PY_UNWIND bookkeeping, and the state they keep. Every exception is followed as a Flight from
its first RAISE until its fate is known; concluded flights go to the sender (detailed ones, in
`finished`) or to their site's counters (the others, listed in `dirty_sites`). The sender's side
(sender_thread.py) reads those two lists and concludes, from a tick, flights that went quiet.

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
second per site and MAX_DETAILED_PER_SECOND overall (after a burst of DETAILED_BURST); the others
are counted in ExceptionTally. The common case, a new exception at a known raise point whose site
has had its detail, takes one dict lookup to find its site and one small object to follow it;
everything else (a new raise point, a detailed exception, the tables full) goes to _new_flight.
"""

import sys
import threading
from opcode import opmap  # what dis.opmap is, without importing dis at every start-up
from _thread import get_ident
from time import perf_counter_ns

from .. import _wire
from .._tables import AtomicCounter
from .safe_reads import being_handled, get_traceback

_events = sys.monitoring.events

# Limits (README "Exceptions").
MAX_STACK_FRAMES = 128           # the innermost ones are kept (stack_truncated)
FIRST_DETAILED_PER_SITE = 5    # as many as the agent keeps sample messages per group
SITE_DETAIL_INTERVAL_NS = 1_000_000_000
MAX_DETAILED_PER_SECOND = 100   # sustained, over all sites (a token bucket) ...
DETAILED_BURST = 1000           # ... after a burst of this many (e.g. the imports at start-up)
MAX_SITES = 16384
MAX_IN_FLIGHT = 4096
_NORMAL_TIMING = (SITE_DETAIL_INTERVAL_NS, MAX_DETAILED_PER_SECOND)


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
    # line is found); the sender turns it into a Location.
    handled_at = None

    def __init__(self, exc, ident, site, now):
        self.exc = exc
        self.ident = ident
        self.site = site
        self.last_ns = now


# How a handled_at offset becomes a line: the first line of the handler that starts there
# (EXCEPTION_HANDLED), or the line of the instruction itself (a call or loop that swallowed it).
HANDLER_LINE = 0
INSTRUCTION_LINE = 1
_new_object = object.__new__

# Instructions that end a StopIteration in C right after its RAISE event in their frame.
_SWALLOWS_STOP_ITERATION = frozenset(opmap[name] for name in ("FOR_ITER", "SEND"))


def _swallows_stop_iteration(code, offset):
    raw = code.co_code  # without specialisation or instrumentation
    return 0 <= offset < len(raw) and raw[offset] in _SWALLOWS_STOP_ITERATION


class FlightTable:
    """The exceptions followed on the program's threads (in flight, by id), their sites and
    counters, and the callbacks that keep them. The sender reads `inflight`, `finished` and
    `dirty_sites`, and concludes quiet flights through conclude()."""

    def __init__(self, codes, threads, failures, lines):
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
        # asyncio's loop handler: wrapped by the escape hooks once asyncio is imported. The
        # tracker sets hook_asyncio, which keeps asyncio_hooked up to date.
        self.asyncio_hooked = False
        self.hook_asyncio = _no_hook
        self._threads = threads
        self._thread_infos = threads.by_ident  # never replaced
        self._failed = failures.failed
        self._code_keys = codes.keys  # never replaced
        self._code_key_of = codes.key_of
        self._ignored_idents = threads.ignored_idents  # never replaced
        self._line_at = lines.line_at

    def callbacks(self, unwind):
        """(event, callback) pairs to register; PY_UNWIND only when the call callbacks do not
        already forward it (see _monitor.Recorder._make_callback). The callbacks never return DISABLE
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
                    if being_handled(sys.exception(), exc):  # `raise err` inside its own handler
                        flight.state = PROPAGATING
                        flight.reraises += 1
                        flight.last_ns = perf_counter_ns()
                        return None
                # Raised again after its handler ended, or on another thread: that raise is over.
                if self.inflight.pop(id(exc), None) is flight:
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
                            and self.inflight.pop(id(handled.exc), None) is handled):
                        if handled.detailed or handled.handled_code is _THREAD_BOOTSTRAP_INNER_CODE:
                            self.conclude(handled, at_end=False)
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
            tb = get_traceback(exc)
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
            info = self._thread_infos.get(ident) or self._threads.info(ident, code, frame)
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
            flight.handled_at = (ck, code, offset, INSTRUCTION_LINE)
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
            if not self.asyncio_hooked and "asyncio.base_events" in sys.modules:
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
            if not self.asyncio_hooked:
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
                    self.conclude(flight, at_end=False)
            pending.clear()
            return
        keep = []
        for flight in pending:
            if flight.state != HANDLED or flight.fate is not None:
                flight.pending = False
            elif being_handled(current, flight.exc):
                keep.append(flight)
            else:
                flight.pending = False
                if inflight.pop(id(flight.exc), None) is flight:
                    self.conclude(flight, at_end=False)
        pending[:] = keep

    # ---- conclusions ----------------------------------------------------------------------------

    def conclude(self, flight, at_end, fate=None, fate_ns=0):
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
                                         HANDLER_LINE)
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
                                         flight.caller_lasti, INSTRUCTION_LINE)
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

    def escaped_program(self, exc):
        """sys.excepthook saw `exc`. The program may call the hook itself for an exception that is
        still in its frames: not an escape."""
        flight = self.inflight.get(id(exc))
        if flight is None or (flight.state == PROPAGATING and flight.outermost):
            self.escaped(exc, _wire.FATE_ESCAPED_PROGRAM)

    def escaped(self, exc, fate):
        """An escape hook saw `exc`: its fate is `fate`, now."""
        if exc is None or not issubclass(type(exc), BaseException):
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
        self.conclude(flight, at_end=False, fate=fate, fate_ns=now)

    def _flight_at_hook(self, exc, ident, now):
        """A flight for an exception first seen by a hook (raised before the shim started, or
        untracked): its site is the innermost traceback entry."""
        tb = get_traceback(exc)
        ck = line = 0
        if tb is not None:
            while tb.tb_next is not None:
                tb = tb.tb_next
            ck = self._code_key_of(tb.tb_frame.f_code, tb.tb_frame)
            line = tb.tb_lineno or 0
        info = self._thread_infos.get(ident) or self._threads.info(ident)
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


def _no_hook():
    return None

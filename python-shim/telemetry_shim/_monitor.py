"""The recording side: sys.monitoring tool id, callbacks, and the in-memory tables the sender reads.

Hot path (every call/return of the program): one callback per event, whose body is two dict
lookups, a length check and one list.extend of (timestamp, word). A flat list beat array('Q')
by about 20% in timeit even counting the sender's later array('Q', chunk) conversion
(array.extend converts through the iterator protocol); see tests/bench_hot_path.py.
Everything else (a code or thread seen for the first time, seeding, a full buffer, the shim's
own code and thread) goes to the slow path.

Concurrency model (GIL builds only; free-threaded builds are out of scope): program threads only
*append* (records to the buffer, definitions to lists, keys to dicts: each a single C call);
the sender thread only takes from the front (`chunk = buf[:n]; del buf[:n]`) or swaps in a new
generation. No callback ever takes a lock or blocks.
"""

import os
import sys
# functools.partial and operator.call themselves, from their C modules: functools.py and operator.py (with
# collections) cost about 3 ms of the start on 3.13, whose threading no longer imports them.
from _functools import partial
from itertools import compress, repeat
from _operator import call, is_
from time import perf_counter_ns
from _thread import get_ident

from . import _wire
from ._settings import DEFAULT_BUFFER_EVENTS, DEFAULT_BUFFER_EVENTS_NATIVE
from ._tables import (THREAD_BOOTSTRAP_CODE, CallbackFailures, CodeTable, ThreadTable,
                      current_frames_reader, identity, native_id_of)

_monitoring = sys.monitoring
_events = _monitoring.events
DISABLE = _monitoring.DISABLE

# (sys.monitoring event, record kind, may the callback return DISABLE for the shim's own code).
# DISABLE is not allowed for PY_THROW and PY_UNWIND (not local events).
_EVENT_KINDS = (
    (_events.PY_START, _wire.KIND_START, True),
    (_events.PY_RESUME, _wire.KIND_RESUME, True),
    (_events.PY_THROW, _wire.KIND_THROW, False),
    (_events.PY_RETURN, _wire.KIND_RETURN, True),
    (_events.PY_YIELD, _wire.KIND_YIELD, True),
    (_events.PY_UNWIND, _wire.KIND_UNWIND, False),
)
EVENT_MASK = 0
for _event, _kind, _ in _EVENT_KINDS:
    EVENT_MASK |= _event
# Exception events (the exception tracker's own callbacks; PY_UNWIND is shared with the calls).
# C_RAISE is left out: it needs CALL events on (a callback per call of anything), and the
# exception it reports reaches the calling Python frame as a RAISE anyway.
EXCEPTION_EVENT_MASK = _events.RAISE | _events.RERAISE | _events.EXCEPTION_HANDLED | _events.PY_UNWIND
_PUSH_KINDS = frozenset((_wire.KIND_START, _wire.KIND_RESUME, _wire.KIND_THROW))
_DISABLE_OK_KINDS = frozenset(kind for _, kind, ok in _EVENT_KINDS if ok)
# The events of the codes the start-up phase watches that it is handed (watch_for_startup).
_STARTUP_KINDS = frozenset((_wire.KIND_START, _wire.KIND_RETURN, _wire.KIND_UNWIND))


def _end_marker(start_marker):
    return _wire.KIND_INVOCATION_WINDOW_END if start_marker == _wire.KIND_INVOCATION_WINDOW_START else _wire.KIND_WINDOW_END

TOOL_NAME = "telemetry_shim"

_SEED_DEPTH_LIMIT = 10000


def claim_tool_id(candidates):
    """The first free sys.monitoring tool id of `candidates` (Settings.tool_ids; checked with
    get_tool first, never stolen), or None."""
    for tool_id in candidates:
        if _monitoring.get_tool(tool_id) is not None:
            continue
        try:
            _monitoring.use_tool_id(tool_id, TOOL_NAME)
        except ValueError:  # taken between the check and the claim
            continue
        return tool_id
    return None


class Recorder:
    """Owns the tool id, the callbacks and what they produce: the record buffer of each generation
    and the tables it shares with the exception tracker (codes, threads, callback failures)."""

    def __init__(self, capacity_events, shim_dir, on_internal_error, calls=True, exceptions=True,
                 burst=False, code_filter=None, native=False, note_watch=True, invocations_only=False):
        # Exceptions mode following the ready-on function's first invocations: the call callbacks are there, their
        # events on only inside those invocations' windows (open_invocation_window), as in burst mode without a
        # schedule. The buffer stays at the size of a mode that records no calls.
        self.invocations_only = bool(invocations_only)
        if capacity_events is None:  # TELEMETRY_SHIM_BUFFER_EVENTS unset: the recording callbacks' default
            full_rate = native and calls and not self.invocations_only
            capacity_events = DEFAULT_BUFFER_EVENTS_NATIVE if full_rate else DEFAULT_BUFFER_EVENTS
        if self.invocations_only:
            calls = burst = True
        self.capacity_words = 2 * max(int(capacity_events), 1024)
        self.shim_prefix = os.path.join(os.path.abspath(shim_dir), "")
        self._on_internal_error = on_internal_error
        self.tool_id = None
        self.calls = bool(calls)
        # Burst mode: the call events are on only inside windows (open_window/close_window).
        self.burst = bool(burst) and self.calls
        self.window_open = False
        self.window_start_ns = 0
        self.windows_failed = False  # set_events was refused: no window opens again
        # One window at a time, burst's or an invocation's: who takes the slot (one C-level pop, whichever thread)
        # opens the window; closing it gives the slot back.
        self._window_slot = [True]
        # While an invocation's window is open: [ident of the thread that opened it]; whoever pops it closes it (the
        # invocation's thread at its end, the sender when it runs too long, the stop).
        self._invocation_window = []
        # While a burst window is open: [True]; whoever pops it closes that window (the sender when it is due, or
        # the thread of a first invocation that starts inside it and takes the slot over).
        self._burst_window = []
        # Burst and exceptions mode during the start-up phase (_startup): nothing recorded, no window
        # opened, until resume_after_startup().
        self.held_for_startup = False
        # Are call events recorded now: in full mode always, in burst mode inside windows (set in the same
        # C-level step as the events). Read by the slow path for the codes the start-up phase watches,
        # whose local events also come outside windows.
        self.calls_on = self.calls and not self.burst
        # The start-up phase's entry for the events of the codes it watches (watch_for_startup): (code, is a
        # return, frame), called from the slow path before the event is recorded as any other.
        self._startup_event = None
        # Invocations only: the phase's own {event: callback} for PY_START and PY_RETURN, registered outside the
        # windows in place of the recorder's (give_call_events_outside_windows).
        self._callbacks_outside_windows = {}
        self._set_events = _monitoring.set_events  # replaced by tests to simulate a refusal
        self._registered_events = ()
        self._installed_mask = 0

        self.codes = CodeTable(self.shim_prefix, code_filter)
        self.threads = ThreadTable()
        self.failures = CallbackFailures(self.shim_prefix, self._turn_off)

        self.buffer = None
        self.thread_keys = None
        self.exceptions = None
        if exceptions:
            from ._exceptions import ExceptionTracker

            self.exceptions = ExceptionTracker(self.codes, self.threads, self.failures)
        # The notes watch (exceptions only): CALL on for good, kept at the call sites of add_note.
        self.note_watch = bool(note_watch) and self.exceptions is not None
        self._past_call = None  # (ident, frame id, code id, call offset, action) while armed
        self._call_callback = self._make_call_callback()
        # The one dispatch point between the C callbacks and their Python twin (_native_path).
        self.native = None
        if native:
            from ._native_path import NativeCallbacks, new_code_keys

            codes = self.codes
            code_keys = new_code_keys(codes)  # copies codes.keys: the exception callbacks' table
            if self.exceptions is not None:
                self.exceptions.use_native(codes, code_keys, self.failures.failed)
        if native and self.calls:
            # The call callbacks' table copies call_keys: the same one unless a filter sets them apart.
            call_code_keys = code_keys if codes.call_keys is codes.keys else new_code_keys(codes)
            unwind_hook = self.exceptions.unwind_callback if self.exceptions is not None else None
            self.native = NativeCallbacks(self, unwind_hook, call_code_keys)
            self._callbacks = self.native.event_callbacks
        else:
            unwind_hook = self.exceptions.on_unwind if self.exceptions is not None else None
            self._callbacks = [self._make_callback(kind, unwind_hook if kind == _wire.KIND_UNWIND else None)
                               for _, kind, _ in _EVENT_KINDS]
        # With the C callbacks, the notes watch's CALL and C_RETURN callbacks are in C too: the first execution
        # of every call site comes there.
        self._native_note_watch = None
        if native and self.note_watch:
            from ._native_path import note_watch

            self._native_note_watch = note_watch(self._call_callback, self.exceptions.on_note_added)
        self.new_generation()

    # ---- callbacks --------------------------------------------------------------------------

    def _make_callback(self, kind, exception_hook=None):
        slow_path = self._slow_path
        failures = self.failures
        failed = failures.failed

        # All state comes in as default arguments (the fastest loads); new_generation() swaps
        # them. `_value` takes the third argument of the events that have one.
        def callback(code, offset, _value=None, thread_key=None, code_key=None, ident=get_ident,
                     now=perf_counter_ns, buf=None, extend=None, limit=0, kind=kind):
            try:
                tk = thread_key(ident())
                ck = code_key(identity(code))
                if tk and ck and len(buf) < limit:
                    extend((now(), tk | ck | kind))
                    return None
                return slow_path(code, kind, buf, thread_key)
            except RecursionError:
                failures.dropped.increment()  # at the limit: no Python call here (CallbackFailures)
                return None
            except BaseException as exc:
                if failed(exc):
                    raise
                return None

        if exception_hook is not None:
            # PY_UNWIND with exceptions on: the same record, then the exception's bookkeeping
            # (which finds the unwinding frame two levels up: hook <- callback <- frame).
            # In burst mode `recording` is False between windows: only the exception's bookkeeping.
            def callback(code, offset, _value=None, thread_key=None, code_key=None, ident=get_ident,  # noqa: F811
                         now=perf_counter_ns, buf=None, extend=None, limit=0, kind=kind, hook=exception_hook,
                         recording=True):
                try:
                    hook(code, _value)
                    if not recording:
                        return None
                    tk = thread_key(ident())
                    ck = code_key(identity(code))
                    if tk and ck and len(buf) < limit:
                        extend((now(), tk | ck | kind))
                        return None
                    return slow_path(code, kind, buf, thread_key)
                except RecursionError:
                    failures.dropped.increment()
                    return None
                except BaseException as exc:
                    if failed(exc):
                        raise
                    return None

        callback.__qualname__ = "telemetry_shim.callback[%s]" % _wire.KIND_NAMES[kind]
        return callback

    def new_generation(self):
        """Gives the callbacks a fresh, empty buffer and thread table (a new connection needs
        every thread re-seeded). Returns the previous buffer.

        A callback reads its defaults once when it is called, so one that is running keeps
        using the old generation to its end: its record lands in the old buffer and can never
        precede its thread's new seeds. All six callbacks switch inside one C-level loop
        (map/setattr run no bytecode, so no other thread runs in between).
        """
        previous = self.buffer
        buf = self.native.new_buffer() if self.native is not None else []
        keys = {}
        # Every thread is to be announced again before the callbacks switch: a thread whose first event of
        # the new generation ran in between (the GIL passes at any bytecode) would be left unannounced,
        # its records sent on the new connection without its definition. One announced in the old
        # generation meanwhile is only announced twice.
        self.threads.new_generation()
        self._switch_defaults(buf, keys, recording=not self.burst or self.window_open)()
        self.buffer = buf
        self.thread_keys = keys
        return previous

    @property
    def start_callback(self):
        """The PY_START callback (for calibrating what one event costs)."""
        return self._callbacks[0]

    @property
    def callbacks_name(self):
        """Which callbacks record (HELLO's `callbacks`): "native" when C callbacks take the events (the calls, and
        in front of the exception callbacks), else "python"."""
        exceptions_native = self.exceptions is not None and self.exceptions.native is not None
        return "native" if self.native is not None or exceptions_native else "python"

    def _switch_defaults(self, buf, keys, recording):
        """A C-level callable that gives all callbacks (buf, keys) at once (see new_generation).
        `recording` is the unwind callback's flag (burst mode: is a window open)."""
        if self.native is not None:
            return partial(self.native.switch, buf, keys, recording)
        limit = self.capacity_words
        # Extra trailing defaults (the unwind callback's exception hook) are kept as they are.
        defaults = [
            (None, keys.get, self.codes.call_keys.get, get_ident, perf_counter_ns, buf, buf.extend, limit, kind)
            + (callback.__defaults__[9:10] + (recording,) if len(callback.__defaults__) > 9 else ())
            for (_, kind, _), callback in zip(_EVENT_KINDS, self._callbacks)
        ]
        return partial(list, map(setattr, self._callbacks, repeat("__defaults__"), defaults))

    # ---- burst windows (called by the sender thread only) ---------------------------------------

    def _window_masks(self):
        off = self._steady_mask()
        return off | EVENT_MASK, off

    def _steady_mask(self):
        """The events that stay on outside burst windows: exceptions, and CALL for the notes watch."""
        mask = EXCEPTION_EVENT_MASK if self.exceptions is not None else 0
        return mask | _events.CALL if self.note_watch else mask

    def open_window(self, start_ns, marker=_wire.KIND_WINDOW_START):
        """Opens a window at `start_ns`: a fresh thread table (every thread seeds itself at its
        first event, with the window's start time), the `marker` record, then the call events
        on; the three in one C-level step, so no event precedes the marker. Returns False when
        the interpreter refused to switch the events (then no window opens again), None when
        another window is open."""
        tool_id = self.tool_id
        if tool_id is None or self.windows_failed or self.failures.failure is not None:
            return False
        try:
            self._window_slot.pop()
        except IndexError:
            return None
        buf = self.buffer
        keys = {}
        on_mask, _ = self._window_masks()
        self.window_start_ns = start_ns
        self.window_open = True
        try:
            list(map(call, (self._switch_defaults(buf, keys, recording=True),
                            partial(buf.extend, (start_ns, marker)),
                            partial(setattr, self, "calls_on", True),
                            *self._window_registrations(tool_id, inside=True),
                            partial(self._set_events, tool_id, on_mask))))
        except (OverflowError, ValueError):
            # Refused (3.13+: too many changes): the marker went in, the events did not.
            self.thread_keys = keys
            self.windows_failed = True
            self.close_window(switch_events=False, seed_idle=False, marker=_end_marker(marker))
            return False
        self.thread_keys = keys
        return True

    def open_burst_window(self, start_ns):
        """The sender opens a window of the burst schedule (open_window)."""
        opened = self.open_window(start_ns)
        if opened is True:
            self._burst_window.append(True)
        return opened

    def close_burst_window(self, switch_events=True):
        """The sender closes its burst window (close_window). Returns the window's end time, or None when a first
        invocation that started inside it closed it already."""
        try:
            self._burst_window.pop()
        except IndexError:
            return None
        return self.close_window(switch_events=switch_events)

    def close_window(self, switch_events=True, seed_idle=True, marker=_wire.KIND_WINDOW_END):
        """Closes the open window: the call events off (unless they are already), then (not timed
        against the program any more) SEED records for the threads that ran no Python code in the
        window, and the `marker` record. Returns the window's end time."""
        tool_id = self.tool_id
        _, off_mask = self._window_masks()
        keys = self.thread_keys
        stop_recording = self._switch_defaults(self.buffer, keys, recording=False)
        # The threads' frames only when idle threads are seeded: reading them makes a frame object for each.
        steps = (partial(setattr, self, "calls_on", False), stop_recording, perf_counter_ns,
                 current_frames_reader() if seed_idle else dict, keys.copy)
        if switch_events and tool_id is not None:
            steps = (partial(self._set_events, tool_id, off_mask), *self._window_registrations(tool_id, inside=False)) + steps
        try:
            results = list(map(call, steps))
        except (OverflowError, ValueError):
            # The events cannot be switched off any more: the call callbacks go instead, so the
            # program pays only for the interpreter's check (the exception events stay).
            self.windows_failed = True
            self._unregister_call_callbacks()
            results = [None] + list(map(call, steps[1:]))
        end_ns, frames, seen = results[-3:]
        del results
        self.window_open = False
        buf = self.buffer
        if frames:
            # Only the idle threads' frames are kept for the seeding: the others are let go here.
            idle = frames.keys() - seen.keys() - self.threads.ignored_idents.keys()
            frames = dict(zip(idle, map(frames.__getitem__, idle)))
            seeds = self._seed_idle_threads(frames)
            if seeds:
                # The threads still where they were (the seeds hold): every thread's frame read again and compared
                # in C calls, then let go, so that no frame is held while Python code runs (a thread that returned
                # from a frame held here would see its locals freed later, and on this thread).
                idents = list(seeds)
                read = current_frames_reader()
                still = set(compress(idents, map(is_, map(read().get, idents), map(frames.__getitem__, idents))))
                for ident in idents:
                    if ident in still:
                        buf.extend(seeds[ident])
        buf.extend((end_ns, marker))
        self._window_slot.append(True)
        return end_ns

    def _window_registrations(self, tool_id, inside):
        """Steps (C callables) that register the callbacks for inside or outside a window, where they differ."""
        outside = self._callbacks_outside_windows
        if tool_id is None or not outside:
            return ()
        own = dict(zip((event for event, _, _ in _EVENT_KINDS), self._callbacks))
        return tuple(partial(_monitoring.register_callback, tool_id, event, own[event] if inside else callback)
                     for event, callback in outside.items())

    def give_call_events_outside_windows(self, callbacks):
        """Invocations only: the start-up phase's {event: callback} take those call events outside the windows (its
        local events are all there is then); None gives them back to the recorder for good."""
        tool_id = self.tool_id
        if callbacks is None:
            registrations = self._window_registrations(tool_id, inside=True) if not self.window_open else ()
            self._callbacks_outside_windows = {}
            list(map(call, registrations))
            return
        self._callbacks_outside_windows = dict(callbacks)
        if not self.window_open:
            list(map(call, self._window_registrations(tool_id, inside=False)))

    # ---- the first invocations' windows (burst and exceptions mode) ---------------------------------

    def record_window_opening_start(self, code, frame):
        """The START of `code` (held out, running in `frame`) whose event the start-up phase's own callback took
        and which opened an invocation's window: recorded as the slow path records one, after the seeds of its
        callers."""
        try:
            held = self.codes.held_out_keys(code, frame)
            if held is None or not held[1] or not self.calls_on:
                return
            ident = get_ident()
            keys = self.thread_keys
            self._record(ident, keys.get(ident), code, held[1], _wire.KIND_START, self.buffer, keys, frame)
        except Exception:
            self.failures.dropped.increment()

    def open_invocation_window(self):
        """On the thread of one of the ready-on function's first invocations, at its start: the call events on
        until it ends, so that the agent gets its exact call tree. Not in full mode (every call is recorded). A burst
        window open then ends here, its idle threads not seeded (the sender would seed them; this thread must not
        pay for it), and the invocation's window follows at once. Returns True when opened."""
        if not self.burst or self.held_for_startup:
            return False
        opened = self.open_window(perf_counter_ns(), _wire.KIND_INVOCATION_WINDOW_START)
        if opened is None:
            try:
                self._burst_window.pop()  # one C call; the sender closing it now, this invocation goes without its tree
            except IndexError:
                return False
            # The events stay on (the invocation's window wants them all the same).
            self.close_window(switch_events=False, seed_idle=False)
            opened = self.open_window(perf_counter_ns(), _wire.KIND_INVOCATION_WINDOW_START)
        if opened is not True:
            return False
        self._invocation_window.append(get_ident())
        return True

    def close_invocation_window(self, ident=None, opened_before_ns=None, switch_events=True):
        """Closes the invocation's window: when its thread's invocation ended (`ident`), when it opened before
        `opened_before_ns` (the sender: an invocation runs too long), or at the stop (neither). Returns True
        when this call closed it."""
        window = self._invocation_window
        if not window:
            return False
        if ident is not None and ident != window[0]:
            return False
        if opened_before_ns is not None and self.window_start_ns >= opened_before_ns:
            return False
        try:
            window.pop()  # one C call: of the threads that get here, one closes it
        except IndexError:
            return False
        self.close_window(switch_events=switch_events, seed_idle=False, marker=_wire.KIND_INVOCATION_WINDOW_END)
        return True

    def _seed_idle_threads(self, idle_frames):
        """{ident: SEED records at the window's start} for the program threads that ran no Python code in it."""
        out = {}
        threads = self.threads
        for ident, frame in idle_frames.items():
            info = threads.by_ident.get(ident)
            if info is None:
                info = threads.info(ident, frame.f_code, frame, native_id=native_id_of(ident))
                if info is None:
                    continue
            records = self._seed_records(frame, info.thread_id << _wire.THREAD_ID_SHIFT, self.window_start_ns)
            if records:
                threads.announce(info)
                out[ident] = records
        return out

    def _unregister_call_callbacks(self):
        tool_id = self.tool_id
        if tool_id is None:
            return
        for event, kind, _ in _EVENT_KINDS:
            try:
                if kind == _wire.KIND_UNWIND and self.exceptions is not None:
                    _monitoring.register_callback(tool_id, event, dict(self.exceptions.callbacks(unwind=True))[event])
                else:
                    _monitoring.register_callback(tool_id, event, None)
            except Exception:
                pass

    def _turn_off(self):
        """The first internal error of a callback (CallbackFailures): events off, the sender told."""
        self.stop_events()
        self._on_internal_error()

    # ---- slow path ----------------------------------------------------------------------------

    def _slow_path(self, code, kind, buf, thread_key):
        codes = self.codes
        ck = codes.call_keys.get(identity(code))
        if ck is None and codes.held_out:
            # A code the start-up phase watches (held out of the key tables, so that each of its events
            # comes here): the phase sees the event, then it is recorded as any other, if calls are
            # recorded now (its local events also fire outside burst windows). Never DISABLEd.
            event_frame = sys._getframe(2)
            on_startup_event = self._startup_event
            if on_startup_event is not None and kind in _STARTUP_KINDS:
                on_startup_event(code, kind != _wire.KIND_START, event_frame, kind == _wire.KIND_UNWIND)
                # The phase may have opened or closed an invocation's window: this event goes by the tables now.
                buf = self.buffer
                thread_key = self.thread_keys.get
            held = codes.held_out_keys(code, event_frame)
            if held is not None:
                if not self.calls_on or not held[1]:
                    return None
                ck = held[1]
        if ck == 0:
            return DISABLE if kind in _DISABLE_OK_KINDS else None
        ident = get_ident()
        if ident in self.threads.ignored_idents:
            # The shim's own thread. Its own code is never recorded anywhere: defined as such and
            # disabled; other code (the stdlib it calls) stays enabled for the program.
            if ck is None and code.co_filename.startswith(self.shim_prefix):
                codes.define(code, None)
                return DISABLE if kind in _DISABLE_OK_KINDS else None
            return None
        # Frames: 0 this function, 1 the callback, 2 the code the event is about.
        event_frame = sys._getframe(2)
        if event_frame.f_code is not code:
            event_frame = None
        tk = thread_key(ident)
        if ck is None:
            if code is THREAD_BOOTSTRAP_CODE:
                # Never cached, so that each thread's start comes here: a thread starting on an
                # ident we know is a new thread reusing a finished one's ident.
                ck = codes.bootstrap_call_key(event_frame)
                if kind == _wire.KIND_START and tk is not None:
                    self.threads.by_ident.pop(ident, None)
                    tk = None
                if not ck:
                    # Filtered out; still comes here so that a reused ident is seen.
                    thread_key.__self__.pop(ident, None)
                    return None
            else:
                ck = codes.define(code, event_frame)
                if ck == 0:
                    return DISABLE if kind in _DISABLE_OK_KINDS else None
        self._record(ident, tk, code, ck, kind, buf, thread_key.__self__, event_frame)
        return None

    def _record(self, ident, tk, code, ck, kind, buf, thread_keys, event_frame):
        """The record of a defined code's event on thread `ident` (key `tk`, None: seeded first), or a drop."""
        if tk is None:
            self._first_event_on_thread(ident, code, ck, kind, buf, thread_keys, event_frame)
        elif len(buf) < self.capacity_words:
            buf.extend((perf_counter_ns(), tk | ck | kind))
        else:
            self.failures.dropped.increment()

    def _seed_records(self, frame, tk, timestamp):
        """SEED records (timestamp, word pairs) for `frame` and its callers, outermost first,
        stopping at the shim's own frames; frames whose code is not recorded are left out."""
        chain = []
        shim_prefix = self.shim_prefix
        codes = self.codes
        while frame is not None and len(chain) < _SEED_DEPTH_LIMIT:
            if frame.f_code.co_filename.startswith(shim_prefix):
                # The shim's runner and whatever launched it (runpy) are not the program's frames:
                # their code is never recorded, so that neither seeds nor their later returns show up.
                codes.never_record(frame)
                break
            chain.append(frame)
            frame = frame.f_back
        records = []
        call_keys = codes.call_keys
        for frame in reversed(chain):
            frame_code = frame.f_code
            key = call_keys.get(identity(frame_code))
            if key is None:
                held = codes.held_out_keys(frame_code, frame)
                if held is not None:
                    key = held[1]
                elif frame_code is THREAD_BOOTSTRAP_CODE:
                    key = codes.bootstrap_call_key(frame)
                else:
                    key = codes.define(frame_code, frame)
            if key:
                records.append(timestamp)
                records.append(tk | key | _wire.KIND_SEED)
        return records

    def _first_event_on_thread(self, ident, code, ck, kind, buf, thread_keys, event_frame):
        threads = self.threads
        info = threads.by_ident.get(ident)
        if info is None:
            info = threads.info(ident, code, event_frame)
            if info is None:
                self.failures.dropped.increment()
                return
        else:
            threads.announce(info)
        tk = info.thread_id << _wire.THREAD_ID_SHIFT
        now = perf_counter_ns()
        # Seed the frames already running, outermost first. A push event's own frame is not
        # seeded (the event pushes it); a pop event's frame is (the event pops it). In a burst
        # window the stack is the one the window opened on (no event fired since): seeded then.
        frame = event_frame
        if frame is not None and kind in _PUSH_KINDS:
            frame = frame.f_back
        records = self._seed_records(frame, tk, self.window_start_ns if self.burst else now)
        records.append(now)
        records.append(tk | ck | kind)
        if len(buf) + len(records) <= self.capacity_words:
            buf.extend(records)
            thread_keys[ident] = tk
        else:
            # Not seeded: leave the thread unknown so that its next event tries again.
            self.failures.dropped.add(len(records) // 2)

    # ---- tool id and events ----------------------------------------------------------------------

    def install(self, tool_id):
        """Registers the callbacks under an already claimed tool id and turns the events on:
        the call events when `calls` (in burst mode only inside windows: open_window), the
        exception events when exceptions are tracked (either works alone), CALL for the notes
        watch. The CALL callback is registered in any case, for run_past_call."""
        self.tool_id = tool_id
        watch = self._native_note_watch
        registrations = [(_events.CALL, watch.call if watch is not None else self._call_callback)]
        if self.calls:
            outside = self._callbacks_outside_windows
            registrations.extend((event, outside.get(event, callback))
                                 for (event, _, _), callback in zip(_EVENT_KINDS, self._callbacks))
        tracker = self.exceptions
        if tracker is not None:
            registrations.extend(tracker.callbacks(unwind=not self.calls))
            if self.note_watch:
                registrations.append((_events.C_RETURN, watch.c_return if watch is not None else tracker.on_note_added))
            tracker.install_hooks()
        for event, callback in registrations:
            _monitoring.register_callback(tool_id, event, callback)
        self._registered_events = tuple(event for event, _ in registrations)
        mask = self._steady_mask()
        if self.calls and not self.burst:
            mask |= EVENT_MASK
        self._installed_mask = mask
        _monitoring.set_events(tool_id, 0 if self.held_for_startup else mask)

    def resume_after_startup(self):
        """The start-up phase is over: the events the mode records go on (burst windows may open)."""
        if not self.held_for_startup:
            return
        self.held_for_startup = False
        tool_id = self.tool_id
        if tool_id is not None and self.failures.failure is None:
            _monitoring.set_events(tool_id, self._installed_mask)

    def watch_for_startup(self, on_event):
        """The start-up phase shares this tool id and, in the modes that record calls, its PY_START, PY_RETURN
        and PY_UNWIND callbacks: the events of the codes it watches (watch_code) reach `on_event(code, is_return,
        frame, unwound)` through the slow path, then are recorded as any other (PY_UNWIND only while calls are
        recorded: it is not a local event)."""
        self._startup_event = on_event

    def watch_code(self, code):
        self.codes.hold_out(code)

    def unwatch_startup(self):
        """The phase is over: its codes take the fast path again (their local events are off by now)."""
        self._startup_event = None
        self.codes.take_back_all()

    def _make_call_callback(self):
        """The one CALL callback. The notes watch (PEP 678: a note added to an exception that is then
        swallowed shows in no other event): it keeps the call sites of add_note, where C_RETURN then
        reads the notes, and DISABLEs every other call site, so that each costs one event, once.
        And the one-shot past call of the fork handlers (run_past_call)."""
        check_past_call = self._check_past_call
        failures = self.failures
        failed = failures.failed
        recorder = self
        if not self.note_watch:
            def on_call(code, offset, _callable, _arg0):
                try:
                    if recorder._past_call is not None:
                        check_past_call(code, offset)
                except RecursionError:
                    failures.dropped.increment()
                except BaseException as exc:
                    if failed(exc):
                        raise
                return None
        else:
            from ._exceptions.program_threads import ADD_NOTE, ADD_NOTE_NAME, BUILTIN_METHOD

            def on_call(code, offset, callable, _arg0):
                try:
                    if recorder._past_call is not None:
                        check_past_call(code, offset)
                    if callable is ADD_NOTE or (type(callable) is BUILTIN_METHOD and callable.__name__ == ADD_NOTE_NAME):
                        return None
                    return DISABLE
                except RecursionError:
                    failures.dropped.increment()
                except BaseException as exc:
                    if failed(exc):
                        raise
                return None

        on_call.__qualname__ = "telemetry_shim.callback[CALL]"
        return on_call

    def run_past_call(self, frame, action):
        """Runs `action()` once, at the first call the current thread makes after `frame` has moved
        on from the call it is making now (a CALL event; CALL is otherwise off, or the notes watch's).
        The fork handlers use it to start work only once os.fork() has returned. Only ids of the
        frame and its code are kept. Returns False, having armed nothing, when it cannot (no tool
        id, no frame)."""
        tool_id = self.tool_id
        if tool_id is None or frame is None:
            return False
        self._past_call = (get_ident(), identity(frame), identity(frame.f_code), frame.f_lasti, action)
        if self._native_note_watch is not None:
            self._native_note_watch.armed = True  # CALL to the Python callback, which checks the past call
        mask = _monitoring.get_events(tool_id)
        if mask & _events.CALL:
            # The notes watch has DISABLEd most call sites. CALL off and on again arms every call
            # site of the code objects running now (the forking frame's and its callers') again;
            # the others keep their DISABLE marks (measured on 3.12 and 3.13).
            _monitoring.set_events(tool_id, mask & ~_events.CALL)
        _monitoring.set_events(tool_id, mask | _events.CALL)
        return True

    def _check_past_call(self, code, offset):
        """The CALL callback while a past call is armed: its action runs once the forking frame is
        past the call it was making (it made another call, or it returned and was left)."""
        armed = self._past_call
        if armed is None:
            return
        ident, frame_id, code_id, call_offset, action = armed
        if get_ident() != ident:
            return
        # Frames: 0 this method, 1 the callback, 2 the frame making the call.
        frame = event_frame = sys._getframe(2)
        while frame is not None:
            if identity(frame) == frame_id and identity(frame.f_code) == code_id:
                if frame.f_lasti == call_offset and not (frame is event_frame and offset == call_offset):
                    return  # still inside that call (e.g. the other after-fork handlers)
                break
            frame = frame.f_back
        del frame, event_frame
        self.disarm_past_call()
        action()

    def disarm_past_call(self):
        self._past_call = None
        if self._native_note_watch is not None:
            self._native_note_watch.armed = False
        tool_id = self.tool_id
        if tool_id is None or self.note_watch:
            return  # the watch keeps CALL on
        try:
            _monitoring.set_events(tool_id, _monitoring.get_events(tool_id) & ~_events.CALL)
        except Exception:
            pass

    def stop_events(self):
        tool_id = self.tool_id
        if tool_id is not None:
            try:
                _monitoring.set_events(tool_id, 0)
                # The local events of the codes the start-up phase watches come through our callbacks too.
                for code, _key, _call_key in list(self.codes.held_out.values()):
                    _monitoring.set_local_events(tool_id, code, 0)
            except Exception:
                pass

    def uninstall(self):
        """Events off, callbacks unregistered, tool id freed, in that order (on 3.12/3.13
        free_tool_id alone would leave the callbacks armed)."""
        tool_id = self.tool_id
        if tool_id is None:
            return
        self.tool_id = None
        try:
            _monitoring.set_events(tool_id, 0)
        except Exception:
            pass
        for event in self._registered_events:
            try:
                _monitoring.register_callback(tool_id, event, None)
            except Exception:
                pass
        if self.exceptions is not None:
            self.exceptions.uninstall_hooks()
        try:
            if _monitoring.get_tool(tool_id) == TOOL_NAME:
                _monitoring.free_tool_id(tool_id)
        except Exception:
            pass

    # ---- sender-side maintenance ---------------------------------------------------------------

    def refresh_threads(self):
        """Thread names and ended threads (ThreadTable.refresh). Called by the sender only."""
        self.threads.refresh(self.thread_keys)

    def dropped_in_callbacks(self):
        """Events dropped inside the callbacks (a full buffer, the recursion limit), on either path."""
        return self.failures.dropped.value() + (self.native.dropped if self.native is not None else 0)

    def reset_after_fork(self):
        """In a fork child: the parent's threads and pending records are not this process's."""
        self.threads.reset_after_fork()
        self.failures.reset_after_fork()
        if self.native is not None:
            self.native.reset_after_fork()
        if self.exceptions is not None:
            self.exceptions.reset_after_fork()
        self.new_generation()

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
import threading
from itertools import count, repeat
from time import perf_counter_ns
from _thread import get_ident, get_native_id

from . import _wire

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

# Tool ids: 0 debugger, 1 coverage, 2 profiler (cProfile) are never taken.
CANDIDATE_TOOL_IDS = (3, 4, 5)
TOOL_NAME = "telemetry_shim"

_CO_GENERATOR = 0x20
_CO_COROUTINE = 0x80
_CO_ASYNC_GENERATOR = 0x200

# Beyond this many distinct code objects (e.g. a program exec()ing fresh code forever) new code
# is recorded under one shared "<code table full>" definition, so memory stays bounded.
MAX_CODES = 1 << 20
_SEED_DEPTH_LIMIT = 10000


class AtomicCounter:
    """A counter that program threads can bump without a lock: itertools.count.__next__ is one C
    call under the GIL. Reading also advances it, so reads are compensated (one reader at a time)."""

    __slots__ = ("increment", "_reads", "_read_lock")

    def __init__(self):
        self.increment = count().__next__
        self._reads = 0
        self._read_lock = threading.Lock()

    def add(self, n):
        increment = self.increment
        for _ in range(n):
            increment()

    def value(self):
        with self._read_lock:
            current = self.increment() - self._reads
            self._reads += 1
            return current


class ThreadInfo:
    __slots__ = ("thread_id", "ident", "native_id", "name", "is_main", "registered", "missing_ticks")

    def __init__(self, thread_id, ident, native_id, name, is_main):
        self.thread_id = thread_id
        self.ident = ident
        self.native_id = native_id
        self.name = name
        self.is_main = is_main
        self.registered = False  # seen in threading's table at least once
        self.missing_ticks = 0

    def definition(self):
        return {"id": self.thread_id, "ident": self.ident, "native_id": self.native_id,
                "name": self.name, "is_main": self.is_main}


def claim_tool_id():
    """A free sys.monitoring tool id (checked with get_tool first, never stolen), or None."""
    candidates = list(CANDIDATE_TOOL_IDS)
    requested = os.environ.get("TELEMETRY_SHIM_TOOL_ID", "").strip()
    if requested:
        try:
            wanted = int(requested)
        except ValueError:
            wanted = None
        if wanted in candidates:
            candidates.remove(wanted)
            candidates.insert(0, wanted)
    for tool_id in candidates:
        if _monitoring.get_tool(tool_id) is not None:
            continue
        try:
            _monitoring.use_tool_id(tool_id, TOOL_NAME)
        except ValueError:  # taken between the check and the claim
            continue
        return tool_id
    return None


# threading.Thread._bootstrap: the first frame of every threading thread.
_THREAD_BOOTSTRAP_CODE = getattr(getattr(threading.Thread, "_bootstrap", None), "__code__", None)


def _thread_name(ident, code, frame):
    """The thread's name if threading knows it, else ""; never creates anything.

    threading._active is read, never written: current_thread() would create a _DummyThread
    for a thread that is not registered yet, which the program could observe. At the start of
    Thread._bootstrap the thread is not registered yet, but its Thread object is `self` there.
    """
    thread = threading._active.get(ident)
    if thread is None and frame is not None and code is _THREAD_BOOTSTRAP_CODE:
        thread = frame.f_locals.get("self")
    name = getattr(thread, "name", "") if thread is not None else ""
    return name if isinstance(name, str) else ""


class Recorder:
    """Owns the tool id, the callbacks and what they produce: the record buffer, code and
    thread definitions, and the drop/error counters."""

    def __init__(self, capacity_events, shim_dir, on_internal_error, calls=True, exceptions=True):
        self.capacity_words = 2 * max(int(capacity_events), 1024)
        self.shim_prefix = os.path.join(os.path.abspath(shim_dir), "")
        self._on_internal_error = on_internal_error
        self.tool_id = None
        self.calls = bool(calls)
        self._registered_events = ()

        # Codes: id(code) -> code_id << 8, or 0 for the shim's own code. Code objects are kept
        # alive in code_objects so that an id() is never reused by another code object.
        self.code_keys = {}
        self.code_objects = []
        self.code_definitions = []  # append-only; the sender tracks how many it has sent
        self._next_code_id = count(1).__next__
        self._overflow_code_key = None
        self._bootstrap_key = None

        # Threads: ident -> ThreadInfo (stable thread ids across reconnects); pending
        # ThreadDefinition dicts, drained by the sender.
        self.threads = {}
        self.pending_thread_definitions = []
        self._next_thread_id = count(1).__next__
        self.ignored_idents = set()

        self.dropped = AtomicCounter()  # buffer full (or recursion limit) inside a callback
        self.callback_errors = AtomicCounter()
        self.failure = None  # description of the internal error that turned the shim off

        self.buffer = None
        self.thread_keys = None
        self.exceptions = None
        if exceptions:
            from ._exceptions import ExceptionTracker

            self.exceptions = ExceptionTracker(self)
        unwind_hook = self.exceptions.on_unwind if self.exceptions is not None else None
        self._callbacks = [self._make_callback(kind, unwind_hook if kind == _wire.KIND_UNWIND else None)
                           for _, kind, _ in _EVENT_KINDS]
        self.new_generation()

    # ---- callbacks --------------------------------------------------------------------------

    def _make_callback(self, kind, exception_hook=None):
        slow_path = self._slow_path
        failed = self._callback_failed

        # All state comes in as default arguments (the fastest loads); new_generation() swaps
        # them. `_value` takes the third argument of the events that have one.
        def callback(code, offset, _value=None, thread_key=None, code_key=None, ident=get_ident,
                     now=perf_counter_ns, buf=None, extend=None, limit=0, kind=kind):
            try:
                tk = thread_key(ident())
                ck = code_key(id(code))
                if tk and ck and len(buf) < limit:
                    extend((now(), tk | ck | kind))
                    return None
                return slow_path(code, kind, buf, thread_key)
            except BaseException as exc:
                if failed(exc):
                    raise
                return None

        if exception_hook is not None:
            # PY_UNWIND with exceptions on: the same record, then the exception's bookkeeping
            # (which finds the unwinding frame two levels up: hook <- callback <- frame).
            def callback(code, offset, _value=None, thread_key=None, code_key=None, ident=get_ident,  # noqa: F811
                         now=perf_counter_ns, buf=None, extend=None, limit=0, kind=kind, hook=exception_hook):
                try:
                    hook(code, _value)
                    tk = thread_key(ident())
                    ck = code_key(id(code))
                    if tk and ck and len(buf) < limit:
                        extend((now(), tk | ck | kind))
                        return None
                    return slow_path(code, kind, buf, thread_key)
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
        buf = []
        keys = {}
        limit = self.capacity_words
        # Extra trailing defaults (the unwind callback's exception hook) are kept as they are.
        defaults = [
            (None, keys.get, self.code_keys.get, get_ident, perf_counter_ns, buf, buf.extend, limit, kind)
            + callback.__defaults__[9:]
            for (_, kind, _), callback in zip(_EVENT_KINDS, self._callbacks)
        ]
        list(map(setattr, self._callbacks, repeat("__defaults__"), defaults))
        self.buffer = buf
        self.thread_keys = keys
        return previous

    def _callback_failed(self, exc):
        """Decides what an exception caught in a callback means. Returns True to re-raise it."""
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            return True  # the program's own signal (Ctrl+C): it must surface as without the shim
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        if tb is not None and not tb.tb_frame.f_code.co_filename.startswith(self.shim_prefix):
            return True  # raised by the program's code, e.g. a signal handler that ran here
        if isinstance(exc, RecursionError):
            # The program is at the recursion limit and our frame tipped it over: drop this
            # event; the program reaches its own limit one frame later, as it would anyway.
            self.dropped.increment()
            return False
        self.callback_errors.increment()
        if self.failure is None:
            self.failure = "%s: %s" % (type(exc).__name__, exc)
            self.stop_events()
            self._on_internal_error()
        return False

    # ---- slow path ----------------------------------------------------------------------------

    def _slow_path(self, code, kind, buf, thread_key):
        code_id = id(code)
        ck = self.code_keys.get(code_id)
        if ck == 0:
            return DISABLE if kind in _DISABLE_OK_KINDS else None
        ident = get_ident()
        if ident in self.ignored_idents:
            return None  # the shim's own thread; the code itself stays enabled
        # Frames: 0 this function, 1 the callback, 2 the code the event is about.
        event_frame = sys._getframe(2)
        if event_frame.f_code is not code:
            event_frame = None
        tk = thread_key(ident)
        if ck is None:
            if code is _THREAD_BOOTSTRAP_CODE:
                # Never cached, so that each thread's start comes here: a thread starting on an
                # ident we know is a new thread reusing a finished one's ident.
                ck = self._bootstrap_key
                if ck is None:
                    ck = self._bootstrap_key = self._code_key(code, event_frame, cache=False)
                if kind == _wire.KIND_START and tk is not None:
                    self.threads.pop(ident, None)
                    tk = None
            else:
                ck = self._code_key(code, event_frame)
                if ck == 0:
                    return DISABLE if kind in _DISABLE_OK_KINDS else None
        if tk is None:
            self._first_event_on_thread(ident, code, ck, kind, buf, thread_key.__self__, event_frame)
            return None
        if len(buf) < self.capacity_words:
            buf.extend((perf_counter_ns(), tk | ck | kind))
        else:
            self.dropped.increment()
        return None

    def code_key_of(self, code, frame):
        """The key (code id << 8) of any code object, defining it when new; 0 for the shim's own
        code. For locations outside the call path (exception sites, tracebacks, stacks)."""
        ck = self.code_keys.get(id(code))
        if ck is not None:
            return ck
        if code is _THREAD_BOOTSTRAP_CODE:
            ck = self._bootstrap_key
            if ck is None:
                ck = self._bootstrap_key = self._code_key(code, frame, cache=False)
            return ck
        return self._code_key(code, frame)

    def thread_info(self, ident, code=None, frame=None):
        """The ThreadInfo of the running thread, registered (definition queued) when new; None
        when thread ids are exhausted. Only the thread itself registers itself."""
        info = self.threads.get(ident)
        if info is None:
            thread_id = self._next_thread_id()
            if thread_id > _wire.MAX_THREAD_ID:
                return None
            main = threading.main_thread()
            info = ThreadInfo(thread_id, ident, get_native_id(), _thread_name(ident, code, frame),
                              main is not None and main.ident == ident)
            self.threads[ident] = info
            self.pending_thread_definitions.append(info.definition())
        return info

    def _code_key(self, code, frame, cache=True):
        filename = code.co_filename
        if cache and filename.startswith(self.shim_prefix):
            self.code_objects.append(code)
            self.code_keys[id(code)] = 0
            return 0
        code_id = self._next_code_id()
        if code_id > MAX_CODES:
            return self._overflow_key()
        module = ""
        if frame is not None:
            name = frame.f_globals.get("__name__")
            if isinstance(name, str):
                module = name
        flags = code.co_flags
        kind_flags = ((1 if flags & _CO_GENERATOR else 0) | (2 if flags & _CO_COROUTINE else 0)
                      | (4 if flags & _CO_ASYNC_GENERATOR else 0))
        key = code_id << _wire.CODE_ID_SHIFT
        # The definition is published before the key: a record using the key can never reach
        # the sender ahead of its definition.
        self.code_objects.append(code)
        self.code_definitions.append((code_id, code.co_qualname, filename, code.co_firstlineno, module, kind_flags))
        if not cache:
            return key
        # If another thread defined the same code at the same moment, its id wins; this one
        # stays defined but unused.
        return self.code_keys.setdefault(id(code), key)

    def _overflow_key(self):
        key = self._overflow_code_key
        if key is None:
            code_id = self._next_code_id()
            self.code_definitions.append((code_id, "<code table full>", "", 0, "", 0))
            key = self._overflow_code_key = code_id << _wire.CODE_ID_SHIFT
        return key

    def _exclude_launcher(self, frame):
        """The shim's runner and whatever launched it (runpy) are not the program's frames: their
        code is never recorded, so that neither seeds nor their later returns show up."""
        while frame is not None:
            code = frame.f_code
            if id(code) not in self.code_keys:
                self.code_objects.append(code)
                self.code_keys[id(code)] = 0
            frame = frame.f_back

    def _first_event_on_thread(self, ident, code, ck, kind, buf, thread_keys, event_frame):
        info = self.threads.get(ident)
        if info is None:
            info = self.thread_info(ident, code, event_frame)
            if info is None:
                self.dropped.increment()
                return
        else:
            self.pending_thread_definitions.append(info.definition())
        tk = info.thread_id << _wire.THREAD_ID_SHIFT
        now = perf_counter_ns()
        records = []
        # Seed the frames already running, outermost first. A push event's own frame is not
        # seeded (the event pushes it); a pop event's frame is (the event pops it).
        frame = event_frame
        if frame is not None and kind in _PUSH_KINDS:
            frame = frame.f_back
        chain = []
        shim_prefix = self.shim_prefix
        while frame is not None and len(chain) < _SEED_DEPTH_LIMIT:
            if frame.f_code.co_filename.startswith(shim_prefix):
                self._exclude_launcher(frame)
                break
            chain.append(frame)
            frame = frame.f_back
        code_keys = self.code_keys
        for frame in reversed(chain):
            frame_code = frame.f_code
            key = code_keys.get(id(frame_code))
            if key is None:
                key = self._code_key(frame_code, frame)
            if key:
                records.append(now)
                records.append(tk | key | _wire.KIND_SEED)
        records.append(now)
        records.append(tk | ck | kind)
        if len(buf) + len(records) <= self.capacity_words:
            buf.extend(records)
            thread_keys[ident] = tk
        else:
            # Not seeded: leave the thread unknown so that its next event tries again.
            self.dropped.add(len(records) // 2)

    # ---- tool id and events ----------------------------------------------------------------------

    def install(self, tool_id):
        """Registers the callbacks under an already claimed tool id and turns the events on:
        the call events when `calls`, the exception events when exceptions are tracked (either
        works alone)."""
        self.tool_id = tool_id
        registrations = []
        if self.calls:
            registrations.extend((event, callback) for (event, _, _), callback in zip(_EVENT_KINDS, self._callbacks))
        tracker = self.exceptions
        if tracker is not None:
            registrations.extend(tracker.callbacks(unwind=not self.calls))
            tracker.install_hooks()
        mask = 0
        for event, callback in registrations:
            _monitoring.register_callback(tool_id, event, callback)
            mask |= event
        self._registered_events = tuple(event for event, _ in registrations)
        _monitoring.set_events(tool_id, mask)

    def run_past_call(self, frame, action):
        """Runs `action()` once, at the first call made (by any thread) after `frame` has moved
        on from the call it is making now: a one-shot CALL event, otherwise never on. The fork
        handlers use it to start work only once os.fork() has returned. Returns False, having
        armed nothing, when it cannot (no tool id, no frame)."""
        tool_id = self.tool_id
        if tool_id is None or frame is None:
            return False
        call_offset = frame.f_lasti
        failed = self._callback_failed
        fired = []

        def past_call(code, offset, _callable, _arg0):
            try:
                if frame.f_lasti == call_offset and not (
                        offset == call_offset and code is frame.f_code and sys._getframe(1) is frame):
                    return None  # still inside that call (e.g. the other after-fork handlers)
                if fired:
                    return None
                fired.append(True)
                self.disarm_past_call()
                action()
            except BaseException as exc:
                if failed(exc):
                    raise
            return None

        past_call.__qualname__ = "telemetry_shim.callback[PAST_CALL]"
        _monitoring.register_callback(tool_id, _events.CALL, past_call)
        _monitoring.set_events(tool_id, _monitoring.get_events(tool_id) | _events.CALL)
        return True

    def disarm_past_call(self):
        tool_id = self.tool_id
        if tool_id is None:
            return
        try:
            _monitoring.set_events(tool_id, _monitoring.get_events(tool_id) & ~_events.CALL)
            _monitoring.register_callback(tool_id, _events.CALL, None)
        except Exception:
            pass

    def stop_events(self):
        tool_id = self.tool_id
        if tool_id is not None:
            try:
                _monitoring.set_events(tool_id, 0)
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
        for event in self._registered_events + (_events.CALL,):
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
        """Re-queues the definition of a thread whose name changed; forgets threads that ended
        (so that a new thread reusing the ident gets its own id). Called by the sender only."""
        active = threading._active
        for ident, info in list(self.threads.items()):
            thread = active.get(ident)
            if thread is not None:
                info.registered = True
                info.missing_ticks = 0
                name = thread.name
                if name != info.name:
                    info.name = name
                    self.pending_thread_definitions.append(info.definition())
            elif info.registered:
                info.missing_ticks += 1
                # Two ticks apart: the thread has long finished its last frames by then.
                # A new thread may have taken the ident since the snapshot: only this entry goes.
                if info.missing_ticks >= 2 and self.threads.get(ident) is info:
                    self.threads.pop(ident, None)
                    thread_keys = self.thread_keys
                    if thread_keys.get(ident) == info.thread_id << _wire.THREAD_ID_SHIFT:
                        thread_keys.pop(ident, None)

    def reset_after_fork(self):
        """In a fork child: the parent's threads and pending records are not this process's."""
        self.threads.clear()
        self._next_thread_id = count(1).__next__
        self.pending_thread_definitions = []
        self.dropped = AtomicCounter()
        self.callback_errors = AtomicCounter()
        if self.exceptions is not None:
            self.exceptions.reset_after_fork()
        self.new_generation()

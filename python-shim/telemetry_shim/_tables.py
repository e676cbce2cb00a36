"""The tables that the call recorder (_monitor) and the exception tracker (_exceptions) share: code
objects, threads, a lock-free counter, and the one policy for an exception caught in a callback.

Program threads add to these tables from their callbacks (each addition a single C call under the
GIL: no lock); the sender thread reads and drains them. Nothing here imports the recorder or the
tracker: both import this module.
"""

import threading
from _functools import partial, reduce  # the objects functools has, without importing functools.py (see _monitor)
from itertools import count
import sys
from sys import getrefcount
from _operator import call, is_
from _weakref import ref  # the same type as weakref.ref, without importing weakref.py at start (about 0.8 ms)
from _thread import get_native_id

from . import _wire

_CO_GENERATOR = 0x20
_CO_COROUTINE = 0x80
_CO_ASYNC_GENERATOR = 0x200

# An object's id() without the call to id(): id() raises the `builtins.id` audit event, and a program's
# audit hooks (sys.addaudithook) must not see the shim's lookups (nor run, or raise, inside them).
# object.__hash__ is the object's address rotated by 4 bits: one value per live object, as id() is.
identity = object.__hash__

def other_interpreters_running():
    """May the process run interpreters besides this one? sys._current_frames() and
    sys._current_exceptions() walk every interpreter's threads, and doing so while an isolated
    subinterpreter (its own GIL) runs corrupts memory (3.12 and 3.13): without the C extension's
    walk of this interpreter (read_threads_of_this_interpreter) the sender does without them then.
    Interpreters are created through _interpreters (3.13) or _xxsubinterpreters (3.12): a program
    that has not imported either runs none from Python; one that has may create or destroy one
    at any moment, so it is taken to run some. Interpreters made through the C API go unseen.
    (Asking the module's list_all() instead walks the interpreters without a lock on 3.12, and
    crashed while another thread destroyed one.)"""
    modules = sys.modules
    return "_interpreters" in modules or "_xxsubinterpreters" in modules


# The C extension's current_frames and current_exceptions, which walk this interpreter's threads only, when
# the C callbacks record; None on the Python path.
_this_interpreter = None


def read_threads_of_this_interpreter(native):
    """Reads the threads' frames and exceptions with the C extension `native` (None: with sys)."""
    global _this_interpreter
    _this_interpreter = (native.current_frames, native.current_exceptions) if native is not None else None


def thread_states_readable():
    """Can the sender read what the threads run and handle now (current_frames, current_exceptions)?"""
    return _this_interpreter is not None or not other_interpreters_running()


def current_frames_reader():
    """A C callable returning current_frames() when called (it runs no bytecode, for steps that must run as one
    C-level step: the recorder's burst windows)."""
    walk = _this_interpreter
    if walk is not None:
        return walk[0]
    return dict if other_interpreters_running() else sys._current_frames


def current_frames():
    """{ident: frame} of this interpreter's threads, or {} when they cannot be read (thread_states_readable)."""
    return current_frames_reader()()


def current_exceptions():
    """{ident: the exception it handles, or None} of this interpreter's threads, or {} when they cannot be
    read (thread_states_readable)."""
    walk = _this_interpreter
    if walk is not None:
        return walk[1]()
    return {} if other_interpreters_running() else sys._current_exceptions()


# sys.getrefcount() of an immortal object (3.12+: 2**32 - 1 on 64-bit builds); no object reaches it
# by being referenced.
IMMORTAL_REFCOUNT = 1 << 30

# Beyond this many distinct code objects (e.g. a program exec()ing fresh code forever) new code
# is recorded under one shared "<code table full>" definition, so memory stays bounded.
MAX_CODES = 1 << 20

# threading.Thread._bootstrap: the first frame of every threading thread.
THREAD_BOOTSTRAP_CODE = getattr(getattr(threading.Thread, "_bootstrap", None), "__code__", None)


class AtomicCounter:
    """A counter that program threads can bump without a lock: itertools.count.__next__ is one C
    call under the GIL. Reading also advances it, so reads are compensated (one reader at a time).
    `new_counter` makes the endless iterator: itertools.count, or the C extension's Counter, which the C
    callbacks advance in place."""

    __slots__ = ("counter", "increment", "_reads", "_read_lock")

    def __init__(self, new_counter=count):
        self.counter = new_counter()
        self.increment = self.counter.__next__
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


def on_death(*steps):
    """A weakref callback that makes the calls `steps` (C callables taking no argument) when the
    referent dies, without running any bytecode: a code object dies wherever the program drops it,
    and no frame of the shim may run there (a signal handler would run inside it, the recursion
    limit count it, an error in it be printed as ignored). functools.reduce is what consumes the
    map of calls in C; the weakref it is given as a third argument is only its start value."""
    return partial(reduce, is_, map(call, steps))


class CodeTable:
    """Every code object the shim has met: its key (code id << 8) and its CodeDefinition.

    `keys` maps identity(code) to the key, or to 0 for the shim's own code (never recorded anywhere). No
    code object is kept alive (a program that compiles code at run time must be able to free it):
    each entry goes when its code object dies (a weakref per code, `lifelines`), before anything
    else can take its address, so an id() in the tables always means the code it was defined for,
    and a key is never given to two code objects; so do the entries of the tables that copy these
    (forget_also: the C callbacks' CodeKeys). What the call callbacks look up is `call_keys`:
    `keys` itself, unless a filter leaves code out; then a second table where such code is 0
    (DISABLE: no event after its first) while `keys` keeps its real key for exception locations.
    """

    def __init__(self, shim_prefix, code_filter=None):
        self.shim_prefix = shim_prefix
        self.keys = {}
        self.code_filter = code_filter if code_filter is not None and code_filter.active else None
        self.call_keys = self.keys if self.code_filter is None else {}
        self.lifelines = {}  # identity(code) -> the weakref whose callback removes the code's entries
        self._forget_also = []  # forget(identity) of the tables that copy call_keys (forget_also)
        self.definitions = []  # append-only; the sender tracks how many it has sent
        self._next_code_id = count(1).__next__
        self.overflow_code_key = None  # the one key of every code beyond MAX_CODES, once there
        self._bootstrap_key = None
        self._bootstrap_recorded = True
        # identity(code) -> [code, key, call key] (keys None until defined): code held out of `keys` and
        # `call_keys` (hold_out), so that each of its events reaches the recorder's slow path.
        self.held_out = {}
        # The start-up phase's ready-on function, once armed: its definition says so, and the agent keeps the
        # call trees of its first invocations.
        self.ready_on_code = None

    def key_of(self, code, frame):
        """The key of any code object, defining it when new; 0 for the shim's own code. For
        locations outside the call path (exception sites, tracebacks, stacks): code that a filter
        leaves out of the calls has its real key here."""
        ck = self.keys.get(identity(code))
        if ck is not None:
            return ck
        held = self.held_out_keys(code, frame)
        if held is not None:
            return held[0]
        if code is THREAD_BOOTSTRAP_CODE:
            self.bootstrap_call_key(frame)
            return self._bootstrap_key
        key = self.define(code, frame)
        return self.keys.get(identity(code), key)

    def bootstrap_call_key(self, frame):
        """The call key of Thread._bootstrap (0 when a filter leaves it out). It is never cached in
        `keys`, so that each thread's start reaches the recorder's slow path."""
        ck = self._bootstrap_key
        if ck is None:
            ck = self._bootstrap_key = self.define(THREAD_BOOTSTRAP_CODE, frame, cache=False)
        return ck if self._bootstrap_recorded else 0

    def define(self, code, frame, cache=True):
        """Defines a new code object; returns its key for the call path (0: never recorded)."""
        if cache and code.co_filename.startswith(self.shim_prefix):
            self._forget_when_dead(code)
            self.keys[identity(code)] = 0
            if self.call_keys is not self.keys:
                self.call_keys[identity(code)] = 0
            return 0
        key, recorded = self._definition(code, frame)
        if not cache:
            if self.code_filter is not None:
                self._bootstrap_recorded = recorded
            return key
        if key == self.overflow_code_key:
            return key
        self._forget_when_dead(code)
        # If another thread defined the same code at the same moment, its id wins; this one
        # stays defined but unused.
        key = self.keys.setdefault(identity(code), key)
        if self.code_filter is not None:
            return self.call_keys.setdefault(identity(code), key if recorded else 0)
        return key

    def _definition(self, code, frame):
        """(a new key for `code`, whether the filter records its calls), its definition published; nothing cached."""
        code_id = self._next_code_id()
        if code_id > MAX_CODES:
            return self._overflow_key(), True
        filename = code.co_filename
        module = ""
        if frame is not None:
            name = frame.f_globals.get("__name__")
            if isinstance(name, str):
                module = name
        flags = code.co_flags
        kind_flags = ((1 if flags & _CO_GENERATOR else 0) | (2 if flags & _CO_COROUTINE else 0)
                      | (4 if flags & _CO_ASYNC_GENERATOR else 0))
        # The definition is published before the key: a record using the key can never reach
        # the sender ahead of its definition.
        self.definitions.append((code_id, code.co_qualname, filename, code.co_firstlineno, module, kind_flags,
                                 code is self.ready_on_code))
        code_filter = self.code_filter
        recorded = code_filter.records(filename, module) if code_filter is not None else True
        return code_id << _wire.CODE_ID_SHIFT, recorded

    def hold_out(self, code):
        """Takes `code` out of `keys` and `call_keys` (and the tables copying them) until take_back_all(), so
        that every event of it reaches the recorder's slow path: the start-up phase watches it there. Its key,
        if it has one, is kept and used meanwhile (held_out_keys)."""
        cid = identity(code)
        if cid in self.held_out:
            return
        key = self.keys.get(cid)
        call_key = self.call_keys.get(cid) if key is not None else None
        self.held_out[cid] = [code, key, call_key]
        self.keys.pop(cid, None)
        self.call_keys.pop(cid, None)
        for forget in self._forget_also:
            forget(cid)

    def held_out_keys(self, code, frame):
        """(key, call key) of a held-out code, defining it at its first event; None when it is not held out."""
        entry = self.held_out.get(identity(code))
        if entry is None:
            return None
        if entry[1] is None:
            key, recorded = self._definition(code, frame)
            entry[1], entry[2] = key, key if recorded else 0
        return entry[1], entry[2]

    def take_back_all(self, keep=None):
        """The held-out codes (all but `keep`) go back to `keys` and `call_keys`: their events take the fast
        path again."""
        kept = {}
        # The keys go back before the entries go: a slow path running meanwhile finds one or the other.
        for cid, entry in list(self.held_out.items()):
            code, key, call_key = entry
            if code is keep:
                kept[cid] = entry
                continue
            if key is None:
                continue
            if cid not in self.lifelines:
                self._forget_when_dead(code)
            self.keys.setdefault(cid, key)
            self.call_keys.setdefault(cid, call_key)
        self.held_out = kept

    def _overflow_key(self):
        key = self.overflow_code_key
        if key is None:
            code_id = self._next_code_id()
            self.definitions.append((code_id, "<code table full>", "", 0, "", 0))
            key = self.overflow_code_key = code_id << _wire.CODE_ID_SHIFT
        return key

    def never_record(self, frame):
        """The code of `frame` and of its callers is never recorded (key 0) from now on."""
        while frame is not None:
            code = frame.f_code
            if identity(code) not in self.keys and identity(code) not in self.held_out:
                self._forget_when_dead(code)
                self.keys[identity(code)] = 0
                self.call_keys[identity(code)] = 0
            frame = frame.f_back

    def forget_also(self, forget):
        """Makes every code's lifeline also call `forget(identity)` (a C callable: see on_death) as the
        code dies: for a table that copies entries of call_keys. Only while no code is defined, so that
        no entry it can copy lacks the call."""
        if self.keys or self.lifelines:
            raise RuntimeError("forget_also() after codes were defined: their lifelines would miss it")
        self._forget_also.append(forget)

    def _forget_when_dead(self, code):
        """Arms the removal of `code`'s entries (keys, call_keys, the copies of forget_also, this
        lifeline) for when it dies.
        An immortal code object never dies and gets no weakref: CPython 3.12's deep-frozen code
        (the frozen stdlib modules) is static and shared by every interpreter of the process, and a
        weakref of ours in its list would be freed by a subinterpreter (a crash)."""
        if getrefcount(code) >= IMMORTAL_REFCOUNT:
            return
        cid = identity(code)
        lifelines = self.lifelines
        steps = [partial(self.keys.pop, cid, None), partial(lifelines.pop, cid, None)]
        if self.call_keys is not self.keys:
            steps.append(partial(self.call_keys.pop, cid, None))
        steps.extend([partial(forget, cid) for forget in self._forget_also])  # inlined: no function object made
        lifelines[cid] = ref(code, on_death(*steps))


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


def _thread_name(ident, code, frame):
    """The thread's name if threading knows it, else ""; never creates anything.

    threading._active is read, never written: current_thread() would create a _DummyThread
    for a thread that is not registered yet, which the program could observe. At the start of
    Thread._bootstrap the thread is not registered yet, but its Thread object is `self` there.
    """
    thread = threading._active.get(ident)
    if thread is None and frame is not None and code is THREAD_BOOTSTRAP_CODE:
        thread = frame.f_locals.get("self")
    name = getattr(thread, "name", "") if thread is not None else ""
    return name if isinstance(name, str) else ""


def native_id_of(ident):
    """The OS thread id of a thread threading knows, else 0."""
    thread = threading._active.get(ident)
    native_id = getattr(thread, "native_id", None)
    return native_id if isinstance(native_id, int) else 0


class ThreadTable:
    """Threads: ident -> ThreadInfo (thread ids stay stable across reconnects), the ThreadDefinition
    dicts waiting for the sender, and the idents of the shim's own threads (never recorded)."""

    def __init__(self):
        self.by_ident = {}
        self.pending_definitions = []  # drained by the sender
        self.ignored_idents = {}  # ident -> None; a dict, whose version the C callbacks read; never replaced
        self._next_thread_id = count(1).__next__
        self._announced = set()  # thread ids whose definition this generation queued

    def info(self, ident, code=None, frame=None, native_id=None):
        """The ThreadInfo of a thread, registered (definition queued) when new; None when thread
        ids are exhausted. A thread registers itself, except an idle thread seeded by the sender
        at the end of a window (which passes its native id)."""
        info = self.by_ident.get(ident)
        if info is None:
            thread_id = self._next_thread_id()
            if thread_id > _wire.MAX_THREAD_ID:
                return None
            main = threading.main_thread()
            info = ThreadInfo(thread_id, ident, get_native_id() if native_id is None else native_id,
                              _thread_name(ident, code, frame), main is not None and main.ident == ident)
            self.by_ident[ident] = info
            self._announced.add(thread_id)
            self.pending_definitions.append(info.definition())
        return info

    def announce(self, info):
        """Queues a known thread's definition once per generation (a new connection needs it)."""
        if info.thread_id not in self._announced:
            self._announced.add(info.thread_id)
            self.pending_definitions.append(info.definition())

    def new_generation(self):
        """A new recorder generation: every known thread is announced again at its next use."""
        self._announced = set()

    def refresh(self, thread_keys):
        """Re-queues the definition of a thread whose name changed; forgets threads that ended
        (so that a new thread reusing the ident gets its own id), in `thread_keys` too (the
        recorder's ident -> thread key of this generation). Called by the sender only."""
        active = threading._active
        threads = self.by_ident
        for ident, info in list(threads.items()):
            thread = active.get(ident)
            if thread is not None:
                info.registered = True
                info.missing_ticks = 0
                name = thread.name
                if name != info.name:
                    info.name = name
                    self.pending_definitions.append(info.definition())
            elif info.registered:
                info.missing_ticks += 1
                # Two ticks apart: the thread has long finished its last frames by then.
                # A new thread may have taken the ident since the snapshot: only this entry goes.
                if info.missing_ticks >= 2 and threads.get(ident) is info:
                    threads.pop(ident, None)
                    self._announced.discard(info.thread_id)
                    if thread_keys.get(ident) == info.thread_id << _wire.THREAD_ID_SHIFT:
                        thread_keys.pop(ident, None)

    def reset_after_fork(self):
        """In a fork child: the parent's threads and pending definitions are not this process's."""
        self.by_ident.clear()
        self._next_thread_id = count(1).__next__
        self.pending_definitions = []


class CallbackFailures:
    """What an exception caught inside a callback means, for every callback of the shim (calls,
    exceptions, CALL, C_RETURN), and the counts it keeps: events dropped inside callbacks (a full
    buffer, the recursion limit) and internal errors. The first internal error calls `turn_off`
    (events off, the sender told), once.

    A RecursionError never comes here: the callbacks catch it themselves and count the drop with C
    calls only (`dropped.increment()`), because calling this method at the limit would fail in turn
    and raise from the callback into the program."""

    def __init__(self, shim_prefix, turn_off):
        self.shim_prefix = shim_prefix
        self._turn_off = turn_off
        self.dropped = AtomicCounter()
        self.errors = AtomicCounter()
        self.failure = None  # description of the internal error that turned the shim off

    def failed(self, exc):
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
        self.errors.increment()
        if self.failure is None:
            self.failure = "%s: %s" % (type(exc).__name__, exc)
            self._turn_off()
        return False

    def reset_after_fork(self):
        """In a fork child: the parent's counts are not this process's."""
        self.dropped = AtomicCounter()
        self.errors = AtomicCounter()

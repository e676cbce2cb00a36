"""The choice between the C call callbacks (_native.c) and the Python ones (_monitor.py), and the
glue the C ones need: one behaviour, two implementations, the Python one the tested twin.

TELEMETRY_SHIM_NATIVE (read by _settings): `auto` (default) uses the C callbacks when the
extension was built for this interpreter, `on` asks for them (and says so on stderr when they
are missing), `off` keeps the Python callbacks. Only the hot callbacks are in C: everything they
do not find cached (a new code object or thread, a full buffer, the shim's own code) runs the
recorder's Python slow path. The exception tracker's callbacks are in C for the events of
control-flow idioms (a generator closed at a yield, a StopIteration that a loop or an await ends in
C, an exception that an empty handler of its frame catches, the events of an exception that has no
flight) and for the common path of an exception raised and handled (a counted flight: its RAISE at a
known raise point, its RERAISE, PY_UNWIND and RAISE in each caller it propagates into, its
EXCEPTION_HANDLED, its conclusion at the thread's next RAISE): every other
exception event runs the Python callback (ExceptionCallbacks in _native.c). In exceptions mode the
start-up phase's own PY_START and PY_RETURN callbacks are in C for importlib's events
(StartupCallbacks), with the phase's Python callbacks behind them.
"""

import sys

# The interface of _native.c this module uses (its NATIVE_API_VERSION).
API_VERSION = 11

NATIVE = "native"
PYTHON = "python"

_loaded = None  # (module or None, why not)


def load():
    """(the _native module's types, "") or (None, why it cannot be used); imported once."""
    global _loaded
    if _loaded is None:
        try:
            from ._native import (API_VERSION as built_version, Callbacks, CodeKeys, Counter, ExceptionCallbacks,
                                  NoteWatch, Outbox, RecordBuffer, StartupCallbacks, current_exceptions,
                                  current_frames, dup_above)
        except ImportError as exc:
            _loaded = (None, "the C extension is not built for this Python (%s)" % (exc,))
        except Exception as exc:  # a broken build: never the program's problem
            _loaded = (None, "the C extension failed to load (%s: %s)" % (type(exc).__name__, exc))
        else:
            if built_version == API_VERSION:
                _loaded = (_NativeTypes(Callbacks, CodeKeys, ExceptionCallbacks, RecordBuffer, Outbox, NoteWatch,
                                        StartupCallbacks, Counter, current_frames, current_exceptions, dup_above),
                           "")
            else:
                _loaded = (None, "the C extension was built from another version of the shim (interface %s, "
                                 "not %s): rebuild it" % (built_version, API_VERSION))
    return _loaded


class _NativeTypes:
    __slots__ = ("Callbacks", "CodeKeys", "ExceptionCallbacks", "RecordBuffer", "Outbox", "NoteWatch",
                 "StartupCallbacks", "Counter", "current_frames", "current_exceptions", "dup_above")

    def __init__(self, callbacks, code_keys, exception_callbacks, record_buffer, outbox, note_watch, startup_callbacks,
                 counter, current_frames, current_exceptions, dup_above):
        self.Callbacks = callbacks
        self.CodeKeys = code_keys
        self.ExceptionCallbacks = exception_callbacks
        self.RecordBuffer = record_buffer
        self.Outbox = outbox
        self.NoteWatch = note_watch
        self.StartupCallbacks = startup_callbacks
        self.Counter = counter  # itertools.count's twin, which ExceptionCallbacks advances in place
        self.current_frames = current_frames  # sys._current_frames() of this interpreter's threads only
        self.current_exceptions = current_exceptions  # and sys._current_exceptions()
        self.dup_above = dup_above  # fcntl(fd, F_DUPFD_CLOEXEC, minimum)


# The most code objects whose keys the C callbacks hold in their own table (16 bytes a slot, at most half
# the slots used: 4 MiB at most); the keys of any code beyond are read from the code table's dict.
MAX_CODE_KEYS = 1 << 17


def choose(setting):
    """(use the C callbacks, a line for stderr or ""), for TELEMETRY_SHIM_NATIVE's value. With the C callbacks,
    the sender reads the threads' states with the extension too (_tables.read_threads_of_this_interpreter)."""
    from ._tables import read_threads_of_this_interpreter

    read_threads_of_this_interpreter(None)
    if setting == "off":
        return False, ""
    module, why_not = load()
    if module is not None:
        read_threads_of_this_interpreter(module)
        return True, ""
    if setting == "on":
        return False, "TELEMETRY_SHIM_NATIVE=on, but %s: recording with the Python callbacks" % why_not
    return False, ""


def new_code_keys(codes):
    """A C table of code keys copying entries of `codes` (CodeTable), emptied as its codes die."""
    module, why_not = load()
    if module is None:
        raise RuntimeError(why_not)
    code_keys = module.CodeKeys(MAX_CODE_KEYS)
    codes.forget_also(code_keys.forget)
    return code_keys


def exception_callbacks(flights, python_callbacks, codes, code_keys, failed):
    """The C exception callbacks over a FlightTable: a dict event -> callback, for the events of
    `python_callbacks` (a dict, FlightTable.callbacks(unwind=True)), which they call for every event
    they do not end themselves, and an ExceptionCallbacks object (its counters). `code_keys` copies
    codes.keys (new_code_keys). Each Python callback finds the event's frame where it would if
    registered alone: ExceptionCallbacks runs no frame."""
    module, why_not = load()
    if module is None:
        raise RuntimeError(why_not)
    from ._exceptions import program_threads

    events = sys.monitoring.events
    flights.new_counter = module.Counter  # sites made from now on; the earlier ones keep itertools.count
    native = module.ExceptionCallbacks(
        table=flights, limits=program_threads, keys=codes.keys, code_keys=code_keys,
        on_raise=python_callbacks[events.RAISE], on_reraise=python_callbacks[events.RERAISE],
        on_handled=python_callbacks[events.EXCEPTION_HANDLED], on_unwind=python_callbacks[events.PY_UNWIND],
        failed=failed, lifelines=codes.lifelines)
    return native, {events.RAISE: native.raise_, events.RERAISE: native.reraise,
                    events.EXCEPTION_HANDLED: native.exception_handled, events.PY_UNWIND: native.py_unwind}


def descriptor_duplicator(setting):
    """dup_above(fd, minimum): a close-on-exec duplicate of fd numbered `minimum` or above; the C extension's when
    TELEMETRY_SHIM_NATIVE (`setting`) lets it load, else fcntl's (imported now, on the program's thread, not on the
    sender's, whose imports would interleave with the program's)."""
    module = load()[0] if setting != "off" else None
    if module is not None:
        return module.dup_above
    import fcntl

    def dup_above(fd, minimum):
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, minimum)

    return dup_above


def note_watch(on_call, on_note_added):
    """The notes watch's CALL and C_RETURN callbacks in C (its `call` and `c_return`): they decide add_note
    themselves and call `on_note_added` (C_RETURN) at its call sites only, and `on_call` (CALL, the Python
    twin) only while `armed` is set (Recorder.run_past_call)."""
    module, why_not = load()
    if module is None:
        raise RuntimeError(why_not)
    from ._exceptions.program_threads import ADD_NOTE

    return module.NoteWatch(add_note=ADD_NOTE, disable=sys.monitoring.DISABLE, on_call=on_call,
                            on_note_added=on_note_added)


def startup_callbacks(roles, events, python_callbacks, import_role, python_roles_from, return_tag, max_events):
    """The start-up phase's PY_START and PY_RETURN callbacks in C (their `py_start` and `py_return`), over the
    phase's `roles` and raw `events`: they append importlib's events themselves and call `python_callbacks` (a
    dict event -> callback, the twin) for every other; `arming` sends an import's return to the twin."""
    module, why_not = load()
    if module is None:
        raise RuntimeError(why_not)
    events_of = sys.monitoring.events
    return module.StartupCallbacks(roles=roles, events=events, on_start=python_callbacks[events_of.PY_START],
                                   on_return=python_callbacks[events_of.PY_RETURN], import_role=import_role,
                                   python_roles_from=python_roles_from, return_tag=return_tag,
                                   max_events=max_events)


class NativeCallbacks:
    """The C callbacks of one Recorder, and the Python functions they call on their slow path.

    The slow path finds the frame an event is about two frames up (itself, its caller, the frame):
    the Python callbacks are that caller; for the C ones, which run no frame, the small function
    below is. `unwind_hook` is the exception tracker's PY_UNWIND callback (code, offset, exception),
    called before each UNWIND record; `code_keys` copies codes.call_keys (new_code_keys)."""

    def __init__(self, recorder, unwind_hook, code_keys):
        module, why_not = load()
        if module is None:
            raise RuntimeError(why_not)
        self._module = module
        slow_path = recorder._slow_path

        def native_slow_path(code, kind, buf, thread_key):
            return slow_path(code, kind, buf, thread_key)

        self.capacity_words = recorder.capacity_words
        codes = recorder.codes
        self.code_keys = code_keys
        self.callbacks = module.Callbacks(
            buffer=self.new_buffer(), thread_keys={}, call_keys=codes.call_keys, code_keys=code_keys,
            lifelines=codes.lifelines, slow_path=native_slow_path, unwind_hook=unwind_hook,
            failed=recorder.failures.failed, limit=recorder.capacity_words)
        c = self.callbacks
        # In the order of _monitor._EVENT_KINDS.
        self.event_callbacks = [c.py_start, c.py_resume, c.py_throw, c.py_return, c.py_yield, c.py_unwind]
        self.switch = c.switch

    @property
    def dropped(self):
        """Events the C callbacks dropped for a full buffer: they count them themselves, without
        calling the slow path (which counts the other drops, in CallbackFailures)."""
        return self.callbacks.dropped

    def reset_after_fork(self):
        self.callbacks.dropped = 0

    def new_buffer(self):
        """An empty buffer for a generation: preallocated, so the hot path never allocates."""
        return self._module.RecordBuffer(self.capacity_words)

    def new_outbox(self, events_frame_type, max_records_per_frame):
        """The sender's outbox for these callbacks' buffers (the twin of _sender.PythonOutbox)."""
        return self._module.Outbox(events_frame_type, max_records_per_frame)


def calibration_callback(code, ident):
    """(a C PY_START callback recording `code` on thread `ident` into a scratch buffer, the buffer),
    for measuring what one event costs; None when the extension is not loaded."""
    module, _ = load()
    if module is None:
        return None
    from ._tables import identity

    scratch = module.RecordBuffer(1 << 16)

    def never(*args):
        return None

    # No lifelines: `code` is a module function's, alive for longer than these callbacks (one calibration).
    callbacks = module.Callbacks(buffer=scratch, thread_keys={ident: 1 << 40}, call_keys={identity(code): 1 << 8},
                                 code_keys=module.CodeKeys(1), slow_path=never, unwind_hook=None, failed=never,
                                 limit=1 << 16)
    return callbacks.py_start, scratch

"""The start-up phase: from the process's start until the program is ready, with the import tree,
then the first invocations of the ready-on function.

Recording: the shim's one sys.monitoring tool id, with local events (`set_local_events`, PY_START
and PY_RETURN) on a handful of importlib's own code objects: `_find_and_load` (one import, the span
`python -X importtime` measures in import.c), `_find_spec` (find), `_load_unlocked` (load and
execute), `module_from_spec` and the standard loaders' `get_code` (the loading inside it). The
ready-on function's code (once its module is imported) and the main module's code get them too:
their first call, or the main module's end, is *ready*. No other code gets an event from them, so
the cost is a few list appends per import. Where the events arrive depends on the mode: in
exceptions mode the tool has no PY_START or PY_RETURN callback of its own, so the phase registers
its own two; in burst mode, and in exceptions mode with first invocations, the recorder has call
callbacks for its windows, and the phase's own two are registered outside them; inside windows, and
in full mode, the recorder's callbacks (C or Python) take them, and these codes are held out of the
recorder's key tables (CodeTable.hold_out) so that each of their events reaches its slow path, which
hands it to the phase before recording it as any other event. At the end (ready, then the first
invocations) the local events go off, the callbacks or the hold go, and the tool id stays the
recorder's alone.

The events append `(timestamp, role | event, thread ident, value)` to a list; `ImportTimeline`, on
the sender thread, turns them into the tree.

Ready rules, first match: `--ready-on module:function` / TELEMETRY_SHIM_READY_ON; on AWS Lambda
the function `_HANDLER` names; `telemetry_shim.mark_ready()` (any time, whatever the others say);
otherwise the end of the main module's code, or the program's exit. With a ready-on function,
burst and exceptions mode record nothing else until it is first called (importlib raises and
catches exceptions by the hundred during imports); otherwise, and in full mode, the modes record
from the start as they always do.
"""

import os
import sys
import time
from _thread import allocate_lock, get_ident
from time import perf_counter_ns

from ._native_path import NATIVE
from ._tables import identity

_monitoring = sys.monitoring
_events = _monitoring.events
# Local events only. PY_UNWIND cannot be local, and on globally it runs a callback of ours while an
# exception (SystemExit, KeyboardInterrupt) leaves the program: an import or a handler that raised is
# found instead by its frame (the next import's enclosing import, the next call's callers).
_LOCAL_EVENTS = _events.PY_START | _events.PY_RETURN

# Roles of the monitored code objects (the low bits of an event's tag).
ROLE_IMPORT = 1  # importlib._bootstrap._find_and_load
ROLE_FIND = 2  # _find_spec
ROLE_LOAD = 3  # _load_unlocked: module_from_spec, then the loader's exec_module
ROLE_CREATE = 4  # module_from_spec (inside _load_unlocked: loading)
ROLE_GET_CODE = 5  # a standard loader's get_code (inside exec_module: loading, not executing)
ROLE_HANDLER = 6  # the ready-on function
ROLE_MAIN = 7  # the main module's code: its end is ready when no other rule applies
ROLE_READY = 8  # a marker: the phase ended here
# Events, in the bits above the role.
EVENT_START = 0
EVENT_RETURN = 16
EVENT_UNWIND = 32
ROLE_MASK = 15
_ROLE_OF_TAG = tuple(tag & ROLE_MASK for tag in range(64))  # every tag: a role | an event below

# Startup.ReadyRule of shim.proto.
READY_ON_FUNCTION = 1
READY_LAMBDA_HANDLER = 2
READY_MARKED = 3
READY_MAIN_MODULE_END = 4
READY_EXIT = 5
READY_RULE_NAMES = {READY_ON_FUNCTION: "READY_ON_FUNCTION", READY_LAMBDA_HANDLER: "READY_LAMBDA_HANDLER",
                    READY_MARKED: "READY_MARKED", READY_MAIN_MODULE_END: "READY_MAIN_MODULE_END",
                    READY_EXIT: "READY_EXIT"}

# Bounds: a program that imports without end keeps a bounded tree (the rest is counted).
MAX_IMPORTS = 8_000  # a Startup message stays well under the 1 MiB frame
MAX_EVENTS = 16 * MAX_IMPORTS


def process_start_monotonic_ns():
    """(when this process started on the shim's clock, the resolution of that figure) from
    /proc/self/stat's start time (clock ticks since boot) and CLOCK_BOOTTIME read next to
    perf_counter_ns; (0, 0) when unknown."""
    try:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
        start_ticks = int(stat[stat.rindex(b")") + 2:].split()[19])
        ticks_per_s = os.sysconf("SC_CLK_TCK")
        boot_now = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        monotonic_now = perf_counter_ns()
    except (OSError, ValueError, IndexError, AttributeError):
        return 0, 0
    started = monotonic_now - (boot_now - start_ticks * 1_000_000_000 // ticks_per_s)
    return started, 1_000_000_000 // ticks_per_s


def parse_target(text):
    """'module:function' or 'module:Class.method' -> (module, attribute path); Lambda's
    'dir/module.function' too. None when it names nothing."""
    text = text.strip()
    if not text:
        return None
    if ":" in text:
        module, _, attribute = text.partition(":")
    else:
        module, _, attribute = text.rpartition(".")
    module = module.strip().replace("/", ".").strip(".")
    attribute = attribute.strip()
    if not module or not attribute:
        return None
    return module, attribute


def _importlib_roles():
    """{identity(code): role} for importlib's own functions (frozen in 3.12 and 3.13)."""
    bootstrap = sys.modules.get("_frozen_importlib")
    external = sys.modules.get("_frozen_importlib_external")
    roles = {}
    if bootstrap is None:
        return roles
    for name, role in (("_find_and_load", ROLE_IMPORT), ("_find_spec", ROLE_FIND), ("_load_unlocked", ROLE_LOAD),
                       ("module_from_spec", ROLE_CREATE)):
        function = getattr(bootstrap, name, None)
        code = getattr(function, "__code__", None)
        if code is not None:
            roles[identity(code)] = (role, code)
    if external is not None:
        for owner in ("SourceLoader", "SourcelessFileLoader"):
            function = getattr(getattr(external, owner, None), "get_code", None)
            code = getattr(function, "__code__", None)
            if code is not None:
                roles[identity(code)] = (ROLE_GET_CODE, code)
    zipimport = sys.modules.get("zipimport")
    function = getattr(getattr(zipimport, "zipimporter", None), "get_code", None)
    if getattr(function, "__code__", None) is not None:
        roles[identity(function.__code__)] = (ROLE_GET_CODE, function.__code__)
    return roles


def _resolve(module, attribute_path):
    """The code object of `module.attribute_path` (a function or a method), or None."""
    target = module
    for part in attribute_path.split("."):
        try:
            target = object.__getattribute__(target, part) if isinstance(target, type(sys)) else getattr(target, part)
        except Exception:
            return None
    target = getattr(target, "__func__", target)  # a bound or class method
    code = getattr(target, "__code__", None)
    return code if isinstance(code, type(_resolve.__code__)) else None


def _nested_code(code, qualified_name, depth=0):
    """The code object named `qualified_name` among the constants of `code`, searched depth first."""
    for constant in code.co_consts:
        if isinstance(constant, type(code)):
            if constant.co_qualname == qualified_name:
                return constant
            if depth < 8:
                found = _nested_code(constant, qualified_name, depth + 1)
                if found is not None:
                    return found
    return None


def _module_stem(filename):
    return os.path.splitext(os.path.basename(filename or ""))[0]


class StartupRecorder:
    """The start-up phase of one process: its events on the shim's tool id, the raw events; ready."""

    def __init__(self, target, rule, invocations, started_ns=None, interpreter_cpu_ns=0):
        self.tool_id = None  # the shim's tool id while the phase's events are on (install)
        self.target = target  # (module, attribute path) or None
        self.target_rule = rule  # READY_ON_FUNCTION or READY_LAMBDA_HANDLER when target is set
        self.target_text = "%s:%s" % target if target else ""
        self.invocations_planned = max(int(invocations), 0)
        self._on_ready = _nothing  # called once, on the thread that became ready (bind)
        self._on_report = _nothing  # wakes the sender: something to send
        self.shim_start_ns = perf_counter_ns() if started_ns is None else started_ns
        self.process_start_ns, self.process_start_resolution_ns = process_start_monotonic_ns()
        self.interpreter_cpu_ns = interpreter_cpu_ns
        self.shim_start_cpu_ns = 0
        self.ready_ns = 0
        self.ready_rule = 0
        self.events = []
        self.events_dropped = 0
        self.invocations_started = 0
        self.invocations_ended = 0
        self.triggers = {}  # invocation number -> faas.trigger, or ""
        self.finished = False  # the import events are no longer needed: ready, and the invocations are over
        # On AWS Lambda every call of the handler is counted when it ends, so that the agent's extension
        # knows when to export (the environment is frozen after it): its events stay on after the rest.
        self.counts_every_call = target is not None and rule == READY_LAMBDA_HANDLER
        self.calls_ended = 0  # outermost calls of the ready-on function that ended (on Lambda)
        # A call that raised is found ended by the sender thread (find_ended_calls), or by its own thread at the
        # next call: the lock (taken once per call's end) makes one of them end it.
        self._ending = allocate_lock()
        self._found_ended = {}  # ident -> identity() of the outermost frame the sender found gone
        self._handler_depth = {}  # ident -> identity() of the ready-on function's frames running on it
        self._handler_code = None
        self._main_code = None
        self._roles = {}
        self._native_callbacks = None  # the phase's own callbacks in C (_own_callbacks), or None
        self._installed = False
        self._recorder = None  # the Recorder with call callbacks (full and burst mode, exceptions mode with invocations)
        self.timeline = ImportTimeline()

    def bind(self, on_ready, on_report):
        self._on_ready = on_ready
        self._on_report = on_report

    # ---- installation ---------------------------------------------------------------------------

    def install(self, tool_id, recorder, main_code=None):
        """The events armed on the shim's tool id `tool_id` (before `recorder` installs its own): importlib's
        code, the ready-on function if its module is already imported, the main module's code. Through
        `recorder`'s call callbacks when it has them, else through callbacks of the phase's own."""
        self._roles = _importlib_roles()
        self.tool_id = tool_id
        on_event = self._make_event_handler()
        if recorder.calls:
            self._recorder = recorder
            recorder.watch_for_startup(on_event)
        if recorder.burst:  # burst mode, and exceptions mode with first invocations (windows of their own)
            # Its events come to callbacks of its own but inside windows (the first invocations', burst mode's),
            # where the recorder's take them: its slow path costs each of them several times more. The call that
            # opens an invocation's window is recorded there.
            recorder.give_call_events_outside_windows(
                self._own_callbacks(on_event, recorder, recorder.record_window_opening_start))
        elif not recorder.calls:
            for event, callback in self._own_callbacks(on_event, recorder).items():
                _monitoring.register_callback(tool_id, event, callback)
        self._installed = True
        for _role, code in list(self._roles.values()):
            self._watch(code, _LOCAL_EVENTS)
        if self.target is not None:
            module_name, qualified_name = self.target
            if main_code is not None and module_name in ("__main__", _module_stem(main_code.co_filename)):
                # The program's own module: its functions do not exist yet, their code does.
                self._arm_code(_nested_code(main_code, qualified_name))
            module = sys.modules.get(module_name)
            if module is not None and module_name != "__main__":
                self._arm_handler(module)
        if main_code is not None:
            # Also with a ready-on function: one that is never called (a typo, a program that ends first)
            # must not hold the mode's own recording to the end.
            self._main_code = main_code
            self._roles[identity(main_code)] = (ROLE_MAIN, main_code)
            self._watch(main_code, _events.PY_RETURN)
        return True

    def _own_callbacks(self, on_event, recorder, record_start=None):
        """The phase's own {event: callback}: in C when the recorder's callbacks are, with their Python twin
        behind them for the rare events."""
        callbacks = _own_callbacks(on_event, record_start)
        if recorder.callbacks_name != NATIVE:
            return callbacks
        from ._native_path import startup_callbacks

        native = startup_callbacks(self._roles, self.events, callbacks, ROLE_IMPORT, ROLE_HANDLER, EVENT_RETURN,
                                   MAX_EVENTS)
        native.arming = self.target is not None and self._handler_code is None
        self._native_callbacks = native
        return {_events.PY_START: native.py_start, _events.PY_RETURN: native.py_return}

    def _watch(self, code, events):
        recorder = self._recorder
        if recorder is not None:
            recorder.watch_code(code)
        _monitoring.set_local_events(self.tool_id, code, events)

    def _arm_handler(self, module):
        self._arm_code(_resolve(module, self.target[1]))

    def _arm_code(self, code):
        if code is None or self._handler_code is not None:
            return
        self._handler_code = code
        if self._native_callbacks is not None:
            self._native_callbacks.arming = False  # on_event arms no more
        self._roles[identity(code)] = (ROLE_HANDLER, code)
        recorder = self._recorder
        if recorder is not None and self.invocations_planned:
            recorder.codes.ready_on_code = code
        self._watch(code, _LOCAL_EVENTS)

    def release(self, final):
        """On the sender thread, once `finished` or at the end: the events no longer needed go off. On Lambda
        the handler's stay on until the end, to count its calls."""
        if final or not self.counts_every_call or self._handler_code is None:
            self.uninstall()
            return
        tool_id = self.tool_id
        if tool_id is None or not self._installed or len(self._roles) <= 1:
            return
        handler = self._handler_code
        for key, (_role, code) in list(self._roles.items()):
            if code is handler:
                continue
            del self._roles[key]  # in place: the event handler holds this dict
            try:
                _monitoring.set_local_events(tool_id, code, 0)
            except Exception:
                pass
        if self._recorder is not None:
            self._recorder.codes.take_back_all(keep=handler)

    def uninstall(self):
        """The phase's local events off, then its callbacks or the recorder's hold gone (on the sender thread
        once `finished`, or at stop, before the recorder gives the tool id back)."""
        tool_id = self.tool_id
        if tool_id is None or not self._installed:
            return
        self._installed = False
        self.tool_id = None
        for _role, code in list(self._roles.values()):
            try:
                _monitoring.set_local_events(tool_id, code, 0)
            except Exception:
                pass
        recorder, self._recorder = self._recorder, None
        if recorder is not None:
            recorder.unwatch_startup()
            if recorder.burst:
                recorder.give_call_events_outside_windows(None)
            return
        for event in (_events.PY_START, _events.PY_RETURN):
            try:
                _monitoring.register_callback(tool_id, event, None)
            except Exception:
                pass

    # ---- callbacks (program threads) ----------------------------------------------------------------

    def _make_event_handler(self):
        """on_event(code, is_return, frame, unwound): a PY_START, PY_RETURN or (`unwound`) PY_UNWIND of `code`,
        running in `frame`; True when it opened an invocation's window. Only the ready-on function's unwinds are
        read: an import that raised is found by its frame (the next import's enclosing import)."""
        roles = self._roles
        events = self.events
        extend = events.extend
        slow = self._rare_event

        def on_event(code, is_return, frame, unwound=False):
            try:
                entry = roles.get(identity(code))
                if entry is None:
                    return
                role = entry[0]
                if role >= ROLE_HANDLER:
                    return slow(role, EVENT_UNWIND if unwound else EVENT_RETURN if is_return else EVENT_START, frame)
                if unwound:
                    return
                event = EVENT_RETURN if is_return else EVENT_START
                if len(events) >= MAX_EVENTS:
                    self.events_dropped += 1
                    return
                if role == ROLE_IMPORT:
                    if is_return:
                        if self.target is not None and self._handler_code is None:
                            self._maybe_arm(frame)
                        value = identity(frame)
                    else:
                        value = (identity(frame), _enclosing_import(frame.f_back, code), frame.f_locals.get("name"))
                else:
                    value = None
                extend((perf_counter_ns(), role | event, get_ident(), value))
            except Exception:
                pass

        return on_event

    def _maybe_arm(self, frame):
        """At the return of an import (`frame`: its _find_and_load): the ready-on function is armed once its
        module is in sys.modules."""
        name = frame.f_locals.get("name")
        if name != self.target[0]:
            return
        module = sys.modules.get(name)
        if module is not None:
            self._arm_handler(module)

    def _rare_event(self, role, event, frame):
        now = perf_counter_ns()
        ident = get_ident()
        if role == ROLE_MAIN:
            if event == EVENT_RETURN:  # the recorder's callbacks hand over its other events too
                self.ready(READY_MAIN_MODULE_END, now)
            return None
        # The ready-on function: its first call is ready; the first N calls are timed, and followed in a window of
        # the call events in burst and exceptions mode. A call that raised gets an event only while the call events
        # are on (PY_UNWIND is not a local event): else the next call finds its frame no longer among its callers.
        frames = self._handler_depth.setdefault(ident, [])
        if event == EVENT_START:
            if frames:
                callers = set()
                caller = frame.f_back
                while caller is not None:
                    callers.add(identity(caller))
                    caller = caller.f_back
                while frames and frames[-1] not in callers:
                    gone = frames.pop()
                    if not frames:
                        self._end_invocation(now, ident, EVENT_UNWIND, gone)
            frames.append(identity(frame))
            if len(frames) > 1:
                return None  # a recursive call: part of the invocation
            if not self.ready_ns:
                self.ready(self.target_rule, now)
            if self.invocations_started < self.invocations_planned:
                self.invocations_started += 1
                self.triggers[self.invocations_started] = self._trigger(frame)
                recorder = self._recorder
                opened = recorder is not None and recorder.open_invocation_window()
                if opened:
                    # Timed from here: switching the events on (100-150 us the first time) is the shim's cost.
                    now = perf_counter_ns()
                self.events.extend((now, ROLE_HANDLER | EVENT_START, ident, self.invocations_started))
                return opened
            return None
        if not frames or frames[-1] != identity(frame):
            return None
        gone = frames.pop()
        if not frames:
            self._end_invocation(now, ident, event, gone)
        return None

    def _trigger(self, frame):
        """What triggered this invocation, from the handler's first argument: read now, nothing of it kept. On
        Lambda an event of no known source is "other"; elsewhere the platform's events are not read."""
        if self.target_rule != READY_LAMBDA_HANDLER:
            return ""
        try:
            code = frame.f_code
            event = frame.f_locals.get(code.co_varnames[0]) if code.co_argcount else None
            return lambda_trigger(event) or "other"
        except Exception:
            return "other"

    def _end_invocation(self, now, ident, event, outermost):
        with self._ending:
            if self._found_ended.get(ident) == outermost:
                del self._found_ended[ident]  # the sender ended it
                return
            reported = self._call_ended(now, ident, event)
        if reported:
            self._on_report()

    def _call_ended(self, now, ident, event):
        """Under _ending: counts the call's end, and ends the first invocation it was (and its window); True when
        that is news for the sender."""
        recorder = self._recorder
        if recorder is not None:
            recorder.close_invocation_window(ident)
        if self.counts_every_call:
            self.calls_ended += 1
        if self.invocations_ended >= self.invocations_started:
            return self.counts_every_call
        self.invocations_ended += 1
        self.events.extend((now, ROLE_HANDLER | event, ident, self.invocations_ended))
        if self.invocations_ended >= self.invocations_planned:
            self.finished = True
        return True

    def invocations_over(self):
        """On Lambda, how many calls of the handler have ended (outermost ones); elsewhere 0, not counted."""
        return self.calls_ended

    def find_ended_calls(self, current_frames):
        """On the sender thread, on Lambda: a handler call that raised gets no event of its own (PY_UNWIND is
        not a local event), so one whose outermost frame is no longer on its thread's stack is counted as
        ended now. `current_frames`: a callable returning sys._current_frames() (_tables.current_frames)."""
        if not self.counts_every_call:
            return
        open_calls = []
        for ident, frames in list(self._handler_depth.items()):
            try:
                outermost = frames[0]
            except IndexError:
                continue
            if self._found_ended.get(ident) != outermost:
                open_calls.append((ident, outermost))
        if not open_calls:
            return
        frames_now = current_frames()
        if not frames_now:
            return  # unavailable (other interpreters run): no call is taken for ended
        now = perf_counter_ns()
        handler = self._handler_code
        for ident, outermost in open_calls:
            frame = frames_now.get(ident)
            # The code too: once the call's frame is freed, another frame may take its address.
            while frame is not None and not (identity(frame) == outermost and frame.f_code is handler):
                frame = frame.f_back
            if frame is not None:
                continue
            with self._ending:
                frames = self._handler_depth.get(ident)
                if frames and frames[0] == outermost:  # its thread has not ended it meanwhile
                    self._found_ended[ident] = outermost
                    self._call_ended(now, ident, EVENT_UNWIND)

    # ---- ready --------------------------------------------------------------------------------------

    def ready(self, rule, now=None):
        """Ends the start-up phase (once): the marker, the mode's own recording resumes, the sender woken."""
        if self.ready_ns:
            return False
        now = perf_counter_ns() if now is None else now
        self.ready_ns = now
        self.ready_rule = rule
        self.events.extend((now, ROLE_READY, get_ident(), rule))
        if self._handler_code is None or rule in (READY_EXIT,) or self.invocations_planned == 0:
            self.finished = True
        try:
            self._on_ready()
        finally:
            self._on_report()
        return True

    # ---- the sender thread ----------------------------------------------------------------------------

    def take_reports(self, final=False, ignored_idents=()):
        """Feeds the events recorded so far to the timeline; returns what became complete:
        (the Startup message or None, [FirstInvocation messages]). Nothing is read before ready:
        the sender thread stays off the GIL while the program starts."""
        if not self.ready_ns and not final:
            return None, []
        count = len(self.events)
        chunk = self.events[:count]  # one C call each: events appended meanwhile stay
        del self.events[:count]
        self.timeline.feed(chunk, ignored_idents)
        return self.timeline.take_reports(self, final)


# faas.trigger of the OpenTelemetry semantic conventions, from the event an AWS Lambda handler is called with:
# the event sources whose documented JSON says what they are. An HTTP request (API Gateway REST and HTTP APIs,
# function URLs, Application Load Balancers) has a requestContext; a record of a stream or queue says its source.
_RECORD_TRIGGERS = {"aws:sqs": "pubsub", "aws:sns": "pubsub", "aws:kinesis": "pubsub",
                    "aws:s3": "datasource", "aws:dynamodb": "datasource"}


def lambda_trigger(event):
    """The faas.trigger value an AWS Lambda event shows ("http", "pubsub", "datasource", "timer"), or "".
    Only plain dicts and lists are read (the runtime's json.loads makes those): no method of the program's
    own classes runs here."""
    if type(event) is not dict:
        return ""
    context = event.get("requestContext")
    if type(context) is dict and ("httpMethod" in event or "routeKey" in event or "http" in context):
        return "http"
    records = event.get("Records")
    if type(records) is list and records and type(records[0]) is dict:
        source = records[0].get("eventSource") or records[0].get("EventSource")  # SNS spells it so
        return _RECORD_TRIGGERS.get(source, "") if type(source) is str else ""
    if "detail-type" in event and "source" in event:  # EventBridge
        return "timer" if event["detail-type"] == "Scheduled Event" else "pubsub"
    return ""


def _nothing():
    return None


_getframe = sys._getframe


def _own_callbacks(on_event, record_start=None):
    """{event: callback}: the phase's PY_START and PY_RETURN callbacks, where the recorder's do not take them;
    `record_start(code, frame)` records a start that opened an invocation's window."""

    def on_start(code, offset):
        frame = _getframe(1)
        if on_event(code, False, frame) and record_start is not None:
            record_start(code, frame)

    def on_return(code, offset, value):
        on_event(code, True, _getframe(1))

    on_start.__qualname__ = on_return.__qualname__ = "telemetry_shim.startup_callback"
    return {_events.PY_START: on_start, _events.PY_RETURN: on_return}


def _enclosing_import(frame, import_code):
    """identity() of the nearest _find_and_load frame among `frame` and its callers, 0 when none."""
    while frame is not None:
        if frame.f_code is import_code:
            return identity(frame)
        frame = frame.f_back
    return 0


class _Node:
    __slots__ = ("index", "name", "start", "end", "parent", "phase", "failed", "found", "roles", "find_ns",
                 "load_ns", "load_parts_ns", "children_ns", "children_in", "region", "frame", "recorded")

    def __init__(self, index, start, parent, phase, frame=0, recorded=True):
        self.index = index
        self.name = None
        self.start = start
        self.end = 0
        self.parent = parent
        self.phase = phase
        self.failed = False
        self.found = False  # _find_spec ran: the module was really imported, not found in sys.modules
        self.roles = []  # [role, start] of the open importlib frames inside this import
        self.find_ns = 0
        self.load_ns = 0
        self.load_parts_ns = 0
        self.children_ns = 0
        self.children_in = [0, 0, 0]  # children's time inside: find, loading, executing
        self.region = parent.region_now() if parent is not None else None  # where in its parent it ran
        self.frame = frame  # identity() of its _find_and_load frame, to pair its return (or see it raised)
        self.recorded = recorded  # False: outside the recorded phases or beyond the bound, kept for pairing

    def region_now(self):
        """Where a child import starting now falls: 0 find, 1 loading, 2 executing, None elsewhere."""
        roles = self.roles
        if not roles:
            return None
        if roles[0][0] == ROLE_FIND:
            return 0
        if roles[0][0] == ROLE_LOAD:
            if len(roles) > 1 and roles[1][0] in (ROLE_CREATE, ROLE_GET_CODE):
                return 1
            return 2
        return None

    def message(self, parent_position):
        cumulative = max(self.end - self.start, 0)
        self_ns = max(cumulative - self.children_ns, 0)
        find = max(self.find_ns - self.children_in[0], 0)
        execute = max(self.load_ns - self.load_parts_ns - self.children_in[2], 0)
        load = max(self_ns - find - execute, 0)
        return {"module": self.name or "?", "parent": parent_position, "start_ns": self.start, "end_ns": self.end,
                "find_ns": find, "load_ns": load, "exec_ns": execute, "failed": self.failed}


class ImportTimeline:
    """Raw start-up events -> import nodes per phase (0 start-up, k invocation k), on the sender thread."""

    def __init__(self):
        self.nodes = []
        self.stacks = {}  # ident -> open import nodes, innermost last
        self.phase = 0  # 0 before ready; k inside invocation k; -1 between invocations (not recorded)
        self.ready_seen = False
        self.startup_sent = False
        self.invocations = {}  # number -> {"number", "start_ns", "end_ns", "raised"}
        self.invocations_done = []
        self.imports_dropped = 0

    def feed(self, events, ignored_idents=()):
        stacks = self.stacks
        flat = iter(events)
        for ts, tag, ident, value in zip(flat, flat, flat, flat):
            if ident in ignored_idents:
                continue  # the shim's own thread
            role = _ROLE_OF_TAG[tag]  # tag & ROLE_MASK, without an int operation (3.12 does not specialize &)
            event = tag - role
            if role == ROLE_READY:
                self.ready_seen = True
                self.phase = -1
                continue
            if role == ROLE_HANDLER:
                if event == EVENT_START:
                    self.invocations[value] = {"number": value, "start_ns": ts, "end_ns": 0,
                                               "raised": False}
                    self.phase = value
                else:
                    invocation = self.invocations.get(value)
                    if invocation is not None:
                        invocation["end_ns"] = ts
                        invocation["raised"] = event == EVENT_UNWIND
                        self.invocations_done.append(value)
                    self.phase = -1
                continue
            stack = stacks.get(ident)
            if role == ROLE_IMPORT:
                if stack is None:
                    stack = stacks[ident] = []
                if event == EVENT_START:
                    frame, enclosing, name = value
                    enclosing = enclosing or None
                    # Imports above the one this runs inside raised (no event says so): closed here.
                    if stack and stack[-1].frame != enclosing:  # (no call in the common case)
                        self._unwind_to(stack, enclosing, ts)
                    if stack:
                        parent = stack[-1] if stack[-1].recorded else None
                        recorded = parent is not None
                    else:
                        parent = None
                        recorded = self.phase >= 0 and len(self.nodes) < MAX_IMPORTS
                        if self.phase >= 0 and not recorded:
                            self.imports_dropped += 1
                    phase = parent.phase if parent is not None else self.phase
                    node = _Node(len(self.nodes), ts, parent, phase, frame, recorded)
                    node.name = name if type(name) is str else None
                    if recorded:
                        self.nodes.append(node)
                    stack.append(node)
                    continue
                # Commonly the innermost import returns; else the ones above it raised (closed here), or it was
                # running when the shim started (not on the stack: nothing to do).
                if stack and stack[-1].frame != value and value in [entry.frame for entry in stack]:
                    self._unwind_to(stack, value, ts)
                if stack and stack[-1].frame == value:
                    node = stack.pop()
                    if node.recorded:
                        self._close(node, ts, failed=False)
                continue
            if not stack:
                continue
            node = stack[-1]
            if not node.recorded:
                continue
            roles = node.roles
            if event == EVENT_START:
                roles.append((role, ts))
                continue
            if not roles or roles[-1][0] != role:
                continue
            started = roles.pop()[1]
            duration = ts - started if ts > started else 0
            if role == ROLE_FIND:
                if not roles and not node.found:
                    node.found = True
                    node.find_ns = duration
                    if value:
                        node.name = value
            elif role == ROLE_LOAD:
                if not roles:
                    node.load_ns += duration
            elif (role == ROLE_CREATE or role == ROLE_GET_CODE) and len(roles) == 1 and roles[0][0] == ROLE_LOAD:
                node.load_parts_ns += duration

    def _unwind_to(self, stack, frame, ts):
        """Closes, as failed at `ts`, the imports above the one whose frame is `frame` (all of them for None):
        they raised, so no return event came."""
        while stack and stack[-1].frame != frame:
            node = stack.pop()
            if node.recorded:
                self._close(node, ts, failed=True)

    def _close(self, node, ts, failed):
        node.end = ts
        node.failed = failed
        parent = node.parent
        if parent is not None:
            cumulative = max(ts - node.start, 0)
            parent.children_ns += cumulative
            if node.region is not None:
                parent.children_in[node.region] += cumulative

    def _messages(self, phase, end_ns):
        """The import messages of `phase`, in start order, parents by 1-based position; imports still
        open are closed at `end_ns`; imports of already loaded modules (no find) are left out."""
        chosen = [node for node in self.nodes if node.phase == phase]
        for node in chosen:
            if not node.end:
                node.end = max(end_ns, node.start)
        positions = {}
        out = []
        for node in chosen:
            if not node.found and not node.failed:
                continue
            parent = node.parent
            while parent is not None and parent.index not in positions:
                parent = parent.parent
            positions[node.index] = len(out) + 1
            out.append(node.message(positions[parent.index] if parent is not None else 0))
        return out

    def _invocation_message(self, invocation, recorder):
        """A FirstInvocation message: the invocation's times, its imports, what triggered it."""
        number = invocation["number"]
        invocation["imports"] = self._messages(number, invocation["end_ns"])
        invocation["trigger"] = recorder.triggers.get(number, "")
        return invocation

    def take_reports(self, recorder, final):
        startup = None
        if not self.startup_sent and (self.ready_seen or final):
            open_startup = bool([node for node in self.nodes if node.phase == 0 and not node.end])
            if final or not open_startup:
                self.startup_sent = True
                ready_ns = recorder.ready_ns or perf_counter_ns()
                startup = {
                    "ready_rule": recorder.ready_rule or READY_EXIT,
                    "ready_target": recorder.target_text,
                    "process_start_ns": recorder.process_start_ns,
                    "process_start_resolution_ns": recorder.process_start_resolution_ns,
                    "shim_start_ns": recorder.shim_start_ns,
                    "ready_ns": ready_ns,
                    "interpreter_cpu_ns": recorder.interpreter_cpu_ns,
                    "shim_start_cpu_ns": recorder.shim_start_cpu_ns,
                    "imports": self._messages(0, ready_ns),
                    "imports_dropped": self.imports_dropped,
                    "first_invocations_planned": recorder.invocations_planned if recorder.target else 0,
                }
        invocations = []
        if self.startup_sent:
            for number in self.invocations_done:
                invocations.append(self._invocation_message(self.invocations.pop(number), recorder))
            self.invocations_done = []
            if final:
                for _number, invocation in sorted(self.invocations.items()):
                    invocation["end_ns"] = invocation["end_ns"] or perf_counter_ns()
                    invocations.append(self._invocation_message(invocation, recorder))
                self.invocations.clear()
            if invocations or startup is not None:
                done = {0, *[invocation["number"] for invocation in invocations]}
                self.nodes = [node for node in self.nodes if not node.end or node.phase not in done]
        return startup, invocations

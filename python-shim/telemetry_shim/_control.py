"""start/stop/is_active behind the public API: one shim per process, atexit flush, fork handlers.

Nothing here may raise into the program: every entry point catches everything.
"""

import os
import sys
import threading
import time

from ._package import PACKAGE_DIR, VERSION

_control_lock = threading.RLock()
_shim = None  # the running _Shim, if any
_hooks_registered = False
_warned = False
_startup_recorded = False  # a process has one start-up phase: a later start() records none


def warn_once(message):
    """At most one line on stderr for the whole process, whatever goes wrong."""
    global _warned
    if _warned:
        return
    _warned = True
    try:
        sys.stderr.write(message.rstrip("\n") + "\n")
        sys.stderr.flush()
    except BaseException:
        pass


def _process_start_unix_ns():
    """When this process started (Linux /proc), else 0 for unknown."""
    try:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
        # Fields after the parenthesised command name; starttime is field 22 overall.
        start_ticks = int(stat[stat.rindex(b")") + 2:].split()[19])
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"btime "):
                    boot_s = int(line.split()[1])
                    break
            else:
                return 0
        ticks_per_s = os.sysconf("SC_CLK_TCK")
        return boot_s * 1_000_000_000 + start_ticks * 1_000_000_000 // ticks_per_s
    except (OSError, ValueError, IndexError):
        return 0


class _Shim:
    def __init__(self, tool_id, settings, exceptions=True, startup=None):
        from ._exceptions import stretch_intervals
        from ._monitor import Recorder
        from ._native_path import choose
        from ._settings import CodeFilter

        self.settings = settings
        stretch_intervals(settings.slowdown)
        self.tool_id = tool_id
        self.working_directory = _cwd()
        # Read now, not at connect time: multiprocessing's spawn child replaces sys.argv with its
        # parent's before the sender may have connected.
        self.argv = [str(a) for a in getattr(sys, "argv", None) or ()]
        # From the settings, read at start: at exit the events are still on until stop(), and
        # os.environ is Python code.
        self.exit_timeout_s = settings.exit_timeout_s
        native, problem = choose(settings.native)
        if problem:
            warn_once("telemetry_shim: " + problem)
        # Exceptions mode still records the first invocations' call trees: with the call callbacks, on in their windows.
        follows_invocations = startup is not None and startup.target is not None and startup.invocations_planned > 0
        self.recorder = Recorder(settings.buffer_events, PACKAGE_DIR, self._internal_error, calls=settings.calls,
                                 exceptions=exceptions, burst=settings.mode == "burst",
                                 code_filter=CodeFilter(settings.include, settings.exclude), native=native,
                                 note_watch=settings.note_watch,
                                 invocations_only=follows_invocations and not settings.calls)
        self.startup = startup
        if startup is not None:
            # With a ready-on function, burst and exceptions mode record nothing else until it is
            # called (the start-up's own exceptions and windows would cost it the most). Without one,
            # ready may never come before the end: they record from the start, as always.
            self.recorder.held_for_startup = settings.mode != "full" and startup.target is not None
            startup.bind(self.recorder.resume_after_startup, self._wake_sender)
        self.sender = self._new_sender()
        self.process_start_unix_ns = _process_start_unix_ns()
        # Imported now, on the program's thread (0.2 ms): an import on the sender thread would interleave with the
        # program's own, and CPython's -X importtime nests the imports of all threads as one.
        from ._container import container_and_pod

        self._container_and_pod = container_and_pod

    def _new_sender(self):
        from ._sender import Sender

        sender = Sender(self.recorder, self.settings.socket_path, self.hello_fields, warn_once,
                        self.settings.flush_interval_s, self.settings)
        sender.startup = self.startup
        return sender

    def _wake_sender(self):
        self.sender._wake_up()

    def begin(self, main_code=None):
        startup = self.startup
        if startup is not None and not startup.install(self.tool_id, self.recorder, main_code):
            self.recorder.held_for_startup = False
        self.sender.start_thread()
        self.recorder.install(self.tool_id)

    @property
    def running(self):
        return not self.sender.finished.is_set() and self.recorder.failures.failure is None

    def hello_fields(self):
        monotonic_ns = time.perf_counter_ns()
        unix_ns = time.time_ns()
        fields = {
            "protocol_version": 1,
            "shim_version": VERSION,
            "pid": os.getpid(),
            "parent_pid": os.getppid(),
            "process_start_unix_ns": self.process_start_unix_ns,
            "executable": sys.executable or "",
            "argv": self.argv,
            "python_implementation": sys.implementation.name,
            "python_version": sys.version.split()[0],
            "host_name": _host_name(),
            "clock_monotonic_ns": monotonic_ns,
            "clock_unix_ns": unix_ns,
            "tool_id": self.tool_id,
            "working_directory": self.working_directory,
            "callbacks": self.recorder.callbacks_name,
        }
        fields["container_id"], fields["pod_uid"] = self._container_and_pod()
        fields.update(self.settings.hello_fields())
        return fields

    def _internal_error(self):
        # Called from a callback that already turned the events off; the sender says goodbye.
        self.sender.request_stop(3, self.recorder.failures.failure or "")  # REASON_ERROR
        warn_once("telemetry_shim: internal error, recording stopped (%s)" % (self.recorder.failures.failure,))

    def stop(self, reason, timeout):
        if self.startup is not None:
            self.startup.ready(5)  # READY_EXIT: the program ends (or stops the shim) before it was ready
        self.recorder.stop_events()
        self.sender.restart_after_fork()  # still away since a fork: it must say goodbye
        self.sender.request_stop(reason)
        self.sender.finished.wait(max(float(timeout), 0.0))
        if self.startup is not None:
            self.startup.uninstall()  # its local events, before the tool id is given back
        self.recorder.uninstall()

    # ---- fork ---------------------------------------------------------------------------------

    def before_fork(self):
        # The sender thread leaves first (bounded wait), so that the process forks with the
        # program's threads only; then the lock keeps the tables still across fork().
        self.sender.pause_for_fork()
        self.sender.lock.acquire()

    def after_fork_in_parent(self, fork_frame):
        sender = self.sender
        sender.lock.release()
        # A new sender thread starts once os.fork() has returned: on 3.13 CPython counts the
        # process's threads after the after-fork handlers (this one included).
        if sender.end_pause() and not self.recorder.run_past_call(fork_frame, sender.restart_after_fork):
            sender.restart_after_fork()

    def after_fork_in_child(self):
        old_sender = self.sender
        old_sender.lock.release()
        old_sender.abandon_in_child()
        self.recorder.disarm_past_call()  # armed by an earlier fork of the parent: not for us
        self.recorder.threads.ignored_idents.pop(old_sender.thread_ident, None)
        if self.startup is not None:
            # The parent's start-up, not this process's: a forked child has none of its own.
            self.startup.uninstall()
            self.startup = None
            self.recorder.resume_after_startup()
        if old_sender.finished.is_set() or self.recorder.tool_id is None:
            return False
        self.process_start_unix_ns = _process_start_unix_ns()
        self.recorder.reset_after_fork()
        self.sender = self._new_sender()
        self.sender.start_thread()
        return True


def _in_main_interpreter():
    import _thread

    is_main = getattr(_thread, "_is_main_interpreter", None)
    return is_main is None or is_main()


def _cwd():
    try:
        return os.getcwd()
    except OSError:
        return ""


def _host_name():
    try:
        import _socket

        return _socket.gethostname()
    except OSError:
        return ""


def start(socket_path, service_name, calls=True, exceptions=True, mode=None, default_mode="full", autostart=False,
          ready_on=None, main_code=None):
    global _shim, _startup_recorded
    entered_cpu_ns = time.process_time_ns()
    try:
        with _control_lock:
            if _shim is not None:
                if _shim.running:
                    return True
                _shim.sender.finished.wait(0.5)
                _shim.recorder.uninstall()
                _shim = None
            if sys.version_info < (3, 12) or not hasattr(sys, "monitoring"):
                warn_once("telemetry_shim: disabled, Python 3.12+ with sys.monitoring is required")
                return False
            if not _in_main_interpreter():
                # A subinterpreter shares the main one's deep-frozen code objects (3.12): instrumenting
                # them from two interpreters corrupts memory. The main interpreter's shim is the one.
                return False
            from ._settings import read_settings

            settings = read_settings(mode if calls else "exceptions", default_mode, socket_path, service_name, autostart,
                                     ready_on=ready_on)
            if settings.problems:
                warn_once("telemetry_shim: %s" % "; ".join(settings.problems))
            if not settings.calls and not exceptions:
                warn_once("telemetry_shim: nothing to record (no calls, exceptions=False); running untraced")
                return False
            from ._monitor import claim_tool_id

            tool_id = claim_tool_id(settings.tool_ids)
            if tool_id is None:
                warn_once("telemetry_shim: no free sys.monitoring tool id (3 and 4 are in use; 0-2 and 5 belong to "
                          "debuggers, coverage, profilers and optimizers); running untraced")
                return False
            startup = None
            try:
                if settings.startup and not _startup_recorded:
                    _startup_recorded = True
                    startup = _new_startup(settings, entered_cpu_ns)
                shim = _Shim(tool_id, settings, exceptions, startup)
                _register_hooks()
                shim.begin(main_code or _outermost_code())
            except BaseException as exc:
                if startup is not None:
                    startup.uninstall()
                try:
                    sys.monitoring.set_events(tool_id, 0)
                    sys.monitoring.free_tool_id(tool_id)
                except BaseException:
                    pass
                warn_once("telemetry_shim: could not start (%s: %s); running untraced" % (type(exc).__name__, exc))
                return False
            _shim = shim
            if startup is not None:
                startup.shim_start_cpu_ns = time.process_time_ns() - entered_cpu_ns
            return True
    except BaseException:
        return False


def _new_startup(settings, entered_cpu_ns):
    """The start-up phase's recorder; it shares the shim's tool id (_startup)."""
    from ._startup import READY_LAMBDA_HANDLER, READY_ON_FUNCTION, StartupRecorder

    return StartupRecorder(settings.ready_on, READY_LAMBDA_HANDLER if settings.ready_on_lambda else READY_ON_FUNCTION,
                           settings.first_invocations, interpreter_cpu_ns=entered_cpu_ns)


def _outermost_code():
    """The code of the outermost frame of this thread: the program's main module (autostart, or
    start() called from it), whose end ends the start-up phase when no other rule applies. None on
    another thread: its outermost frame is the thread's, not the program's."""
    if threading.get_ident() != threading.main_thread().ident:
        return None
    frame = sys._getframe(1)
    while frame.f_back is not None:
        frame = frame.f_back
    if frame.f_code.co_filename.startswith(PACKAGE_DIR):
        return None
    return frame.f_code


def mark_ready():
    """The program says it is ready: the start-up phase ends now (once)."""
    try:
        shim = _shim
        if shim is not None and shim.startup is not None:
            from ._startup import READY_MARKED

            return shim.startup.ready(READY_MARKED)
    except BaseException:
        pass
    return False


def stop(timeout, reason=2):  # REASON_DETACH
    global _shim
    try:
        with _control_lock:
            shim = _shim
            _shim = None
            if shim is not None:
                shim.stop(reason, timeout)
    except BaseException:
        pass


def is_active():
    try:
        shim = _shim
        return shim is not None and shim.running
    except BaseException:
        return False


def _at_exit():
    shim = _shim
    if shim is not None:
        stop(shim.exit_timeout_s, reason=1)  # REASON_EXIT


class _Anchor:
    """A weakly referenceable object for multiprocessing.util.register_after_fork."""


_multiprocessing_anchor = _Anchor()
_multiprocessing_hooked = False


def _hook_multiprocessing():
    """multiprocessing's fork children leave through os._exit(), which skips atexit; its own
    exit function runs registered finalizers first, so the child's flush is registered there
    (after the child's registry is cleared, hence register_after_fork)."""
    global _multiprocessing_hooked
    util = sys.modules.get("multiprocessing.util")
    if util is None or _multiprocessing_hooked:
        return
    util.register_after_fork(_multiprocessing_anchor, _add_multiprocessing_finalizer)
    _multiprocessing_hooked = True


def _add_multiprocessing_finalizer(_anchor):
    util = sys.modules.get("multiprocessing.util")
    if util is not None and _shim is not None:
        util.Finalize(None, _at_exit, exitpriority=-1000)  # after the program's own finalizers


def _before_fork():
    try:
        _hook_multiprocessing()
    except BaseException:
        pass
    try:
        _control_lock.acquire()
        if _shim is not None:
            _shim.before_fork()
    except BaseException:
        pass


def _after_fork_in_parent():
    try:
        if _shim is not None:
            _shim.after_fork_in_parent(sys._getframe(1))  # the frame that called os.fork()
    except BaseException:
        pass
    finally:
        try:
            _control_lock.release()
        except BaseException:
            pass


def _after_fork_in_child():
    global _control_lock, _shim
    # The parent's lock may be held by a thread that does not exist here: start from a new one.
    _control_lock = threading.RLock()
    try:
        shim = _shim
        if shim is not None:
            ident = threading.get_ident()
            shim.recorder.threads.ignored_idents[ident] = None  # do not record our own setup
            try:
                if not shim.after_fork_in_child():
                    _shim = None
            finally:
                shim.recorder.threads.ignored_idents.pop(ident, None)
    except BaseException:
        _shim = None


def _register_hooks():
    global _hooks_registered
    if _hooks_registered:
        return
    import atexit

    atexit.register(_at_exit)
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                            after_in_child=_after_fork_in_child)
    _hooks_registered = True

"""The sender: the shim's own thread, the only user of the socket.

Every tick (flush interval, sooner when the last drain found the buffer filling up) it takes the
pending records, sends DEFINITIONS before the EVENTS that use them, and STATS about once a
second. When the agent is absent or too slow, records are dropped and counted, and connecting is
retried with backoff; each new connection starts with a fresh HELLO, every definition again,
and a new recorder generation so that every thread is re-seeded (the agent starts a new session).
"""

import _socket  # socket.py would import enum, selectors and more at every start: the C module does it all
import _thread
import os
import threading
from time import monotonic, perf_counter_ns, sleep, thread_time_ns

from . import _wire
from ._native_path import descriptor_duplicator
from ._tables import current_frames

CONNECT_TIMEOUT_S = 1.0
# The socket's descriptor is numbered from here up: a program (or a child it starts) expects the lowest free
# numbers to be the ones it would get without the shim (os.pipe(), a number handed to a child, a dup2 target).
SOCKET_FD_MINIMUM = 512
# An agent that takes no byte for this long is stalled: the connection is given up. It bounds each
# send() call, not a whole batch: a slow agent that keeps reading keeps its connection.
SEND_STALL_TIMEOUT_S = 5.0
SEND_STALL_TIMEOUT_MS = int(SEND_STALL_TIMEOUT_S * 1000)
STATS_INTERVAL_S = 1.0
MIN_BACKOFF_S = 0.1
MAX_BACKOFF_S = 5.0
# A connection cut sooner than this after it opened (an agent that refuses us, e.g. for a limit)
# keeps doubling the wait before the next one, up to MAX_CUT_BACKOFF_S: no reconnect storm.
HEALTHY_CONNECTION_S = 10.0
MAX_CUT_BACKOFF_S = 60.0
# When a drain finds the buffer at least this full, the next tick comes sooner.
BUSY_FRACTION = 4
BUSY_INTERVAL_S = 0.001
# Burst mode between windows: only exceptions and STATS to ship, so the sender wakes less often.
BURST_IDLE_INTERVAL_S = 0.2
# Burst and exceptions mode: the longest a first invocation's window keeps the call events on.
MAX_INVOCATION_WINDOW_NS = 30 * 10**9
# How long a fork waits for the sender thread to leave (then it forks with the thread running).
FORK_PAUSE_TIMEOUT_S = 0.05
_TASK_DIR = "/proc/self/task"
# Sender thread states around a fork.
_RUNNING = 0
_PAUSE_REQUESTED = 1
_LEFT = 2  # the thread left; a new one is owed (restart_after_fork)
_FINISHED = 3
# A write to a connection the agent closed must fail with EPIPE, never raise SIGPIPE: a program
# that restored SIG_DFL for it (common in CLI tools) would be killed by our write.
SEND_FLAGS = getattr(_socket, "MSG_NOSIGNAL", 0)


class Sender:
    def __init__(self, recorder, socket_path, hello_fields, warn_once, flush_interval_s, settings=None):
        self.recorder = recorder
        self.socket_path = socket_path
        self._hello_fields = hello_fields  # callable returning the Hello dict for a new connection
        self._warn_once = warn_once
        self._dup_above = descriptor_duplicator(settings.native if settings is not None else "auto")
        stretch = settings.slowdown if settings is not None else 1.0
        self.flush_interval_s = flush_interval_s * stretch
        self._busy_interval_s = BUSY_INTERVAL_S * stretch
        self._burst_idle_interval_s = BURST_IDLE_INTERVAL_S * stretch
        self._stats_interval_s = STATS_INTERVAL_S * stretch

        # Held while taking records and definitions (and by the fork handlers), never during I/O.
        self.lock = threading.Lock()
        # Wakes the thread early: held while nobody asked; release() is the signal. A raw lock,
        # so that waking (from a fork handler, say) runs no Python code in the program's thread.
        self._wake = _thread.allocate_lock()
        self._wake.acquire()
        self.finished = threading.Event()
        self._stop_reason = None
        self._stop_detail = ""
        self.thread_ident = None
        self.native_id = None

        # Fork pause (see pause_for_fork): the thread's state, changed under _run_lock only.
        self._run_lock = threading.Lock()
        self._run_state = _RUNNING
        self._left = None  # the running thread's "left" signal, released when it leaves for a fork

        self._sock = None
        # What a tick writes: in C beside the C callbacks (written with the GIL released once),
        # else its Python twin.
        if recorder.native is not None:
            self._outbox = recorder.native.new_outbox(_wire.FRAME_EVENTS, _wire.MAX_RECORDS_PER_FRAME)
        else:
            self._outbox = PythonOutbox()
            if recorder.calls:
                import array  # noqa: F401  for its call records: now, not on the sender thread while the program starts
        self._fresh_generation = True  # no record of this generation went anywhere but here
        self._retired_buffer = None
        self._next_connect_at = 0.0
        self._exit_connect_tried = False  # the exit flush tries one connection, whatever the backoff
        self._backoff_s = MIN_BACKOFF_S
        self._connected_at = 0.0
        self._next_stats_at = 0.0
        self._invocations_over_sent = 0  # Stats.invocations_ended in the last STATS sent on this connection

        self.connects = 0
        self.events_taken = 0  # records taken out of the buffer (sent or dropped)
        self.events_dropped_here = 0
        self.events_sent = 0  # on the current connection
        self.frames_sent = 0  # on the current connection
        self._code_definitions_sent = 0
        self._threads_defined = set()  # thread ids defined on the current connection

        # The shim's own cost (STATS overhead_ns): events x the calibrated cost of one callback,
        # plus this thread's CPU time (which includes opening and closing windows).
        self.started_ns = perf_counter_ns()
        self.event_cost_ns = 0  # calibrated by the thread when it starts
        self.cpu_ns = 0
        self._cpu_mark = 0
        # Burst mode's schedule, and the calibration of one call event (modes that record calls, not the first
        # invocations' windows alone: a few of them, whose events cost little): _windows is imported here, at
        # start, by those modes only: not by the sender thread while the program starts, where its imports would
        # interleave with the program's (-X importtime would nest them wrongly).
        self.windows = None
        self._calibrate_event_cost = None
        if recorder.calls and not recorder.invocations_only:
            from ._windows import BurstWindows, calibrate_event_cost

            self._calibrate_event_cost = calibrate_event_cost
            if recorder.burst:
                self.windows = BurstWindows(recorder, settings, self.started_ns)
        self.startup = None  # the start-up phase (_startup.StartupRecorder), when it is recorded
        self._startup_unsent = {}  # Stats fields of the start-up phase not yet sent on this connection

    # ---- lifecycle -------------------------------------------------------------------------------

    def start_thread(self):
        # A raw thread: not in threading.enumerate(), not joined at shutdown, invisible to the
        # program. Its first Python code is ours, so it is ignored before it runs anything else.
        left = _thread.allocate_lock()
        left.acquire()
        self._left = left
        _thread.start_new_thread(self._run, (left,))

    def _wake_up(self):
        try:
            self._wake.release()
        except RuntimeError:
            pass  # already signalled

    def request_stop(self, reason, detail=""):
        if self._stop_reason is None:
            self._stop_detail = detail
            self._stop_reason = reason
        self._wake_up()

    def _run(self, left):
        self.thread_ident = _thread.get_ident()
        self.native_id = _thread.get_native_id()
        self.recorder.threads.ignored_idents[self.thread_ident] = None
        self._cpu_mark = thread_time_ns()
        left_for_fork = False
        try:
            if self._calibrate_event_cost is not None and not self.event_cost_ns:
                self.event_cost_ns = self._calibrate_event_cost(self.recorder)
            windows = self.windows
            idle_interval = self._burst_idle_interval_s if windows is not None else self.flush_interval_s
            while self._stop_reason is None:
                if self._run_state == _PAUSE_REQUESTED and self._leave_for_fork():
                    left_for_fork = True
                    return
                if windows is not None:
                    self._service_windows(windows)
                # Inside a window the sender keeps off the GIL (the window closes on time and the
                # program is not slowed twice), unless the buffer is filling up.
                if windows is None or not windows.is_open or self._filling_up():
                    busy = self._tick()
                else:
                    busy = False
                timeout = self._busy_interval_s if busy else self.flush_interval_s
                # Held for the start-up phase: no window is due (ready wakes this thread).
                if windows is not None and not self.recorder.held_for_startup:
                    due = windows.seconds_until_due(perf_counter_ns())
                    if not windows.is_open and not busy:
                        timeout = idle_interval
                    if due is not None:
                        timeout = min(timeout, due)
                self._count_cpu()
                self._wake.acquire(True, timeout)
            self._finish()
        except Exception as exc:
            self._fail(exc)
        except BaseException:
            pass  # never surface anything on the program's stderr from our thread
        finally:
            if not left_for_fork:
                with self._run_lock:
                    self._run_state = _FINISHED
                self._close()
                self.finished.set()
            left.release()

    # ---- fork -------------------------------------------------------------------------------------
    #
    # CPython 3.12+ warns on stderr (DeprecationWarning, shown for forks from __main__; an error
    # under -W error) when a process forks while it has more than one OS thread. So that the
    # shim never adds that warning, its thread leaves before fork() and a new one takes over
    # afterwards, with the same connection and the same pending records. CPython counts the
    # threads after the after-fork handlers on 3.13 (before them on 3.12), so the new thread
    # starts later (the recorder's run_past_call).

    def pause_for_fork(self):
        """Before fork(): asks the thread to leave between ticks and waits until its OS thread
        is gone, at most FORK_PAUSE_TIMEOUT_S (then the fork goes on with it running). Returns
        whether it is gone."""
        with self._run_lock:
            state = self._run_state
            if state != _RUNNING:
                return state != _PAUSE_REQUESTED  # away since an earlier fork, or finished
            self._run_state = _PAUSE_REQUESTED
        self._wake_up()
        deadline = monotonic() + FORK_PAUSE_TIMEOUT_S
        if not self._left.acquire(True, FORK_PAUSE_TIMEOUT_S):
            return False
        # The thread has run its last Python code; its OS thread ends a moment later. (os.stat,
        # not os.path.exists: no Python code of the stdlib here, it would be recorded as calls.)
        task = "%s/%d" % (_TASK_DIR, self.native_id)
        while True:
            try:
                os.stat(task)
            except OSError:
                return True
            if monotonic() >= deadline:
                return False
            sleep(0.0001)

    def _leave_for_fork(self):
        with self._run_lock:
            if self._run_state != _PAUSE_REQUESTED:
                return False
            self._run_state = _LEFT
            return True

    def end_pause(self):
        """After fork(), in the parent: calls the pause off. Returns True when the thread had
        left, so that a new one is owed (restart_after_fork); a thread that did not leave in
        time simply goes on."""
        with self._run_lock:
            if self._run_state == _PAUSE_REQUESTED:
                self._run_state = _RUNNING
            return self._run_state == _LEFT

    def restart_after_fork(self):
        """Starts the thread that takes over from the one that left for a fork (once)."""
        with self._run_lock:
            if self._run_state != _LEFT:
                return
            self._run_state = _RUNNING
        self.recorder.threads.ignored_idents.pop(self.thread_ident, None)
        self.start_thread()

    def _fail(self, exc):
        """A bug of ours on this thread: recording stops, the agent is told why if possible."""
        try:
            recorder = self.recorder
            detail = "sender: %s: %s" % (type(exc).__name__, exc)
            if recorder.failures.failure is None:
                recorder.failures.failure = detail
            recorder.stop_events()
            self._warn_once("telemetry_shim: internal error, recording stopped (%s)" % detail)
            if self._sock is not None:
                goodbye = {"reason": _wire.REASON_ERROR, "end_monotonic_ns": perf_counter_ns(), "detail": detail}
                self._send([_wire.encode_frame(_wire.FRAME_GOODBYE, _wire.encode_message("Goodbye", goodbye))])
            recorder.uninstall()
        except BaseException:
            pass

    # ---- burst windows and cost -------------------------------------------------------------------

    def _count_cpu(self):
        mark = thread_time_ns()
        self.cpu_ns += mark - self._cpu_mark
        self._cpu_mark = mark

    def _events_recorded(self):
        return self.events_taken + len(self.recorder.buffer) // 2

    def overhead_ns(self):
        return self._events_recorded() * self.event_cost_ns + self.cpu_ns

    def _filling_up(self):
        return len(self.recorder.buffer) * BUSY_FRACTION >= self.recorder.capacity_words

    def _service_windows(self, windows):
        if self.recorder.held_for_startup:
            return
        self._count_cpu()
        windows.service(perf_counter_ns(), self._events_recorded(), self.overhead_ns(), self.event_cost_ns)

    # ---- one tick ----------------------------------------------------------------------------------

    def _tick(self, final=False):
        recorder = self.recorder
        recorder.refresh_threads()
        if self._sock is None:
            if not final:
                if monotonic() >= self._next_connect_at:
                    self._connect()
            elif not self._exit_connect_tried:
                self._exit_connect_tried = True
                self._connect()
        startup = self.startup
        if startup is not None and startup.ready_ns:
            startup.find_ended_calls(current_frames)  # first: a call it ends is reported in this tick
            # A first invocation that runs on and on (a ready-on function that serves for good) keeps the call
            # events on no longer than this: its tree ends there.
            recorder.close_invocation_window(opened_before_ns=perf_counter_ns() - MAX_INVOCATION_WINDOW_NS)
        # The Lambda handler's calls ended so far, read before this tick takes the records and exceptions: the
        # STATS that counts them follows every event of those calls. A call that ends while the tick runs is
        # counted by the next one.
        invocations_over = startup.invocations_over() if startup is not None else 0
        tracker = recorder.exceptions
        if tracker is not None:
            # First: building the records defines the codes they use, taken just below. After a Lambda
            # handler's call has ended, its exceptions go before the STATS that says so.
            ended_unsent = invocations_over != self._invocations_over_sent
            exception_records, tallies, exception_threads, waiting = tracker.collect(final, settle_now=ended_unsent)
            # An exception of the ended call may still wait for its thread to leave a callback of ours (the one
            # that ended the call, say), to finish handling it or to raise it in the caller it unwound into: a next
            # tick, soon, says the call ended, after that exception.
            end_held = ended_unsent and waiting
            if end_held:
                invocations_over = self._invocations_over_sent
        else:
            exception_records = tallies = exception_threads = ()
            end_held = False
        outbox = self._outbox
        with self.lock:
            buf = recorder.buffer
            taken = len(buf)
            outbox.take_records(buf, taken)  # records appended meanwhile stay in buf
            retired = self._retired_buffer
            if retired is not None:
                self._retired_buffer = None
                chunk_retired = len(retired) // 2
            else:
                chunk_retired = 0
            pending = recorder.threads.pending_definitions
            thread_count = len(pending)
            threads = pending[:thread_count]
            del pending[:thread_count]
            code_definitions = recorder.codes.definitions
            code_count = len(code_definitions)
            codes = code_definitions[self._code_definitions_sent:code_count]
            self._code_definitions_sent = code_count
        records = taken // 2
        self.events_taken += records + chunk_retired
        self.events_dropped_here += chunk_retired  # records of a previous connection's session
        if self._sock is None:
            outbox.discard()
            self.events_dropped_here += records
            if records or threads:
                # Discarded: records, or definitions whose threads' records may still come
                # (queued just before them). The next connection starts a new generation, so
                # every thread is defined and seeded again there.
                self._fresh_generation = False
            return False
        defined = self._threads_defined
        for thread in threads:  # no generator expression: each makes a function object, which function watchers see
            defined.add(thread["id"])
        for info in exception_threads:
            if info.thread_id not in defined:  # e.g. no event of that thread on this connection yet
                defined.add(info.thread_id)
                threads.append(info.definition())
        if codes or threads:
            for frame in _wire.encode_definitions_frames([_code_dict(c) for c in codes], threads):
                outbox.add_frame(frame)
        outbox.add_records()
        if exception_records or tallies:
            for frame in _wire.encode_exceptions_frames(exception_records, tallies):
                outbox.add_frame(frame)
        now = monotonic()
        startup_fields = self._take_startup_reports(final)
        if not final and (now >= self._next_stats_at or startup_fields or invocations_over != self._invocations_over_sent):
            self._next_stats_at = now + self._stats_interval_s
            stats_frame = True
        else:
            stats_frame = False
        if len(outbox):
            # Only the records of event frames the agent got in full count as sent; the rest, dropped.
            _, delivered = self._send_outbox()
            self.events_sent += delivered
            if delivered < records:
                self.events_dropped_here += records - delivered
                return False
        if stats_frame:
            stats = dict(self.stats(), **startup_fields, invocations_ended=invocations_over)
            if self._send([_wire.encode_frame(_wire.FRAME_STATS, _wire.encode_message("Stats", stats))]):
                self._startup_unsent = {}
                self._invocations_over_sent = stats.get("invocations_ended", 0)
        return end_held or taken * BUSY_FRACTION >= recorder.capacity_words

    def _take_startup_reports(self, final):
        """The start-up phase's Stats fields not yet sent (the Startup message once ready, each first
        invocation once it ended); the phase's events go off once they are no longer needed."""
        startup = self.startup
        unsent = self._startup_unsent
        if startup is None:
            return unsent
        report, invocations = startup.take_reports(final, self.recorder.threads.ignored_idents)
        if report is not None:
            unsent["startup"] = report
        if invocations:
            unsent.setdefault("first_invocations", []).extend(invocations)
        if startup.finished or final:
            startup.release(final)
        return unsent

    def stats(self):
        dropped_in_callbacks = self.recorder.dropped_in_callbacks()
        return {
            "events_recorded": self.events_taken + dropped_in_callbacks,
            "events_dropped": self.events_dropped_here + dropped_in_callbacks,
            "events_sent": self.events_sent,
            "frames_sent": self.frames_sent,
            "connects": self.connects,
            "callback_errors": self.recorder.failures.errors.value(),
            "overhead_ns": self.overhead_ns(),
            "elapsed_ns": max(perf_counter_ns() - self.started_ns, 0),
            "event_toggles": self.windows.toggles if self.windows is not None else 0,
            "toggles_refused": self.windows.toggles_refused if self.windows is not None else 0,
            "invocations_ended": self.startup.invocations_over() if self.startup is not None else 0,
        }

    def _finish(self):
        recorder = self.recorder
        recorder.stop_events()
        if self.windows is not None:
            self.windows.close_for_stop()
        recorder.close_invocation_window(switch_events=False)
        self._count_cpu()
        self._tick(final=True)
        self._tick(final=True)  # records a callback still running at stop_events() appended
        reason = self._stop_reason
        if self._sock is not None:
            goodbye = {"reason": reason, "final_stats": dict(self.stats(), **self._startup_unsent),
                       "end_monotonic_ns": perf_counter_ns(),
                       "detail": self._stop_detail}
            self._send([_wire.encode_frame(_wire.FRAME_GOODBYE, _wire.encode_message("Goodbye", goodbye))])
        self._close()
        recorder.uninstall()

    # ---- connection ----------------------------------------------------------------------------

    def _connect(self):
        sock = None
        try:
            sock = self._numbered_high(_socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM))
            sock.settimeout(CONNECT_TIMEOUT_S)
            sock.connect(self.socket_path)
            sock.settimeout(SEND_STALL_TIMEOUT_S)
        except OSError as exc:
            if sock is not None:
                sock.close()
            self._next_connect_at = monotonic() + self._backoff_s
            self._backoff_s = min(self._backoff_s * 2, max(MAX_BACKOFF_S, self._backoff_s))
            self._warn_once("telemetry_shim: agent not reachable at %s (%s); events are dropped until it is"
                            % (self.socket_path, exc.strerror or exc))
            return
        self._connected_at = monotonic()
        with self.lock:
            if not self._fresh_generation:
                # Records already taken elsewhere: the agent's new session needs every thread
                # re-seeded, which a new generation does on each thread's next event.
                self.recorder.threads.pending_definitions.clear()
                self._retired_buffer = self.recorder.new_generation()
            self._fresh_generation = False
            self._code_definitions_sent = 0
            self._threads_defined = set()
        self._sock = sock
        self.connects += 1
        self.events_sent = 0
        self.frames_sent = 0
        self._next_stats_at = 0.0
        self._invocations_over_sent = 0
        hello = _wire.encode_frame(_wire.FRAME_HELLO, _wire.encode_message("Hello", self._hello_fields()))
        self._send([hello], preamble=True)

    def _numbered_high(self, sock):
        """`sock` on a descriptor numbered SOCKET_FD_MINIMUM or above, or as it is where the limit of open files
        leaves no such number."""
        try:
            high = self._dup_above(sock.fileno(), SOCKET_FD_MINIMUM)
        except (OSError, ValueError):
            return sock
        try:
            moved = _socket.socket(fileno=high)
        except OSError:
            os.close(high)
            return sock
        sock.close()
        return moved

    def _send(self, frames, preamble=False):
        """Writes whole frames in order; returns how many the agent got in full. On an error or a
        stall the connection is given up: a frame cut in the middle leaves the stream unusable."""
        sock = self._sock
        if sock is None:
            return 0
        outbox = self._outbox
        if preamble:
            outbox.add_frame(_wire.PREAMBLE)
        for frame in frames:
            outbox.add_frame(frame)
        written, _ = self._send_outbox(preamble)
        return written

    def _send_outbox(self, preamble=False):
        """Writes what the outbox holds and empties it: (frames the agent got in full, the records in
        them; the preamble, first when `preamble`, is not a frame). On an error or a stall the
        connection is given up."""
        outbox = self._outbox
        sock = self._sock
        if sock is None:
            outbox.discard()
            return 0, 0
        if isinstance(outbox, PythonOutbox):
            written, records, error = outbox.send(sock)
        else:
            written, records, error = outbox.send(sock.fileno(), SEND_STALL_TIMEOUT_MS)
        if preamble and written:
            written -= 1
        if error:
            self._connection_lost()
        self.frames_sent += written
        return written, records

    def _connection_lost(self):
        # A connection that worked for a while resets the backoff; one cut soon after it opened
        # (an agent refusing us) makes the next attempt wait longer each time.
        if monotonic() - self._connected_at >= HEALTHY_CONNECTION_S:
            self._backoff_s = MIN_BACKOFF_S
        self._close()
        self._next_connect_at = monotonic() + self._backoff_s
        self._backoff_s = min(self._backoff_s * 2, MAX_CUT_BACKOFF_S)

    def _close(self):
        sock = self._sock
        if sock is not None:
            self._sock = None
            self._fresh_generation = False
            try:
                sock.close()
            except OSError:
                pass

    def abandon_in_child(self):
        """In a fork child: close this process's copy of the parent's socket without touching
        the parent's connection (close, never shutdown)."""
        self._run_state = _FINISHED  # its thread is not in this process: never restarted here
        sock = self._sock
        self._sock = None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass


class PythonOutbox:
    """What one tick writes, for the Python callbacks' buffers (a list of words): the twin of
    _native.Outbox. send() takes the socket; the socket's timeout bounds each send(): the agent
    must take some bytes within it."""

    __slots__ = ("_max_records", "_staged", "_frames")

    def __init__(self, max_records_per_frame=_wire.MAX_RECORDS_PER_FRAME):
        self._max_records = max_records_per_frame
        self._staged = []
        self._frames = []

    def take_records(self, buf, words):
        self._staged.extend(buf[:words])
        del buf[:words]

    def add_frame(self, frame):
        self._frames.append(frame)

    def add_records(self):
        if self._staged:
            from array import array  # imported at start by a Sender whose recorder records calls

            frames, _ = _wire.encode_events_frames(array("Q", self._staged), max_records=self._max_records)
            self._frames.extend(frames)
            self._staged = []

    def discard(self):
        self._staged = []
        self._frames = []

    def __len__(self):
        return len(self._frames)

    def send(self, sock):
        """(frames written in full, the records in them, 1 on an error or a stall, else 0)."""
        frames, self._frames = self._frames, []
        written = records = 0
        try:
            for frame in frames:
                view = memoryview(frame)
                while view:
                    view = view[sock.send(view, SEND_FLAGS):]
                written += 1
                records += _wire.records_in_events_frame(frame)
        except OSError:
            return written, records, 1
        return written, records, 0


def _code_dict(definition):
    code_id, qualified_name, file_name, first_line, module, kind_flags, ready_on = definition
    return {"id": code_id, "qualified_name": qualified_name, "file_name": file_name,
            "first_line": first_line, "module": module, "kind_flags": kind_flags, "ready_on": ready_on}

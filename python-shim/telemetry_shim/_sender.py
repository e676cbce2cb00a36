"""The sender: the shim's own thread, the only user of the socket.

Every tick (flush interval, sooner when the last drain found the buffer filling up) it takes the
pending records, sends DEFINITIONS before the EVENTS that use them, and STATS about once a
second. When the agent is absent or too slow, records are dropped and counted, and connecting is
retried with backoff; each new connection starts with a fresh HELLO, every definition again,
and a new recorder generation so that every thread is re-seeded (the agent starts a new session).
"""

import _thread
import socket
from array import array
import threading
from time import monotonic, perf_counter_ns

from . import _wire

CONNECT_TIMEOUT_S = 1.0
SEND_TIMEOUT_S = 1.0
STATS_INTERVAL_S = 1.0
MIN_BACKOFF_S = 0.1
MAX_BACKOFF_S = 5.0
# When a drain finds the buffer at least this full, the next tick comes sooner.
BUSY_FRACTION = 4
BUSY_INTERVAL_S = 0.005
# A write to a connection the agent closed must fail with EPIPE, never raise SIGPIPE: a program
# that restored SIG_DFL for it (common in CLI tools) would be killed by our write.
SEND_FLAGS = getattr(socket, "MSG_NOSIGNAL", 0)


class Sender:
    def __init__(self, recorder, socket_path, hello_fields, warn_once, flush_interval_s):
        self.recorder = recorder
        self.socket_path = socket_path
        self._hello_fields = hello_fields  # callable returning the Hello dict for a new connection
        self._warn_once = warn_once
        self.flush_interval_s = flush_interval_s

        # Held while taking records and definitions (and by the fork handlers), never during I/O.
        self.lock = threading.Lock()
        self._wake = threading.Event()
        self.finished = threading.Event()
        self._stop_reason = None
        self._stop_detail = ""
        self.thread_ident = None

        self._sock = None
        self._fresh_generation = True  # no record of this generation went anywhere but here
        self._retired_buffer = None
        self._next_connect_at = 0.0
        self._backoff_s = MIN_BACKOFF_S
        self._next_stats_at = 0.0

        self.connects = 0
        self.events_taken = 0  # records taken out of the buffer (sent or dropped)
        self.events_dropped_here = 0
        self.events_sent = 0  # on the current connection
        self.frames_sent = 0  # on the current connection
        self._code_definitions_sent = 0
        self._threads_defined = set()  # thread ids defined on the current connection

    # ---- lifecycle -------------------------------------------------------------------------------

    def start_thread(self):
        # A raw thread: not in threading.enumerate(), not joined at shutdown, invisible to the
        # program. Its first Python code is ours, so it is ignored before it runs anything else.
        _thread.start_new_thread(self._run, ())

    def request_stop(self, reason, detail=""):
        if self._stop_reason is None:
            self._stop_detail = detail
            self._stop_reason = reason
        self._wake.set()

    def _run(self):
        self.thread_ident = _thread.get_ident()
        self.recorder.ignored_idents.add(self.thread_ident)
        try:
            while self._stop_reason is None:
                busy = self._tick()
                self._wake.wait(BUSY_INTERVAL_S if busy else self.flush_interval_s)
                self._wake.clear()
            self._finish()
        except Exception as exc:
            self._fail(exc)
        except BaseException:
            pass  # never surface anything on the program's stderr from our thread
        finally:
            self._close()
            self.finished.set()

    def _fail(self, exc):
        """A bug of ours on this thread: recording stops, the agent is told why if possible."""
        try:
            recorder = self.recorder
            detail = "sender: %s: %s" % (type(exc).__name__, exc)
            if recorder.failure is None:
                recorder.failure = detail
            recorder.stop_events()
            self._warn_once("telemetry_shim: internal error, recording stopped (%s)" % detail)
            if self._sock is not None:
                goodbye = {"reason": _wire.REASON_ERROR, "end_monotonic_ns": perf_counter_ns(), "detail": detail}
                self._send([_wire.encode_frame(_wire.FRAME_GOODBYE, _wire.encode_message("Goodbye", goodbye))], 0)
            recorder.uninstall()
        except BaseException:
            pass

    # ---- one tick ----------------------------------------------------------------------------------

    def _tick(self, final=False):
        recorder = self.recorder
        recorder.refresh_threads()
        if self._sock is None and (final or monotonic() >= self._next_connect_at):
            self._connect()
        tracker = recorder.exceptions
        if tracker is not None:
            # First: building the records defines the codes they use, taken just below.
            exception_records, tallies, exception_threads = tracker.collect(final)
        else:
            exception_records = tallies = exception_threads = ()
        with self.lock:
            buf = recorder.buffer
            taken = len(buf)
            chunk = buf[:taken]  # one C call each: records appended meanwhile stay in buf
            del buf[:taken]
            retired = self._retired_buffer
            if retired is not None:
                self._retired_buffer = None
                chunk_retired = len(retired) // 2
            else:
                chunk_retired = 0
            pending = recorder.pending_thread_definitions
            thread_count = len(pending)
            threads = pending[:thread_count]
            del pending[:thread_count]
            code_definitions = recorder.code_definitions
            code_count = len(code_definitions)
            codes = code_definitions[self._code_definitions_sent:code_count]
            self._code_definitions_sent = code_count
        records = taken // 2
        self.events_taken += records + chunk_retired
        self.events_dropped_here += chunk_retired  # records of a previous connection's session
        if self._sock is None:
            self.events_dropped_here += records
            if records or threads:
                # Discarded: records, or definitions whose threads' records may still come
                # (queued just before them). The next connection starts a new generation, so
                # every thread is defined and seeded again there.
                self._fresh_generation = False
            return False
        defined = self._threads_defined
        defined.update(thread["id"] for thread in threads)
        for info in exception_threads:
            if info.thread_id not in defined:  # e.g. no event of that thread on this connection yet
                defined.add(info.thread_id)
                threads.append(info.definition())
        frames = []
        if codes or threads:
            frames.extend(_wire.encode_definitions_frames([_code_dict(c) for c in codes], threads))
        if records:
            event_frames, _ = _wire.encode_events_frames(array("Q", chunk))
            frames.extend(event_frames)
        if exception_records or tallies:
            frames.extend(_wire.encode_exceptions_frames(exception_records, tallies))
        now = monotonic()
        if not final and now >= self._next_stats_at:
            self._next_stats_at = now + STATS_INTERVAL_S
            stats_frame = True
        else:
            stats_frame = False
        if frames and not self._send(frames, records):
            self.events_dropped_here += records
            return False
        if stats_frame:
            self._send([_wire.encode_frame(_wire.FRAME_STATS, _wire.encode_message("Stats", self.stats()))], 0)
        return taken * BUSY_FRACTION >= recorder.capacity_words

    def stats(self):
        dropped_in_callbacks = self.recorder.dropped.value()
        return {
            "events_recorded": self.events_taken + dropped_in_callbacks,
            "events_dropped": self.events_dropped_here + dropped_in_callbacks,
            "events_sent": self.events_sent,
            "frames_sent": self.frames_sent,
            "connects": self.connects,
            "callback_errors": self.recorder.callback_errors.value(),
        }

    def _finish(self):
        recorder = self.recorder
        recorder.stop_events()
        self._tick(final=True)
        self._tick(final=True)  # records a callback still running at stop_events() appended
        reason = self._stop_reason
        if self._sock is not None:
            goodbye = {"reason": reason, "final_stats": self.stats(), "end_monotonic_ns": perf_counter_ns(),
                       "detail": self._stop_detail}
            self._send([_wire.encode_frame(_wire.FRAME_GOODBYE, _wire.encode_message("Goodbye", goodbye))], 0)
        self._close()
        recorder.uninstall()

    # ---- connection ----------------------------------------------------------------------------

    def _connect(self):
        sock = None
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(CONNECT_TIMEOUT_S)
            sock.connect(self.socket_path)
            sock.settimeout(SEND_TIMEOUT_S)
        except OSError as exc:
            if sock is not None:
                sock.close()
            self._next_connect_at = monotonic() + self._backoff_s
            self._backoff_s = min(self._backoff_s * 2, MAX_BACKOFF_S)
            self._warn_once("telemetry_shim: agent not reachable at %s (%s); events are dropped until it is"
                            % (self.socket_path, exc.strerror or exc))
            return
        self._backoff_s = MIN_BACKOFF_S
        with self.lock:
            if not self._fresh_generation:
                # Records already taken elsewhere: the agent's new session needs every thread
                # re-seeded, which a new generation does on each thread's next event.
                self.recorder.pending_thread_definitions.clear()
                self._retired_buffer = self.recorder.new_generation()
            self._fresh_generation = False
            self._code_definitions_sent = 0
            self._threads_defined = set()
        self._sock = sock
        self.connects += 1
        self.events_sent = 0
        self.frames_sent = 0
        self._next_stats_at = 0.0
        hello = _wire.encode_frame(_wire.FRAME_HELLO, _wire.encode_message("Hello", self._hello_fields()))
        if not self._send([hello], 0, preamble=True):
            return

    def _send(self, frames, records, preamble=False):
        sock = self._sock
        if sock is None:
            return False
        data = b"".join(frames)
        if preamble:
            data = _wire.PREAMBLE + data
        try:
            sock.sendall(data, SEND_FLAGS)
        except OSError:
            # A partial write leaves the stream unusable: start over on a new connection.
            self._close()
            self._next_connect_at = monotonic() + self._backoff_s
            return False
        self.frames_sent += len(frames)
        self.events_sent += records
        return True

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
        sock = self._sock
        self._sock = None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass


def _code_dict(definition):
    code_id, qualified_name, file_name, first_line, module, kind_flags = definition
    return {"id": code_id, "qualified_name": qualified_name, "file_name": file_name,
            "first_line": first_line, "module": module, "kind_flags": kind_flags}

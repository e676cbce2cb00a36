"""Exception capture: one record per exception object, sent once its fate is known.

The parts, by the thread that runs them:
- program_threads.py: the RAISE, RERAISE, EXCEPTION_HANDLED, PY_UNWIND and notes (C_RETURN)
  callbacks and the flights they keep (every exception followed from its first RAISE until its
  fate is known, by ids: no reference to an exception outlives the callback that saw it);
- details.py: what a detailed record says about its exception, read at those events;
- escape_hooks.py: sys.excepthook, threading.excepthook, sys.unraisablehook and asyncio's
  handler, on the thread whose exception escaped;
- sender_thread.py: each tick, concludes the flights that went quiet and builds the records and
  tallies;
- safe_reads.py: reading exceptions and code without running the program's code (any thread).

Nothing here may run the program's code. ExceptionTracker wires the parts together and is what
the recorder (callbacks, hooks, fork) and the sender (collect) use.
"""

import sys

from . import program_threads, sender_thread
from .details import DetailReader, locations
from .escape_hooks import EscapeHooks
from .program_threads import FlightTable
from .safe_reads import CodeLines
from .sender_thread import ExceptionReporter


def stretch_intervals(slowdown):
    """Every interval and rate of the exception capture, for a process `slowdown` times slower than
    a normal run (TELEMETRY_SHIM_SLOWDOWN)."""
    program_threads.stretch_intervals(slowdown)
    sender_thread.stretch_intervals(slowdown)


class ExceptionTracker:
    """The exception capture of one recorder: given the code table, the thread table and the
    callback failure policy it shares with the call recorder (_tables.py)."""

    def __init__(self, codes, threads, failures):
        self.reader = DetailReader(codes)
        self.flights = FlightTable(codes, threads, failures, CodeLines(codes), self.reader)
        self.hooks = EscapeHooks(self.flights)
        self.reporter = ExceptionReporter(self.flights)
        self.flights.hook_asyncio = self.hook_asyncio
        self.on_unwind = self.flights.on_unwind  # the call recorder's PY_UNWIND callback forwards to it
        self.on_note_added = self.flights.on_note_added  # C_RETURN, where the notes watch keeps CALL on
        self.native = None  # the C callbacks (use_native), or None

    def use_native(self, codes, code_keys, failed):
        """Registers the C callbacks (_native_path.exception_callbacks) instead of the Python ones,
        which they call for every event they do not end themselves. `code_keys` copies codes.keys;
        `failed` is the failure policy (CallbackFailures.failed)."""
        from .._native_path import exception_callbacks

        flights = self.flights
        self.native, self._native_callbacks = exception_callbacks(
            flights, dict(flights.callbacks(unwind=True)), codes, code_keys, failed)

    def callbacks(self, unwind):
        """(event, callback) pairs to register (FlightTable.callbacks, or their C front)."""
        pairs = self.flights.callbacks(unwind)
        if self.native is None:
            return pairs
        return [(event, self._native_callbacks[event]) for event, _ in pairs]

    @property
    def unwind_callback(self):
        """The PY_UNWIND callback (code, offset, exception), for the C call callbacks to call first."""
        return dict(self.callbacks(unwind=True))[sys.monitoring.events.PY_UNWIND]

    def install_hooks(self):
        self.hooks.install()
        self.hook_asyncio()

    def uninstall_hooks(self):
        self.hooks.uninstall()

    def hook_asyncio(self):
        """Wraps asyncio's handler if asyncio is imported by now (and tells the callbacks)."""
        self.flights.asyncio_hooked = self.hooks.hook_asyncio()

    def collect(self, final=False, settle_now=False):
        """The sender's tick (ExceptionReporter.collect); asyncio is looked for first."""
        self.hook_asyncio()
        return self.reporter.collect(final, settle_now)

    def detail(self, exc):
        """The ExceptionDetail dict of `exc` as a record would carry it after an event now."""
        detail = self.reader.detail(exc)
        detail["traceback"] = locations(self.reader.traceback_entries(exc))
        return detail

    def reset_after_fork(self):
        self.flights.reset_after_fork()

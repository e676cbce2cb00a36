"""The exception records, built on the shim's sender thread: each tick it concludes the flights
that went quiet (program_threads.py keeps them), then turns every concluded detailed flight into an
ExceptionRecord and every site whose counts changed into an ExceptionTally. What a record says was
read on the program's thread at the events (details.py); here it is only put in the wire's shape.
"""

from _operator import attrgetter  # operator.attrgetter itself (see _monitor)
from time import perf_counter_ns

from .. import _wire
from .._package import PACKAGE_DIR
from .._tables import current_exceptions, current_frames, identity, thread_states_readable
from .details import location, locations
from .program_threads import HANDLED
from .safe_reads import handled_ids

QUIET_NS = 100_000_000           # the sender concludes a flight after this long without events
HANDLED_HOLD_MAX_NS = 30_000_000_000   # ... even if its handler is still running
COROUTINE_HOLD_NS = 10_000_000_000     # an exception that ended a coroutine waits for `await`
END_HOLD_MAX_NS = 250_000_000    # an ended call's STATS waits this long at most for an exception about to move
_NORMAL_TIMING = (QUIET_NS, HANDLED_HOLD_MAX_NS, COROUTINE_HOLD_NS, END_HOLD_MAX_NS)
_code_of = attrgetter("f_code")
_lasti_of = attrgetter("f_lasti")
_file_of = attrgetter("f_code.co_filename")
_SHIM_PREFIX = PACKAGE_DIR + "/"


def stretch_intervals(slowdown):
    """The intervals above, for a process `slowdown` times slower than a normal run."""
    global QUIET_NS, HANDLED_HOLD_MAX_NS, COROUTINE_HOLD_NS, END_HOLD_MAX_NS
    quiet, handled_hold, coroutine_hold, end_hold = _NORMAL_TIMING
    QUIET_NS = int(quiet * slowdown)
    HANDLED_HOLD_MAX_NS = int(handled_hold * slowdown)
    COROUTINE_HOLD_NS = int(coroutine_hold * slowdown)
    END_HOLD_MAX_NS = int(end_hold * slowdown)


class ExceptionReporter:
    """Turns what the program's threads concluded into ExceptionRecord and ExceptionTally dicts."""

    def __init__(self, flights):
        self.flights = flights

    def collect(self, final=False, settle_now=False):
        """Concludes what is due (everything when `final`) and returns (ExceptionRecord dicts,
        ExceptionTally dicts, ThreadInfos the records use, whether a flight waits for its thread to move
        it: see _settle). `settle_now`: every flight that can no longer continue is concluded now, not
        after its quiet period (a Lambda handler's call has ended: the environment may be frozen before
        that period is over)."""
        flights = self.flights
        waiting = False
        if flights.inflight:
            waiting = self._settle(perf_counter_ns(), final, 0 if settle_now else QUIET_NS)
        finished = flights.finished
        count = len(finished)
        concluded = finished[:count]
        del finished[:count]
        records = []
        threads = {}
        for flight in concluded:
            records.append(_record(flight))
            threads[flight.info.thread_id] = flight.info
        return records, self._tallies(), list(threads.values()), waiting

    def _settle(self, now, final, quiet_ns):
        """Concludes the flights that went quiet for `quiet_ns` (all of them when `final`) and can no
        longer continue: handled ones their thread no longer handles, propagating ones whose thread
        has moved on from the call they left (swallowed by C code there). Returns whether one was left
        for its thread to move: inside one of the shim's callbacks, or, when settling at once (a call has
        ended), still handling it or about to raise it in the caller it unwound into, for at most
        END_HOLD_MAX_NS since its last event (the call's end waits for that one's fate)."""
        table = self.flights
        inflight = table.inflight
        flights = list(inflight.values())
        if not final:
            flights = [flight for flight in flights if now - flight.last_ns >= quiet_ns]
            if not flights:
                return False
        if not thread_states_readable():
            if not final:
                return False  # settled later, or at the end
            tops = handling = {}
            in_shim = ()
        else:
            tops, handling, in_shim = _thread_states()
        waiting = False
        for flight in flights:
            alive = flight.ident in tops
            if alive and not final and flight.ident in in_shim:
                waiting = True  # its thread is inside one of the shim's callbacks: the event that moves it is not over
                continue
            at_end = False
            # An ended call's exception that its thread is about to move: the end waits (a tick soon) for its fate.
            moving = alive and not final and quiet_ns == 0 and now - flight.last_ns < END_HOLD_MAX_NS
            if flight.state == HANDLED:
                if (not final and alive and now - flight.last_ns < HANDLED_HOLD_MAX_NS
                        and flight.exc_id in handling.get(flight.ident, ())):
                    waiting = waiting or moving
                    continue
            elif flight.outermost:
                if not final and alive:
                    continue  # an escape: the hooks or the end decide
            elif not flight.caller_id and alive and not final:
                waiting = waiting or moving
                continue  # in a Python frame right now: HANDLED or PY_UNWIND follows
            elif alive and tops[flight.ident] == (flight.caller_id, flight.caller_code_id, flight.caller_lasti):
                if not final:
                    waiting = waiting or moving
                    continue  # still inside the call it left (e.g. waiting for the GIL)
                at_end = True
            elif flight.coroutine:
                if not final and now - flight.last_ns < COROUTINE_HOLD_NS:
                    continue  # its task may hold it: `await` may raise it again
                at_end = final
            if inflight.pop(flight.exc_id, None) is flight:
                table.conclude(flight, at_end=at_end)
        return waiting

    def _tallies(self):
        dirty = self.flights.dirty_sites
        count = len(dirty)
        sites = dirty[:count]
        del dirty[:count]
        tallies = []
        for site in sites:
            site.dirty = False  # before reading: a later bump marks it again
            for fate, counter in list(site.counters.items()):
                total = counter.value()
                delta = total - site.sent.get(fate, 0)
                if delta <= 0:
                    continue
                site.sent[fate] = total
                tallies.append({"type_name": site.name,
                                "raised_at": location(site.code_key, site.line) if site.code_key else None,
                                "fate": fate, "count": delta})
        return tallies


def _thread_states():
    """({ident: (id of its current frame, id of that frame's code, its instruction)}, {ident: ids of
    the exceptions it handles}, idents of the threads whose current frame is the shim's own), from
    current_frames() and current_exceptions(). Only ids, integers and file names are kept, and the
    frames and exceptions are let go at once: the frames within one C-level step (map and zip run no
    bytecode, so the program cannot run meanwhile and find a frame it left still alive), the
    exceptions after a walk of their context chains."""
    frames = current_frames()
    values = frames.values()
    states = dict(zip(frames, zip(map(identity, values), map(identity, map(_code_of, values)), map(_lasti_of, values),
                                  map(_file_of, values))))
    del frames, values
    tops = {ident: state[:3] for ident, state in states.items()}
    in_shim = {ident for ident, state in states.items() if state[3].startswith(_SHIM_PREFIX)}
    handling = current_exceptions()
    handled = {ident: handled_ids(exc) for ident, exc in handling.items() if exc is not None}
    del handling
    return tops, handled, in_shim


def _record(flight):
    stack = flight.stack or ()
    detail = flight.detail
    detail["traceback"] = locations(flight.traceback)
    return {
        "thread_id": flight.info.thread_id,
        "raised_ns": flight.raised_ns,
        "fate_ns": flight.fate_ns,
        "fate": flight.fate,
        "handled_at": location(*flight.handled_at) if flight.handled_at is not None else None,
        "stack": locations(stack),
        "stack_truncated": flight.stack_truncated,
        "frames_unwound": flight.frames_unwound,
        "reraises": flight.reraises,
        "detail": detail,
    }


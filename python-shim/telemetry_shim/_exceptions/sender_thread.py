"""The exception records, built on the shim's sender thread: each tick it concludes the flights
that went quiet (program_threads.py keeps them), then builds an ExceptionRecord for every
concluded detailed flight (its stack, handler line and detail: type, message, notes, chain,
members, traceback) and an ExceptionTally for every site whose counts changed.
"""

import sys
from collections import deque
from time import perf_counter_ns

from .. import _wire
from .program_threads import HANDLED, HANDLER_LINE
from .safe_reads import (being_handled, get_cause, get_context, get_members, get_suppress_context, get_traceback,
                         safe_message, safe_notes, type_name)

# Limits (README "Exceptions").
MAX_NESTING_DEPTH = 8            # a record's detail is depth 1; cause/context/members below it
MAX_GROUP_MEMBERS = 16
MAX_DETAILS_PER_RECORD = 32      # ExceptionDetail nodes in one record (keeps a record far below 1 MiB)
MAX_TRACEBACK_ENTRIES = 128      # the innermost ones are kept
QUIET_NS = 100_000_000           # the sender concludes a flight after this long without events
HANDLED_HOLD_MAX_NS = 30_000_000_000   # ... even if its handler is still running
COROUTINE_HOLD_NS = 10_000_000_000     # an exception that ended a coroutine waits for `await`
_NORMAL_TIMING = (QUIET_NS, HANDLED_HOLD_MAX_NS, COROUTINE_HOLD_NS)


def stretch_intervals(slowdown):
    """The intervals above, for a process `slowdown` times slower than a normal run."""
    global QUIET_NS, HANDLED_HOLD_MAX_NS, COROUTINE_HOLD_NS
    quiet, handled_hold, coroutine_hold = _NORMAL_TIMING
    QUIET_NS = int(quiet * slowdown)
    HANDLED_HOLD_MAX_NS = int(handled_hold * slowdown)
    COROUTINE_HOLD_NS = int(coroutine_hold * slowdown)


class ExceptionReporter:
    """Turns what the program's threads concluded into ExceptionRecord and ExceptionTally dicts."""

    def __init__(self, flights, codes, lines):
        self.flights = flights
        self._code_key_of = codes.key_of
        self._lines = lines
        self._type_names = {}

    def collect(self, final=False):
        """Concludes what is due (everything when `final`) and returns (ExceptionRecord dicts,
        ExceptionTally dicts, ThreadInfos the records use). Defines the codes they use, so the
        sender must take the code definitions after calling this."""
        flights = self.flights
        if flights.inflight:
            self._settle(perf_counter_ns(), final)
        finished = flights.finished
        count = len(finished)
        concluded = finished[:count]
        del finished[:count]
        records = []
        threads = {}
        for flight in concluded:
            records.append(self._record(flight))
            threads[flight.info.thread_id] = flight.info
            flight.exc = None
        return records, self._tallies(), list(threads.values())

    def _settle(self, now, final):
        """Concludes the flights that went quiet (all of them when `final`) and can no longer
        continue: handled ones their thread no longer handles, propagating ones whose thread has
        moved on from the call they left (swallowed by C code there)."""
        table = self.flights
        inflight = table.inflight
        flights = list(inflight.values())
        if not final:
            flights = [flight for flight in flights if now - flight.last_ns >= QUIET_NS]
            if not flights:
                return
        frames = sys._current_frames()
        handling = sys._current_exceptions()
        for flight in flights:
            alive = flight.ident in frames
            at_end = False
            if flight.state == HANDLED:
                if (not final and alive and now - flight.last_ns < HANDLED_HOLD_MAX_NS
                        and being_handled(handling.get(flight.ident), flight.exc)):
                    continue
            elif flight.outermost:
                if not final and alive:
                    continue  # an escape: the hooks or the end decide
            elif flight.caller is None and alive and not final:
                continue  # in a Python frame right now: HANDLED or PY_UNWIND follows
            elif alive and frames[flight.ident] is flight.caller and flight.caller.f_lasti == flight.caller_lasti:
                if not final:
                    continue  # still inside the call it left (e.g. waiting for the GIL)
                at_end = True
            elif flight.coroutine:
                if not final and now - flight.last_ns < COROUTINE_HOLD_NS:
                    continue  # its task holds it: `await` may raise it again
                at_end = final
            if inflight.pop(id(flight.exc), None) is flight:
                table.conclude(flight, at_end=at_end)
        del frames, handling

    def _record(self, flight):
        location = self._location
        stack = flight.stack or ()
        record = {
            "thread_id": flight.info.thread_id,
            "raised_ns": flight.raised_ns,
            "fate_ns": flight.fate_ns,
            "fate": flight.fate,
            "handled_at": self._handled_location(flight.handled_at),
            "stack": [location(stack[i], stack[i + 1]) for i in range(len(stack) - 2, -1, -2)],
            "stack_truncated": flight.stack_truncated,
            "frames_unwound": flight.frames_unwound,
            "reraises": flight.reraises,
            "detail": self.detail(flight.exc),
        }
        return record

    def _handled_location(self, handled_at):
        if handled_at is None:
            return None
        code_key, code, offset, how = handled_at
        if how == HANDLER_LINE:
            line = self._lines.handler_line(code, offset)
        else:
            line = self._lines.line_at(code, offset) or 0
        return self._location(code_key, line)

    @staticmethod
    def _location(code_key, line):
        return {"code_id": code_key >> _wire.CODE_ID_SHIFT, "line": max(int(line or 0), 0)}

    def detail(self, exc):
        """The ExceptionDetail dict of `exc` with its cause, context and group members, built
        breadth first so that the MAX_DETAILS_PER_RECORD nodes go to the levels nearest the top
        (and never deeper than MAX_NESTING_DEPTH)."""
        budget = MAX_DETAILS_PER_RECORD - 1
        top = self._detail_node(exc)
        queue = deque(self._nested(exc, top, 1))
        while queue:
            inner, parent, field, depth = queue.popleft()
            if depth > MAX_NESTING_DEPTH or budget <= 0:
                if field == "members":
                    parent["members_omitted"] += 1  # a member left out for the budget is only counted
                if field != "members" or depth > MAX_NESTING_DEPTH:
                    parent["nesting_truncated"] = True
                continue
            budget -= 1
            node = self._detail_node(inner)
            if field == "members":
                parent["members"].append(node)
            else:
                parent[field] = node
            queue.extend(self._nested(inner, node, depth))
        return top

    def _detail_node(self, exc):
        message, status = safe_message(exc)
        notes, notes_omitted = safe_notes(exc)
        return {"type_name": self._type_name(type(exc)), "message": message, "message_status": status,
                "notes": notes, "notes_omitted": notes_omitted, "traceback": self._traceback(exc),
                "cause": None, "context": None, "suppress_context": bool(get_suppress_context(exc)),
                "members": [], "members_omitted": 0, "nesting_truncated": False}

    @staticmethod
    def _nested(exc, node, depth):
        """(inner exception, parent node, field, depth) for what `exc` carries: its cause, its
        context when not suppressed and not the cause, its first MAX_GROUP_MEMBERS members."""
        cause = get_cause(exc)
        context = get_context(exc)
        if node["suppress_context"] or context is cause:
            context = None
        nested = [(inner, node, field, depth + 1) for field, inner in (("cause", cause), ("context", context))
                  if inner is not None]
        if issubclass(type(exc), BaseExceptionGroup):
            members = get_members(exc)
            if type(members) is tuple:
                nested.extend((member, node, "members", depth + 1) for member in members[:MAX_GROUP_MEMBERS])
                node["members_omitted"] = max(len(members) - MAX_GROUP_MEMBERS, 0)
        return nested

    def _traceback(self, exc):
        entries = deque(maxlen=MAX_TRACEBACK_ENTRIES)
        tb = get_traceback(exc)
        while tb is not None:
            entries.append(tb)
            tb = tb.tb_next
        code_key_of = self._code_key_of
        out = []
        for tb in entries:
            frame = tb.tb_frame
            ck = code_key_of(frame.f_code, frame)
            if ck:  # the shim's own frames (the runner) are not the program's
                out.append(self._location(ck, tb.tb_lineno))
        return out

    def _type_name(self, cls):
        entry = self._type_names.get(id(cls))
        if entry is None or entry[0] is not cls:
            entry = self._type_names[id(cls)] = (cls, type_name(cls))
        return entry[1]

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
                if site.name is None:
                    site.name = self._type_name(site.exc_type) if site.exc_type is not None else ""
                tallies.append({"type_name": site.name,
                                "raised_at": self._location(site.code_key, site.line) if site.code_key else None,
                                "fate": fate, "count": delta})
        return tallies

"""What a detailed record says about its exception, read on the program's thread at the events
themselves: the shim keeps no reference to an exception, so the type, message, notes, traceback,
cause, context and group members are copied out as plain data (dicts of str, int, bool and lists;
code keys and lines) while the event gives access to the object. The sender thread only encodes it.

The top node's traceback is kept apart, as entries (code key, line, innermost first), so that each
frame the exception reaches adds one entry instead of reading the whole traceback again.
"""

from _collections import deque  # collections.deque itself, without collections/__init__.py (see _monitor)

from .. import _wire
from .._tables import identity
from .safe_reads import (get_cause, get_context, get_members, get_suppress_context, get_traceback, safe_message,
                         safe_notes, type_name)

# Limits (README "Exceptions").
MAX_NESTING_DEPTH = 8            # a record's detail is depth 1; cause/context/members below it
MAX_GROUP_MEMBERS = 16
MAX_DETAILS_PER_RECORD = 32      # ExceptionDetail nodes in one record (keeps a record far below 1 MiB)
MAX_TRACEBACK_ENTRIES = 128      # the innermost ones are kept


class DetailReader:
    def __init__(self, codes):
        self._code_keys = codes.keys  # never replaced
        self._code_key_of = codes.key_of

    def detail(self, exc):
        """The ExceptionDetail dict of `exc` with its cause, context and group members, built
        breadth first so that the MAX_DETAILS_PER_RECORD nodes go to the levels nearest the top
        (and never deeper than MAX_NESTING_DEPTH). The top node's "traceback" is left empty: the
        caller keeps it as traceback_entries()."""
        budget = MAX_DETAILS_PER_RECORD - 1
        top = self._node(exc, traceback=False)
        queue = deque(_nested(exc, top, 1))
        while queue:
            inner, parent, field, depth = queue.popleft()
            if depth > MAX_NESTING_DEPTH or budget <= 0:
                if field == "members":
                    parent["members_omitted"] += 1  # a member left out for the budget is only counted
                if field != "members" or depth > MAX_NESTING_DEPTH:
                    parent["nesting_truncated"] = True
                continue
            budget -= 1
            node = self._node(inner, traceback=True)
            if field == "members":
                parent["members"].append(node)
            else:
                parent[field] = node
            queue.extend(_nested(inner, node, depth))
        return top

    def _node(self, exc, traceback):
        message, status = safe_message(exc)
        notes, notes_omitted = safe_notes(exc)
        return {"type_name": type_name(type(exc)), "message": message, "message_status": status,
                "notes": notes, "notes_omitted": notes_omitted,
                "traceback": locations(self.traceback_entries(exc)) if traceback else [],
                "cause": None, "context": None, "suppress_context": bool(get_suppress_context(exc)),
                "members": [], "members_omitted": 0, "nesting_truncated": False}

    def traceback_entries(self, exc):
        """[code key, line, ...] of `exc`'s traceback, innermost first, at most MAX_TRACEBACK_ENTRIES
        (the innermost); the shim's own frames (the runner) are left out."""
        kept = deque(maxlen=MAX_TRACEBACK_ENTRIES)
        tb = get_traceback(exc)
        while tb is not None:
            kept.append(tb)
            tb = tb.tb_next
        code_keys = self._code_keys
        code_key_of = self._code_key_of
        entries = []
        for tb in reversed(kept):
            frame = tb.tb_frame
            code = frame.f_code
            ck = code_keys.get(identity(code))
            if ck is None:
                ck = code_key_of(code, frame)
            if ck:
                entries.append(ck)
                entries.append(tb.tb_lineno or 0)
        return entries

    @staticmethod
    def refresh_notes(detail, exc):
        """The top node's notes as `exc` has them now (PEP 678: notes are added after the raise)."""
        detail["notes"], detail["notes_omitted"] = safe_notes(exc)


def location(code_key, line):
    """A Location dict."""
    return {"code_id": code_key >> _wire.CODE_ID_SHIFT, "line": max(int(line or 0), 0)}


def locations(entries):
    """Location dicts, outermost first, of [code key, line, ...] entries (innermost first)."""
    return [location(entries[i], entries[i + 1]) for i in range(len(entries) - 2, -1, -2)]


def _nested(exc, node, depth):
    """(inner exception, parent node, field, depth) for what `exc` carries: its cause, its context
    when not suppressed and not the cause, its first MAX_GROUP_MEMBERS members."""
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

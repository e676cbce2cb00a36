"""Reading exceptions and code objects without running any of the program's code: pure helpers
that any thread may call (the callbacks on the program's threads, the sender building records).

Attributes are read through BaseException's and type's own descriptors (never the class's
__getattribute__, __getattr__ or properties), and str() is called only when it is a C slot over
plain builtin values.
"""

from .. import _wire
from .._tables import identity

# Limits (README "Exceptions").
MAX_TEXT_BYTES = 1024            # message and each note, cut on a character boundary
MAX_NOTES = 16
MAX_HANDLED_DEPTH = 32        # handlers nested inside handlers that are looked through
_LINE_CACHE_LIMIT = 1 << 16

# Descriptors that read an exception without its class's __getattribute__ or properties.
_exc_dict = BaseException.__dict__
get_traceback = _exc_dict["__traceback__"].__get__
get_cause = _exc_dict["__cause__"].__get__
get_context = _exc_dict["__context__"].__get__
get_suppress_context = _exc_dict["__suppress_context__"].__get__
_get_args = _exc_dict["args"].__get__
_get_instance_dict = _exc_dict["__dict__"].__get__
get_members = BaseExceptionGroup.__dict__["exceptions"].__get__
_get_group_message = BaseExceptionGroup.__dict__["message"].__get__
_type_module = type.__dict__["__module__"].__get__
_type_qualname = type.__dict__["__qualname__"].__get__
_type_mro = type.__dict__["__mro__"].__get__
_type_vars = type.__dict__["__dict__"].__get__
_dict_get = dict.get
_SLOT_WRAPPER = type(BaseException.__dict__["__str__"])
_PLAIN_TYPES = frozenset((str, int, float, bool, type(None), bytes))
# Fields that the C __str__ of these types formats besides args (all writable by the program).
_STR_FIELDS = (
    (OSError, tuple(OSError.__dict__[name].__get__ for name in ("errno", "strerror", "filename", "filename2"))),
    (SyntaxError, (SyntaxError.__dict__["msg"].__get__,)),
    (UnicodeError, tuple(UnicodeError.__dict__[name].__get__ for name in ("encoding", "object", "reason")
                         if name in UnicodeError.__dict__)),
)


def _is_plain(value):
    kind = type(value)
    if kind in _PLAIN_TYPES:
        return True
    if kind is tuple:
        return all(type(item) in _PLAIN_TYPES for item in value)
    return False


def cut_text(text, limit=MAX_TEXT_BYTES):
    """(text cut to at most `limit` UTF-8 bytes on a character boundary, whether it was cut).
    Lone surrogates become backslash escapes, so the result always encodes."""
    head = text[:limit]
    data = head.encode("utf-8", "backslashreplace")
    if len(data) <= limit:
        return data.decode("utf-8"), len(head) < len(text)
    return data[:limit].decode("utf-8", "ignore"), True


def safe_message(exc):
    """(message, MessageStatus) of str(exc), computed only when that runs no Python code: the
    class's __str__ is a C slot and every value it formats is a plain builtin."""
    cls = type(exc)
    slot = None
    for klass in _type_mro(cls):
        namespace = _type_vars(klass)
        if "__str__" in namespace:
            slot = namespace["__str__"]
            break
    if type(slot) is not _SLOT_WRAPPER:
        return "", _wire.MESSAGE_UNAVAILABLE
    if issubclass(cls, BaseExceptionGroup):
        # Its __str__ formats only its message and how many members it has.
        if type(_get_group_message(exc)) is not str:
            return "", _wire.MESSAGE_UNAVAILABLE
    elif not all(map(_is_plain, _get_args(exc))):  # map, not a generator expression: no function object made
        return "", _wire.MESSAGE_UNAVAILABLE
    for base, getters in _STR_FIELDS:
        if issubclass(cls, base) and not all([_is_plain(get(exc)) for get in getters]):
            return "", _wire.MESSAGE_UNAVAILABLE
    try:
        text = slot(exc)
    except Exception:  # C code over plain values; e.g. int too large to convert
        return "", _wire.MESSAGE_UNAVAILABLE
    if type(text) is not str:
        return "", _wire.MESSAGE_UNAVAILABLE
    text, cut = cut_text(text)
    return text, _wire.MESSAGE_TRUNCATED if cut else _wire.MESSAGE_OK


def safe_notes(exc):
    """(notes, omitted): __notes__ from the instance dict (never through attribute lookup);
    notes that are not str, and those beyond MAX_NOTES, are omitted."""
    try:
        namespace = _get_instance_dict(exc)
    except Exception:
        return [], 0
    if not isinstance(namespace, dict):
        return [], 0
    notes = _dict_get(namespace, "__notes__")
    if notes is None:
        return [], 0
    if type(notes) is not list and type(notes) is not tuple:
        return [], 1
    kept = []
    omitted = 0
    for note in tuple(notes):
        if len(kept) < MAX_NOTES and issubclass(type(note), str):
            kept.append(cut_text(str.__str__(note))[0])
        else:
            omitted += 1
    return kept, omitted


def type_name(cls):
    """module.QualName of an exception class, read through type's own descriptors."""
    try:
        module = _type_module(cls)
        qualname = _type_qualname(cls)
    except Exception:
        return "<unknown>"
    qualname = qualname if type(qualname) is str else "<unknown>"
    if type(module) is not str or not module:
        return qualname
    return module + "." + qualname


def being_handled(current, exc):
    """Is `exc` among the exceptions a thread is handling: `current` (sys.exception() of that
    thread) or its __context__ chain (handlers nested inside handlers). Both are alive: an identity
    test."""
    depth = 0
    while current is not None and depth < MAX_HANDLED_DEPTH:
        if current is exc:
            return True
        current = get_context(current)
        depth += 1
    return False


def handled_ids(current):
    """The ids of the exceptions a thread is handling (see being_handled), for a test against
    exceptions the caller does not hold."""
    ids = []
    while current is not None and len(ids) < MAX_HANDLED_DEPTH:
        ids.append(identity(current))
        current = get_context(current)
    return ids


class CodeLines:
    """Source lines of instruction offsets, cached per (code key, offset): a code key is never given
    to another code object (the code table's), so no code object is kept for the cache."""

    def __init__(self, codes):
        self._cache = {}
        self._codes = codes

    def line_at(self, code, code_key, offset):
        """The source line of the instruction at `offset`, None when it has none."""
        return self._lines(code, code_key, offset)[0]

    def handler_line(self, code, code_key, offset):
        """The line of a handler: its first instruction with a line (PUSH_EXC_INFO has none;
        the `except` test or the with statement's exit follows)."""
        return self._lines(code, code_key, offset)[1] or 0

    def _lines(self, code, code_key, offset):
        key = (code_key, offset)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        at = following = None
        for start, end, line in code.co_lines():
            if start <= offset < end:
                at = line
                if line is not None:
                    following = line
                    break
            elif start > offset and line is not None:
                following = line
                break
        if code_key != self._codes.overflow_code_key:  # shared by every code beyond the table's limit
            if len(self._cache) >= _LINE_CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = (at, following)
        return at, following

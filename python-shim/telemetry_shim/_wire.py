"""Encoder for wire protocol v1 (proto/PROTOCOL.md): preamble, frames, packed event records and
the protobuf messages of shim.proto, written by hand with the stdlib.

Messages are given as dicts keyed by .proto field names; proto3 rules apply (fields equal to
their default are not written, repeated elements always are). Nothing here touches a socket.
"""

import sys

MAGIC = b"TAPY"
PROTOCOL_VERSION = 1
PREAMBLE = MAGIC + PROTOCOL_VERSION.to_bytes(2, "little") + bytes(2)  # "<HH": version, flags 0

FRAME_HELLO = 1
FRAME_DEFINITIONS = 2
FRAME_EVENTS = 3
FRAME_STATS = 4
FRAME_GOODBYE = 5
FRAME_EXCEPTIONS = 6
FRAME_HEADER_SIZE = 5  # "<BI": frame type, payload length (frame_header)
MAX_FRAME_PAYLOAD = 1 << 20
RECORD_SIZE = 16
MAX_RECORDS_PER_FRAME = MAX_FRAME_PAYLOAD // RECORD_SIZE

KIND_START = 1
KIND_RESUME = 2
KIND_THROW = 3
KIND_RETURN = 4
KIND_YIELD = 5
KIND_UNWIND = 6
KIND_SEED = 7
KIND_WINDOW_START = 8  # burst mode: process-wide markers, thread and code fields 0
KIND_WINDOW_END = 9
# Burst and exceptions mode: the call events on for one of the ready-on function's first invocations (markers as above)
KIND_INVOCATION_WINDOW_START = 10
KIND_INVOCATION_WINDOW_END = 11
KIND_NAMES = {
    KIND_START: "START", KIND_RESUME: "RESUME", KIND_THROW: "THROW", KIND_RETURN: "RETURN",
    KIND_YIELD: "YIELD", KIND_UNWIND: "UNWIND", KIND_SEED: "SEED",
    KIND_WINDOW_START: "WINDOW_START", KIND_WINDOW_END: "WINDOW_END",
    KIND_INVOCATION_WINDOW_START: "INVOCATION_WINDOW_START", KIND_INVOCATION_WINDOW_END: "INVOCATION_WINDOW_END",
}
WINDOW_KINDS = frozenset((KIND_WINDOW_START, KIND_WINDOW_END, KIND_INVOCATION_WINDOW_START, KIND_INVOCATION_WINDOW_END))

MODE_FULL = "full"
MODE_BURST = "burst"
MODE_EXCEPTIONS = "exceptions"
MODES = (MODE_FULL, MODE_BURST, MODE_EXCEPTIONS)

CODE_ID_SHIFT = 8
THREAD_ID_SHIFT = 40
MAX_CODE_ID = (1 << 32) - 1
MAX_THREAD_ID = (1 << 24) - 1

REASON_UNSPECIFIED = 0
REASON_EXIT = 1
REASON_DETACH = 2
REASON_ERROR = 3
REASON_NAMES = {REASON_UNSPECIFIED: "REASON_UNSPECIFIED", REASON_EXIT: "REASON_EXIT",
                REASON_DETACH: "REASON_DETACH", REASON_ERROR: "REASON_ERROR"}

# Definition strings longer than this are cut (at a character boundary) so that one
# definition can never approach the frame limit.
MAX_STRING_BYTES = 16 * 1024

# ExceptionFate and ExceptionDetail.MessageStatus of shim.proto.
FATE_UNSPECIFIED = 0
FATE_HANDLED = 1
FATE_ESCAPED_THREAD = 2
FATE_ESCAPED_PROGRAM = 3
FATE_UNRAISABLE = 4
FATE_ASYNCIO_UNHANDLED = 5
FATE_IN_FLIGHT = 6
FATE_NAMES = {FATE_UNSPECIFIED: "FATE_UNSPECIFIED", FATE_HANDLED: "FATE_HANDLED",
              FATE_ESCAPED_THREAD: "FATE_ESCAPED_THREAD", FATE_ESCAPED_PROGRAM: "FATE_ESCAPED_PROGRAM",
              FATE_UNRAISABLE: "FATE_UNRAISABLE", FATE_ASYNCIO_UNHANDLED: "FATE_ASYNCIO_UNHANDLED",
              FATE_IN_FLIGHT: "FATE_IN_FLIGHT"}
MESSAGE_OK = 0
MESSAGE_TRUNCATED = 1
MESSAGE_UNAVAILABLE = 2
MESSAGE_STATUS_NAMES = {MESSAGE_OK: "MESSAGE_OK", MESSAGE_TRUNCATED: "MESSAGE_TRUNCATED",
                        MESSAGE_UNAVAILABLE: "MESSAGE_UNAVAILABLE"}

_VARINT, _LENGTH_DELIMITED = 0, 2

# Field tables from shim.proto: name -> (field number, type). Types: "uint", "int64", "bool",
# "string", a message name, or any of those in a list for a repeated field.
SCHEMAS = {
    "Hello": {
        "protocol_version": (1, "uint"), "shim_version": (2, "string"), "pid": (3, "int64"),
        "parent_pid": (4, "int64"), "process_start_unix_ns": (5, "int64"), "executable": (6, "string"),
        "argv": (7, ["string"]), "python_implementation": (8, "string"), "python_version": (9, "string"),
        "host_name": (10, "string"), "service_name": (11, "string"), "resource_attributes": (12, "string"),
        "clock_monotonic_ns": (13, "int64"), "clock_unix_ns": (14, "int64"), "mode": (15, "string"),
        "tool_id": (16, "uint"), "working_directory": (17, "string"), "window_ns": (18, "int64"),
        "period_ns": (19, "int64"), "overhead_budget_ppm": (20, "uint"), "include": (21, ["string"]),
        "exclude": (22, ["string"]), "callbacks": (23, "string"), "container_id": (24, "string"),
        "pod_uid": (25, "string"), "platform_environment": (26, ["string"]),
        "counts_invocations": (27, "bool"),
    },
    "Definitions": {"codes": (1, ["CodeDefinition"]), "threads": (2, ["ThreadDefinition"])},
    "CodeDefinition": {
        "id": (1, "uint"), "qualified_name": (2, "string"), "file_name": (3, "string"),
        "first_line": (4, "uint"), "module": (5, "string"), "kind_flags": (6, "uint"),
        "ready_on": (7, "bool"),
    },
    "ThreadDefinition": {
        "id": (1, "uint"), "ident": (2, "uint"), "native_id": (3, "int64"), "name": (4, "string"),
        "is_main": (5, "bool"),
    },
    "Stats": {
        "events_recorded": (1, "uint"), "events_dropped": (2, "uint"), "events_sent": (3, "uint"),
        "frames_sent": (4, "uint"), "connects": (5, "uint"), "callback_errors": (6, "uint"),
        "overhead_ns": (7, "uint"), "elapsed_ns": (8, "uint"), "event_toggles": (9, "uint"),
        "toggles_refused": (10, "uint"), "startup": (11, "Startup"), "first_invocations": (12, ["FirstInvocation"]),
        "invocations_ended": (13, "uint"),
    },
    "Startup": {
        "ready_rule": (1, "uint"), "ready_target": (2, "string"), "process_start_ns": (3, "int64"),
        "process_start_resolution_ns": (4, "int64"), "shim_start_ns": (5, "int64"), "ready_ns": (6, "int64"),
        "interpreter_cpu_ns": (7, "int64"), "shim_start_cpu_ns": (8, "int64"), "imports": (9, ["Import"]),
        "imports_dropped": (10, "uint"), "first_invocations_planned": (11, "uint"),
    },
    "Import": {
        "module": (1, "string"), "parent": (2, "uint"), "start_ns": (3, "int64"), "end_ns": (4, "int64"),
        "find_ns": (5, "int64"), "load_ns": (6, "int64"), "exec_ns": (7, "int64"), "failed": (8, "bool"),
    },
    "FirstInvocation": {
        "number": (1, "uint"), "start_ns": (2, "int64"), "end_ns": (3, "int64"), "raised": (4, "bool"),
        "imports": (5, ["Import"]), "trigger": (6, "string"),
    },
    "Goodbye": {
        "reason": (1, "uint"), "final_stats": (2, "Stats"), "end_monotonic_ns": (3, "int64"),
        "detail": (4, "string"),
    },
    "Exceptions": {"records": (1, ["ExceptionRecord"]), "tallies": (2, ["ExceptionTally"])},
    "Location": {"code_id": (1, "uint"), "line": (2, "uint")},
    "ExceptionRecord": {
        "thread_id": (1, "uint"), "raised_ns": (2, "int64"), "fate_ns": (3, "int64"), "fate": (4, "uint"),
        "handled_at": (5, "Location"), "stack": (6, ["Location"]), "stack_truncated": (7, "bool"),
        "frames_unwound": (8, "uint"), "reraises": (9, "uint"), "detail": (10, "ExceptionDetail"),
    },
    "ExceptionDetail": {
        "type_name": (1, "string"), "message": (2, "string"), "message_status": (3, "uint"),
        "notes": (4, ["string"]), "notes_omitted": (5, "uint"), "traceback": (6, ["Location"]),
        "cause": (7, "ExceptionDetail"), "context": (8, "ExceptionDetail"), "suppress_context": (9, "bool"),
        "members": (10, ["ExceptionDetail"]), "members_omitted": (11, "uint"), "nesting_truncated": (12, "bool"),
    },
    "ExceptionTally": {
        "type_name": (1, "string"), "raised_at": (2, "Location"), "fate": (3, "uint"), "count": (4, "uint"),
    },
}


def encode_varint(value, out):
    """Appends `value` (0 <= value < 2**64) as a base-128 varint to the bytearray `out`."""
    if 0 <= value < 0x80:
        out.append(value)  # most values: tags, lines, lengths of small messages
        return
    if value < 0 or value >= 1 << 64:
        raise ValueError("varint out of range: %r" % (value,))
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def encode_string(text):
    """UTF-8 bytes of `text`, valid even for lone surrogates (e.g. undecodable file names)."""
    data = text.encode("utf-8", "backslashreplace")
    if len(data) > MAX_STRING_BYTES:
        data = data[:MAX_STRING_BYTES].decode("utf-8", "ignore").encode("utf-8")
    return data


_VARINT_TYPES = ("uint", "int64", "bool")
_SCALAR_TYPES = _VARINT_TYPES + ("string",)


def _compile(schema):
    """(field names, layout) of a message: per field in field-number order (as protobuf encoders
    write them), its name, its encoded tag, its element type and whether it is repeated. Built once,
    so that encoding a message (exception records: the sender, per record) does no sorting."""
    layout = []
    for field_name, (number, type_name) in sorted(schema.items(), key=lambda item: item[1][0]):
        repeated = isinstance(type_name, list)
        element = type_name[0] if repeated else type_name
        tag = bytearray()
        encode_varint(number << 3 | (_VARINT if element in _VARINT_TYPES else _LENGTH_DELIMITED), tag)
        layout.append((field_name, bytes(tag), element, repeated))
    return frozenset(schema), tuple(layout)


_COMPILED = {name: _compile(schema) for name, schema in SCHEMAS.items()}


_LOCATION_FIELDS, ((_, _LOCATION_CODE_TAG, _, _), (_, _LOCATION_LINE_TAG, _, _)) = _COMPILED["Location"]


def _encode_value(tag, element, value, out):
    out += tag
    if element == "Location" and _LOCATION_FIELDS.issuperset(value):
        # Inline: a record's stack and traceback are lists of these.
        payload = bytearray()
        code_id = value.get("code_id")
        if code_id:
            payload += _LOCATION_CODE_TAG
            encode_varint(code_id, payload)
        line = value.get("line")
        if line:
            payload += _LOCATION_LINE_TAG
            encode_varint(line, payload)
        encode_varint(len(payload), out)
        out += payload
    elif element == "uint":
        encode_varint(value, out)
    elif element == "string":
        data = encode_string(value)
        encode_varint(len(data), out)
        out += data
    elif element == "int64":
        if not -(1 << 63) <= value < 1 << 63:
            raise ValueError("int64 out of range: %r" % (value,))
        encode_varint(value & 0xFFFFFFFFFFFFFFFF, out)  # negative: ten-byte two's complement
    elif element == "bool":
        out.append(1 if value else 0)
    else:
        data = encode_message(element, value)
        encode_varint(len(data), out)
        out += data


def encode_message(name, fields):
    """Protobuf bytes of message `name` from a dict of .proto field names (unknown names raise)."""
    known, layout = _COMPILED[name]
    if not known.issuperset(fields):
        raise KeyError("%s has no field %r" % (name, next(key for key in fields if key not in known)))
    out = bytearray()
    get = fields.get
    for field_name, tag, element, repeated in layout:
        value = get(field_name)
        if repeated:
            for item in value or ():
                _encode_value(tag, element, item, out)
        elif element in _SCALAR_TYPES:
            if value:  # proto3: a scalar's default value (0, "", False, None) is not written
                _encode_value(tag, element, value, out)
        elif value is not None:
            _encode_value(tag, element, value, out)
    return bytes(out)


def frame_header(frame_type, length):
    """A frame's header, little-endian: u8 type, u32 payload length (struct "<BI", without importing _struct at
    every start)."""
    return bytes((frame_type,)) + length.to_bytes(4, "little")


def encode_frame(frame_type, payload):
    """Frame header + payload. The payload must fit the protocol's limit."""
    if len(payload) > MAX_FRAME_PAYLOAD:
        raise ValueError("frame payload of %d bytes exceeds %d" % (len(payload), MAX_FRAME_PAYLOAD))
    return frame_header(frame_type, len(payload)) + payload


def encode_definitions_frames(codes, threads):
    """DEFINITIONS frames for lists of CodeDefinition and ThreadDefinition dicts, split so that
    no frame exceeds the limit (repeated fields concatenate, so any split is valid)."""
    return _encode_split_frames(FRAME_DEFINITIONS, ((1, "CodeDefinition", codes), (2, "ThreadDefinition", threads)))


def encode_exceptions_frames(records, tallies):
    """EXCEPTIONS frames for lists of ExceptionRecord and ExceptionTally dicts, split like
    DEFINITIONS. The shim bounds one record well below the frame limit (see _exceptions/sender_thread.py)."""
    return _encode_split_frames(FRAME_EXCEPTIONS, ((1, "ExceptionRecord", records), (2, "ExceptionTally", tallies)))


def _encode_split_frames(frame_type, fields):
    """Frames of one message type whose only fields are repeated messages: (field number,
    message name, entries) each; an entry never straddles two frames."""
    frames = []
    current = bytearray()
    for field_number, message_name, entries in fields:
        for entry in entries:
            data = encode_message(message_name, entry)
            field = bytearray()
            encode_varint(field_number << 3 | _LENGTH_DELIMITED, field)
            encode_varint(len(data), field)
            field += data
            if current and len(current) + len(field) > MAX_FRAME_PAYLOAD:
                frames.append(encode_frame(frame_type, bytes(current)))
                current = bytearray()
            current += field
    if current:
        frames.append(encode_frame(frame_type, bytes(current)))
    return frames


def pack_word(thread_id, code_id, kind):
    """The record's second u64: thread_id << 40 | code_id << 8 | kind (a window marker: 0 | 0 | kind)."""
    if kind in WINDOW_KINDS:
        if thread_id or code_id:
            raise ValueError("a window marker has thread 0 and code 0, not %r and %r" % (thread_id, code_id))
        return kind
    if not 0 < thread_id <= MAX_THREAD_ID or not 0 < code_id <= MAX_CODE_ID or not 0 < kind <= 0xFF:
        raise ValueError("bad record fields: thread %r code %r kind %r" % (thread_id, code_id, kind))
    return thread_id << THREAD_ID_SHIFT | code_id << CODE_ID_SHIFT | kind


def unpack_word(word):
    """(thread_id, code_id, kind) of a record's second u64."""
    return word >> THREAD_ID_SHIFT, (word >> CODE_ID_SHIFT) & MAX_CODE_ID, word & 0xFF


def encode_events_frames(records, start=0, stop=None, max_records=MAX_RECORDS_PER_FRAME):
    """EVENTS frames for records[start:stop] of an array('Q') of (timestamp, word) pairs.

    Returns (list of frames, number of records). Each frame carries at most `max_records`
    records (65536: 1 MiB); encoding a frame is one tobytes() of a slice.
    """
    if records.itemsize != 8:
        raise ValueError("records must be an array('Q') of 64-bit items")
    if stop is None:
        stop = len(records)
    if (stop - start) % 2:
        raise ValueError("records must hold (timestamp, word) pairs")
    frames = []
    step = 2 * max_records
    for offset in range(start, stop, step):
        piece = records[offset:min(offset + step, stop)]
        if _BIG_ENDIAN:
            piece.byteswap()
        payload = piece.tobytes()
        frames.append(frame_header(FRAME_EVENTS, len(payload)) + payload)
    return frames, (stop - start) // 2


def records_in_events_frame(frame):
    """The number of records an encoded frame carries: 0 for any frame but EVENTS."""
    if frame[0] != FRAME_EVENTS:
        return 0
    return (len(frame) - FRAME_HEADER_SIZE) // RECORD_SIZE


_BIG_ENDIAN = sys.byteorder == "big"

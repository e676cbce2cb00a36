"""Test support: a real Unix-socket agent stand-in with its own reference decoder, and a
helper that runs real Python 3.12+ subprocesses with the shim importable.

The decoder here is deliberately independent of telemetry_shim._wire (written from
proto/PROTOCOL.md and shim.proto), so that a shared mistake cannot hide.
"""

import glob
import itertools
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import unittest
from array import array

SHIM_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # python-shim/
REPO_ROOT = os.path.dirname(SHIM_ROOT)
TESTDATA_DIR = os.path.join(REPO_ROOT, "proto", "testdata")

KIND_NAMES = {1: "START", 2: "RESUME", 3: "THROW", 4: "RETURN", 5: "YIELD", 6: "UNWIND", 7: "SEED",
              8: "WINDOW_START", 9: "WINDOW_END", 10: "INVOCATION_WINDOW_START", 11: "INVOCATION_WINDOW_END"}
WINDOW_KINDS = frozenset(("WINDOW_START", "WINDOW_END", "INVOCATION_WINDOW_START", "INVOCATION_WINDOW_END"))
PUSH_KINDS = frozenset(("START", "RESUME", "THROW", "SEED"))
POP_KINDS = frozenset(("RETURN", "YIELD", "UNWIND"))

# Message schemas from shim.proto: field number -> (name, type). Types: "u" unsigned varint,
# "i" signed 64-bit varint, "b" bool, "s" string, "e:<Enum>" enum, "m:<Message>" message;
# a trailing "*" marks a repeated field.
SCHEMAS = {
    "Hello": {
        1: ("protocol_version", "u"), 2: ("shim_version", "s"), 3: ("pid", "i"),
        4: ("parent_pid", "i"), 5: ("process_start_unix_ns", "i"), 6: ("executable", "s"),
        7: ("argv", "s*"), 8: ("python_implementation", "s"), 9: ("python_version", "s"),
        10: ("host_name", "s"), 11: ("service_name", "s"), 12: ("resource_attributes", "s"),
        13: ("clock_monotonic_ns", "i"), 14: ("clock_unix_ns", "i"), 15: ("mode", "s"),
        16: ("tool_id", "u"), 17: ("working_directory", "s"), 18: ("window_ns", "i"), 19: ("period_ns", "i"),
        20: ("overhead_budget_ppm", "u"), 21: ("include", "s*"), 22: ("exclude", "s*"), 23: ("callbacks", "s"),
        24: ("container_id", "s"), 25: ("pod_uid", "s"), 26: ("platform_environment", "s*"),
        27: ("counts_invocations", "b"),
    },
    "Definitions": {1: ("codes", "m:CodeDefinition*"), 2: ("threads", "m:ThreadDefinition*")},
    "CodeDefinition": {
        1: ("id", "u"), 2: ("qualified_name", "s"), 3: ("file_name", "s"), 4: ("first_line", "u"),
        5: ("module", "s"), 6: ("kind_flags", "u"), 7: ("ready_on", "b"),
    },
    "ThreadDefinition": {
        1: ("id", "u"), 2: ("ident", "u"), 3: ("native_id", "i"), 4: ("name", "s"), 5: ("is_main", "b"),
    },
    "Stats": {
        1: ("events_recorded", "u"), 2: ("events_dropped", "u"), 3: ("events_sent", "u"),
        4: ("frames_sent", "u"), 5: ("connects", "u"), 6: ("callback_errors", "u"),
        7: ("overhead_ns", "u"), 8: ("elapsed_ns", "u"), 9: ("event_toggles", "u"), 10: ("toggles_refused", "u"),
        11: ("startup", "m:Startup"), 12: ("first_invocations", "m:FirstInvocation*"),
        13: ("invocations_ended", "u"),
    },
    "Startup": {
        1: ("ready_rule", "e:ReadyRule"), 2: ("ready_target", "s"), 3: ("process_start_ns", "i"),
        4: ("process_start_resolution_ns", "i"), 5: ("shim_start_ns", "i"), 6: ("ready_ns", "i"),
        7: ("interpreter_cpu_ns", "i"), 8: ("shim_start_cpu_ns", "i"), 9: ("imports", "m:Import*"),
        10: ("imports_dropped", "u"), 11: ("first_invocations_planned", "u"),
    },
    "Import": {
        1: ("module", "s"), 2: ("parent", "u"), 3: ("start_ns", "i"), 4: ("end_ns", "i"), 5: ("find_ns", "i"),
        6: ("load_ns", "i"), 7: ("exec_ns", "i"), 8: ("failed", "b"),
    },
    "FirstInvocation": {
        1: ("number", "u"), 2: ("start_ns", "i"), 3: ("end_ns", "i"), 4: ("raised", "b"), 5: ("imports", "m:Import*"),
        6: ("trigger", "s"),
    },
    "Goodbye": {
        1: ("reason", "e:Reason"), 2: ("final_stats", "m:Stats"), 3: ("end_monotonic_ns", "i"),
        4: ("detail", "s"),
    },
    "Exceptions": {1: ("records", "m:ExceptionRecord*"), 2: ("tallies", "m:ExceptionTally*")},
    "Location": {1: ("code_id", "u"), 2: ("line", "u")},
    "ExceptionRecord": {
        1: ("thread_id", "u"), 2: ("raised_ns", "i"), 3: ("fate_ns", "i"), 4: ("fate", "e:ExceptionFate"),
        5: ("handled_at", "m:Location"), 6: ("stack", "m:Location*"), 7: ("stack_truncated", "b"),
        8: ("frames_unwound", "u"), 9: ("reraises", "u"), 10: ("detail", "m:ExceptionDetail"),
    },
    "ExceptionDetail": {
        1: ("type_name", "s"), 2: ("message", "s"), 3: ("message_status", "e:MessageStatus"),
        4: ("notes", "s*"), 5: ("notes_omitted", "u"), 6: ("traceback", "m:Location*"),
        7: ("cause", "m:ExceptionDetail"), 8: ("context", "m:ExceptionDetail"), 9: ("suppress_context", "b"),
        10: ("members", "m:ExceptionDetail*"), 11: ("members_omitted", "u"), 12: ("nesting_truncated", "b"),
    },
    "ExceptionTally": {
        1: ("type_name", "s"), 2: ("raised_at", "m:Location"), 3: ("fate", "e:ExceptionFate"), 4: ("count", "u"),
    },
}
ENUMS = {
    "Reason": {0: "REASON_UNSPECIFIED", 1: "REASON_EXIT", 2: "REASON_DETACH", 3: "REASON_ERROR"},
    "ExceptionFate": {0: "FATE_UNSPECIFIED", 1: "FATE_HANDLED", 2: "FATE_ESCAPED_THREAD", 3: "FATE_ESCAPED_PROGRAM",
                      4: "FATE_UNRAISABLE", 5: "FATE_ASYNCIO_UNHANDLED", 6: "FATE_IN_FLIGHT"},
    "MessageStatus": {0: "MESSAGE_OK", 1: "MESSAGE_TRUNCATED", 2: "MESSAGE_UNAVAILABLE"},
    "ReadyRule": {0: "READY_UNSPECIFIED", 1: "READY_ON_FUNCTION", 2: "READY_LAMBDA_HANDLER", 3: "READY_MARKED",
                  4: "READY_MAIN_MODULE_END", 5: "READY_EXIT"},
}
FRAME_MESSAGES = {1: "Hello", 2: "Definitions", 4: "Stats", 5: "Goodbye", 6: "Exceptions"}
FRAME_NAMES = {1: "HELLO", 2: "DEFINITIONS", 3: "EVENTS", 4: "STATS", 5: "GOODBYE", 6: "EXCEPTIONS"}
MAX_FRAME_PAYLOAD = 1 << 20


class DecodeError(Exception):
    pass


def _read_varint(data, pos):
    result = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise DecodeError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise DecodeError("varint too long")


def _default_for(type_code):
    if type_code.endswith("*"):
        return []
    kind = type_code.split(":")[0]
    if kind == "s":
        return ""
    if kind == "b":
        return False
    if kind == "m":
        return None
    if kind == "e":
        return ENUMS[type_code.split(":")[1]][0]
    return 0


def decode_message(name, data):
    """Decodes a protobuf message into a dict keyed by .proto field names, defaults filled in."""
    schema = SCHEMAS[name]
    out = {field_name: _default_for(type_code) for field_name, type_code in schema.values()}
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, pos = _read_varint(data, pos)
        elif wire_type == 2:
            length, pos = _read_varint(data, pos)
            if pos + length > len(data):
                raise DecodeError("truncated length-delimited field %d in %s" % (number, name))
            value = bytes(data[pos:pos + length])
            pos += length
        elif wire_type == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire_type == 5:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise DecodeError("bad wire type %d in %s" % (wire_type, name))
        if number not in schema:
            continue  # unknown field: protobuf skips it
        field_name, type_code = schema[number]
        repeated = type_code.endswith("*")
        kind = type_code.rstrip("*").split(":")
        if kind[0] == "s":
            value = value.decode("utf-8")
        elif kind[0] == "i":
            if value >= 1 << 63:
                value -= 1 << 64
        elif kind[0] == "b":
            value = bool(value)
        elif kind[0] == "e":
            value = ENUMS[kind[1]].get(value, value)
        elif kind[0] == "m":
            value = decode_message(kind[1], value)
        if repeated:
            out[field_name].append(value)
        else:
            out[field_name] = value
    return out


class DecodedConnection:
    """One connection as the agent would see it, decoded incrementally as bytes arrive."""

    def __init__(self):
        self.hello = None
        self.codes = {}
        self.threads = {}
        self.thread_history = []  # every ThreadDefinition in arrival order
        self._events = []  # (ts, thread_id, code_id, kind_name): the `events` property
        self._event_words = []  # array('Q') of each EVENTS frame checked but not yet turned into tuples
        self.stats = None
        self.goodbye = None
        self.exception_records = []  # ExceptionRecord dicts in arrival order
        self.tallies = []  # ExceptionTally dicts in arrival order
        # Stats.invocations_ended n -> (ExceptionRecords, ExceptionTallies) that had arrived before the STATS saying n
        self.exceptions_before_invocation_end = {}
        self.startup = None  # the Startup message, once sent
        self.first_invocations = []  # FirstInvocation messages in arrival order
        self.error = None
        self.ended = False
        self.frame_types = []
        self.total_bytes = 0
        self._buffer = bytearray()
        self._preamble_done = False
        self._lock = threading.Lock()
        self._ended_event = threading.Event()

    def feed(self, data):
        with self._lock:
            self.total_bytes += len(data)
            if self.error is not None:
                return
            self._buffer += data
            try:
                self._parse_available()
            except (DecodeError, UnicodeDecodeError, KeyError) as e:
                self.error = "%s: %s" % (type(e).__name__, e)

    def finish(self):
        with self._lock:
            if self.error is None:
                if not self._preamble_done or (self.hello is None):
                    self.error = "truncated stream: ended before HELLO"
                elif self._buffer:
                    self.error = "truncated stream: %d bytes of an incomplete frame" % len(self._buffer)
            self.ended = True
        self._ended_event.set()

    def wait_ended(self, timeout):
        return self._ended_event.wait(timeout)

    def _parse_available(self):
        buf = self._buffer
        if not self._preamble_done:
            if len(buf) < 8:
                return
            magic, version, flags = struct.unpack_from("<4sHH", buf, 0)
            if magic != b"TAPY" or version != 1 or flags != 0:
                raise DecodeError("bad preamble %r" % bytes(buf[:8]))
            del buf[:8]
            self._preamble_done = True
        pos = 0
        while len(buf) - pos >= 5:
            frame_type, length = struct.unpack_from("<BI", buf, pos)
            if length > MAX_FRAME_PAYLOAD:
                raise DecodeError("frame too large: %d" % length)
            if len(buf) - pos - 5 < length:
                break
            payload = bytes(buf[pos + 5:pos + 5 + length])
            pos += 5 + length
            self._frame(frame_type, payload)
        del buf[:pos]

    def _frame(self, frame_type, payload):
        if frame_type not in FRAME_NAMES:
            raise DecodeError("unknown frame type %d" % frame_type)
        if self.goodbye is not None:
            raise DecodeError("frame after GOODBYE")
        if (frame_type == 1) != (self.hello is None):
            raise DecodeError("HELLO must be exactly the first frame")
        self.frame_types.append(FRAME_NAMES[frame_type])
        if frame_type == 3:
            if not payload or len(payload) % 16:
                raise DecodeError("EVENTS payload length %d is not a positive multiple of 16" % len(payload))
            # Checked now, against the definitions received so far, one distinct word at a time; turned
            # into tuples when read. So reading keeps up with a shim that records millions of events a
            # second, and the shim's sender is never held up by this decoder.
            words = array("Q")
            words.frombytes(payload)
            if sys.byteorder == "big":
                words.byteswap()
            for word in set(words[1::2]):
                kind = word & 0xFF
                code_id = (word >> 8) & 0xFFFFFFFF
                thread_id = word >> 40
                if kind not in KIND_NAMES:
                    raise DecodeError("invalid kind %d" % kind)
                if KIND_NAMES[kind] in WINDOW_KINDS:
                    if code_id or thread_id:
                        raise DecodeError("window marker with thread %d code %d" % (thread_id, code_id))
                elif code_id not in self.codes or thread_id not in self.threads:
                    raise DecodeError("undefined id: thread %d code %d" % (thread_id, code_id))
            self._event_words.append(words)
            return
        message = decode_message(FRAME_MESSAGES[frame_type], payload)
        if frame_type == 1:
            self.hello = message
        elif frame_type == 2:
            for code in message["codes"]:
                if code["id"] == 0 or code["id"] in self.codes:
                    raise DecodeError("code id %d zero or defined twice" % code["id"])
                self.codes[code["id"]] = code
            for thread in message["threads"]:
                if thread["id"] == 0 or thread["id"] >= 1 << 24:
                    raise DecodeError("bad thread id %d" % thread["id"])
                self.threads[thread["id"]] = thread
                self.thread_history.append(thread)
        elif frame_type == 4:
            self.stats = message
            self._keep_startup(message)
            self.exceptions_before_invocation_end.setdefault(
                message["invocations_ended"], (list(self.exception_records), list(self.tallies)))
        elif frame_type == 5:
            self.goodbye = message
            if message["final_stats"] is not None:
                self._keep_startup(message["final_stats"])
        elif frame_type == 6:
            for record in message["records"]:
                if record["thread_id"] not in self.threads:
                    raise DecodeError("exception record of undefined thread %d" % record["thread_id"])
                for location in _record_locations(record):
                    self._check_location(location)
                self.exception_records.append(record)
            for tally in message["tallies"]:
                if tally["raised_at"] is not None:
                    self._check_location(tally["raised_at"])
                self.tallies.append(tally)

    @property
    def events(self):
        """Every event record so far, in order: (ts, thread_id, code_id, kind_name)."""
        with self._lock:
            pending, self._event_words = self._event_words, []
            for words in pending:
                self._events.extend((ts, word >> 40, (word >> 8) & 0xFFFFFFFF, KIND_NAMES[word & 0xFF])
                                    for ts, word in zip(words[0::2], words[1::2]))
            return self._events

    def _keep_startup(self, stats):
        # Sent once each, as an agent keeps them: a later STATS without them removes nothing.
        if stats["startup"] is not None:
            self.startup = stats["startup"]
        self.first_invocations.extend(stats["first_invocations"])

    def _check_location(self, location):
        if location["code_id"] not in self.codes:
            raise DecodeError("location uses undefined code %d" % location["code_id"])

    # Convenience views -------------------------------------------------------------------

    def qualified_name(self, code_id):
        return self.codes[code_id]["qualified_name"]

    def events_named(self):
        """Events as (thread_name, qualified_name, kind_name)."""
        return [(self.threads[t]["name"], self.codes[c]["qualified_name"], k) for _, t, c, k in self.events]

    def thread_named(self, name):
        for thread_id, thread in self.threads.items():
            if thread["name"] == name:
                return thread_id
        return None


def _record_locations(record):
    if record["handled_at"] is not None:
        yield record["handled_at"]
    yield from record["stack"]
    pending = [record["detail"]] if record["detail"] is not None else []
    while pending:
        detail = pending.pop()
        yield from detail["traceback"]
        pending.extend(d for d in [detail["cause"], detail["context"], *detail["members"]] if d is not None)


def call_counts(conn, thread_id=None):
    """{qualified_name: number of START events} (optionally for one thread)."""
    counts = {}
    for _, t, c, kind in conn.events:
        if kind == "START" and (thread_id is None or t == thread_id):
            name = conn.codes[c]["qualified_name"]
            counts[name] = counts.get(name, 0) + 1
    return counts


def replay_stacks(conn):
    """Replays the events strictly: {thread_id: (final stack of code ids, list of problems)}.

    Strict means every pop must match the top of its thread's stack, which is what the shim
    promises for ordinary programs (the agent's tolerance for implicit exits is not used here).
    """
    stacks = {}
    problems = {}
    last_ts = {}
    for ts, t, c, kind in conn.events:
        stack = stacks.setdefault(t, [])
        errs = problems.setdefault(t, [])
        if ts < last_ts.get(t, 0):
            errs.append("timestamp went backwards at %d" % ts)
        last_ts[t] = ts
        if kind in PUSH_KINDS:
            stack.append(c)
        elif not stack or stack[-1] != c:
            errs.append("%s of %s does not match top %s" % (
                kind, conn.codes[c]["qualified_name"],
                conn.codes[stack[-1]]["qualified_name"] if stack else None))
        else:
            stack.pop()
    return {t: (stacks[t], problems[t]) for t in stacks}


# Abstract socket names (Linux) of the probes of RecordingAgent.connections_so_far.
_PROBE_PREFIX = b"\0tashim-probe-"
_probe_numbers = itertools.count()


class RecordingAgent:
    """A real Unix-socket server that records and decodes every connection (context manager)."""

    def __init__(self, path=None):
        self._tmpdir = None
        if path is None:
            self._tmpdir = tempfile.mkdtemp(prefix="tashim-")
            path = os.path.join(self._tmpdir, "agent.sock")
        self.path = path
        self._server = None
        self._connections = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._threads = []
        self._closing = False
        self._probes_accepted = set()

    def __enter__(self):
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(self.path)
        self._server.listen(64)
        self._server.settimeout(0.1)
        accept_thread = threading.Thread(target=self._accept_loop, name="RecordingAgent-accept", daemon=True)
        accept_thread.start()
        self._threads.append(accept_thread)
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        self._closing = True
        for thread in list(self._threads):
            thread.join(5)
        try:
            self._server.close()
        except OSError:
            pass
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    def _accept_loop(self):
        while not self._closing:
            try:
                client, address = self._server.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            if isinstance(address, bytes) and address.startswith(_PROBE_PREFIX):
                client.close()
                with self._lock:
                    self._probes_accepted.add(address)
                    self._changed.notify_all()
                continue
            conn = DecodedConnection()
            with self._lock:
                self._connections.append(conn)
                self._changed.notify_all()
            reader = threading.Thread(target=self._read_loop, args=(client, conn), daemon=True)
            reader.start()
            self._threads.append(reader)

    def _read_loop(self, client, conn):
        client.settimeout(0.1)
        try:
            while True:
                try:
                    data = client.recv(1 << 16)
                except socket.timeout:
                    if self._closing:
                        break
                    continue
                except OSError:
                    break
                if not data:
                    break
                conn.feed(data)
        finally:
            client.close()
            conn.finish()
            with self._lock:
                self._changed.notify_all()

    def connections(self):
        with self._lock:
            return list(self._connections)

    def connections_so_far(self, timeout=30.0):
        """Every connection made before this call, once accepted (ended or not): for what a process
        that has exited connected, none included. A probe connection made now is accepted after all
        of them (the listen backlog is first in, first out) and is not one of them."""
        name = _PROBE_PREFIX + b"%d-%d" % (os.getpid(), next(_probe_numbers))
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.bind(name)
            probe.connect(self.path)
            deadline = time.monotonic() + timeout
            with self._lock:
                while name not in self._probes_accepted:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise AssertionError("the probe connection was not accepted within %.1fs" % timeout)
                    self._changed.wait(min(remaining, 0.2))
                return list(self._connections)
        finally:
            probe.close()

    def wait_for(self, count=1, timeout=30.0):
        """Waits until at least `count` connections have ended; returns the ended ones in accept order."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                ended = [c for c in self._connections if c.ended]
                if len(ended) >= count:
                    return ended
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError("waited %.1fs for %d ended connection(s), have %d of %d" % (
                        timeout, count, len(ended), len(self._connections)))
                self._changed.wait(min(remaining, 0.2))

    def wait_for_accepted(self, count=1, timeout=30.0):
        """Waits until at least `count` connections were accepted (ended or not)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._connections) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError("waited %.1fs for %d connection(s)" % (timeout, count))
                self._changed.wait(min(remaining, 0.2))
            return list(self._connections)


def find_python():
    """A Python >= 3.12 interpreter: $TELEMETRY_PYTHON, the running one, else pyenv's 3.12/3.13."""
    explicit = os.environ.get("TELEMETRY_PYTHON")
    if explicit:
        return explicit
    if sys.version_info >= (3, 12):
        return sys.executable
    roots = []
    try:
        root = subprocess.run(["pyenv", "root"], capture_output=True, text=True, timeout=10).stdout.strip()
        if root:
            roots.append(root)
    except (OSError, subprocess.SubprocessError):
        pass
    roots.append(os.path.expanduser("~/.pyenv"))
    for root in roots:
        for minor in ("3.12", "3.13"):
            for candidate in sorted(glob.glob(os.path.join(root, "versions", minor + "*", "bin", "python"))):
                if os.access(candidate, os.X_OK):
                    return candidate
    raise RuntimeError("no Python >= 3.12 found: set TELEMETRY_PYTHON")


def run_python(code_or_args, env=None, timeout=60, cwd=None):
    """Runs a real Python 3.12+ subprocess with python-shim on PYTHONPATH.

    code_or_args: a str is run with -c; a list is passed as the interpreter's arguments.
    env: extra environment variables (None values remove a variable).
    Returns (returncode, stdout, stderr) as text.
    """
    process = start_python(code_or_args, env=env, cwd=cwd)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    return process.returncode, stdout, stderr


def start_python(code_or_args, env=None, cwd=None):
    """Starts what run_python runs and returns the subprocess.Popen (stdout and stderr piped)."""
    if isinstance(code_or_args, str):
        args = ["-c", code_or_args]
    else:
        args = list(code_or_args)
    full_env = dict(os.environ)
    full_env.pop("TELEMETRY_AGENT_SOCKET", None)
    # Tests count every call: full mode unless a test asks for another (the runner and autostart
    # default to burst). env={"TELEMETRY_SHIM_MODE": None} gets the entry point's own default.
    full_env["TELEMETRY_SHIM_MODE"] = "full"
    full_env["PYTHONPATH"] = SHIM_ROOT + (os.pathsep + full_env["PYTHONPATH"] if full_env.get("PYTHONPATH") else "")
    full_env["PYTHONDONTWRITEBYTECODE"] = "1"
    for key, value in (env or {}).items():
        if value is None:
            full_env.pop(key, None)
        else:
            full_env[key] = value
    return subprocess.Popen([find_python()] + args, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=cwd)


def wait_for_file(path, process, timeout=30.0):
    """Waits until `path` exists; fails early if `process` ended first."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if process.poll() is not None:
            raise AssertionError("the program ended (status %d) before creating %s: %s" % (
                process.returncode, path, process.stderr.read()))
        if time.monotonic() > deadline:
            raise AssertionError("waited %.1fs for %s" % (timeout, path))
        time.sleep(0.01)


class AcceptingAgent:
    """A real Unix-socket server that accepts every connection on its own thread and hands it to
    `_on_client` (context manager). Subclasses decide what an agent that misbehaves does."""

    tmp_prefix = "tashim-agent-"

    def __init__(self):
        self._tmpdir = tempfile.mkdtemp(prefix=self.tmp_prefix)
        self.path = os.path.join(self._tmpdir, "agent.sock")
        self._server = None
        self._thread = None
        self._closing = False

    def __enter__(self):
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(self.path)
        self._server.listen(64)
        self._server.settimeout(0.1)
        self._thread = threading.Thread(target=self._accept, name=type(self).__name__, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._closing = True
        self._thread.join(5)
        self._close_clients()
        self._server.close()
        shutil.rmtree(self._tmpdir, ignore_errors=True)
        return False

    def _accept(self):
        while not self._closing:
            try:
                client, _ = self._server.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self._on_client(client)

    def _on_client(self, client):
        raise NotImplementedError

    def _close_clients(self):
        pass


class HangingUpAgent(AcceptingAgent):
    """Reads each connection's first bytes and then closes it: an agent going away mid-run, as the
    shim sees it."""

    tmp_prefix = "tashim-hangup-"

    def __init__(self):
        super().__init__()
        self.hung_up = 0

    def _on_client(self, client):
        with client:
            client.settimeout(5)
            try:
                client.recv(64)
            except OSError:
                pass
        self.hung_up += 1


class NeverReadingAgent(AcceptingAgent):
    """Accepts every connection and never reads from it: the shim's sends fill the socket and stall."""

    tmp_prefix = "tashim-stall-"

    def __init__(self):
        super().__init__()
        self.accepted = []

    def _on_client(self, client):
        self.accepted.append(client)

    def _close_clients(self):
        for client in self.accepted:
            client.close()


def skip_without_frame_recorder(test):
    """Skips `test` unless _testinternalcapi.set_eval_frame_record exists: a PEP 523 frame evaluator that
    records every Python frame the interpreter runs (CPython's test_capi uses it), to check that the shim's
    C callbacks run none."""
    try:
        import _testinternalcapi
        _testinternalcapi.set_eval_frame_record  # noqa: B018
    except (ImportError, AttributeError):
        test.skipTest("no _testinternalcapi.set_eval_frame_record")


class TempDirTestCase(unittest.TestCase):
    """A test with its own temporary directory (self.tmp, removed afterwards) to write programs in."""

    tmp_prefix = "tashim-"

    def setUp(self):
        self.tmp = os.path.realpath(tempfile.mkdtemp(prefix=self.tmp_prefix))
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)

    def write(self, relative_path, text):
        """Writes the dedented `text` at `relative_path` under self.tmp; returns its path."""
        path = os.path.join(self.tmp, relative_path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(textwrap.dedent(text))
        return path


class DiscardingAgent(AcceptingAgent):
    """Reads every connection to its end and keeps nothing: an agent that always keeps up, for runs
    too large to keep (memory tests)."""

    tmp_prefix = "tashim-discard-"

    def __init__(self):
        super().__init__()
        self.bytes_read = 0
        self._readers = []

    def _on_client(self, client):
        reader = threading.Thread(target=self._drain, args=(client,), name="DiscardingAgent-reader", daemon=True)
        self._readers.append((client, reader))
        reader.start()

    def _drain(self, client):
        with client:
            while True:
                try:
                    data = client.recv(1 << 20)
                except OSError:
                    return
                if not data:
                    return
                self.bytes_read += len(data)

    def _close_clients(self):
        for client, reader in self._readers:
            reader.join(10)
            try:
                client.close()
            except OSError:
                pass

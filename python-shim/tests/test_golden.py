"""Golden streams: proto/testdata/*.json encoded with the shim's encoder must equal *.bin byte for
byte. The agent's tests parse the same .bin files. Rewrites only with UPDATE_GOLDEN=1, and a
rewrite fails the test so that it is never silent."""

import glob
import json
import os
import unittest
from array import array

from telemetry_shim import _wire

from tests import support

FRAME_TYPES = {"HELLO": _wire.FRAME_HELLO, "DEFINITIONS": _wire.FRAME_DEFINITIONS, "EVENTS": _wire.FRAME_EVENTS,
               "STATS": _wire.FRAME_STATS, "GOODBYE": _wire.FRAME_GOODBYE, "EXCEPTIONS": _wire.FRAME_EXCEPTIONS}
MESSAGES = {"HELLO": "Hello", "DEFINITIONS": "Definitions", "STATS": "Stats", "GOODBYE": "Goodbye",
            "EXCEPTIONS": "Exceptions"}
KINDS = {name: kind for kind, name in _wire.KIND_NAMES.items()}
REASONS = {name: number for number, name in _wire.REASON_NAMES.items()}
# Enum fields of the JSON (names, as the protobuf JSON mapping writes them) and their values.
ENUM_FIELDS = {
    "reason": REASONS,
    "fate": {name: number for number, name in _wire.FATE_NAMES.items()},
    "message_status": {name: number for number, name in _wire.MESSAGE_STATUS_NAMES.items()},
}


def _with_enum_numbers(value):
    """The JSON message with every enum name replaced by its number, at any depth."""
    if isinstance(value, list):
        return [_with_enum_numbers(item) for item in value]
    if isinstance(value, dict):
        return {key: ENUM_FIELDS[key][item] if key in ENUM_FIELDS and isinstance(item, str)
                else _with_enum_numbers(item) for key, item in value.items()}
    return value


def _with_defaults(message_name, value):
    """A JSON message as the reference decoder gives it back: every field, defaults filled in."""
    schema = support.SCHEMAS[message_name]
    out = {}
    for field_name, type_code in schema.values():
        present = value.get(field_name)
        nested = type_code.rstrip("*").split(":")
        if present is None:
            out[field_name] = support._default_for(type_code)
        elif nested[0] == "m" and type_code.endswith("*"):
            out[field_name] = [_with_defaults(nested[1], item) for item in present]
        elif nested[0] == "m":
            out[field_name] = _with_defaults(nested[1], present)
        else:
            out[field_name] = present
    return out


def expand_events(events):
    """The events of a golden EVENTS frame, with each run {"repeat": n, "ts_step": s, "events": [...]}
    written out: its events n times, the timestamps of copy k moved by k * s (proto/PROTOCOL.md)."""
    expanded = []
    for event in events:
        if "repeat" not in event:
            expanded.append(event)
            continue
        for k in range(event["repeat"]):
            expanded.extend(dict(e, ts=e["ts"] + k * event["ts_step"]) for e in event["events"])
    return expanded


def _records(events):
    records = array("Q")
    for event in expand_events(events):
        records.append(event["ts"])
        records.append(_wire.pack_word(event["thread"], event["code"], KINDS[event["kind"]]))
    return records


def encode_scenario(scenario):
    """The stream a golden JSON describes, frame by frame, through the shim's encoder."""
    out = bytearray(_wire.PREAMBLE)
    for frame in scenario["frames"]:
        kind = frame["type"]
        if kind == "EVENTS":
            frames, count = _wire.encode_events_frames(_records(frame["events"]))
            if len(frames) != 1:
                raise AssertionError("one JSON EVENTS frame must encode to one frame, got %d" % len(frames))
            out += frames[0]
            continue
        message = _with_enum_numbers(frame["message"])
        out += _wire.encode_frame(FRAME_TYPES[kind], _wire.encode_message(MESSAGES[kind], message))
    return bytes(out)


def _load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


class GoldenStreamTests(unittest.TestCase):
    def test_exceptions_golden_covers_every_fate_and_message_status(self):
        scenario = _load(os.path.join(support.TESTDATA_DIR, "exceptions.json"))
        records = [r for f in scenario["frames"] if f["type"] == "EXCEPTIONS" for r in f["message"].get("records", [])]
        fates = {r["fate"] for r in records}
        self.assertEqual(set(_wire.FATE_NAMES.values()) - {"FATE_UNSPECIFIED"}, fates)
        details = []
        pending = [r["detail"] for r in records]
        while pending:
            detail = pending.pop()
            details.append(detail)
            pending.extend(d for key in ("cause", "context") if key in detail for d in [detail[key]])
            pending.extend(detail.get("members", []))
        self.assertEqual(set(_wire.MESSAGE_STATUS_NAMES.values()),
                         {d.get("message_status", "MESSAGE_OK") for d in details})


    def scenarios(self):
        paths = sorted(glob.glob(os.path.join(support.TESTDATA_DIR, "*.json")))
        self.assertGreaterEqual(len(paths), 3, "golden scenarios missing")
        return paths

    def test_encoding_each_scenario_matches_its_golden_bin(self):
        for path in self.scenarios():
            with self.subTest(os.path.basename(path)):
                encoded = encode_scenario(_load(path))
                bin_path = path[:-5] + ".bin"
                if os.environ.get("UPDATE_GOLDEN") == "1":
                    with open(bin_path, "wb") as f:
                        f.write(encoded)
                    self.fail("rewrote %s (UPDATE_GOLDEN=1); run again without it" % bin_path)
                self.assertTrue(os.path.exists(bin_path), "%s missing: run with UPDATE_GOLDEN=1" % bin_path)
                with open(bin_path, "rb") as f:
                    expected = f.read()
                if encoded != expected:
                    first = next(i for i in range(min(len(encoded), len(expected)) + 1)
                                 if i >= min(len(encoded), len(expected)) or encoded[i] != expected[i])
                    self.fail("%s differs from its encoding at byte %d (%d vs %d bytes)"
                              % (bin_path, first, len(expected), len(encoded)))

    def test_reference_decoder_reads_each_golden_bin_back_to_its_json(self):
        for path in self.scenarios():
            with self.subTest(os.path.basename(path)):
                scenario = _load(path)
                with open(path[:-5] + ".bin", "rb") as f:
                    data = f.read()
                conn = support.DecodedConnection()
                # A few uneven splits, down to single bytes at the start.
                for piece in (data[:1], data[1:7], data[7:8], data[8:1000], data[1000:]):
                    conn.feed(piece)
                conn.finish()
                self.assertIsNone(conn.error)
                self.assertEqual([f["type"] for f in scenario["frames"]], conn.frame_types)
                expected_events = [(e["ts"], e["thread"], e["code"], e["kind"])
                                   for f in scenario["frames"] if f["type"] == "EVENTS" for e in expand_events(f["events"])]
                self.assertEqual(expected_events, conn.events)
                hello = scenario["frames"][0]["message"]
                for key, value in hello.items():
                    self.assertEqual(value, conn.hello[key], key)
                exceptions = [f["message"] for f in scenario["frames"] if f["type"] == "EXCEPTIONS"]
                self.assertEqual([_with_defaults("ExceptionRecord", r) for m in exceptions for r in m.get("records", [])],
                                 conn.exception_records)
                self.assertEqual([_with_defaults("ExceptionTally", t) for m in exceptions for t in m.get("tallies", [])],
                                 conn.tallies)
                goodbye = [f["message"] for f in scenario["frames"] if f["type"] == "GOODBYE"]
                if goodbye:
                    self.assertEqual(goodbye[0]["reason"], conn.goodbye["reason"])
                else:
                    self.assertIsNone(conn.goodbye)

    def test_large_batch_splits_into_the_golden_frames(self):
        scenario = _load(os.path.join(support.TESTDATA_DIR, "unicode_and_limits.json"))
        first, second = [expand_events(f["events"]) for f in scenario["frames"] if f["type"] == "EVENTS"][:2]
        self.assertEqual(_wire.MAX_RECORDS_PER_FRAME, len(first))
        frames, count = _wire.encode_events_frames(_records(first + second))
        self.assertEqual(len(first) + len(second), count)
        self.assertEqual(2, len(frames))
        self.assertEqual(5 + _wire.MAX_FRAME_PAYLOAD, len(frames[0]))
        with open(os.path.join(support.TESTDATA_DIR, "unicode_and_limits.bin"), "rb") as f:
            golden = f.read()
        self.assertIn(frames[0] + frames[1], golden)


if __name__ == "__main__":
    unittest.main()

"""Encoder unit tests, checked against the independent reference decoder in support.py."""

import struct
import unittest
from array import array

from telemetry_shim import _wire

from tests import support


def varint(value):
    out = bytearray()
    _wire.encode_varint(value, out)
    return bytes(out)


class VarintTests(unittest.TestCase):
    def test_known_encodings(self):
        self.assertEqual(b"\x00", varint(0))
        self.assertEqual(b"\x7f", varint(127))
        self.assertEqual(b"\x80\x01", varint(128))
        self.assertEqual(b"\xac\x02", varint(300))
        self.assertEqual(b"\xff\xff\xff\xff\x0f", varint(0xFFFFFFFF))
        self.assertEqual(b"\xff" * 9 + b"\x01", varint((1 << 64) - 1))

    def test_round_trip_through_reference_decoder(self):
        for value in [0, 1, 127, 128, 16383, 16384, 1 << 31, 1 << 32, (1 << 63) - 1, 1 << 63, (1 << 64) - 1]:
            encoded = varint(value)
            decoded, end = support._read_varint(encoded, 0)
            self.assertEqual((value, len(encoded)), (decoded, end))

    def test_out_of_range_is_rejected(self):
        for value in (-1, 1 << 64):
            with self.assertRaises(ValueError):
                varint(value)


class MessageTests(unittest.TestCase):
    def round_trip(self, name, fields):
        return support.decode_message(name, _wire.encode_message(name, fields))

    def test_hello_every_field(self):
        hello = {
            "protocol_version": 1, "shim_version": "0.1.0", "pid": 123, "parent_pid": 1,
            "process_start_unix_ns": 1_700_000_000_123_456_789, "executable": "/usr/bin/python3",
            "argv": ["app.py", "", "ü"], "python_implementation": "cpython", "python_version": "3.12.1",
            "host_name": "h", "service_name": "svc", "resource_attributes": "a=b,c=d",
            "clock_monotonic_ns": 42, "clock_unix_ns": 1_700_000_000_000_000_000, "mode": "burst", "tool_id": 3,
            "working_directory": "/srv", "window_ns": 10_000_000, "period_ns": 1_000_000_000,
            "overhead_budget_ppm": 10_000, "include": ["__main__", "app.*"], "exclude": ["stdlib", "*/vendor/*"],
            "callbacks": "native", "container_id": "0123456789abcdef" * 4, "pod_uid": "1f3c2a4e-5b6d-4c7e-8f90-a1b2c3d4e5f6",
            "platform_environment": ["K_SERVICE=orders", "K_REVISION=orders-00002"], "counts_invocations": True,
        }
        self.assertEqual(hello, self.round_trip("Hello", hello))

    def test_defaults_are_not_written_but_repeated_empty_strings_are(self):
        self.assertEqual(b"", _wire.encode_message("Stats", {"events_recorded": 0, "events_sent": 0}))
        self.assertEqual(b"", _wire.encode_message("Hello", {"argv": [], "service_name": ""}))
        self.assertEqual(b"\x3a\x00\x3a\x00", _wire.encode_message("Hello", {"argv": ["", ""]}))

    def test_negative_int64_is_ten_bytes_twos_complement(self):
        data = _wire.encode_message("Hello", {"parent_pid": -1})
        self.assertEqual(b"\x20" + b"\xff" * 9 + b"\x01", data)
        self.assertEqual(-1, support.decode_message("Hello", data)["parent_pid"])

    def test_definitions_and_nested_messages(self):
        definitions = {
            "codes": [{"id": 1, "qualified_name": "A.f", "file_name": "/x.py", "first_line": 3, "module": "m",
                       "kind_flags": 1, "ready_on": True},
                      {"id": 2, "qualified_name": "g", "file_name": "", "first_line": 0, "module": "", "kind_flags": 0,
                       "ready_on": False}],
            "threads": [{"id": 1, "ident": (1 << 64) - 1, "native_id": 99, "name": "MainThread", "is_main": True}],
        }
        self.assertEqual(definitions, self.round_trip("Definitions", definitions))

    def test_goodbye_with_final_stats(self):
        goodbye = {"reason": _wire.REASON_ERROR, "detail": "boom",
                   "final_stats": {"events_recorded": 5, "events_dropped": 1, "events_sent": 4, "frames_sent": 3,
                                   "connects": 1, "callback_errors": 1, "overhead_ns": 9_000_000,
                                   "elapsed_ns": 900_000_000, "event_toggles": 1800, "toggles_refused": 1,
                                   "startup": None, "first_invocations": [], "invocations_ended": 12},
                   "end_monotonic_ns": 77}
        decoded = self.round_trip("Goodbye", goodbye)
        self.assertEqual("REASON_ERROR", decoded["reason"])
        self.assertEqual(goodbye["final_stats"], decoded["final_stats"])
        self.assertEqual((77, "boom"), (decoded["end_monotonic_ns"], decoded["detail"]))

    def test_stats_with_startup_and_first_invocations(self):
        entry = {"module": "json", "parent": 0, "start_ns": 10, "end_ns": 90, "find_ns": 5, "load_ns": 7,
                 "exec_ns": 60, "failed": False}
        child = dict(entry, module="json.decoder", parent=1, start_ns=20, end_ns=30, failed=True)
        stats = {"events_recorded": 1, "startup": {
            "ready_rule": "READY_ON_FUNCTION", "ready_target": "app:handler", "process_start_ns": 1,
            "process_start_resolution_ns": 10_000_000, "shim_start_ns": 5, "ready_ns": 100,
            "interpreter_cpu_ns": 4, "shim_start_cpu_ns": 3, "imports": [entry, child], "imports_dropped": 2,
            "first_invocations_planned": 3}, "first_invocations": [
            {"number": 1, "start_ns": 100, "end_ns": 200, "raised": True, "imports": [entry], "trigger": "http"}]}
        encoded = dict(stats, startup=dict(stats["startup"], ready_rule=1))
        decoded = self.round_trip("Stats", encoded)
        self.assertEqual(stats["startup"], decoded["startup"])
        self.assertEqual(stats["first_invocations"], decoded["first_invocations"])

    def test_unknown_field_name_is_an_error(self):
        with self.assertRaises(KeyError):
            _wire.encode_message("Stats", {"nope": 1})

    def test_strings_are_valid_utf8_even_with_lone_surrogates_and_are_bounded(self):
        data = _wire.encode_string("bad\udcff.py")
        data.decode("utf-8")  # must not raise
        long = _wire.encode_string("é" * _wire.MAX_STRING_BYTES)
        self.assertLessEqual(len(long), _wire.MAX_STRING_BYTES)
        long.decode("utf-8")


class FrameTests(unittest.TestCase):
    def test_preamble_bytes(self):
        self.assertEqual(b"TAPY\x01\x00\x00\x00", _wire.PREAMBLE)

    def test_frame_header(self):
        self.assertEqual(b"\x04\x03\x00\x00\x00abc", _wire.encode_frame(_wire.FRAME_STATS, b"abc"))
        with self.assertRaises(ValueError):
            _wire.encode_frame(_wire.FRAME_STATS, b"x" * (_wire.MAX_FRAME_PAYLOAD + 1))

    def test_record_packing_matches_the_protocol_example(self):
        records = array("Q", [1_000_000, _wire.pack_word(1, 5, _wire.KIND_RETURN)])
        frames, count = _wire.encode_events_frames(records)
        self.assertEqual(1, count)
        self.assertEqual(bytes.fromhex("03 10000000" "40420f0000000000" "0405000000010000"), frames[0])
        self.assertEqual((1, 5, _wire.KIND_RETURN), _wire.unpack_word(records[1]))

    def test_word_field_limits(self):
        self.assertEqual((1 << 64) - 1 - 0xF8, _wire.pack_word(_wire.MAX_THREAD_ID, _wire.MAX_CODE_ID, 7))
        for bad in ((0, 1, 1), (1, 0, 1), (1 << 24, 1, 1), (1, 1 << 32, 1), (1, 1, 0)):
            with self.assertRaises(ValueError):
                _wire.pack_word(*bad)

    def test_events_split_at_one_mebibyte(self):
        n = _wire.MAX_RECORDS_PER_FRAME * 2 + 3
        records = array("Q")
        for i in range(n):
            records.extend((i, _wire.pack_word(1, 1 + i % 7, 1 + i % 6)))
        frames, count = _wire.encode_events_frames(records)
        self.assertEqual(n, count)
        self.assertEqual([5 + _wire.MAX_FRAME_PAYLOAD] * 2 + [5 + 3 * 16], [len(f) for f in frames])
        payload = b"".join(f[5:] for f in frames)
        self.assertEqual(records.tobytes(), payload)
        self.assertEqual((n - 1, _wire.pack_word(1, 1 + (n - 1) % 7, 1 + (n - 1) % 6)),
                         struct.unpack_from("<QQ", payload, len(payload) - 16))

    def test_events_from_a_slice(self):
        records = array("Q", [1, _wire.pack_word(1, 1, 1), 2, _wire.pack_word(1, 1, 4)])
        frames, count = _wire.encode_events_frames(records, 2, 4)
        self.assertEqual(1, count)
        self.assertEqual(records[2:4].tobytes(), frames[0][5:])
        with self.assertRaises(ValueError):
            _wire.encode_events_frames(records, 0, 3)

    def test_definitions_split_below_the_limit_and_decode_back(self):
        codes = [{"id": i, "qualified_name": "f%d" % i + "x" * 300, "file_name": "/p.py", "first_line": i,
                  "module": "m", "kind_flags": 0, "ready_on": False} for i in range(1, 8001)]
        threads = [{"id": 1, "ident": 5, "native_id": 6, "name": "MainThread", "is_main": True}]
        frames = _wire.encode_definitions_frames(codes, threads)
        self.assertGreater(len(frames), 1)
        conn = support.DecodedConnection()
        conn.feed(_wire.PREAMBLE + _wire.encode_frame(_wire.FRAME_HELLO, _wire.encode_message("Hello", {"pid": 1})))
        for frame in frames:
            self.assertLessEqual(len(frame) - 5, _wire.MAX_FRAME_PAYLOAD)
            conn.feed(frame)
        conn.finish()
        self.assertIsNone(conn.error)
        self.assertEqual(8000, len(conn.codes))
        self.assertEqual(codes[-1], conn.codes[8000])
        self.assertEqual("MainThread", conn.threads[1]["name"])


if __name__ == "__main__":
    unittest.main()

"""Interleavings of a program thread and the sender thread, forced in process: the recorder and
the sender are driven by hand (no tool id, no sender thread), and the sender's step is injected
at the exact point of the program thread's slow path where a real tick could run. The sender's
output goes to a real RecordingAgent, whose decoder rejects any use of an undefined id."""

import os
import shutil
import sys
import tempfile
import threading
import unittest
from _thread import get_ident
from unittest import mock

from tests import support

if sys.version_info >= (3, 12):
    from telemetry_shim import SHIM_PACKAGE_DIR, _wire
    from telemetry_shim._monitor import Recorder
    from telemetry_shim._tables import ThreadInfo
    from telemetry_shim._sender import Sender


def hello_fields():
    return {"protocol_version": 1, "pid": os.getpid(), "argv": ["test_races"]}


@unittest.skipIf(sys.version_info < (3, 12), "sys.monitoring is Python 3.12+")
class FirstEventWhileDisconnectedTest(unittest.TestCase):
    def setUp(self):
        self.recorder = Recorder(4096, SHIM_PACKAGE_DIR, lambda: None, exceptions=False)
        folder = tempfile.mkdtemp(prefix="tashim-races-")
        self.addCleanup(shutil.rmtree, folder, ignore_errors=True)
        missing = os.path.join(folder, "nobody.sock")
        self.sender = Sender(self.recorder, missing, hello_fields, lambda message: None, 0.05)

    def first_event_with_a_tick_after_the_definition_is_queued(self):
        """The program thread's first event; the sender ticks (disconnected) right after the
        thread's definition is queued and before its records are in the buffer."""
        recorder, sender = self.recorder, self.sender
        queue_definition = recorder.threads.info
        ticks = []

        def thread_info_then_tick(*args):
            info = queue_definition(*args)
            ticks.append(sender._tick())
            return info

        recorder.threads.info = thread_info_then_tick
        frame = sys._getframe()
        code_key = recorder.codes.key_of(frame.f_code, frame)
        recorder._first_event_on_thread(get_ident(), frame.f_code, code_key, _wire.KIND_START,
                                        recorder.buffer, recorder.thread_keys, frame)
        del recorder.threads.info
        self.assertEqual([False], ticks)
        self.assertIsNone(sender._sock)
        self.assertTrue(recorder.buffer, "the first event's records are in the buffer")

    def test_records_of_a_thread_defined_during_a_disconnected_tick_are_never_sent_undefined(self):
        self.first_event_with_a_tick_after_the_definition_is_queued()
        recorder, sender = self.recorder, self.sender
        with support.RecordingAgent() as agent:
            sender.socket_path = agent.path
            sender._next_connect_at = 0.0
            sender._tick()  # connects and sends what is pending
            # The thread's next event: re-seeded in the new connection's generation if needed.
            frame = sys._getframe()
            callback = recorder._callbacks[0]  # PY_START
            callback(frame.f_code, 0)
            sender._tick()
            sender._close()
            conn = agent.wait_for(1, timeout=10)[0]
        self.assertIsNone(conn.error)
        self.assertEqual(1, len(conn.threads))
        thread_id, = conn.threads
        self.assertEqual(get_ident(), conn.threads[thread_id]["ident"])
        self.assertTrue(conn.events)
        self.assertEqual("SEED", conn.events[0][3], "the new session starts by seeding the thread")
        stack, problems = support.replay_stacks(conn)[thread_id]
        self.assertEqual([], problems)

    def test_dropped_records_are_counted(self):
        self.first_event_with_a_tick_after_the_definition_is_queued()
        taken = len(self.recorder.buffer) // 2
        self.sender._tick()  # still disconnected: the records are dropped and counted
        self.assertEqual(taken, self.sender.events_dropped_here)
        self.assertEqual(taken, self.sender.stats()["events_recorded"])


@unittest.skipIf(sys.version_info < (3, 12), "sys.monitoring is Python 3.12+")
class ForgetEndedThreadTest(unittest.TestCase):
    def test_a_new_thread_reusing_the_ident_keeps_its_entry(self):
        recorder = Recorder(4096, SHIM_PACKAGE_DIR, lambda: None, exceptions=False)
        ident = 0x5EED
        ended = ThreadInfo(7, ident, 1, "worker-1", False)
        ended.registered = True
        ended.missing_ticks = 1  # the next refresh forgets it
        recorder.threads.by_ident[ident] = ended
        recorder.thread_keys[ident] = 7 << _wire.THREAD_ID_SHIFT
        successor = ThreadInfo(8, ident, 2, "worker-2", False)

        class ActiveThreads(dict):
            """threading._active in which, while the sender looks the ended thread up, a new
            thread starts on the same ident and registers itself."""

            def get(self, key, default=None):
                if key == ident and recorder.threads.by_ident.get(ident) is ended:
                    recorder.threads.by_ident[ident] = successor
                    recorder.thread_keys[ident] = 8 << _wire.THREAD_ID_SHIFT
                    return None  # not in threading's table yet (Thread._bootstrap just began)
                return super().get(key, default)

        with mock.patch.object(threading, "_active", ActiveThreads(threading._active)):
            recorder.refresh_threads()
        self.assertIs(successor, recorder.threads.by_ident.get(ident))
        self.assertEqual(8 << _wire.THREAD_ID_SHIFT, recorder.thread_keys.get(ident))
        # Once the successor has gone too, it is forgotten like any ended thread.
        successor.registered = True
        successor.missing_ticks = 1
        with mock.patch.object(threading, "_active", {}):
            recorder.refresh_threads()
        self.assertNotIn(ident, recorder.threads.by_ident)
        self.assertNotIn(ident, recorder.thread_keys)

    def test_an_ended_thread_is_forgotten_after_two_ticks(self):
        recorder = Recorder(4096, SHIM_PACKAGE_DIR, lambda: None, exceptions=False)
        ident = 0x5EED
        info = ThreadInfo(3, ident, 1, "worker", False)
        info.registered = True
        recorder.threads.by_ident[ident] = info
        recorder.thread_keys[ident] = 3 << _wire.THREAD_ID_SHIFT
        with mock.patch.object(threading, "_active", {}):
            recorder.refresh_threads()
            self.assertIs(info, recorder.threads.by_ident.get(ident))
            recorder.refresh_threads()
        self.assertNotIn(ident, recorder.threads.by_ident)
        self.assertNotIn(ident, recorder.thread_keys)


if __name__ == "__main__":
    unittest.main()

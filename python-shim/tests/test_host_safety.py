"""The shim never hurts its host, in the cases the other suites do not cover: an agent
killed mid-stream and restarted, an agent that accepts but never reads, many threads, and interpreter
shutdown with events in flight. Real subprocesses and real sockets; TELEMETRY_SHIM_MODE=full so that every
call is recorded and the counts are exact."""

import os
import socket
import textwrap
import threading
import time
import unittest

from tests import support

FULL = {"TELEMETRY_SHIM_MODE": "full"}


def program(text):
    return textwrap.dedent(text)


class KillableAgent:
    """Records connections like support.RecordingAgent, and can die at once: kill() shuts every
    connection down under the shim's feet, as a killed agent process would."""

    def __init__(self, path):
        self.path = path
        self.connections = []
        self._clients = []
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(path)
        self._server.listen(8)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            conn = support.DecodedConnection()
            self.connections.append(conn)
            self._clients.append(client)
            threading.Thread(target=self._read, args=(client, conn), daemon=True).start()

    @staticmethod
    def _read(client, conn):
        while True:
            try:
                data = client.recv(1 << 16)
            except OSError:
                break
            if not data:
                break
            conn.feed(data)

    def kill(self):
        for client in self._clients:
            client.shutdown(socket.SHUT_RDWR)
            client.close()
        # shutdown() wakes the thread blocked in accept(); close() alone would leave the listener alive.
        self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()  # the socket file stays, as after a kill


class AgentRestartTest(support.TempDirTestCase):
    def test_agent_killed_mid_stream_then_restarted_gets_a_fresh_handshake_and_the_drops_are_reported(self):
        path = os.path.join(self.tmp, "agent.sock")
        marker = os.path.join(self.tmp, "marker")
        process = None
        try:
            first = KillableAgent(path)
            process = support.start_python(["-c", program("""
                import os, sys, time, telemetry_shim
                marker = sys.argv[1]
                def before(): return 1
                def during(): return 2
                def after(): return 3
                def until(name, function):
                    deadline = time.monotonic() + 30
                    while not os.path.exists(marker + "." + name) and time.monotonic() < deadline:
                        function()
                        time.sleep(0.0005)
                telemetry_shim.start()
                until("agent-gone", before)
                deadline = time.monotonic() + 0.5      # the agent is down: these are dropped
                while time.monotonic() < deadline:
                    during()
                open(marker + ".dropped", "w").close()
                until("stop", after)
                print("done", flush=True)
                """), marker], env=dict(FULL, TELEMETRY_AGENT_SOCKET=path))
            deadline = time.monotonic() + 30
            # Until calls of `before` arrived (the first events may be only the program's first frame).
            while (not (first.connections and support.call_counts(first.connections[0]).get("before"))
                   and time.monotonic() < deadline):
                time.sleep(0.05)

            first.kill()
            open(marker + ".agent-gone", "w").close()
            support.wait_for_file(marker + ".dropped", process)
            os.unlink(path)
            with support.RecordingAgent(path) as second:
                second.wait_for_accepted(1, timeout=30)
                deadline = time.monotonic() + 30
                while "after" not in support.call_counts(second.connections()[0]) and time.monotonic() < deadline:
                    time.sleep(0.05)
                open(marker + ".stop", "w").close()
                out, err = process.communicate(timeout=30)
                conn = second.wait_for(1)[0]
        finally:
            if process is not None and process.poll() is None:
                process.kill()
                process.communicate()
        self.assertEqual((0, "done\n"), (process.returncode, out), err)
        self.assertLessEqual(len(err.splitlines()), 1, err)  # at most the one "agent not reachable" warning

        before_first = first.connections[0]
        self.assertIsNotNone(before_first.hello)
        self.assertGreater(support.call_counts(before_first).get("before", 0), 0)
        self.assertIsNone(before_first.goodbye)  # cut off

        # A fresh handshake on the new connection: HELLO, definitions again, the main thread re-seeded.
        self.assertIsNone(conn.error)
        self.assertEqual(before_first.hello["pid"], conn.hello["pid"])
        self.assertEqual("HELLO", conn.frame_types[0])
        counts = support.call_counts(conn)
        self.assertNotIn("during", counts)
        self.assertGreater(counts.get("after", 0), 0)
        main = conn.thread_named("MainThread")
        self.assertEqual("SEED", next(kind for _, thread, _, kind in conn.events if thread == main))
        self.assertEqual([], support.replay_stacks(conn)[main][1])
        final = conn.goodbye["final_stats"]
        self.assertEqual("REASON_EXIT", conn.goodbye["reason"])
        self.assertEqual(2, final["connects"])
        self.assertGreater(final["events_dropped"], 2 * 100)  # half a second of during() at least
        self.assertEqual(len(conn.events), final["events_sent"])


class NewGenerationTest(unittest.TestCase):
    def test_a_thread_whose_first_event_of_a_new_generation_comes_right_after_the_switch_is_announced(self):
        # A new connection takes a new generation (the sender holds its lock; the program's threads do not take
        # it). The GIL may pass to a program thread right after the callbacks switch: that thread's first event
        # of the generation seeds it there, and its definition must be queued for the new connection. Here the
        # main thread's event runs at that point itself. (The agent-restart test failed once that way: its
        # second connection had records of thread 1 without its definition.)
        for native in ("on", "off"):
            with self.subTest(native=native), support.RecordingAgent() as agent:
                code, out, err = support.run_python(program("""
                    import threading, telemetry_shim
                    from telemetry_shim import _control
                    assert telemetry_shim.start()
                    shim = _control._shim
                    recorder = shim.recorder
                    def work():
                        return 1
                    switch_defaults = recorder._switch_defaults
                    def switch_then_an_event(*args, **kwargs):
                        switch = switch_defaults(*args, **kwargs)
                        def run():
                            switch()
                            work()
                        return run
                    with shim.sender.lock:
                        recorder.new_generation()
                        work()  # the main thread's first event of this generation: announced in it
                        main = recorder.threads.by_ident[threading.get_ident()].thread_id
                        announced = main in recorder.threads._announced
                        recorder.threads.pending_definitions.clear()
                        recorder._switch_defaults = switch_then_an_event
                        recorder.new_generation()
                        recorder._switch_defaults = switch_defaults
                        queued = [definition["id"] for definition in recorder.threads.pending_definitions]
                    print(announced, threading.get_ident() in recorder.thread_keys, main in queued)
                    """), env=dict(FULL, TELEMETRY_AGENT_SOCKET=agent.path, TELEMETRY_SHIM_NATIVE=native))
                agent.wait_for(1)
                self.assertEqual((0, "True True True\n", ""), (code, out, err))


class DescriptorNumbersTest(unittest.TestCase):
    def test_the_shims_socket_leaves_the_lowest_descriptor_numbers_to_the_program(self):
        # A program, or a child it starts, expects the lowest free numbers to be the ones it would get without the
        # shim: CPython's test_os hands a closed pipe's number to a child and expects dup() of it to fail there.
        for native in ("on", "off"):
            with self.subTest(native=native), support.RecordingAgent() as agent:
                code, out, err = support.run_python(program("""
                    import os, time, telemetry_shim
                    from telemetry_shim import _control
                    without = os.pipe()
                    for fd in without:
                        os.close(fd)
                    assert telemetry_shim.start()
                    sender = _control._shim.sender
                    deadline = time.monotonic() + 30
                    # Connected, its HELLO sent (reading /proc for it opens files for a moment).
                    while sender.frames_sent == 0 and time.monotonic() < deadline:
                        time.sleep(0.01)
                    print(sender.connects, sender._sock.fileno() >= 512, os.pipe() == without)
                    """), env=dict(FULL, TELEMETRY_AGENT_SOCKET=agent.path, TELEMETRY_SHIM_NATIVE=native))
                agent.wait_for(1)
                self.assertEqual((0, "1 True True\n", ""), (code, out, err))


class StalledAgentTest(unittest.TestCase):
    def test_an_agent_that_never_reads_costs_the_program_bounded_memory_and_a_bounded_exit(self):
        with support.NeverReadingAgent() as agent:
            process = support.start_python(["-c", program("""
                import resource, sys, time, telemetry_shim
                def leaf(i): return i
                def work(seconds):
                    deadline = time.monotonic() + seconds
                    while time.monotonic() < deadline:
                        for i in range(1000):
                            leaf(i)
                telemetry_shim.start()
                work(0.5)
                warm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                work(2.5)                     # millions of events, nowhere to go
                end = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                print("done", end - warm, flush=True)
                """)], env=dict(FULL, TELEMETRY_AGENT_SOCKET=agent.path, TELEMETRY_SHIM_BUFFER_EVENTS="65536",
                                TELEMETRY_SHIM_EXIT_TIMEOUT_S="2"))
            first_line = process.stdout.readline()
            printed = time.monotonic()
            out, err = process.communicate(timeout=60)
            exited = time.monotonic()
            self.assertGreaterEqual(len(agent.accepted), 1)
        self.assertEqual(0, process.returncode, err)
        self.assertTrue(first_line.startswith("done "), first_line + err)
        growth_kib = int(first_line.split()[1])
        # The buffer holds 65536 events (about 5 MiB); the rest is dropped, not kept.
        self.assertLess(growth_kib, 32 * 1024, "max RSS grew by %d KiB after the warm-up" % growth_kib)
        # The exit flush gives up after TELEMETRY_SHIM_EXIT_TIMEOUT_S instead of waiting for the agent.
        self.assertLess(exited - printed, 2 + 5, "the exit took %.1f s" % (exited - printed))


class LateReadingAgent(support.RecordingAgent):
    """Reads each connection only after `stall_s` seconds: a slow agent (a loaded host), not a dead one."""

    def __init__(self, stall_s):
        super().__init__()
        self.stall_s = stall_s

    def _read_loop(self, client, conn):
        time.sleep(self.stall_s)
        super()._read_loop(client, conn)


BUSY_PROGRAM = program("""
    import time, telemetry_shim
    def leaf(i): return i
    telemetry_shim.start()
    deadline = time.monotonic() + %s
    while time.monotonic() < deadline:
        for i in range(1000):
            leaf(i)
    """)


class SlowAgentTest(unittest.TestCase):
    def test_an_agent_that_reads_late_keeps_the_connection_and_every_count_adds_up(self):
        # The agent takes nothing for 2.5 s while the program fills the socket: a stall shorter than the
        # shim's (5 s) costs drops while the buffer is full, never the connection.
        with LateReadingAgent(stall_s=2.5) as agent:
            code, _, err = support.run_python(BUSY_PROGRAM % "1.5", env=dict(FULL, TELEMETRY_AGENT_SOCKET=agent.path,
                                                                              TELEMETRY_SHIM_EXIT_TIMEOUT_S="10"))
            self.assertEqual(0, code, err)
            conn = agent.wait_for(1)[0]
            self.assertEqual(1, len(agent.connections()))
        self.assertIsNone(conn.error)
        final = conn.goodbye["final_stats"]
        self.assertEqual(1, final["connects"])
        self.assertEqual(len(conn.events), final["events_sent"])
        self.assertEqual(final["events_recorded"], final["events_sent"] + final["events_dropped"])
        self.assertGreater(final["events_sent"], 100_000)

    def test_an_agent_that_keeps_cutting_the_connection_is_retried_less_and_less_often(self):
        # An agent that refuses the process (for example over a limit) hangs up at once each time: the
        # waits double (0.1, 0.2, 0.4, 0.8, 1.6 s ...) instead of a reconnect every 0.1 s.
        with support.HangingUpAgent() as agent:
            code, _, err = support.run_python(BUSY_PROGRAM % "3.5", env=dict(FULL, TELEMETRY_AGENT_SOCKET=agent.path))
            self.assertEqual(0, code, err)
            cuts = agent.hung_up
        self.assertGreaterEqual(cuts, 3)
        self.assertLessEqual(cuts, 7, "%d connections in 3.5 s" % cuts)


class ManyThreadsTest(unittest.TestCase):
    def test_sixty_four_threads_each_get_their_own_id_exact_counts_and_balanced_stacks(self):
        with support.RecordingAgent() as agent:
            code, out, err = support.run_python(program("""
                import threading, telemetry_shim
                def leaf(i): return i
                def work():
                    for i in range(500):
                        leaf(i)
                telemetry_shim.start()
                threads = [threading.Thread(target=work, name="worker-%d" % n) for n in range(64)]
                for thread in threads: thread.start()
                for thread in threads: thread.join()
                print("done")
                """), env=dict(FULL, TELEMETRY_AGENT_SOCKET=agent.path, TELEMETRY_SHIM_BUFFER_EVENTS="4000000"))
            conn = agent.wait_for(1)[0]
        self.assertEqual((0, "done\n", ""), (code, out, err))
        self.assertIsNone(conn.error)
        final = conn.goodbye["final_stats"]
        self.assertEqual(0, final["events_dropped"])
        self.assertEqual(final["events_recorded"], final["events_sent"])
        workers = {conn.thread_named("worker-%d" % n) for n in range(64)}
        self.assertEqual(64, len(workers))
        for thread in workers:
            counts = support.call_counts(conn, thread)
            self.assertEqual((1, 500), (counts.get("work"), counts.get("leaf")), conn.threads[thread])
        for thread, (stack, problems) in support.replay_stacks(conn).items():
            self.assertEqual([], problems, conn.threads[thread])


class ShutdownTest(unittest.TestCase):
    def test_interpreter_exit_with_events_in_flight_says_goodbye_with_every_main_thread_event(self):
        with support.RecordingAgent() as agent:
            code, out, err = support.run_python(program("""
                import threading, time, telemetry_shim
                def spin(): return 0
                def background():
                    while True:           # daemon threads still calling when the interpreter exits
                        spin()
                        time.sleep(0.001)
                def last(i): return i
                telemetry_shim.start()
                for n in range(4):
                    threading.Thread(target=background, daemon=True, name="daemon-%d" % n).start()
                time.sleep(0.2)
                for i in range(20000):    # the last events are recorded right before the exit
                    last(i)
                print("exiting", flush=True)
                """), env=dict(FULL, TELEMETRY_AGENT_SOCKET=agent.path))
            conn = agent.wait_for(1)[0]
        self.assertEqual((0, "exiting\n", ""), (code, out, err))
        self.assertIsNone(conn.error)
        self.assertEqual("REASON_EXIT", conn.goodbye["reason"])
        final = conn.goodbye["final_stats"]
        self.assertEqual(final["events_recorded"], final["events_sent"] + final["events_dropped"])
        self.assertEqual(len(conn.events), final["events_sent"])
        self.assertEqual(20000, support.call_counts(conn, conn.thread_named("MainThread")).get("last"))
        self.assertGreater(support.call_counts(conn).get("spin", 0), 0)


if __name__ == "__main__":
    unittest.main()


class FunctionWatcherTest(unittest.TestCase):
    """A function watcher (PyFunction_AddWatcher; CPython's test_capi has one) sees every function object the
    process makes, on any thread: once connected, the shim's callbacks and its sender thread's ticks make none,
    so a program's watcher sees only the program's own (a generator expression or a lambda is a function object;
    an inlined comprehension is not)."""

    def test_the_shim_makes_no_function_object_while_it_records(self):
        try:
            import _testcapi
        except ImportError:
            self.skipTest("no _testcapi")
        if not hasattr(_testcapi, "add_func_watcher"):
            self.skipTest("no function watchers")
        program = textwrap.dedent("""
            import _testcapi, sys, telemetry_shim
            from telemetry_shim import _control
            assert telemetry_shim.start()
            sender = _control._shim.sender
            while not sender.frames_sent:  # connected: its HELLO (once) reads the container's identity, not watched here
                sender._wake_up()
            made = []

            def watch(*event):  # (event, function, new value), in the order _testcapi passes them
                for item in event:
                    if type(item) is type(watch):
                        made.append("%s %s" % (item.__module__, item.__qualname__))

            watcher = _testcapi.add_func_watcher(watch)

            def fail(n):
                raise ValueError("refused", n)  # details read at each detailed exception

            def work(n):
                try:
                    fail(n)
                except ValueError:
                    pass
                exec(compile("def fresh(): return %d" % n, "<fresh>", "exec"), {})  # a new code object

            for n in range(50):
                work(n)
            # The sender's ticks: a STATS frame (with the start-up phase's report) and the exceptions' records.
            before = sender.frames_sent
            while sender.frames_sent < before + 3:
                sender._wake_up()
            _testcapi.clear_func_watcher(watcher)
            print(sorted({name for name in made if name.startswith("telemetry_shim")}))
        """)
        for mode in ("exceptions", "full"):
            with self.subTest(mode=mode), support.RecordingAgent() as agent:
                code, out, err = support.run_python(program, env={"TELEMETRY_AGENT_SOCKET": agent.path,
                                                                  "TELEMETRY_SHIM_MODE": mode})
                self.assertEqual((0, "", "[]\n"), (code, err, out))

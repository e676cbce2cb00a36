"""Child processes of a program run by `python -m telemetry_shim` are recorded as processes of
their own: one connection each, with their own pid and parent_pid, and the parent's connection is
unaffected. Real processes, real sockets."""

import json
import os
import shutil
import tempfile
import textwrap
import time
import unittest

from tests import support

# Each program prints one JSON line: {"parent": pid, "children": [pid, ...]}.
SUBPROCESS_PROGRAM = """\
import json, os, subprocess, sys

CHILD = "def child_work():\\n    return 2\\nchild_work()\\nimport os\\nprint(os.getpid())\\n"

def parent_work():
    return 1

parent_work()
child = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True)
print(json.dumps({"parent": os.getpid(), "children": [int(child.stdout)]}))
"""

MULTIPROCESSING_PROGRAM = """\
import json, multiprocessing, os, sys

def child_work(n):
    return sum(range(n))

def target(results):
    child_work(100)
    results.put(os.getpid())

def parent_work():
    return 1

if __name__ == "__main__":
    parent_work()
    context = multiprocessing.get_context(sys.argv[1])
    results = context.Queue()
    workers = [context.Process(target=target, args=(results,)) for _ in range(2)]
    for worker in workers:
        worker.start()
    children = sorted(results.get(timeout=30) for _ in workers)
    for worker in workers:
        worker.join(30)
        assert worker.exitcode == 0, worker.exitcode
    print(json.dumps({"parent": os.getpid(), "children": children}))
"""

FORK_PROGRAM = """\
import json, os, sys

def child_work():
    return 2

def parent_work():
    return 1

parent_work()
read_end, write_end = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(read_end)
    child_work()
    os.write(write_end, b"done")
    sys.exit(0)
os.close(write_end)
assert os.read(read_end, 4) == b"done"
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0
parent_work()
print(json.dumps({"parent": os.getpid(), "children": [pid]}))
"""


# Forks again and again from __main__ (where CPython's DeprecationWarning about forking a
# multi-threaded process is shown), while the program keeps recording calls.
FORK_LOOP_PROGRAM = """\
import json, os, sys

def child_work():
    return 2

def parent_work():
    return 1

children = []
for _ in range(int(sys.argv[1])):
    parent_work()
    pid = os.fork()
    if pid == 0:
        child_work()
        sys.exit(0)
    children.append(pid)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
print(json.dumps({"parent": os.getpid(), "children": children}))
"""


def wait_for_pids(agent, pids, timeout=30.0):
    """{pid: ended connection} for every pid, waiting for each connection to end."""
    deadline = time.monotonic() + timeout
    while True:
        ended = {conn.hello["pid"]: conn for conn in agent.connections()
                 if conn.ended and conn.hello is not None}
        if all(pid in ended for pid in pids):
            return {pid: ended[pid] for pid in pids}
        if time.monotonic() > deadline:
            raise AssertionError("connections of pids %s did not all end; ended: %s"
                                 % (sorted(pids), sorted(ended)))
        time.sleep(0.05)


class ChildProcessTest(unittest.TestCase):
    def setUp(self):
        self.tmp = os.path.realpath(tempfile.mkdtemp(prefix="tashim-children-"))
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)

    def run_family(self, program_text, *arguments):
        program = os.path.join(self.tmp, "family.py")
        with open(program, "w") as f:
            f.write(textwrap.dedent(program_text))
        plain_code, _, plain_err = support.run_python([program, *arguments], cwd=self.tmp)
        self.assertEqual(plain_code, 0, plain_err)
        with support.RecordingAgent() as agent:
            code, out, err = support.run_python(
                ["-m", "telemetry_shim", "--socket", agent.path, program, *arguments], cwd=self.tmp)
            self.assertEqual(code, 0, err)
            # Nothing of the shim's on stderr: e.g. CPython's warning about forking a process
            # with threads (the sender thread leaves before fork() and comes back after).
            self.assertEqual(plain_err, err)
            family = json.loads(out)
            parent_pid, child_pids = family["parent"], family["children"]
            connections = wait_for_pids(agent, [parent_pid, *child_pids])
            all_connections = agent.connections_so_far()
        pids = [conn.hello["pid"] for conn in all_connections]
        self.assertEqual(len(pids), len(set(pids)), "one connection per process")
        for conn in all_connections:
            self.assertIsNone(conn.error)
        parent = connections[parent_pid]
        self.assertEqual(parent.goodbye["reason"], "REASON_EXIT")
        self.assertGreaterEqual(support.call_counts(parent)["parent_work"], 1)
        self.assertNotIn("child_work", support.call_counts(parent))
        self.assertEqual(support.replay_stacks(parent)[self.main_thread(parent)][1], [])
        by_pid = {conn.hello["pid"]: conn for conn in all_connections}
        for child_pid in child_pids:
            child = connections[child_pid]
            self.assertEqual(support.call_counts(child).get("child_work"), 1, child_pid)
            self.assertNotIn("parent_work", support.call_counts(child))
            # The child's parent is the program, or (forkserver) a process the program started.
            ancestor = child.hello["parent_pid"]
            while ancestor != parent_pid and ancestor in by_pid:
                ancestor = by_pid[ancestor].hello["parent_pid"]
            self.assertEqual(ancestor, parent_pid)
        return parent, [connections[pid] for pid in child_pids]

    @staticmethod
    def main_thread(conn):
        return next(t for t, thread in conn.threads.items() if thread["is_main"])

    def test_subprocess_running_python(self):
        parent, (child,) = self.run_family(SUBPROCESS_PROGRAM)
        self.assertEqual(child.hello["parent_pid"], parent.hello["pid"])
        self.assertEqual(child.goodbye["reason"], "REASON_EXIT")

    def test_multiprocessing_spawn(self):
        parent, children = self.run_family(MULTIPROCESSING_PROGRAM, "spawn")
        for child in children:
            self.assertEqual(child.hello["parent_pid"], parent.hello["pid"])

    # multiprocessing's fork and forkserver children end with os._exit right after the target, so
    # atexit never runs: the shim flushes through a finalizer registered after fork (_control).
    def test_multiprocessing_forkserver(self):
        self.run_family(MULTIPROCESSING_PROGRAM, "forkserver")

    def test_multiprocessing_fork(self):
        parent, children = self.run_family(MULTIPROCESSING_PROGRAM, "fork")
        for child in children:
            self.assertEqual(child.hello["parent_pid"], parent.hello["pid"])

    def test_os_fork(self):
        parent, (child,) = self.run_family(FORK_PROGRAM)
        self.assertEqual(child.hello["parent_pid"], parent.hello["pid"])
        self.assertEqual(child.goodbye["reason"], "REASON_EXIT")
        self.assertEqual(support.call_counts(parent)["parent_work"], 2)

    def test_os_fork_repeatedly_from_main(self):
        parent, children = self.run_family(FORK_LOOP_PROGRAM, "12")
        self.assertEqual(support.call_counts(parent)["parent_work"], 12)
        for child in children:
            self.assertEqual(child.hello["parent_pid"], parent.hello["pid"])
            self.assertEqual(child.goodbye["reason"], "REASON_EXIT")
            self.assertEqual(support.replay_stacks(child)[self.main_thread(child)][1], [])
        final = parent.goodbye["final_stats"]
        self.assertEqual(0, final["events_dropped"])
        self.assertEqual(final["events_recorded"], final["events_sent"])
        self.assertEqual(1, final["connects"])


if __name__ == "__main__":
    unittest.main()

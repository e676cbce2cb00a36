"""Benchmark (not a test): prints figures, asserts nothing.

    cd python-shim && /root/.pyenv/versions/3.12.1/bin/python -m tests.bench_exceptions

(-m puts the working directory on sys.path: the telemetry_shim of this tree is measured.)

Exceptions per second, without the shim and under it (exceptions only, calls only, both), for
three programs: a raise/catch loop in one frame, an exception unwinding through 50 frames, and
`await` of finished futures (one StopIteration each, ended by the awaiting frame).
The shim streams to a separate process that reads and discards. "detail for every exception"
lifts the sampling limits, so that every exception pays for its stack walk and full record.
"""

import asyncio
import cProfile
import os
import subprocess
import sys
import tempfile
import time

import telemetry_shim
from telemetry_shim._exceptions import program_threads

ROUNDS = 5

SINK = r"""
import socket, sys, threading
def drain(c):
    while c.recv(1 << 20):
        pass
    c.close()
s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(64)
print("ready", flush=True)
while True:
    threading.Thread(target=drain, args=(s.accept()[0],), daemon=True).start()
"""


def raise_catch(n):
    for i in range(n):
        try:
            raise ValueError(i)
        except ValueError:
            pass


def _dive(depth):
    if depth == 0:
        raise LookupError("bottom")
    _dive(depth - 1)


def unwind_50(n):
    for _ in range(n):
        try:
            _dive(49)  # 50 frames: _dive(49) .. _dive(0)
        except LookupError:
            pass


async def _await_done_futures(n):
    loop = asyncio.get_running_loop()
    for i in range(n):
        future = loop.create_future()
        future.set_result(i)
        await future  # the future's iterator raises StopIteration in C; this frame's SEND ends it


def await_done_futures(n):
    asyncio.run(_await_done_futures(n))


WORKLOADS = (("raise/catch in one frame", raise_catch, 100_000),
             ("unwinding through 50 frames", unwind_50, 5_000),
             ("await of a finished future (asyncio's StopIteration)", await_done_futures, 100_000))


def per_second(fn, n):
    best = None
    for _ in range(ROUNDS):
        start = time.perf_counter()
        fn(n)
        elapsed = time.perf_counter() - start
        best = elapsed if best is None else min(best, elapsed)
    return n / best


def under_shim(path, fn, n, **modes):
    assert telemetry_shim.start(path, **modes)
    try:
        return per_second(fn, n)
    finally:
        telemetry_shim.stop()


def under_cprofile(fn, n):
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        return per_second(fn, n)
    finally:
        profiler.disable()


def main():
    tmp = tempfile.mkdtemp()
    path = os.path.join(tmp, "sink.sock")
    sink = subprocess.Popen([sys.executable, "-c", SINK, path], stdout=subprocess.PIPE, text=True)
    try:
        sink.stdout.readline()
        print("Python", sys.version.split()[0], "- exceptions per second, best of %d rounds" % ROUNDS)
        for title, fn, n in WORKLOADS:
            plain = per_second(fn, n)
            rows = [("plain", plain),
                    ("shim, exceptions only", under_shim(path, fn, n, calls=False)),
                    ("shim, calls only", under_shim(path, fn, n, exceptions=False)),
                    ("shim, calls + exceptions (default)", under_shim(path, fn, n))]
            saved = (program_threads.FIRST_DETAILED_PER_SITE, program_threads.MAX_DETAILED_PER_SECOND,
                     program_threads.DETAILED_BURST)
            program_threads.FIRST_DETAILED_PER_SITE = program_threads.MAX_DETAILED_PER_SECOND = 10 ** 12
            program_threads.DETAILED_BURST = 10 ** 12
            try:
                rows.append(("shim, exceptions only, detail for every exception",
                             under_shim(path, fn, n, calls=False)))
            finally:
                (program_threads.FIRST_DETAILED_PER_SITE, program_threads.MAX_DETAILED_PER_SECOND,
                 program_threads.DETAILED_BURST) = saved
            rows.append(("cProfile (reference)", under_cprofile(fn, n)))
            print("\n%s (%d per round):" % (title, n))
            for name, rate in rows:
                print("  %10.0f /s  %7.2f us each  x%5.2f  %s" % (rate, 1e6 / rate, plain / rate, name))
    finally:
        sink.kill()
        sink.wait()


if __name__ == "__main__":
    main()

"""Benchmark (not a test): prints figures, asserts nothing.

    cd python-shim && /root/.pyenv/versions/3.12.1/bin/python -m tests.bench_hot_path

(-m puts the working directory on sys.path: the telemetry_shim of this tree is measured.)

1. ns per event of the callback body and of alternative designs (timeit, direct calls).
2. fib(25) wall time: plain, under the shim (agent = a separate process that reads and discards),
   and under cProfile, in one run.
"""

import cProfile
import os
import subprocess
import sys
import tempfile
import time
import timeit
from array import array
from time import perf_counter_ns
from _thread import get_ident

import telemetry_shim
from telemetry_shim import _monitor
from telemetry_shim._tables import identity

N = 200_000
REPEAT = 7


def best_ns(stmt, setup_globals):
    timer = timeit.Timer(stmt, globals=setup_globals)
    return min(timer.repeat(REPEAT, N)) / N * 1e9


def sample_code():
    return 1


def alternatives():
    code = sample_code.__code__
    ident = get_ident()
    results = {}
    empty = best_ns("pass", {})

    # The shim's own callback, called directly with warm tables (the fast path).
    recorder = _monitor.Recorder(1 << 22, telemetry_shim.SHIM_PACKAGE_DIR, lambda: None)
    recorder.codes.keys[identity(code)] = 5 << 8
    recorder.thread_keys[ident] = 1 << 40
    callback = recorder._callbacks[0]

    def drain():
        del recorder.buffer[:]

    g = {"cb": callback, "code": code, "drain": drain}
    results["shim callback (list.extend of a tuple)"] = best_ns("cb(code, 0)", g) - empty
    drain()

    # Alternatives, same fields.
    thread_keys = {ident: 1 << 40}
    code_keys = {identity(code): 5 << 8}
    code_obj_keys = {code: 5 << 8}

    def make(body):
        namespace = {"get_ident": get_ident, "perf_counter_ns": perf_counter_ns, "identity": identity}
        exec(body, namespace)
        return namespace["cb"]

    variants = {
        "array('Q').extend of a tuple": """
def cb(code, offset, _v=None, tkget=None, ckget=None, ident=get_ident, now=perf_counter_ns, buf=None, extend=None, limit=0):
    tk = tkget(ident()); ck = ckget(identity(code))
    if tk and ck and len(buf) < limit:
        extend((now(), tk | ck | 1))
""",
        "two array.append calls (not atomic: rejected)": """
def cb(code, offset, _v=None, tkget=None, ckget=None, ident=get_ident, now=perf_counter_ns, buf=None, append=None, limit=0):
    tk = tkget(ident()); ck = ckget(identity(code))
    if tk and ck and len(buf) < limit:
        append(now()); append(tk | ck | 1)
""",
        "list.append of a tuple": """
def cb(code, offset, _v=None, tkget=None, ckget=None, ident=get_ident, now=perf_counter_ns, buf=None, append=None, limit=0):
    tk = tkget(ident()); ck = ckget(identity(code))
    if tk and ck and len(buf) < limit:
        append((now(), tk | ck | 1))
""",
        "dict keyed by the code object (hashes the code)": """
def cb(code, offset, _v=None, tkget=None, ckget=None, ident=get_ident, now=perf_counter_ns, buf=None, extend=None, limit=0):
    tk = tkget(ident()); ck = ckget(code)
    if tk and ck and len(buf) < limit:
        extend((now(), tk | ck | 1))
""",
        "globals instead of default arguments": """
def cb(code, offset, _v=None):
    tk = TKGET(get_ident()); ck = CKGET(identity(code))
    if tk and ck and len(BUF) < LIMIT:
        EXTEND((perf_counter_ns(), tk | ck | 1))
""",
    }
    for name, body in variants.items():
        fn = make(body)
        arr = array("Q")
        lst = []
        if "list" in name:
            defaults = (None, thread_keys.get, code_keys.get, get_ident, perf_counter_ns, lst, lst.append, 1 << 40)
        elif "two array" in name:
            defaults = (None, thread_keys.get, code_keys.get, get_ident, perf_counter_ns, arr, arr.append, 1 << 40)
        elif "extend of a tuple" in name:
            defaults = (None, thread_keys.get, code_keys.get, get_ident, perf_counter_ns, arr, arr.extend, 1 << 40)
        elif "code object" in name:
            defaults = (None, thread_keys.get, code_obj_keys.get, get_ident, perf_counter_ns, arr, arr.extend, 1 << 40)
        else:
            defaults = (None,)
            fn.__globals__.update(TKGET=thread_keys.get, CKGET=code_keys.get, BUF=arr, EXTEND=arr.extend,
                                  LIMIT=1 << 40)
        fn.__defaults__ = defaults
        results[name] = best_ns("cb(code, 0)", {"cb": fn, "code": code}) - empty
    results["(reference) empty Python function call"] = best_ns("f(code, 0)", {"f": lambda c, o: None, "code": code}) - empty
    return results


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


SINK = r"""
import socket, sys, os
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX); s.bind(path); s.listen(8)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    while c.recv(1 << 20):
        pass
    c.close()
"""


def timed(fn, *args):
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def fib_slowdown(n=25, rounds=5):
    tmp = tempfile.mkdtemp()
    path = os.path.join(tmp, "sink.sock")
    sink = subprocess.Popen([sys.executable, "-c", SINK, path], stdout=subprocess.PIPE, text=True)
    try:
        sink.stdout.readline()
        plain = min(timed(fib, n) for _ in range(rounds))
        profiler = cProfile.Profile()
        profiled = []
        for _ in range(rounds):
            profiler.enable()
            profiled.append(timed(fib, n))
            profiler.disable()
        telemetry_shim.start(path)
        shimmed = min(timed(fib, n) for _ in range(rounds))
        telemetry_shim.stop()
        events = 2 * 242785  # fib(25): 242785 calls, a START and a RETURN each
        return plain, shimmed, min(profiled), events
    finally:
        sink.kill()
        sink.wait()


def main():
    print("Python", sys.version.split()[0])
    print("\nHot path, ns per event (direct calls, best of %d x %d, loop overhead removed):" % (REPEAT, N))
    for name, ns in alternatives().items():
        print("  %6.1f  %s" % (ns, name))
    plain, shimmed, profiled, events = fib_slowdown()
    print("\nfib(25), best of 5 runs (%d events under the shim):" % events)
    print("  plain      %7.1f ms" % (plain * 1e3))
    print("  shim       %7.1f ms  x%.2f  (%.0f ns per event end to end)" % (
        shimmed * 1e3, shimmed / plain, (shimmed - plain) / events * 1e9))
    print("  cProfile   %7.1f ms  x%.2f" % (profiled * 1e3, profiled / plain))


if __name__ == "__main__":
    main()

"""The shim's C call callbacks against their Python twin and against another build of the shim, in one run.

    python3 bench/c_callbacks.py [--python PATH ...] [--shim LABEL=PATH ...] [--rounds 7]

Two measures, each repeated in interleaved rounds (every variant once per round, in a shuffled order), medians:

- fib(25) in full mode with no agent (the shim started by telemetry_shim.start(), its socket absent: every
  event pays its callback, the sender drops what it cannot send): CPU time of the main thread around fib(25),
  plain, with the C callbacks of each shim given, and with the Python callbacks;
- the callbacks alone (bench/run.py's CALLBACK_COST_PROGRAM: fib(22), callbacks registered by the shim's own
  Recorder or by cProfile, no sender thread): CPU nanoseconds per call event beyond the plain run, for each shim.

--shim defaults to this checkout's python-shim (label "this"); give another checkout's (with its extension
built for the same Pythons) to compare, e.g. --shim before=/tmp/main/python-shim --shim after=python-shim.
Stdlib only.
"""

import argparse
import os
import random
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from run import CALLBACK_COST_PROGRAM  # noqa: E402

REPO = os.path.dirname(HERE)

FIB_PROGRAM = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
import telemetry_shim
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)
if sys.argv[2] != "plain":
    assert telemetry_shim.start()
fib(3)
start = time.thread_time_ns()
fib(25)
print(time.thread_time_ns() - start)
"""


def fib_seconds(python, shim, variant):
    env = dict(os.environ, TELEMETRY_SHIM_MODE="full", TELEMETRY_AGENT_SOCKET="/nonexistent/telemetry-bench.sock",
               TELEMETRY_SHIM_NATIVE={"c": "on", "python": "off"}.get(variant, "off"))
    env.pop("TELEMETRY_SHIM_AUTOSTART", None)
    done = subprocess.run([python, "-c", FIB_PROGRAM, shim, variant], env=env, capture_output=True, text=True,
                          check=True, timeout=300)
    return int(done.stdout.split()[-1]) / 1e9


def callback_ns(python, shim):
    done = subprocess.run([python, "-c", CALLBACK_COST_PROGRAM, shim], capture_output=True, text=True, check=True,
                          timeout=600)
    return {name: float(value) for name, value in (item.split("=") for item in done.stdout.split())}


def measure(python, shims, rounds):
    last = list(shims)[-1]
    variants = [("plain", None)] + [("c", label) for label in shims] + [("python", last)]
    fib = {variant: [] for variant in variants}
    alone = {label: [] for label in shims}
    for _ in range(rounds):
        order = list(variants)
        random.shuffle(order)
        for kind, label in order:
            fib[(kind, label)].append(fib_seconds(python, shims[label or last], kind))
        labels = list(shims)
        random.shuffle(labels)
        for label in labels:
            alone[label].append(callback_ns(python, shims[label]))
    return fib, alone


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", action="append", help="a Python >= 3.12 (repeatable; default: this one)")
    parser.add_argument("--shim", action="append", help="LABEL=PATH of a python-shim directory (repeatable)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    args = parser.parse_args()
    pythons = args.python or [sys.executable]
    shims = dict(item.split("=", 1) for item in args.shim) if args.shim else {"this": os.path.join(REPO, "python-shim")}
    shims = {label: os.path.abspath(path) for label, path in shims.items()}
    for python in pythons:
        version = subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                                 capture_output=True, text=True, check=True).stdout.strip()
        fib, alone = measure(python, shims, args.rounds)
        plain = statistics.median(fib[("plain", None)])
        print("CPython %s, %d rounds, medians" % (version, args.rounds))
        print("  fib(25), full mode, no agent (CPU s of the main thread; x plain):")
        for (kind, label), values in fib.items():
            name = "plain" if kind == "plain" else "%s callbacks (%s)" % ("C" if kind == "c" else "Python", label)
            median = statistics.median(values)
            print("    %-28s %.4f s  %6.2fx   (min %.4f, max %.4f)" % (name, median, median / plain, min(values),
                                                                        max(values)))
        print("  the callbacks alone, ns per call event beyond plain (fib(22), no sender):")
        for label, runs in alone.items():
            print("    %-12s %s" % (label, "  ".join("%s %.1f" % (name, statistics.median(run[name] for run in runs))
                                                      for name in ("native", "python", "cProfile"))))


if __name__ == "__main__":
    main()

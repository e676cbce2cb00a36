"""Control-flow idioms under the shim's exception callbacks, C against their Python twin, in one run.

    python3 bench/control_flow.py [--python PATH ...] [--rounds 5] [--scale 0.5]
    python3 bench/control_flow.py --instructions [--python PATH ...] [--idioms with,any]

The shim started by telemetry_shim.start() with no agent (its socket absent: every event pays its callback,
the sender drops what it cannot send), in exceptions and in burst mode (no window opens without an agent:
burst mode between windows), with the C callbacks (TELEMETRY_SHIM_NATIVE=on) and with the Python ones (off),
against the plain program and against the floor (the four exception events on with a C callback that does
nothing: what sys.monitoring costs before any callback works); every variant once per round, in a shuffled
order, medians. Measures:

- each idiom alone (IDIOMS: `any()`, `next()`, `break`, `zip()` over generators, a contextmanager's block, and
  an exception raised and handled by a handler that keeps it):
  CPU microseconds of the main thread per use, after a warm-up that takes its sites past their first
  detailed exceptions;
- bench/workloads/control_flow.py's main(scale): CPU seconds of the process (the sender thread included).

With --instructions, each idiom's cost in instructions instead (valgrind's cachegrind, all threads, which the
machine's load does not move): per use, the count of a run of 12,000 uses less that of a run of 2,000, over
10,000, both after the same warm-up and with the same hash seed; the shim's intervals stretched 40 times
(TELEMETRY_SHIM_SLOWDOWN), as valgrind slows the program about that much.

Stdlib only.
"""

import argparse
import os
import random
import re
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SHIM = os.path.join(REPO, "python-shim")
WORKLOADS = os.path.join(HERE, "workloads")

# Both programs: argv[1] the shim's directory, argv[2] plain|floor|shim, argv[3] bench/workloads, argv[4] the
# measure's argument. "floor": the four exception events on, with a C callback that does nothing (slice() of
# its three arguments): what sys.monitoring itself costs, whatever the callbacks do.
PRELUDE = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
sys.path.insert(0, sys.argv[3])
import telemetry_shim
import control_flow
if sys.argv[2] == "floor":
    monitoring, events = sys.monitoring, sys.monitoring.events
    monitoring.use_tool_id(3, "floor")
    for event in (events.RAISE, events.RERAISE, events.EXCEPTION_HANDLED, events.PY_UNWIND):
        monitoring.register_callback(3, event, slice)
        monitoring.set_events(3, monitoring.get_events(3) | event)
elif sys.argv[2] != "plain":
    assert telemetry_shim.start()
"""

IDIOM_PROGRAM = PRELUDE + r"""
data = [1, 7, 3]
values = list(range(1, 40))
state = []
def any_():
    any(x > 5 for x in data)
def next_():
    control_flow.first_even(values)
def break_():
    control_flow.prefix_sum(values, 500)
def zip_():
    sum(a * b for a, b in zip((v for v in values), (w for w in values[:5])))
def with_():
    with control_flow.scope(state):
        pass
def caught_():
    try:
        data[7]
    except IndexError as error:
        kept = error
def lookup(i):
    return data[i]
def crossed_():
    try:
        lookup(7)
    except IndexError as error:
        kept = error
idiom = globals()[sys.argv[4] + "_"]
def uses(n):
    for _ in range(n):
        idiom()
measured = int(sys.argv[5]) if len(sys.argv) > 5 else 100000
uses(20000)
start = time.thread_time_ns()
uses(measured)
print((time.thread_time_ns() - start) / measured / 1000)
"""

# Idioms measured one by one (IDIOM_PROGRAM): `any()` over a generator expression that stops early, `next()`
# over one, `break` out of a `for` over one, `zip()` of two of different lengths, a contextmanager's block; and,
# for comparison, the common path of an exception the program really handles: raised by an index out of range and
# caught by a handler that keeps it (an exception the shim follows until its fate is known), and the same raised in
# a callee (one frame unwound).
IDIOMS = ("any", "next", "break", "zip", "with", "caught", "crossed")

WORKLOAD_PROGRAM = PRELUDE + r"""
start = time.process_time()
control_flow.main(float(sys.argv[4]))
print(time.process_time() - start)
"""

# (label, mode, TELEMETRY_SHIM_NATIVE); mode None: plain, "floor": see PRELUDE.
VARIANTS = (("plain", None, None), ("events, no-op C", "floor", None), ("exceptions, C", "exceptions", "on"),
            ("exceptions, Python", "exceptions", "off"), ("burst, C", "burst", "on"), ("burst, Python", "burst", "off"))


def command(python, program, variant, extra):
    """(argv, environment) of one run of `program` as `variant`."""
    _, mode, native = variant
    env = dict(os.environ, TELEMETRY_AGENT_SOCKET="/nonexistent/telemetry-bench.sock")
    env.pop("TELEMETRY_SHIM_AUTOSTART", None)
    if native is not None:
        env.update(TELEMETRY_SHIM_MODE=mode, TELEMETRY_SHIM_NATIVE=native)
    started_as = {None: "plain", "floor": "floor"}.get(mode, "shim")
    return [python, "-c", program, SHIM, started_as] + extra, env


def run(python, program, variant, extra):
    argv, env = command(python, program, variant, extra)
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True, timeout=600)
    return float(done.stdout.split()[-1])


def instructions(python, idiom, variant, uses):
    """Instructions of a run of IDIOM_PROGRAM with `uses` measured uses, all threads (cachegrind)."""
    argv, env = command(python, IDIOM_PROGRAM, variant, [WORKLOADS, idiom, str(uses)])
    # A fixed hash seed: string hashing decides the dicts' layouts, and so the start-up's instructions, run to run.
    env.update(TELEMETRY_SHIM_SLOWDOWN="40", PYTHONHASHSEED="0")
    done = subprocess.run(["valgrind", "--tool=cachegrind", "--cache-sim=no", "--fair-sched=yes",
                           "--cachegrind-out-file=" + os.devnull] + argv, env=env, capture_output=True, text=True,
                          timeout=3600)
    counted = re.search(r"I\s+refs:\s+([0-9,]+)", done.stderr)
    if done.returncode != 0 or not counted:
        raise SystemExit("%s under valgrind failed (%d):\n%s" % (idiom, done.returncode, done.stderr[-3000:]))
    return int(counted.group(1).replace(",", ""))


def print_instructions(python, version, idioms):
    print("CPython %s, instructions per use (12,000 uses less 2,000, over 10,000)" % version)
    for idiom in idioms:
        print("  %s:" % idiom)
        plain = None
        for variant in VARIANTS:
            per_use = (instructions(python, idiom, variant, 12000) - instructions(python, idiom, variant, 2000)) / 10000
            plain = per_use if plain is None else plain
            print("    %-20s %8.0f  %+7.1f%%" % (variant[0], per_use, 100 * (per_use / plain - 1)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", action="append", help="a Python >= 3.12 (repeatable; default: this one)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--scale", type=float, default=0.5, help="control_flow.py's scale (default 0.5)")
    parser.add_argument("--instructions", action="store_true", help="instructions per use of each idiom (valgrind)")
    parser.add_argument("--idioms", default=",".join(IDIOMS), help="with --instructions: which (default: all)")
    args = parser.parse_args()
    for python in args.python or [sys.executable]:
        version = subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                                 capture_output=True, text=True, check=True).stdout.strip()
        if args.instructions:
            print_instructions(python, version, [idiom for idiom in args.idioms.split(",") if idiom])
            continue
        measures = tuple(("%s, us per use" % idiom, IDIOM_PROGRAM, [WORKLOADS, idiom]) for idiom in IDIOMS) + (
            ("control_flow.py main(%g), CPU s" % args.scale, WORKLOAD_PROGRAM, [WORKLOADS, str(args.scale)]),)
        results = {(name, variant[0]): [] for name, _, _ in measures for variant in VARIANTS}
        for _ in range(args.rounds):
            order = [(measure, variant) for measure in measures for variant in VARIANTS]
            random.shuffle(order)
            for (name, program, extra), variant in order:
                results[(name, variant[0])].append(run(python, program, variant, extra))
        print("CPython %s, %d rounds, medians" % (version, args.rounds))
        for name, _, _ in measures:
            plain = statistics.median(results[(name, "plain")])
            print("  %s:" % name)
            for label, _, _ in VARIANTS:
                values = results[(name, label)]
                median = statistics.median(values)
                print("    %-20s %8.4f  %+7.1f%%   (min %.4f, max %.4f)" % (
                    label, median, 100 * (median / plain - 1), min(values), max(values)))


if __name__ == "__main__":
    main()

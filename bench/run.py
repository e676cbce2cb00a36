"""The overhead benchmark suite: every workload plain, under cProfile, and under the shim in each mode.

    python3.12 bench/run.py [--runs 7] [--python PATH] [--workloads a,b] [--json PATH] [--quick]

For each workload in bench/workloads: the plain program, `python -m cProfile`, and the shim in each mode
(full|burst|exceptions) started by autostart, as a service gets it, streaming to a real `telemetry-agent serve`, interleaved round by round (the order
of the variants shuffled in each round), median of the runs. The machine is shared and noisy: the suite reports
ratios to the plain run measured in the same rounds, on CPU time (user + system of the program's process, which
includes the shim's sender thread) and on wall time, for the whole process (start-up and exit included) and for
the steady state (the CPU time of the process while the workload's main() runs, which each workload prints:
what an always-on service pays, the shim's start-up being a one-off cost). Then:

- accuracy: one longer run of each workload in full and in burst mode, the burst run on a fixed schedule of 2 ms
  windows every 20 ms (so that a few seconds hold as many windows as a service gets in minutes); the distance is
  the largest difference, in percentage points, between the two flame graphs' shares of self time of the full
  run's top 10 functions;
- the shim's own overhead estimate (STATS) in burst mode, beside the measured figure;
- the raise path: exceptions mode's extra CPU time per exception raised by exceptions_heavy;
- what a set_events toggle costs, alone and with re-instrumentation of 1000 functions;
- instructions (valgrind's cachegrind; --instructions-only for these alone): plain, a second plain run as the
  control, exceptions mode, exceptions mode without the notes watch (TELEMETRY_SHIM_NOTE_WATCH=off: the watch's
  cost is the difference), and burst mode with its defaults over about six seconds of the program's normal
  time. Valgrind runs a program 11 to 37 times slower, while the shim's schedule follows the clock: these runs
  stretch every interval of the shim (TELEMETRY_SHIM_SLOWDOWN) and the GIL's switch interval (bench/slowdown)
  by the slowdown measured for the workload, so that windows open, last and close at the same points of the
  program's progress as in a normal run (measure_instructions).

Prints a table and writes JSON (default bench/results/latest-<python>.json). Stdlib only.
"""

import argparse
import concurrent.futures
import glob
import json
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
WORKLOAD_DIR = os.path.join(HERE, "workloads")
AUTOSTART_DIR = os.path.join(REPO, "python-shim", "telemetry_shim", "autostart")
SLOWDOWN_SITE_DIR = os.path.join(HERE, "slowdown")
AGENT_DLL = os.path.join(REPO, "agent", "src", "TelemetryAgent", "bin", "Release", "net10.0", "telemetry-agent.dll")
VARIANTS = ("plain", "cProfile", "full", "full-python", "burst", "exceptions")
# The shim's variants: mode and callbacks (full-python: full mode with the Python callbacks, their twin).
SHIM_MODES = {"full": ("full", "on"), "full-python": ("full", "off"), "burst": ("burst", "auto"),
              "exceptions": ("exceptions", "auto")}
# Measured in the rounds that count cProfile (a few: they are the slow ones).
FULL_VARIANTS = ("cProfile", "full", "full-python")
# The recursive micro-benchmark of one call event's cost (event_cost).
EVENT_COST_PROGRAM = r"""
import sys, time
def f(n):
    return 0 if n == 0 else f(n - 1) + 1
def main():
    for _ in range(300):
        f(500)
main()  # warm: code keys, buffers
start = time.thread_time_ns()
for _ in range(%d):
    main()
print("ns=%%d calls=%%d" %% (time.thread_time_ns() - start, %d * 300 * 501))
"""
EVENT_COST_ROUNDS = 20
# Rarely raising workloads: where exceptions mode must cost at most 2%.
RAISING_WORKLOADS = ("exceptions_heavy",)
ACCURACY_TOP = 10


def workloads(selected):
    names = sorted(os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(WORKLOAD_DIR, "*.py")))
    if selected:
        unknown = set(selected) - set(names)
        if unknown:
            raise SystemExit("unknown workloads: %s (have: %s)" % (", ".join(sorted(unknown)), ", ".join(names)))
        names = [n for n in names if n in selected]
    return names


class Runner:
    def __init__(self, python, socket_path, output_dir):
        self.python = python
        self.socket_path = socket_path
        self.output_dir = output_dir
        self.env = dict(os.environ, PYTHONPATH=os.path.join(REPO, "python-shim"), PYTHONDONTWRITEBYTECODE="")
        for key in list(self.env):
            if key.startswith("TELEMETRY_SHIM_"):
                del self.env[key]  # the defaults are what is measured

    def argv(self, variant, script, service, scale=None):
        tail = [script] + ([str(scale)] if scale is not None else [])
        if variant == "plain":
            return [self.python] + tail
        if variant == "cProfile":
            return [self.python, "-m", "cProfile", "-o", os.devnull] + tail
        return [self.python] + tail  # the shim through autostart (shim_env)

    def shim_env(self, variant, service):
        """The shim as a service gets it: autostart, so no runner frame sits below the program (deep recursion
        would pay for those frames: docs/performance.md, "Recursion")."""
        mode, native = SHIM_MODES[variant]
        return {"PYTHONPATH": os.pathsep.join([AUTOSTART_DIR, os.path.join(REPO, "python-shim")]),
                "TELEMETRY_SHIM_AUTOSTART": "1", "TELEMETRY_SHIM_MODE": mode, "TELEMETRY_SHIM_NATIVE": native,
                "TELEMETRY_AGENT_SOCKET": self.socket_path, "TELEMETRY_SHIM_SERVICE_NAME": service}

    def run(self, variant, script, service, scale=None, extra_env=None):
        """(wall s, CPU s, steady-state CPU s, stdout) of one run; CPU time (user + system) from the child's
        rusage, the steady state from the workload's own `work_cpu_s=` line on stderr."""
        env = dict(self.env)
        if variant in SHIM_MODES:
            env.update(self.shim_env(variant, service))
        env.update(extra_env or {})
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            start = time.perf_counter()
            process = subprocess.Popen(self.argv(variant, script, service, scale), env=env, stdout=out, stderr=err,
                                       text=True)
            _, status, usage = os.wait4(process.pid, 0)
            wall = time.perf_counter() - start
            process.returncode = os.waitstatus_to_exitcode(status)
            out.seek(0)
            err.seek(0)
            if process.returncode != 0:
                raise SystemExit("%s %s failed (%d):\n%s" % (variant, script, process.returncode, err.read()[-3000:]))
            return wall, usage.ru_utime + usage.ru_stime, _steady_seconds(err.read()), out.read()

    def instructions(self, variant, script, service, scale=None, slowdown=None, extra_env=None):
        """(instructions, steady-state CPU s) of the run (all its threads), the instructions counted by valgrind's
        cachegrind: unlike CPU time, the same from run to run on a noisy machine. With `slowdown` (how many times
        slower valgrind runs this program), the shim's intervals and the GIL's switch interval are stretched by it:
        timed things then happen at the same points of the program's progress as in a normal run.
        --fair-sched: valgrind's default lock is unfair, and a computing thread can keep it while the sender waits."""
        env = dict(self.env)
        if variant in SHIM_MODES:
            env.update(self.shim_env(variant, service))
        env.update(extra_env or {})
        if slowdown:
            paths = env["PYTHONPATH"].split(os.pathsep)
            paths.insert(1 if variant in SHIM_MODES else 0, SLOWDOWN_SITE_DIR)  # after the autostart directory
            env.update(PYTHONPATH=os.pathsep.join(paths), BENCH_SLOWDOWN="%.3f" % slowdown,
                       TELEMETRY_SHIM_SLOWDOWN="%.3f" % slowdown)
        env.update(extra_env or {})
        command = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--fair-sched=yes",
                   "--cachegrind-out-file=" + os.devnull]
        done = subprocess.run(command + self.argv(variant, script, service, scale), env=env, capture_output=True,
                              text=True)
        counted = re.search(r"I\s+refs:\s+([0-9,]+)", done.stderr)
        if done.returncode != 0 or not counted:
            raise SystemExit("%s %s under valgrind failed (%d):\n%s" % (variant, script, done.returncode,
                                                                        done.stderr[-3000:]))
        return int(counted.group(1).replace(",", "")), _steady_seconds(done.stderr)

    def outputs_of(self, service, timeout=30.0):
        """The serve output folder of the process that ran as `service`."""
        deadline = time.monotonic() + timeout
        while True:
            found = glob.glob(os.path.join(self.output_dir, glob.escape(service) + "-*", "summary.json"))
            if found:
                return os.path.dirname(found[0])
            if time.monotonic() > deadline:
                raise SystemExit("no output from the agent for %s" % service)
            time.sleep(0.05)

    def summary_of(self, service):
        """The process's entry in summary.json of the process that ran as `service`."""
        with open(os.path.join(self.outputs_of(service), "summary.json")) as source:
            return json.load(source)["processes"][0]


def _steady_seconds(stderr):
    """The CPU seconds of the workload's main(), from the `work_cpu_s=` line each workload prints on stderr."""
    work = re.search(r"^work_cpu_s=([0-9.]+)$", stderr, re.M)
    return float(work.group(1)) if work else None


def start_agent(agent_dll, socket_path, output_dir):
    """A `telemetry-agent serve` on `socket_path`, once it listens (the caller terminates it)."""
    agent = subprocess.Popen(["dotnet", agent_dll, "serve", "--socket", socket_path, "--output", output_dir],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not os.path.exists(socket_path):
        if agent.poll() is not None or time.monotonic() > deadline:
            agent.kill()
            raise SystemExit("telemetry-agent serve did not start")
        time.sleep(0.05)
    return agent


def self_shares(folded_path):
    """{function frame: share of all self time} from a profile.folded."""
    totals = {}
    with open(folded_path) as folded:
        for line in folded:
            stack, _, weight = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            leaf = stack.rsplit(";", 1)[-1]
            totals[leaf] = totals.get(leaf, 0) + int(weight)
    grand = sum(totals.values()) or 1
    return {name: value / grand for name, value in totals.items()}


def accuracy_distance(full_shares, burst_shares):
    top = sorted(full_shares, key=full_shares.get, reverse=True)[:ACCURACY_TOP]
    differences = {name: 100 * abs(full_shares[name] - burst_shares.get(name, 0.0)) for name in top}
    return max(differences.values(), default=0.0), top, differences


TOGGLE_PROGRAM = r"""
import sys, time
m = sys.monitoring
tool = 5
m.use_tool_id(tool, "bench")
events = m.events.PY_START | m.events.PY_RETURN
m.register_callback(tool, m.events.PY_START, None)
m.register_callback(tool, m.events.PY_RETURN, None)
namespace = {}
exec("\n".join("def f%d():\n    return %d" % (i, i) for i in range(1000)), namespace)
functions = [namespace["f%d" % i] for i in range(1000)]
def timed(reinstrument, pairs):
    best = None
    for _ in range(5):
        start = time.perf_counter_ns()
        for _ in range(pairs):
            m.set_events(tool, events)
            m.set_events(tool, 0)
            if reinstrument:
                for f in functions:
                    f()
        elapsed = time.perf_counter_ns() - start
        best = elapsed if best is None else min(best, elapsed)
    return best / pairs
start = time.perf_counter_ns()
for _ in range(20):
    for f in functions:
        f()
plain_calls = (time.perf_counter_ns() - start) / 20
print(timed(False, 2000) / 2, (timed(True, 20) - plain_calls) / 2)
"""


# The callbacks alone, dispatched by the interpreter, no sender: the shim's Recorder (C and Python callbacks) and
# cProfile around fib(22), best of 5 each, three interleaved rounds.
CALLBACK_COST_PROGRAM = r"""
import cProfile, sys, time
sys.path.insert(0, sys.argv[1])
from telemetry_shim import SHIM_PACKAGE_DIR
from telemetry_shim._monitor import Recorder, _EVENT_KINDS, EVENT_MASK
m = sys.monitoring
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)
CALLS = 57313  # fib(22)
def best(enable, disable):
    times = []
    for _ in range(5):
        enable()
        start = time.thread_time_ns()
        fib(22)
        times.append(time.thread_time_ns() - start)
        disable()
    return min(times)
def shim(native):
    recorder = Recorder(1 << 22, SHIM_PACKAGE_DIR, lambda: None, exceptions=False, native=native)
    def enable():
        del recorder.buffer[:]
        m.use_tool_id(4, "bench")
        for (event, _, _), callback in zip(_EVENT_KINDS, recorder._callbacks):
            m.register_callback(4, event, callback)
        m.set_events(4, EVENT_MASK)
        fib(3)  # the thread and the code known: what follows is the fast path
    def disable():
        m.set_events(4, 0)
        m.free_tool_id(4)
    return enable, disable
profile = cProfile.Profile()
variants = {"plain": (lambda: None, lambda: None), "cProfile": (profile.enable, profile.disable),
            "native": shim(True), "python": shim(False)}
results = {name: [] for name in variants}
for _ in range(3):
    for name, (enable, disable) in variants.items():
        results[name].append(best(enable, disable))
plain = min(results["plain"])
print(" ".join("%s=%.1f" % (name, (min(values) - plain) / (2 * CALLS)) for name, values in results.items()))
"""


def callback_cost(python):
    """{variant: ns per call event} of the callbacks alone (CALLBACK_COST_PROGRAM); None without the C callbacks."""
    done = subprocess.run([python, "-c", CALLBACK_COST_PROGRAM, os.path.join(REPO, "python-shim")],
                          capture_output=True, text=True)
    if done.returncode != 0:
        print("callback cost not measured: %s" % done.stderr.strip()[-500:], file=sys.stderr)
        return None
    return {name: float(value) for name, value in (item.split("=") for item in done.stdout.split())}


def toggle_cost(python):
    """(ns per set_events change, ns per change with 1000 functions re-instrumented)."""
    out = subprocess.run([python, "-c", TOGGLE_PROGRAM], capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), float(out[1])


def machine_description(python):
    version = subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                             capture_output=True, text=True, check=True).stdout.strip()
    cpu = ""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"python": version, "cpu": cpu, "cores": os.cpu_count(), "system": platform.platform()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable, help="the Python >= 3.12 to measure (default: this one)")
    parser.add_argument("--runs", type=int, default=7, help="interleaved rounds (default 7)")
    parser.add_argument("--full-runs", type=int, default=3,
                        help="rounds that also run cProfile and full mode, the slow variants (default 3)")
    parser.add_argument("--workloads", default="", help="comma-separated subset of bench/workloads")
    parser.add_argument("--accuracy-scale", type=float, default=3.0, help="workload scale of the accuracy runs")
    parser.add_argument("--quick", action="store_true",
                        help="3 rounds (2 with cProfile and full), accuracy scale 1, no instruction counts: a smoke run")
    parser.add_argument("--instructions-scale", type=float, default=None,
                        help="workload scale of the instruction counts under valgrind (default 0.25; 0: leave them out)")
    parser.add_argument("--instructions-only", action="store_true",
                        help="only the instruction counts (about 25 minutes), no CPU-time rounds")
    parser.add_argument("--startup-phase", action="store_true",
                        help="only what recording the start-up phase costs (instructions) and the shim's own start (CPU)")
    parser.add_argument("--agent-dll", default=AGENT_DLL)
    parser.add_argument("--json", help="where to write the results (default bench/results/latest-<python>.json)")
    args = parser.parse_args()
    if args.instructions_scale is None:
        args.instructions_scale = 0.0 if args.quick and not args.instructions_only else 0.25
    if args.instructions_only and not args.instructions_scale:
        parser.error("--instructions-only needs a non-zero --instructions-scale")
    if args.quick:
        args.runs, args.full_runs, args.accuracy_scale = 3, 2, 1.0
    names = workloads([n for n in args.workloads.split(",") if n])
    if not os.path.exists(args.agent_dll):
        subprocess.run(["dotnet", "build", "-c", "Release", os.path.join(REPO, "TelemetryAgent.sln")], check=True)
    machine = machine_description(args.python)

    with tempfile.TemporaryDirectory(prefix="telemetry-bench-") as temp:
        socket_path = os.path.join(temp, "agent.sock")
        output_dir = os.path.join(temp, "out")
        agent = start_agent(args.agent_dll, socket_path, output_dir)
        try:
            runner = Runner(args.python, socket_path, output_dir)
            if args.instructions_scale and not shutil.which("valgrind"):
                raise SystemExit("valgrind is needed for the instruction counts (apt-get install valgrind), "
                                 "or run with --instructions-scale 0 to leave them out")
            if args.startup_phase:
                startup_phase = measure_startup_phase(runner, temp)
            elif args.instructions_only:
                results, accuracy, event_cost = {}, {}, None
            else:
                event_cost = measure_event_cost(runner, temp, 5 if args.quick else EVENT_COST_ROUNDS)
                results = measure(runner, names, args.runs, args.full_runs)
                accuracy = measure_accuracy(runner, names, args.accuracy_scale)
            if not args.startup_phase:
                instructions = (measure_instructions(runner, names, args.instructions_scale, temp)
                                if args.instructions_scale else None)
        finally:
            agent.terminate()
            agent.wait(timeout=60)
    if args.startup_phase:
        print_startup_phase(startup_phase)
        path = args.json or os.path.join(HERE, "results", "startup-phase-%s.json" % machine["python"])
        with open(path, "w") as out:
            json.dump({"machine": machine, "startup_phase": startup_phase}, out, indent=2)
        print("\nJSON: %s" % os.path.relpath(path))
        return
    toggles = toggle_cost(args.python)
    callbacks_alone = callback_cost(args.python)

    report = {"machine": machine, "runs": args.runs, "full_runs": min(args.full_runs, args.runs), "workloads": results,
              "accuracy": accuracy, "event_cost_ns": event_cost, "callback_cost_ns": callbacks_alone,
              "instructions": instructions,
              "toggle_ns": toggles[0], "toggle_with_reinstrumentation_ns": toggles[1]}
    report["summary"] = summarize(report)
    print_report(report)
    path = args.json or os.path.join(HERE, "results", "latest-%s.json" % machine["python"])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as out:
        json.dump(report, out, indent=2)
    print("\nJSON: %s" % os.path.relpath(path))


def measure(runner, names, runs, full_runs):
    results = {}
    rng = random.Random(20261122)
    samples = {name: {variant: {"wall": [], "cpu": [], "work": []} for variant in VARIANTS} for name in names}
    overhead_estimates = {name: [] for name in names}
    dropped = {name: {variant: [] for variant in ("full", "full-python")} for name in names}
    raised = {}
    for name in names:  # warm-up: page cache, .pyc files
        runner.run("plain", os.path.join(WORKLOAD_DIR, name + ".py"), "warmup")
    for mode in SHIM_MODES:  # the shim's own .pyc files
        runner.run(mode, os.path.join(WORKLOAD_DIR, names[0] + ".py"), "warmup")
    for round_index in range(runs):
        for name in names:
            script = os.path.join(WORKLOAD_DIR, name + ".py")
            order = [v for v in VARIANTS if round_index < full_runs or v not in FULL_VARIANTS]
            rng.shuffle(order)
            for variant in order:
                service = "bench.%s.%s.%d" % (name, variant, round_index)
                wall, cpu, work, stdout = runner.run(variant, script, service)
                samples[name][variant]["wall"].append(wall)
                samples[name][variant]["cpu"].append(cpu)
                samples[name][variant]["work"].append(work)
                match = re.search(r"raised (\d+)", stdout)
                if match:
                    raised[name] = int(match.group(1))
                if variant in ("full", "full-python"):
                    summary = runner.summary_of(service)
                    callbacks = summary["recording"]["callbacks"]
                    if callbacks != {"full": "native", "full-python": "python"}[variant]:
                        raise SystemExit("%s recorded with the %s callbacks: build the C ones first "
                                         "(python-shim/build_backend/telemetry_shim_native.py)" % (variant, callbacks))
                    # A run that dropped events did less work than one that kept them all: its time is read with this.
                    stats = summary["shim_stats"]
                    dropped[name][variant].append(stats["events_dropped"] / max(1, stats["events_recorded"]))
                if variant == "burst":
                    achieved = runner.summary_of(service)["shim_stats"]["overhead_achieved"]
                    if achieved is not None:
                        overhead_estimates[name].append(achieved)
        print("round %d of %d done" % (round_index + 1, runs), file=sys.stderr)
    for name in names:
        medians = {variant: {kind: statistics.median(values) for kind, values in by_kind.items()}
                   for variant, by_kind in samples[name].items()}
        entry = {"median": medians, "samples": samples[name]}
        for kind in ("cpu", "wall", "work"):
            plain = medians["plain"][kind]
            entry["ratio_" + kind] = {variant: medians[variant][kind] / plain for variant in VARIANTS}
        entry["full_vs_cprofile_cpu"] = medians["full"]["cpu"] / medians["cProfile"]["cpu"]
        entry["full_python_vs_cprofile_cpu"] = medians["full-python"]["cpu"] / medians["cProfile"]["cpu"]
        entry["dropped_share"] = {variant: max(shares) for variant, shares in dropped[name].items() if shares}
        entry["shim_overhead_estimate_burst"] = (statistics.median(overhead_estimates[name])
                                                 if overhead_estimates[name] else None)
        if name in raised:
            entry["exceptions_raised"] = raised[name]
            extra = medians["exceptions"]["cpu"] - medians["plain"]["cpu"]
            entry["raise_path_us_exceptions_mode"] = 1e6 * extra / raised[name]
        results[name] = entry
    return results


def measure_event_cost(runner, temp, rounds):
    """CPU nanoseconds per call event (two per call: PY_START and PY_RETURN) on a recursive micro-benchmark,
    for the shim's C callbacks, its Python ones and cProfile: (the variant's CPU time - the plain run's) / events,
    thread CPU time of the main thread around the loop, interleaved rounds, medians."""
    repeat = 10
    script = os.path.join(temp, "event_cost.py")
    with open(script, "w") as out:
        out.write(EVENT_COST_PROGRAM % (repeat, repeat))
    variants = ("plain", "cProfile", "full", "full-python")
    samples = {variant: [] for variant in variants}
    dropped = []
    calls = None
    rng = random.Random(20261206)
    for round_index in range(rounds):
        order = list(variants)
        rng.shuffle(order)
        for variant in order:
            service = "bench.event_cost.%s.%d" % (variant, round_index)
            stdout = runner.run(variant, script, service)[3]
            found = re.search(r"ns=(\d+) calls=(\d+)", stdout)
            samples[variant].append(int(found.group(1)))
            calls = int(found.group(2))
            if variant == "full":
                stats = runner.summary_of(service)["shim_stats"]
                dropped.append(stats["events_dropped"] / max(1, stats["events_recorded"]))
    medians = {variant: statistics.median(values) for variant, values in samples.items()}
    print("event cost: %d rounds done" % rounds, file=sys.stderr)
    cost = {variant: (medians[variant] - medians["plain"]) / (2 * calls) for variant in variants if variant != "plain"}
    # How fast the C callbacks' run produced events (its loop's CPU time: one busy thread), and what it could not ship.
    cost["full_events_per_s"] = 2 * calls / (medians["full"] / 1e9)
    cost["full_dropped_share"] = max(dropped)
    return cost


INSTRUCTION_VARIANTS = ("plain", "plain again", "exceptions", "exceptions without notes watch")
# Settings of the variants that are a mode with something changed (the first word of a variant is its mode).
VARIANT_ENV = {"exceptions without notes watch": {"TELEMETRY_SHIM_NOTE_WATCH": "off"}}
# Burst mode is counted over runs this long in the program's normal time: about six windows at the default period.
BURST_RUN_S = 6.0
# Counted once at its normal scale, burst mode included: its steady state is a service's start-up.
ONE_OFF_WORKLOADS = ("startup",)


def measure_instructions(runner, names, scale, temp):
    """The shim's cost in instructions, which this machine's noise does not blur. Per workload: a plain run
    BURST_RUN_S long in the program's normal time, and from it how many times slower valgrind runs the program
    (its steady-state CPU time there / the least of three normal runs at `scale`, scaled); then, with every
    interval stretched by that factor (Runner.instructions): burst mode over the same work (its windows come
    about once a second), and the plain run, a second plain run (the control: how far two identical runs
    differ) and exceptions mode at `scale`. The long plain run's own switch interval is stretched by a first
    guess from a short run (valgrind's first translations make it high; that run is not counted).
    Steady state = the run minus an empty program's run under the same variant and stretch, which removes the
    interpreter's and the shim's start-up and exit. Two workloads are counted at a time."""
    empty = os.path.join(temp, "empty.py")
    with open(empty, "w") as out:
        out.write("pass\n")
    for variant in ("plain", "exceptions"):  # the shim's .pyc files are written before anything is counted
        runner.run(variant, empty, "instructions.warmup")

    def measure_one(name):
        script = os.path.join(WORKLOAD_DIR, name + ".py")
        normal_s = min(runner.run("plain", script, "instructions.normal", scale)[2] for _ in range(3))
        guess = max(runner.instructions("plain", script, "instructions.guess", scale)[1] / normal_s, 1.0)
        burst_scale = 1.0 if name in ONE_OFF_WORKLOADS else round(BURST_RUN_S * scale / normal_s, 2)
        long_plain, long_plain_s = runner.instructions("plain", script, "instructions.long", burst_scale, guess)
        if name in ONE_OFF_WORKLOADS:  # not proportional to the scale: timed at its own
            normal_long_s = min(runner.run("plain", script, "instructions.normal", burst_scale)[2] for _ in range(3))
        else:
            normal_long_s = normal_s * burst_scale / scale
        slowdown = max(long_plain_s / normal_long_s, 1.0)

        def count(variant, program, run_scale=None):
            mode = variant.split()[0]  # "plain again" runs as plain
            service = "instructions.%s.%s%s" % (name, "-".join(variant.split()), ".empty" if program == empty else "")
            return runner.instructions(mode, program, service, run_scale, slowdown, VARIANT_ENV.get(variant))[0]

        empty_counts = {variant: count(variant, empty) for variant in INSTRUCTION_VARIANTS + ("burst",)}

        def steady(whole):
            return {variant: whole[variant] - empty_counts[variant] for variant in whole}

        whole = {variant: count(variant, script, scale) for variant in INSTRUCTION_VARIANTS}
        burst_whole = {"plain": long_plain, "burst": count("burst", script, burst_scale)}
        steady_counts, burst_steady = steady(whole), steady(burst_whole)
        process = runner.summary_of("instructions.%s.burst" % name)
        windows = process["recording"].get("windows", {})
        entry = {
            "slowdown": slowdown, "normal_steady_s": normal_s,
            "whole": whole, "empty_program": {variant: empty_counts[variant] for variant in INSTRUCTION_VARIANTS},
            "steady": steady_counts,
            "ratio_steady": {variant: steady_counts[variant] / steady_counts["plain"] for variant in INSTRUCTION_VARIANTS},
            "ratio_whole": {variant: whole[variant] / whole["plain"] for variant in INSTRUCTION_VARIANTS},
            "burst": {
                "scale": burst_scale, "whole": burst_whole,
                "empty_program": {variant: empty_counts[variant] for variant in burst_whole}, "steady": burst_steady,
                "ratio_steady": burst_steady["burst"] / burst_steady["plain"],
                "ratio_whole": burst_whole["burst"] / burst_whole["plain"],
                "windows": windows.get("count", 0), "duty_cycle": windows.get("duty_cycle", 0.0),
                "shim_overhead_estimate": process["shim_stats"]["overhead_achieved"],
            },
        }
        print("instructions: %s done (slowdown %.1f)" % (name, slowdown), file=sys.stderr)
        return name, entry

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        counted = dict(pool.map(measure_one, names))
    return {"scale": scale, "burst_run_s": BURST_RUN_S, "workloads": {name: counted[name] for name in names}}


# The start-up phase's variants (measure_startup_phase): the shim without it, with it (ready at the end of the main
# module: the mode records as always), and with a ready-on function (the mode holds its own recording until then).
STARTUP_PHASE_VARIANTS = (
    ("without", {"TELEMETRY_SHIM_STARTUP": "off"}),
    ("recorded", {}),
    ("ready_on", {"TELEMETRY_SHIM_READY_ON": "json:dumps"}),
)


# Normal runs that give the shim's own start (CPU time, which varies more than the instruction counts).
STARTUP_CPU_RUNS = 9


def measure_startup_phase(runner, temp):
    """What recording the start-up phase costs, in instructions, on the start-up workload (imports, then json.dumps
    once ready): burst and exceptions mode each without the phase, with it, and with a ready-on function (the mode's
    own recording, importlib's exceptions included, held until then); plus the shim's own start in CPU time (its
    process_time from start() entered to returned, all threads, from startup.json), from normal runs."""
    script = os.path.join(WORKLOAD_DIR, "startup.py")
    empty = os.path.join(temp, "empty.py")
    with open(empty, "w") as out:
        out.write("pass\n")
    for variant in ("plain", "exceptions"):
        runner.run(variant, empty, "startup-phase.warmup")
    normal_s = min(runner.run("plain", script, "startup-phase.normal")[2] for _ in range(3))
    slowdown = max(runner.instructions("plain", script, "startup-phase.guess")[1] / normal_s, 1.0)
    plain = runner.instructions("plain", script, "startup-phase.plain", None, slowdown)[0]
    # The control: how far two identical runs differ (the sender's ticks and the GIL's switches move a little).
    counts = {"plain.again": runner.instructions("plain", script, "startup-phase.plain-again", None, slowdown)[0]}
    for mode in ("exceptions", "burst"):
        for name, env in STARTUP_PHASE_VARIANTS:
            counts["%s.%s" % (mode, name)] = runner.instructions(mode, script, "startup-phase.%s.%s" % (mode, name), None,
                                                                  slowdown, env)[0]
        print("startup phase: %s done" % mode, file=sys.stderr)
    shim_start_cpu_ms = []
    for attempt in range(STARTUP_CPU_RUNS):
        service = "startup-phase.cpu.%d" % attempt
        runner.run("exceptions", script, service)
        with open(os.path.join(runner.outputs_of(service), "startup.json")) as source:
            shim_start_cpu_ms.append(json.load(source)["processes"][0]["shim_start_cpu_ns"] / 1e6)
    ratios = {}
    for mode in ("exceptions", "burst"):
        without = counts[mode + ".without"]
        ratios[mode] = {
            "phase_over_plain": (counts[mode + ".recorded"] - without) / plain,
            "shim_without_phase_over_plain": (without - plain) / plain,
            "shim_with_ready_on_over_plain": (counts[mode + ".ready_on"] - plain) / plain,
        }
    ratios["control"] = {"plain_again_over_plain": (counts["plain.again"] - plain) / plain}
    return {"slowdown": slowdown, "plain": plain, "counts": counts, "ratios": ratios,
            "shim_start_cpu_ms": {"runs": shim_start_cpu_ms, "median": statistics.median(shim_start_cpu_ms)}}


def print_startup_phase(result):
    print("Start-up phase (instructions, start-up workload; plain = %s):" % format(result["plain"], ","))
    print("  control: a second plain run differs by %+.2f%%" % (100 * result["ratios"]["control"]["plain_again_over_plain"]))
    for mode, ratio in result["ratios"].items():
        if mode == "control":
            continue
        print("  %-10s  phase recorded: %+.2f%%   shim without the phase: %+.2f%%   shim with a ready-on function: %+.2f%%"
              % (mode, 100 * ratio["phase_over_plain"], 100 * ratio["shim_without_phase_over_plain"],
                 100 * ratio["shim_with_ready_on_over_plain"]))
    cpu = result["shim_start_cpu_ms"]
    print("  the shim's own start: %.2f ms CPU (median of %d; %s)" % (
        cpu["median"], len(cpu["runs"]), ", ".join("%.2f" % value for value in cpu["runs"])))


def measure_accuracy(runner, names, scale):
    accuracy = {}
    burst_env = {"TELEMETRY_SHIM_WINDOW_MS": "2", "TELEMETRY_SHIM_PERIOD_MS": "20", "TELEMETRY_SHIM_BUDGET": "off"}
    for name in names:
        script = os.path.join(WORKLOAD_DIR, name + ".py")
        shares = {}
        windows = None
        for mode in ("full", "burst"):
            service = "accuracy.%s.%s" % (name, mode)
            runner.run(mode, script, service, scale=scale, extra_env=burst_env if mode == "burst" else None)[3]
            folder = runner.outputs_of(service)
            shares[mode] = self_shares(os.path.join(folder, "profile.folded"))
            if mode == "burst":
                windows = runner.summary_of(service)["recording"]["windows"]
        distance, top, differences = accuracy_distance(shares["full"], shares["burst"])
        accuracy[name] = {
            "max_difference_pp": distance,
            "top": [{"function": f, "full_pct": 100 * shares["full"][f], "burst_pct": 100 * shares["burst"].get(f, 0.0)}
                    for f in top],
            "windows": windows["count"] if windows else 0,
            "duty_cycle": windows["duty_cycle"] if windows else 0,
        }
    return accuracy


def summarize(report):
    results = report["workloads"]
    burst = [entry["ratio_cpu"]["burst"] - 1 for entry in results.values()]
    burst_steady = [entry["ratio_work"]["burst"] - 1 for entry in results.values()]
    quiet = [entry["ratio_cpu"]["exceptions"] - 1 for name, entry in results.items() if name not in RAISING_WORKLOADS]
    quiet_steady = [entry["ratio_work"]["exceptions"] - 1 for name, entry in results.items()
                    if name not in RAISING_WORKLOADS]
    distances = [entry["max_difference_pp"] for entry in report["accuracy"].values()]
    summary = {
        "burst_median_slowdown_cpu": statistics.median(burst) if burst else None,
        "burst_median_slowdown_wall": statistics.median([e["ratio_wall"]["burst"] - 1 for e in results.values()])
        if results else None,
        "burst_median_slowdown_steady": statistics.median(burst_steady) if burst_steady else None,
        "exceptions_median_slowdown_cpu_rarely_raising": statistics.median(quiet) if quiet else None,
        "exceptions_median_slowdown_steady_rarely_raising": statistics.median(quiet_steady) if quiet_steady else None,
        "exceptions_max_slowdown_cpu_rarely_raising": max(quiet) if quiet else None,
        "accuracy_median_max_difference_pp": statistics.median(distances) if distances else None,
    }
    instructions = report.get("instructions")
    if instructions:
        counted = instructions["workloads"]
        quiet = [entry["ratio_steady"]["exceptions"] - 1 for name, entry in counted.items()
                 if name not in RAISING_WORKLOADS]
        summary["exceptions_median_slowdown_instructions_steady_rarely_raising"] = (statistics.median(quiet)
                                                                                     if quiet else None)
        summary["exceptions_max_slowdown_instructions_steady_rarely_raising"] = max(quiet) if quiet else None
        summary["instructions_control_max_difference"] = max(
            (abs(entry["ratio_steady"]["plain again"] - 1) for entry in counted.values()), default=None)
        summary["shim_startup_instructions"] = statistics.median(
            entry["empty_program"]["exceptions"] - entry["empty_program"]["plain"] for entry in counted.values())
        burst = [entry["burst"]["ratio_steady"] - 1 for entry in counted.values()]
        summary["burst_median_slowdown_instructions_steady"] = statistics.median(burst)
        summary["burst_max_slowdown_instructions_steady"] = max(burst)
        summary["burst_median_shim_overhead_estimate"] = statistics.median(
            entry["burst"]["shim_overhead_estimate"] for entry in counted.values())
    raise_path = [e["raise_path_us_exceptions_mode"] for e in results.values() if "raise_path_us_exceptions_mode" in e]
    if raise_path:
        summary["raise_path_us_exceptions_mode"] = raise_path[0]
    return summary


def _pct(ratio):
    return "%+.1f%%" % (100 * (ratio - 1)) if ratio is not None else "-"


def print_table(rows):
    """The first row is the header; the first column is left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for index, row in enumerate(rows):
        print("  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)))
        if index == 0:
            print("  ".join("-" * w for w in widths))


def print_report(report):
    machine = report["machine"]
    summary = report["summary"]
    if not report["workloads"]:  # --instructions-only
        print("Python %s, %s, %d cores" % (machine["python"], machine["cpu"] or "?", machine["cores"]))
        print_instructions(report["instructions"], summary)
        return
    print("Python %s, %s, %d cores; median of %d interleaved rounds (cProfile and full: %d); CPU time of the "
          "program's process, ratio to plain; steady: while main() runs (wall time in the JSON)" % (
              machine["python"], machine["cpu"] or "?", machine["cores"], report["runs"], report["full_runs"]))
    header = ("workload", "plain", "cProfile", "full", "full/cProfile", "dropped", "full-python", "full-python/cProfile", "burst",
              "steady", "shim est.", "exceptions", "steady", "accuracy")
    rows = [header]
    for name, entry in report["workloads"].items():
        ratio = entry["ratio_cpu"]
        estimate = entry["shim_overhead_estimate_burst"]
        accuracy = report["accuracy"].get(name)
        rows.append((
            name,
            "%.3f s" % entry["median"]["plain"]["cpu"],
            "%.2fx" % ratio["cProfile"],
            "%.2fx" % ratio["full"],
            "%.2fx" % entry["full_vs_cprofile_cpu"],
            "%.1f%%" % (100 * entry["dropped_share"]["full"]) if "full" in entry.get("dropped_share", {}) else "-",
            "%.2fx" % ratio["full-python"],
            "%.2fx" % entry["full_python_vs_cprofile_cpu"],
            _pct(ratio["burst"]),
            _pct(entry["ratio_work"]["burst"]),
            "%.2f%%" % (100 * estimate) if estimate is not None else "-",
            _pct(ratio["exceptions"]),
            _pct(entry["ratio_work"]["exceptions"]),
            "%.1f pp (%d windows)" % (accuracy["max_difference_pp"], accuracy["windows"]) if accuracy else "-",
        ))
    print_table(rows)
    print("dropped: the largest share of its recorded events a full-mode run (C callbacks) could not deliver; a run "
          "that dropped events shipped less than one that kept them all")
    print()
    print("burst, default budget (1%%): median slowdown %+.2f%% steady state, %+.2f%% whole process CPU, %+.2f%% wall "
          "(target <= +2%%)" % (100 * summary["burst_median_slowdown_steady"], 100 * summary["burst_median_slowdown_cpu"],
                               100 * summary["burst_median_slowdown_wall"]))
    print("exceptions on rarely raising workloads: median %+.2f%% steady state, %+.2f%% whole process, worst %+.2f%% "
          "(target <= +2%%)" % (100 * summary["exceptions_median_slowdown_steady_rarely_raising"],
                               100 * summary["exceptions_median_slowdown_cpu_rarely_raising"],
                               100 * summary["exceptions_max_slowdown_cpu_rarely_raising"]))
    if "raise_path_us_exceptions_mode" in summary:
        print("raise path, exceptions mode: %.2f us of CPU per exception (exceptions_heavy)" %
              summary["raise_path_us_exceptions_mode"])
    print("accuracy (burst vs full, top %d functions' share of self time): median of the largest differences "
          "%.1f percentage points" % (ACCURACY_TOP, summary["accuracy_median_max_difference_pp"]))
    cost = report.get("event_cost_ns")
    if cost:
        print("one call event (recursive micro-benchmark, CPU ns beyond the plain run): C callbacks %.0f ns, Python "
              "callbacks %.0f ns, cProfile %.0f ns" % (cost["full"], cost["full-python"], cost["cProfile"]))
        if "full_events_per_s" in cost:
            print("the C callbacks' run of it produced %.1f M events/s; the most it dropped in a round: %.2f%%" % (
                cost["full_events_per_s"] / 1e6, 100 * cost["full_dropped_share"]))
    alone = report.get("callback_cost_ns")
    if alone:
        print("the callbacks alone (fib(22), dispatched by the interpreter, no sender), per call event: C callbacks "
              "%.0f ns, Python callbacks %.0f ns, cProfile %.0f ns" % (alone["native"], alone["python"], alone["cProfile"]))
    print("set_events toggle: %.1f us; with 1000 functions re-instrumented: %.1f us" % (
        report["toggle_ns"] / 1000, report["toggle_with_reinstrumentation_ns"] / 1000))
    instructions = report.get("instructions")
    if instructions:
        print_instructions(instructions, summary)


def print_instructions(instructions, summary):
    print()
    print("Instructions (valgrind, intervals stretched by its slowdown; workload scale %g, burst over %g s of normal "
          "time; steady: minus an empty program's run under the same variant)" % (instructions["scale"],
                                                                                  instructions["burst_run_s"]))
    header = ("workload", "slowdown", "plain steady", "control", "exceptions (steady)", "exceptions (process)",
              "no notes watch (steady)", "burst (steady)", "windows", "shim est.")
    rows = [header]
    for name, entry in instructions["workloads"].items():
        burst = entry["burst"]
        rows.append((name, "%.1fx" % entry["slowdown"], "%.1f M" % (entry["steady"]["plain"] / 1e6),
                     _pct(entry["ratio_steady"]["plain again"]), _pct(entry["ratio_steady"]["exceptions"]),
                     _pct(entry["ratio_whole"]["exceptions"]),
                     _pct(entry["ratio_steady"].get("exceptions without notes watch")), _pct(burst["ratio_steady"]),
                     str(burst["windows"]),
                     "%.2f%%" % (100 * burst["shim_overhead_estimate"])))
    print_table(rows)
    print("burst, default budget (1%%), in instructions: median %+.2f%% steady state, worst %+.2f%% (target <= +2%%); "
          "the shim's own estimate: median %.2f%%" % (100 * summary["burst_median_slowdown_instructions_steady"],
                                                     100 * summary["burst_max_slowdown_instructions_steady"],
                                                     100 * summary["burst_median_shim_overhead_estimate"]))
    print("exceptions on rarely raising workloads, in instructions: median %+.2f%% steady state, worst %+.2f%% "
          "(target <= +2%%); two plain runs differ by at most %.2f%%; the shim's start-up and exit: %.1f M "
          "instructions" % (100 * summary["exceptions_median_slowdown_instructions_steady_rarely_raising"],
                            100 * summary["exceptions_max_slowdown_instructions_steady_rarely_raising"],
                            100 * summary["instructions_control_max_difference"],
                            summary["shim_startup_instructions"] / 1e6))


if __name__ == "__main__":
    main()

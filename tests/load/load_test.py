"""Load test: many real shimmed Python processes stream to one real `telemetry-agent serve` at once.

Checks that every event is accounted for, connection by connection: what the shim sent is what the agent
received (GOODBYE's final stats against the agent's count), and what the shim recorded was sent or dropped.
Reports throughput (events received per second of streaming) and the agent's memory: peak RSS (VmHWM) and
RSS sampled over the run, so that growth shows.

    python3 tests/load/load_test.py --agent-dll PATH --python PY [--processes 100] [--seconds 60]

Exits 0 when every check holds; prints each failure otherwise. scripts/load-test builds and runs it.
"""
import argparse
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

WORKER = """
import sys, threading, time

def leaf(i):
    return i * 2

def middle(n):
    total = 0
    for i in range(n):
        total += leaf(i)
    return total

def work(deadline, duty):
    # Busy for `duty` of every 20 ms, idle for the rest: a service, not a spin loop.
    while time.monotonic() < deadline:
        period_end = time.monotonic() + 0.02
        busy_end = time.monotonic() + 0.02 * duty
        while time.monotonic() < busy_end:
            middle(50)
            try:
                raise ValueError("load")
            except ValueError:
                pass
        time.sleep(max(0.0, period_end - time.monotonic()))

deadline = time.monotonic() + float(sys.argv[1])
duty = float(sys.argv[2])
helper = threading.Thread(target=work, args=(deadline, duty), name="helper")
helper.start()
work(deadline, duty)
helper.join()
"""

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def rss_kib(pid, field):
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def wait_for(condition, seconds, what):
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {seconds} s waiting for {what}")
        time.sleep(0.1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent-dll", required=True)
    parser.add_argument("--python", required=True, help="Python 3.12+ for the shimmed workers")
    parser.add_argument("--processes", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--duty", type=float, default=None,
                        help="fraction of time each worker thread calls (default: 0.25/processes, half a core for all "
                             "the workers' two threads); 1 is a spin loop that starves the agent of CPU on a small machine")
    parser.add_argument("--worker-nice", type=int, default=10,
                        help="niceness of the workers (default 10): the agent gets CPU priority over the services it "
                             "watches, as docs/operations.md recommends; 0 lets 100 processes starve it on 2 cores")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (outputs, agent log)")
    args = parser.parse_args()
    duty = args.duty if args.duty is not None else min(1.0, 0.25 / args.processes)

    work = tempfile.mkdtemp(prefix="telemetry-load-")
    socket_path = os.path.join(work, "agent.sock")
    outputs = os.path.join(work, "out")
    worker = os.path.join(work, "worker.py")
    with open(worker, "w") as file:
        file.write(WORKER)
    agent_log = open(os.path.join(work, "agent.log"), "w+")
    agent = subprocess.Popen(["dotnet", args.agent_dll, "serve", "--socket", socket_path, "-o", outputs],
                             stdout=agent_log, stderr=subprocess.STDOUT)
    failures = []
    samples = []
    try:
        wait_for(lambda: os.path.exists(socket_path), 60, "the agent's socket")
        env = dict(os.environ, PYTHONPATH=os.path.join(REPO_ROOT, "python-shim"), TELEMETRY_SHIM_MODE="full",
                   PYTHONDONTWRITEBYTECODE="1")
        # One short process first, so that the agent's code is compiled (JIT) before the crowd arrives.
        warm_up = subprocess.run([args.python, "-m", "telemetry_shim", "--socket", socket_path, worker, "0.2", "1"],
                                 env=env, capture_output=True, text=True, timeout=120)
        if warm_up.returncode != 0:
            raise RuntimeError(f"the warm-up process failed: {warm_up.stderr.strip()[-500:]}")
        wait_for(lambda: len(glob.glob(os.path.join(outputs, "*", "summary.json"))) >= 1, 60, "the warm-up's outputs")
        for folder in glob.glob(os.path.join(outputs, "*")):
            with open(os.path.join(folder, "summary.json")) as file:
                warm_up_events = json.load(file)["processes"][0]["recording"]["events_received"]
            shutil.rmtree(folder)
        started = time.monotonic()
        workers = []
        for _ in range(args.processes):
            workers.append(subprocess.Popen(["nice", "-n", str(args.worker_nice), args.python, "-m", "telemetry_shim",
                                             "--socket", socket_path, worker, str(args.seconds), str(duty)],
                                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
            time.sleep(0.01)
        while any(w.poll() is None for w in workers):
            samples.append((time.monotonic() - started, rss_kib(agent.pid, "VmRSS")))
            time.sleep(0.25)
        for w in workers:
            err = w.stderr.read()
            if w.returncode != 0:
                failures.append(f"worker {w.pid} exited {w.returncode}: {err.strip()[-500:]}")
        wait_for(lambda: len(glob.glob(os.path.join(outputs, "*", "summary.json"))) >= args.processes,
                 120, f"{args.processes} output folders")
        streaming = time.monotonic() - started
        peak_kib = rss_kib(agent.pid, "VmHWM")
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=60)
        agent_log.seek(0)
        log = agent_log.read()
        if agent.returncode != 0:
            failures.append(f"the agent exited {agent.returncode}")

        sent = received = recorded = dropped = connections = 0
        pids = set()
        for summary_path in sorted(glob.glob(os.path.join(outputs, "*", "summary.json"))):
            with open(summary_path) as file:
                process = json.load(file)["processes"][0]
            pids.add(process["pid"])
            connections += 1
            shim = process["shim_stats"]
            end = process["connection"]["end_reason"]
            got = process["recording"]["events_received"]
            if end != "Goodbye":
                failures.append(f"pid {process['pid']}: connection ended {end}: {process['connection']['detail']}")
            if got != shim["events_sent"]:
                failures.append(f"pid {process['pid']}: the shim sent {shim['events_sent']} events, the agent received {got}")
            if shim["connects"] == 1 and shim["events_recorded"] != shim["events_sent"] + shim["events_dropped"]:
                failures.append(f"pid {process['pid']}: recorded {shim['events_recorded']} != sent {shim['events_sent']} "
                                f"+ dropped {shim['events_dropped']}")
            sent += shim["events_sent"]
            received += got
            recorded += shim["events_recorded"]
            dropped += shim["events_dropped"]
        if connections != args.processes:
            failures.insert(0, f"{connections} connections for {args.processes} processes: shims reconnected "
                               "(a send that timed out cuts the stream; see docs/operations.md)")
        if len(pids) != args.processes:
            failures.append(f"{len(pids)} processes reported, {args.processes} started")
        statistics = re.search(r"statistics: (.*)", log)
        agent_events = re.search(r"events received ([\d,]+)", log)
        if agent_events is None or int(agent_events.group(1).replace(",", "")) != received + warm_up_events:
            failures.append(f"the agent's own count ({agent_events and agent_events.group(1)}) is not the summaries' {received}")

        print(f"processes: {args.processes} x {args.seconds:g} s (2 threads each, busy {100 * duty:.3g} % of the time, "
              f"nice {args.worker_nice}), "
              f"wall time until all were written: {streaming:.1f} s; connections: {connections}")
        print(f"events: recorded by the shims {recorded:,}, sent {sent:,}, received by the agent {received:,}, "
              f"dropped by the shims {dropped:,} ({100.0 * dropped / max(recorded, 1):.2f} %)")
        print(f"throughput: {received / max(streaming, 1e-9):,.0f} events/s received")
        quarters = [max((kib for t, kib in samples if q * streaming / 4 <= t < (q + 1) * streaming / 4), default=0) for q in range(4)]
        print(f"agent memory: peak RSS {peak_kib / 1024:.0f} MiB; highest RSS per quarter of the run: "
              + ", ".join(f"{kib / 1024:.0f}" for kib in quarters) + " MiB")
        print(f"agent statistics: {statistics.group(1) if statistics else '(missing)'}")
    except Exception as error:  # noqa: BLE001 - report any failure of the harness itself as a failure
        failures.append(f"{type(error).__name__}: {error}")
    finally:
        if agent.poll() is None:
            agent.kill()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work folder: {work}")
    for failure in failures[:50]:
        print("FAILED:", failure)
    if len(failures) > 50:
        print(f"FAILED: ... and {len(failures) - 50} more")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

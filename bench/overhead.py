"""Slowdown of Python workloads under the shim (full mode) beside cProfile's, measured in one run.

    python bench/overhead.py --agent-dll PATH [--runs 5] [--json out.json]

For each workload: the plain program, `python -m cProfile`, and `python -m telemetry_shim` streaming to a
real `telemetry-agent serve`, interleaved run by run; the median wall time of each and the ratios to the
plain run. This machine is noisy: read the ratios, not the absolute times. Stdlib only.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
WORKLOADS = {
    "fixture_app": os.path.join(REPO, "examples", "fixture_app.py"),
    "call_heavy": os.path.join(HERE, "workloads", "call_heavy.py"),
}


def timed(argv, env):
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def wait_for(path, timeout=30):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise SystemExit(f"the agent did not create {path}")
        time.sleep(0.05)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent-dll", required=True, help="telemetry-agent.dll (a Release build)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    python = sys.executable
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, "python-shim"))
    with tempfile.TemporaryDirectory(prefix="telemetry-bench-") as temp:
        socket_path = os.path.join(temp, "agent.sock")
        agent = subprocess.Popen(["dotnet", args.agent_dll, "serve", "--socket", socket_path,
                                  "--output", os.path.join(temp, "out")],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(socket_path)
            modes = {
                "plain": lambda script: [python, script],
                "cProfile": lambda script: [python, "-m", "cProfile", "-o", os.devnull, script],
                "shim (full)": lambda script: [python, "-m", "telemetry_shim", "--socket", socket_path, script],
            }
            results = {}
            for name, script in WORKLOADS.items():
                times = {mode: [] for mode in modes}
                timed(modes["plain"](script), env)  # warm the page cache and .pyc files
                for _ in range(args.runs):
                    for mode, argv in modes.items():
                        times[mode].append(timed(argv(script), env))
                medians = {mode: statistics.median(values) for mode, values in times.items()}
                results[name] = {
                    mode: {"median_s": medians[mode], "ratio": medians[mode] / medians["plain"]}
                    for mode in modes
                }
        finally:
            agent.terminate()
            agent.wait(timeout=30)

    print(f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores; "
          f"median of {args.runs} interleaved runs; ratio = time / plain time")
    print(f"{'workload':<14}{'plain':>10}{'cProfile':>18}{'shim (full)':>18}{'shim/cProfile':>15}")
    for name, by_mode in results.items():
        plain = by_mode["plain"]["median_s"]
        cells = [f"{plain:>9.3f}s"]
        for mode in ("cProfile", "shim (full)"):
            cells.append(f"{by_mode[mode]['median_s']:>9.3f}s ({by_mode[mode]['ratio']:.2f}x)")
        shim_vs_cprofile = by_mode["shim (full)"]["median_s"] / by_mode["cProfile"]["median_s"]
        print(f"{name:<14}" + "".join(f"{c:>18}" if i else f"{c:>10}" for i, c in enumerate(cells))
              + f"{shim_vs_cprofile:>14.2f}x")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"python": platform.python_version(), "runs": args.runs, "results": results}, out, indent=2)


if __name__ == "__main__":
    main()

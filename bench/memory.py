"""The memory benchmark: a service that raises and handles 10^4 exceptions whose frames hold 1 MB of locals
each (bench/memory_service.py), plain and under the shim in each mode, streaming to a real `telemetry-agent
serve` (autostart, as a service gets it). The shim must not keep what the program lets go: in every mode the
peak RSS stays within 2% of the plain run's. The growth is printed beside plain's, so that anything kept from
the exceptions would show (it would be about 1 MB a kept exception). full-python (full mode on the Python
callbacks, the fallback where the C extension cannot be built) is printed but not held to it: its buffer of
pending call events holds Python integers (TELEMETRY_SHIM_BUFFER_EVENTS bounds it).

    python3.12 bench/memory.py [--python PATH] [--runs 3] [--modes exceptions,full,burst]

Prints, per variant, the median over the runs of the process's peak RSS (ru_maxrss) and of its growth during
the work (peak minus the RSS when the work starts: what the exceptions cost, without the shim's fixed
footprint of imports, buffers and its sender thread's stack), and the differences to plain. Exits 1 when a
mode's peak RSS is more than 2% above plain's. Stdlib only.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from run import AGENT_DLL, SHIM_MODES, Runner, start_agent  # noqa: E402  (bench/run.py, the overhead suite)

SERVICE = os.path.join(HERE, "memory_service.py")
LIMIT = 0.02
UNCHECKED = ("full-python",)


def measure(runner, variant, index):
    stdout = runner.run(variant, SERVICE, "memory.%s.%d" % (variant, index))[3]
    values = dict(re.findall(r"^(\w+)=(\d+)$", stdout, re.M))
    peak, start = int(values["peak_rss_kb"]), int(values["start_rss_kb"])
    return peak, peak - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable, help="the Python >= 3.12 to measure (default: this one)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each variant, interleaved (default 3)")
    parser.add_argument("--modes", default=",".join(SHIM_MODES), help="the shim's modes (default: all)")
    parser.add_argument("--agent-dll", default=AGENT_DLL)
    args = parser.parse_args()
    modes = [mode for mode in args.modes.split(",") if mode]
    unknown = set(modes) - set(SHIM_MODES)
    if unknown:
        parser.error("unknown modes: %s" % ", ".join(sorted(unknown)))
    if not os.path.exists(args.agent_dll):
        subprocess.run(["dotnet", "build", "-c", "Release", os.path.join(os.path.dirname(HERE), "TelemetryAgent.sln")],
                       check=True)
    variants = ["plain"] + modes
    samples = {variant: [] for variant in variants}
    with tempfile.TemporaryDirectory(prefix="telemetry-memory-") as temp:
        socket_path = os.path.join(temp, "agent.sock")
        agent = start_agent(args.agent_dll, socket_path, os.path.join(temp, "out"))
        try:
            runner = Runner(args.python, socket_path, os.path.join(temp, "out"))
            for index in range(args.runs):
                for variant in variants:
                    samples[variant].append(measure(runner, variant, index))
        finally:
            agent.terminate()
            agent.wait(timeout=60)

    plain_peak = statistics.median(peak for peak, _ in samples["plain"])
    plain_growth = statistics.median(growth for _, growth in samples["plain"])
    print("memory: 10^4 exceptions from frames holding 1 MB each, 4 threads; median of %d runs (%s)"
          % (args.runs, args.python))
    print("%-11s %14s %10s %16s %10s" % ("variant", "peak RSS (MB)", "vs plain", "growth (MB)", "vs plain"))
    checked = [variant for variant in modes if variant not in UNCHECKED]
    failed = []
    for variant in variants:
        peak = statistics.median(p for p, _ in samples[variant])
        growth = statistics.median(g for _, g in samples[variant])
        ratio = peak / plain_peak - 1
        print("%-11s %14.1f %+9.1f%% %16.1f %+9.1f MB" % (variant, peak / 1024, 100 * ratio, growth / 1024,
                                                         (growth - plain_growth) / 1024))
        if variant in checked and ratio > LIMIT:
            failed.append(variant)
    if failed:
        print("peak RSS more than %d%% above plain: %s" % (100 * LIMIT, ", ".join(failed)))
        return 1
    if checked:
        print("peak RSS within %d%% of plain: %s" % (100 * LIMIT, ", ".join(checked)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

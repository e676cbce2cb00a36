"""bench/run.py puts this directory on PYTHONPATH for the runs it counts under valgrind, which runs the
program about a dozen times slower: the GIL's switch interval is stretched by BENCH_SLOWDOWN, as the shim
stretches its own intervals (TELEMETRY_SHIM_SLOWDOWN), so that threads take turns at the same points of the
program's progress as in a normal run. With the shim's autostart in front, this file runs after it."""

import os
import sys

try:
    _factor = float(os.environ.get("BENCH_SLOWDOWN") or 1.0)
except ValueError:
    _factor = 1.0
if _factor > 1.0:
    sys.setswitchinterval(sys.getswitchinterval() * _factor)

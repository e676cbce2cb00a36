"""A program with about 60,000 distinct stacks (250 callers x 240 callees, each a function of its own; other counts as
arguments), which then idles until stdin closes: the live UI's first paint and the snapshot benchmark run on it."""
import select
import sys
import time

CALLERS, CALLEES = (int(sys.argv[1]), int(sys.argv[2])) if len(sys.argv) > 2 else (250, 240)
namespace = {}
exec("\n".join(f"def callee_{j}():\n    return {j}\n" for j in range(CALLEES)), namespace)
exec("\n".join(f"def caller_{i}(f):\n    return f()\n" for i in range(CALLERS)), namespace)
callees = [namespace[f"callee_{j}"] for j in range(CALLEES)]
for i in range(CALLERS):
    caller = namespace[f"caller_{i}"]
    for callee in callees:
        caller(callee)
    time.sleep(0.004)  # paced, so that the shim's buffer never overflows
print("ready", flush=True)
select.select([sys.stdin], [], [])

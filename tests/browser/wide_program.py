"""A program with about 60,000 distinct stacks (250 callers x 240 callees, each a function of its own), which then
idles until stdin closes: the live UI's first paint is measured on it."""
import select
import sys
import time

CALLERS, CALLEES = 250, 240
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

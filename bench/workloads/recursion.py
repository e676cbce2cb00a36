"""Recursion-heavy: tiny pure-Python functions called millions of times (every tracer's worst case)."""

import sys
import time


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def ackermann(m, n):
    if m == 0:
        return n + 1
    if n == 0:
        return ackermann(m - 1, 1)
    return ackermann(m - 1, ackermann(m, n - 1))


def tree_sum(depth):
    if depth == 0:
        return 1
    return tree_sum(depth - 1) + tree_sum(depth - 1) + 1


def main(scale):
    rounds = max(1, int(300 * scale))
    total = 0
    for _ in range(rounds):
        total += fib(20) + ackermann(2, 60) + tree_sum(12)
    print(total)


if __name__ == "__main__":
    sys.setrecursionlimit(10_000)
    started = time.process_time()
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 1.0)
    print("work_cpu_s=%.6f" % (time.process_time() - started), file=sys.stderr)  # bench/run.py: steady state

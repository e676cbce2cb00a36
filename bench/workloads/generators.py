"""Generator pipelines: lazy stages chained with yield and yield from, a generator expression, itertools."""

import itertools
import sys
import time


def numbers(limit):
    yield from range(limit)


def evens(source):
    for value in source:
        if value % 2 == 0:
            yield value


def squares(source):
    for value in source:
        yield value * value


def windows(source, size):
    window = []
    for value in source:
        window.append(value)
        if len(window) == size:
            yield tuple(window)
            window.clear()


def flatten(chunks):
    for chunk in chunks:
        yield from chunk


def main(scale):
    limit = int(5_000_000 * scale)
    pipeline = flatten(windows(squares(evens(numbers(limit))), 8))
    total = sum(value % 1000 for value in itertools.islice(pipeline, limit))
    print(total)


if __name__ == "__main__":
    started = time.process_time()
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 1.0)
    print("work_cpu_s=%.6f" % (time.process_time() - started), file=sys.stderr)  # bench/run.py: steady state

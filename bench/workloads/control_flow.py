"""Control-flow idioms that raise inside CPython without the program ever seeing an exception: any(), all()
and next() over generator expressions that stop early (the generator is closed: GeneratorExit), `break` out
of a for loop over a generator, zip() of generators of different lengths, contextlib.contextmanager
(StopIteration at the end of the with-block), and awaits of futures that are already done (StopIteration in
the awaiting frame). An always-on mode must cost next to nothing here."""

import asyncio
import contextlib
import sys
import time


@contextlib.contextmanager
def scope(state):
    state.append(1)
    yield state
    state.pop()


def first_even(values):
    return next((v for v in values if v % 2 == 0), None)


def prefix_sum(values, limit):
    total = 0
    for v in (v * v for v in values):
        if total > limit:
            break
        total += v
    return total


async def awaits(count):
    loop = asyncio.get_running_loop()
    done = 0
    for i in range(count):
        future = loop.create_future()
        future.set_result(i)
        done += await future
    return done


def main(scale):
    rounds = int(60_000 * scale)
    values = list(range(1, 40))
    state = []
    hits = 0
    for i in range(rounds):
        hits += any(v > 20 for v in values)
        hits += all(v < 30 for v in values)
        hits += first_even(values) or 0
        hits += prefix_sum(values, 500) > 0
        hits += sum(a * b for a, b in zip((v for v in values), (w for w in values[:5])))
        with scope(state):
            hits += len(state)
        hits += sum(values[i % 39:i % 39 + 3])
    hits += asyncio.run(awaits(rounds))
    print(hits)


if __name__ == "__main__":
    started = time.process_time()
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 1.0)
    print("work_cpu_s=%.6f" % (time.process_time() - started), file=sys.stderr)  # bench/run.py: steady state

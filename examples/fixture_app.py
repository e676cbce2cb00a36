"""End-to-end fixture: a small program whose every function has a deterministic call count.

It exercises what a call-tree profiler has to get right: recursion, methods, a classmethod, a
staticmethod, a property, closures, a lambda, a generator consumed by a for loop, coroutines run by
asyncio.run, exceptions raised and caught, and two named threads doing a fixed amount of work.
No clock, randomness or I/O decides what is called, so the counts are the same in every run and
under every profiler; the output is deterministic too. Runs in well under a second.

    python examples/fixture_app.py
    python -m telemetry_shim examples/fixture_app.py
"""

import asyncio
import threading


def fib(n):
    if n < 2:
        return n
    return fib(n - 1) + fib(n - 2)


class Shape:
    sides = 0

    def __init__(self, name, size):
        self.name = name
        self.size = size

    @classmethod
    def unit(cls):
        return cls("unit", 1)

    @staticmethod
    def describe_sides(sides):
        return "%d sides" % sides

    @property
    def area(self):
        raise NotImplementedError

    def describe(self):
        return "%s: area %d, %s" % (self.name, self.area, self.describe_sides(self.sides))


class Square(Shape):
    sides = 4

    @property
    def area(self):
        return self.size * self.size


class Triangle(Shape):
    sides = 3

    @property
    def area(self):
        return self.size * self.size // 2


def make_counter(start):
    total = start

    def increment(step):
        nonlocal total
        total += step
        return total

    return increment


def countdown(n):
    while n > 0:
        yield n
        n -= 1


def sum_countdown(n):
    total = 0
    for value in countdown(n):
        total += value
    return total


class ValidationError(ValueError):
    pass


def validate(value):
    if value < 0:
        raise ValidationError("negative: %d" % value)
    return value


def parse_all(values):
    accepted = []
    rejected = 0
    for value in values:
        try:
            accepted.append(validate(value))
        except ValidationError:
            rejected += 1
    return accepted, rejected


async def fetch(item):
    await asyncio.sleep(0)
    return item * 10


async def fetch_all(count):
    results = []
    for item in range(count):
        results.append(await fetch(item))
    return results


def worker(rounds, results, slot):
    counter = make_counter(0)
    for _ in range(rounds):
        counter(fib(10))
    results[slot] = counter(0)


def run_workers():
    results = [None, None]
    threads = [
        threading.Thread(target=worker, args=(3, results, 0), name="worker-1"),
        threading.Thread(target=worker, args=(5, results, 1), name="worker-2"),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def main():
    print("fib(15) =", fib(15))
    shapes = [Square.unit(), Square("square", 3), Triangle("triangle", 4)]
    for shape in sorted(shapes, key=lambda shape: shape.area):
        print(shape.describe())
    counter = make_counter(100)
    for step in range(1, 6):
        counter(step)
    print("counter =", counter(0))
    print("countdown =", sum_countdown(6))
    print("parsed =", parse_all([3, -1, 4, -1, 5, -9, 2, 6]))
    print("fetched =", asyncio.run(fetch_all(4)))
    print("workers =", run_workers())


if __name__ == "__main__":
    main()

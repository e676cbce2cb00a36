"""Exception-heavy code: parsing with try/except, lookups that miss, an exception crossing a few frames.

Prints how many exceptions it raised, so that the suite can report the cost per raise."""

import sys
import time


class ValidationError(Exception):
    pass


def parse_int(text):
    try:
        return int(text)
    except ValueError:
        return None


def lookup(table, key):
    try:
        return table[key]
    except KeyError:
        return 0


def validate(value):
    if value % 5 == 0:
        raise ValidationError("multiple of five: %d" % value)
    return value


def checked(value):
    return validate(value) * 2


def main(scale):
    count = int(400_000 * scale)
    table = {str(i): i for i in range(0, count, 2)}
    raised = 0
    total = 0
    for i in range(count):
        text = str(i) if i % 3 else "x%d" % i
        parsed = parse_int(text)
        if parsed is None:
            raised += 1
            parsed = 0
        hit = lookup(table, str(i))
        if i % 2:
            raised += 1
        try:
            total += checked(i) + parsed + hit
        except ValidationError:
            raised += 1
    print(total, "raised", raised)


if __name__ == "__main__":
    started = time.process_time()
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 1.0)
    print("work_cpu_s=%.6f" % (time.process_time() - started), file=sys.stderr)  # bench/run.py: steady state

"""The live views' end-to-end program: phase one, a marker, then it waits on stdin (the test says when to go on),
phase two, exit. With "spin" it calls work() in bursts until stdin closes instead. Every count is fixed, so what a snapshot
taken between the phases holds, and what the agent writes at exit, can be checked exactly."""
import sys


def work(n):
    return n * 2


def extra(n):
    return n + 1


def phase_one():
    for i in range(1000):
        work(i)


def phase_one_done():
    pass


def phase_two():
    for i in range(700):
        work(i)
    for i in range(300):
        extra(i)


def spin():
    import select
    # About 40,000 calls a second, and idle between: a service, not a benchmark.
    while not select.select([sys.stdin], [], [], 0.005)[0]:
        for i in range(200):
            work(i)


def main():
    if sys.argv[1:] == ["spin"]:
        print("spinning", flush=True)
        spin()
        return
    phase_one()
    phase_one_done()
    print("phase one done", flush=True)
    sys.stdin.readline()
    phase_two()


main()

"""A service that fails requests: 10^4 requests served by 4 worker threads, each failing with an exception
raised from a frame that holds 1 MB of locals, handled the ways services handle them (a note added and the
exception swallowed, caught by the request loop, chained into another exception, swallowed by C code).

Prints its peak RSS (`peak_rss_kb=`) and its RSS when the work starts (`start_rss_kb=`): bench/memory.py
compares them plain and under the shim. Without the shim every buffer dies with its request."""

import os
import resource
import sys
import threading
import time

REQUESTS = 10_000
WORKERS = 4
BUFFER_BYTES = 1 << 20


class RequestError(Exception):
    pass


def read_body(n):
    body = b"b" * BUFFER_BYTES  # a request body the frame holds when it raises (every page written)
    if n % 4 == 1:
        raise KeyError(n)
    raise RequestError("malformed body in request %d" % n)


class Lazy:
    @property
    def payload(self):
        scratch = b"s" * BUFFER_BYTES
        raise AttributeError("payload not loaded")


def handle(n):
    kind = n % 4
    if kind == 0:
        try:
            read_body(n)
        except RequestError as error:
            error.add_note("request %d answered 400" % n)  # then dropped: the response says enough
            return 400
    if kind == 2:
        try:
            read_body(n)
        except RequestError as error:
            raise ValueError("request %d rejected" % n) from error
    if kind == 3:
        return 200 if getattr(Lazy(), "payload", None) is not None else 204  # swallowed in C
    read_body(n)  # kind 1: KeyError up to the request loop


def worker(requests, answered):
    for n in requests:
        try:
            answered.append(handle(n))
        except (KeyError, ValueError):
            answered.append(500)


def rss_kb():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def main():
    start_rss = rss_kb()
    started = time.process_time()
    answered = []
    threads = [threading.Thread(target=worker, args=(range(i, REQUESTS, WORKERS), answered)) for i in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answered) == REQUESTS, len(answered)
    print("work_cpu_s=%.6f" % (time.process_time() - started), file=sys.stderr)
    print("start_rss_kb=%d" % start_rss)
    print("peak_rss_kb=%d" % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


if __name__ == "__main__":
    main()

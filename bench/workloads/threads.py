"""A multi-threaded workload: a producer, worker threads taking jobs from a queue (hashing, sorting, a little
waiting on I/O), and a collector."""

import hashlib
import queue
import sys
import threading
import time


def make_job(i):
    return [(i * 7919 + j * 104729) % 10007 for j in range(200)]


def process(job):
    ordered = sorted(job)
    digest = hashlib.sha256(repr(ordered).encode()).hexdigest()
    return sum(ordered[::10]) + int(digest[:4], 16)


def worker(jobs, results):
    while True:
        job = jobs.get()
        if job is None:
            return
        if len(job) and job[0] % 50 == 0:
            time.sleep(0.001)  # an occasional I/O wait
        results.put(process(job))


def main(scale):
    jobs, results = queue.Queue(maxsize=64), queue.Queue()
    workers = [threading.Thread(target=worker, args=(jobs, results), name="worker-%d" % i) for i in range(4)]
    for thread in workers:
        thread.start()
    count = int(14000 * scale)
    for i in range(count):
        jobs.put(make_job(i))
    for _ in workers:
        jobs.put(None)
    for thread in workers:
        thread.join()
    print(sum(results.get() for _ in range(count)))


if __name__ == "__main__":
    started = time.process_time()
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 1.0)
    print("work_cpu_s=%.6f" % (time.process_time() - started), file=sys.stderr)  # bench/run.py: steady state

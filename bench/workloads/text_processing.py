"""json, regex and string processing: log lines parsed, records encoded and decoded, reports formatted."""

import json
import re
import sys
import time

LINE = re.compile(r"(?P<ip>\d+\.\d+\.\d+\.\d+) - - \[(?P<time>[^\]]+)\] \"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/1\.\d\" "
                  r"(?P<status>\d{3}) (?P<size>\d+)")
WORD = re.compile(r"[a-z]+")


def make_lines(count):
    methods = ("GET", "POST", "PUT")
    return ['10.0.%d.%d - - [22/Nov/2026:07:%02d:%02d +0000] "%s /api/v1/items/%d?q=alpha+beta HTTP/1.1" %d %d'
            % (i % 256, i % 97, i % 60, i % 60, methods[i % 3], i, 200 if i % 7 else 404, i * 13 % 5000)
            for i in range(count)]


def parse(line):
    match = LINE.match(line)
    if match is None:
        return None
    record = match.groupdict()
    record["status"] = int(record["status"])
    record["size"] = int(record["size"])
    record["words"] = WORD.findall(record["path"])
    return record


def summarize(records):
    by_status = {}
    for record in records:
        by_status[record["status"]] = by_status.get(record["status"], 0) + record["size"]
    return ", ".join("%d: %s" % (status, format(size, ",")) for status, size in sorted(by_status.items()))


def main(scale):
    lines = make_lines(int(45000 * scale))
    records = [parse(line) for line in lines]
    encoded = [json.dumps(record, sort_keys=True) for record in records]
    decoded = [json.loads(text) for text in encoded]
    text = "\n".join(line.upper().replace("HTTP", "http").strip() for line in lines)
    print(summarize(decoded), len(text.split()))


if __name__ == "__main__":
    started = time.process_time()
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 1.0)
    print("work_cpu_s=%.6f" % (time.process_time() - started), file=sys.stderr)  # bench/run.py: steady state

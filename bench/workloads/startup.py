"""A start-up (import-heavy) run: a service importing its stack, building a few objects and exiting."""

import sys
import time


def main(scale):
    import argparse  # noqa: F401
    import asyncio  # noqa: F401
    import csv  # noqa: F401
    import dataclasses  # noqa: F401
    import decimal
    import email.message
    import http.client  # noqa: F401
    import json
    import logging
    import sqlite3
    import typing  # noqa: F401
    import unittest  # noqa: F401
    import urllib.request  # noqa: F401
    import uuid
    import xml.etree.ElementTree as ElementTree
    import zipfile  # noqa: F401

    logging.getLogger("startup").setLevel(logging.INFO)
    message = email.message.EmailMessage()
    message["Subject"] = "ready"
    root = ElementTree.fromstring("<config><port>8080</port></config>")
    db = sqlite3.connect(":memory:")
    db.execute("create table t (id text)")
    for _ in range(int(50 * scale)):
        db.execute("insert into t values (?)", (str(uuid.uuid4()),))
    print(json.dumps({"port": int(root.find("port").text), "price": str(decimal.Decimal("9.99") * 3),
                      "rows": db.execute("select count(*) from t").fetchone()[0], "subject": message["Subject"]}))


if __name__ == "__main__":
    started = time.process_time()
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 1.0)
    print("work_cpu_s=%.6f" % (time.process_time() - started), file=sys.stderr)  # bench/run.py: steady state

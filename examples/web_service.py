"""A small stdlib web service and a client driving it: the demo of profiling a live service.

The service (http.server on 127.0.0.1, a free port) keeps an in-memory catalogue and serves:
    GET  /health            liveness
    GET  /items/<id>        one item, 404 when unknown
    GET  /search?q=<text>   items whose name contains the text
    POST /orders            JSON {"items": {"<id>": quantity}} -> priced order, 400 on bad input
    GET  /report            a deliberately CPU-heavy statistics endpoint
The client sends a fixed mix of requests, checks the answers, prints a summary and stops the server.

    python -m telemetry_shim examples/web_service.py --requests 300
"""

import argparse
import json
import statistics
import threading
import urllib.error
import urllib.parse
import urllib.request
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CATALOGUE = {
    str(item_id): {"id": item_id, "name": name, "price_cents": price}
    for item_id, (name, price) in enumerate(
        [
            ("espresso beans", 1299),
            ("filter papers", 399),
            ("hand grinder", 5900),
            ("milk jug", 1450),
            ("kettle", 4200),
            ("scale", 2999),
            ("tamper", 2100),
            ("decaf beans", 1199),
        ],
        start=1,
    )
}


class BadRequest(Exception):
    pass


def price_order(body):
    try:
        order = json.loads(body)
        lines = order["items"]
    except (ValueError, KeyError, TypeError) as error:
        raise BadRequest("malformed order: %s" % error) from None
    if not isinstance(lines, dict) or not lines:
        raise BadRequest("an order needs at least one item")
    priced = []
    for item_id, quantity in lines.items():
        item = CATALOGUE.get(item_id)
        if item is None:
            raise BadRequest("unknown item %s" % item_id)
        if not isinstance(quantity, int) or quantity <= 0:
            raise BadRequest("bad quantity for item %s" % item_id)
        priced.append({"id": item["id"], "quantity": quantity,
                       "total_cents": item["price_cents"] * quantity})
    return {"lines": priced, "total_cents": sum(line["total_cents"] for line in priced)}


def search(text):
    text = text.lower()
    return [item for item in CATALOGUE.values() if text in item["name"]]


def price_report():
    # Deliberately heavy: the hot spot the flame graph should point at.
    samples = [item["price_cents"] * (1 + (n % 7) / 10) for n in range(2000) for item in CATALOGUE.values()]
    return {
        "mean": round(statistics.fmean(samples), 2),
        "median": statistics.median(samples),
        "stdev": round(statistics.pstdev(samples), 2),
    }


class CatalogueHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/health":
            self.send_json(HTTPStatus.OK, {"status": "ok"})
        elif url.path.startswith("/items/"):
            item = CATALOGUE.get(url.path.removeprefix("/items/"))
            if item is None:
                self.send_json(HTTPStatus.NOT_FOUND, {"error": "no such item"})
            else:
                self.send_json(HTTPStatus.OK, item)
        elif url.path == "/search":
            query = urllib.parse.parse_qs(url.query).get("q", [""])[0]
            self.send_json(HTTPStatus.OK, {"results": search(query)})
        elif url.path == "/report":
            self.send_json(HTTPStatus.OK, price_report())
        else:
            self.send_json(HTTPStatus.NOT_FOUND, {"error": "no such endpoint"})

    def do_POST(self):
        if self.path != "/orders":
            self.send_json(HTTPStatus.NOT_FOUND, {"error": "no such endpoint"})
            return
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        try:
            self.send_json(HTTPStatus.CREATED, price_order(body))
        except BadRequest as error:
            self.send_json(HTTPStatus.BAD_REQUEST, {"error": str(error)})

    def send_json(self, status, payload):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass  # keep the demo's output to the summary


def request(base_url, method, path, payload=None):
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(base_url + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def drive(base_url, count):
    """Sends `count` requests in a fixed mix; returns {status: number of responses}."""
    mix = [
        ("GET", "/health", None),
        ("GET", "/items/3", None),
        ("GET", "/items/42", None),
        ("GET", "/search?q=beans", None),
        ("POST", "/orders", {"items": {"1": 2, "5": 1}}),
        ("POST", "/orders", {"items": {"99": 1}}),
        ("GET", "/report", None),
    ]
    statuses = {}
    for n in range(count):
        method, path, payload = mix[n % len(mix)]
        status, _ = request(base_url, method, path, payload)
        statuses[status] = statuses.get(status, 0) + 1
    return statuses


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="requests to send (default 200)")
    args = parser.parse_args()

    server = ThreadingHTTPServer(("127.0.0.1", 0), CatalogueHandler)
    server.daemon_threads = True
    serving = threading.Thread(target=server.serve_forever, name="http-server")
    serving.start()
    try:
        host, port = server.server_address[:2]
        statuses = drive("http://%s:%d" % (host, port), args.requests)
    finally:
        server.shutdown()
        serving.join()
        server.server_close()
    print("responses by status:", dict(sorted(statuses.items())))


if __name__ == "__main__":
    main()

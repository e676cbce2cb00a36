"""What `telemetry-agent lambda-extension` costs a Lambda cold start. Lambda starts the function's runtime only once
every extension has registered, and Init ends when the runtime and every extension have asked for their first
event: so the time from the extension's start to its register request is added to every cold start, and the time to
its first /event/next is too where the runtime's own Init is shorter. Once it serves its socket (the export set up),
the agent can export an invocation: a first invocation that ends before then waits for it after the handler returns.

    python3 bench/lambda_init.py [--runs 7] [--otlp] EXECUTABLE_OR_LAYER...

EXECUTABLE: the agent's apphost (the build's bin/Release/net10.0/telemetry-agent, or deploy/lambda/build-layer.sh's
ReadyToRun publish under out/layer/telemetry-agent/), run as `EXECUTABLE lambda-extension`. LAYER: a directory laid
out as the layer (build-layer.sh's out/layer), whose extensions/telemetry-agent is run as Lambda runs it (through
the C launcher when the layer has one). A stub of the Extensions API (register, then an /event/next
that the extension waits on) times both requests from the process's start; --otlp configures an OTLP endpoint
(nothing listens there: nothing is sent before the first invocation), so that the export's set-up counts. Prints
the median, minimum and maximum of each (and of the time to serving the socket) over the runs. Stdlib only.
"""

import argparse
import http.server
import os
import socketserver
import statistics
import subprocess
import tempfile
import threading
import time


class ExtensionsApiStub(http.server.BaseHTTPRequestHandler):
    """Register answers at once; /event/next is held until the run ends (the extension waits, as at Init)."""

    arrivals = {}
    arrived = threading.Condition()
    release = threading.Event()

    def log_message(self, *args):
        pass

    @classmethod
    def note(cls, what):
        with cls.arrived:
            cls.arrivals[what] = time.monotonic()
            cls.arrived.notify_all()

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.note("register")
        body = b'{"functionName":"bench","functionVersion":"$LATEST","handler":"handlers.handle"}'
        self.send_response(200)
        self.send_header("Lambda-Extension-Identifier", "bench-extension")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.note("next")
        self.release.wait(60)


def note_serving(stderr):
    """The agent's line "... listening on <socket>; ..." comes once it serves the socket with its export set up."""
    for line in stderr:
        if b"listening on" in line:
            ExtensionsApiStub.note("serving")
    stderr.close()


def measure(executable, api, otlp, runs):
    times = {"register": [], "next": [], "serving": []}
    for run in range(runs):
        with tempfile.TemporaryDirectory() as folder:
            env = {key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "TELEMETRY_"))}
            env.update(AWS_LAMBDA_RUNTIME_API=api, TELEMETRY_AGENT_SOCKET=os.path.join(folder, "agent.sock"))
            if otlp:
                env["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://127.0.0.1:9"
            ExtensionsApiStub.arrivals.clear()
            ExtensionsApiStub.release.clear()
            started = time.monotonic()
            command = ([os.path.join(executable, "extensions", "telemetry-agent")] if os.path.isdir(executable)
                       else [executable, "lambda-extension"])
            process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            threading.Thread(target=note_serving, args=(process.stderr,), daemon=True).start()
            try:
                with ExtensionsApiStub.arrived:
                    if not ExtensionsApiStub.arrived.wait_for(
                            lambda: "next" in ExtensionsApiStub.arrivals and "serving" in ExtensionsApiStub.arrivals, 60):
                        raise SystemExit("%s did not ask for its first event and serve its socket within 60 s" % executable)
                for what in times:
                    times[what].append((ExtensionsApiStub.arrivals[what] - started) * 1000)
            finally:
                process.kill()
                process.wait()
                ExtensionsApiStub.release.set()
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("executables", nargs="+", metavar="EXECUTABLE_OR_LAYER")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--otlp", action="store_true", help="with an OTLP endpoint configured")
    options = parser.parse_args()
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), ExtensionsApiStub)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api = "127.0.0.1:%d" % server.server_address[1]
    print("load average before: %s" % open("/proc/loadavg").read().split()[0])
    for executable in options.executables:
        times = measure(executable, api, options.otlp, options.runs)
        for what, label in (("register", "register request"), ("next", "first /event/next"),
                            ("serving", "serving the socket")):
            values = times[what]
            print("%-50s %-19s ms after start: median %4.0f  min %4.0f  max %4.0f  (%d runs%s)" % (
                executable[-50:], label, statistics.median(values), min(values), max(values), options.runs,
                ", OTLP configured" if options.otlp else ""))
    server.shutdown()


if __name__ == "__main__":
    main()

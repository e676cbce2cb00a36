"""Every setting the shim takes from the environment, read in one place under one rule.

One set of settings for every way of starting the shim: `start()` arguments win, then the
environment, then the default (for the mode, the default of the entry point: `full` for the API
and `telemetry-agent run`, `burst` for `python -m telemetry_shim` and autostart). A bad value
never stops the program: every problem is reported on one stderr line (at start, by _control)
and the default used; a number below a setting's minimum is reported and the minimum used.
Settings are read once, at start: the sender thread never reads the environment.

autostart/sitecustomize.py reads TELEMETRY_SHIM_AUTOSTART itself: it must decide before it
imports anything of the package (see there).
"""

import os

from . import _wire

# Where the agent listens.
SOCKET_ENV = "TELEMETRY_AGENT_SOCKET"
RUNTIME_DIR_ENV = "XDG_RUNTIME_DIR"
# What the process is, copied into HELLO.
OTEL_SERVICE_NAME_ENV = "OTEL_SERVICE_NAME"
OTEL_RESOURCE_ATTRIBUTES_ENV = "OTEL_RESOURCE_ATTRIBUTES"
# The service name `python -m telemetry_shim --service-name` hands to its children (read by autostart only).
SERVICE_NAME_ENV = "TELEMETRY_SHIM_SERVICE_NAME"
AUTOSTART_ENV = "TELEMETRY_SHIM_AUTOSTART"  # read by autostart/sitecustomize.py, written by the runner
# What to record.
MODE_ENV = "TELEMETRY_SHIM_MODE"
WINDOW_ENV = "TELEMETRY_SHIM_WINDOW_MS"
PERIOD_ENV = "TELEMETRY_SHIM_PERIOD_MS"
BUDGET_ENV = "TELEMETRY_SHIM_BUDGET"
INCLUDE_ENV = "TELEMETRY_SHIM_INCLUDE"
EXCLUDE_ENV = "TELEMETRY_SHIM_EXCLUDE"
# The start-up phase (_startup): what ends it, how many first invocations are timed, or off.
READY_ON_ENV = "TELEMETRY_SHIM_READY_ON"
FIRST_INVOCATIONS_ENV = "TELEMETRY_SHIM_FIRST_INVOCATIONS"
STARTUP_ENV = "TELEMETRY_SHIM_STARTUP"
# AWS Lambda's runtime environment: the handler (module.function) and the function's name.
LAMBDA_HANDLER_ENV = "_HANDLER"
LAMBDA_FUNCTION_NAME_ENV = "AWS_LAMBDA_FUNCTION_NAME"
# The serverless platform's identity, sent as they are (HELLO platform_environment); the agent maps them to
# the faas.* and cloud.* resource attributes. Only these names: nothing else of the environment leaves.
PLATFORM_ENVIRONMENT = (
    "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_VERSION", "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_REGION",
    "K_SERVICE", "K_REVISION", "K_CONFIGURATION", "FUNCTION_TARGET", "FUNCTION_NAME", "FUNCTION_REGION",
    "FUNCTION_MEMORY_MB", "X_GOOGLE_FUNCTION_VERSION", "CLOUD_RUN_JOB", "KUBERNETES_SERVICE_HOST",
    "FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "WEBSITE_SITE_NAME", "WEBSITE_INSTANCE_ID",
    "WEBSITE_MEMORY_LIMIT_MB", "REGION_NAME",
)
# How: the tool id, the buffer, the sender's ticks, the exit flush.
TOOL_ID_ENV = "TELEMETRY_SHIM_TOOL_ID"
BUFFER_EVENTS_ENV = "TELEMETRY_SHIM_BUFFER_EVENTS"
FLUSH_INTERVAL_ENV = "TELEMETRY_SHIM_FLUSH_INTERVAL_MS"
EXIT_TIMEOUT_ENV = "TELEMETRY_SHIM_EXIT_TIMEOUT_S"
# Which call callbacks record: auto (the C ones when built for this Python), on, off (the Python ones).
NATIVE_ENV = "TELEMETRY_SHIM_NATIVE"
NATIVE_CHOICES = ("auto", "on", "off")
# The notes watch (exceptions): CALL events at add_note's call sites, for notes added to an exception
# in a handler that then swallows it (PEP 678). Off: such notes are not seen, and CALL stays off.
NOTE_WATCH_ENV = "TELEMETRY_SHIM_NOTE_WATCH"
# For measuring the shim under a tool that slows the whole process down (valgrind: about 12 times):
# every interval the shim plans or waits for is stretched by this factor, so that its schedule
# keeps the proportion to the program's progress that it has in a normal run.
SLOWDOWN_ENV = "TELEMETRY_SHIM_SLOWDOWN"

DEFAULT_WINDOW_MS = 10.0
DEFAULT_PERIOD_MS = 1000.0
DEFAULT_BUDGET = 0.01
# Windows shorter than this measure little but the cost of switching the events.
MIN_WINDOW_MS = 1.0
# sys.monitoring tool ids the shim may claim, in this order. The others are named by sys.monitoring
# itself: 0 debugger, 1 coverage, 2 profiler (cProfile), 5 optimizer (OPTIMIZER_ID).
TOOL_IDS = (3, 4)
DEFAULT_BUFFER_EVENTS = 1 << 17  # the Python callbacks: at most about 11 MB of pending records (84 bytes each)
# The C callbacks: 8 MiB at most (16 bytes a record), touched only as far as the buffer fills. A program making
# millions of calls a second fills a smaller one while the sender waits for the GIL (up to a switch interval).
DEFAULT_BUFFER_EVENTS_NATIVE = 1 << 19
MIN_BUFFER_EVENTS = 1024
DEFAULT_FLUSH_INTERVAL_MS = 50.0
MIN_FLUSH_INTERVAL_MS = 1.0
DEFAULT_EXIT_TIMEOUT_S = 2.0
DEFAULT_FIRST_INVOCATIONS = 3

_INFINITY = float("inf")


class Settings:
    __slots__ = ("mode", "window_ns", "period_ns", "budget", "include", "exclude", "slowdown", "socket_path",
                 "service_name", "resource_attributes", "tool_ids", "buffer_events", "flush_interval_s",
                 "exit_timeout_s", "native", "note_watch", "startup", "ready_on", "ready_on_lambda",
                 "first_invocations", "platform_environment", "problems")

    def __init__(self, **fields):
        for name, value in fields.items():
            setattr(self, name, value)

    @property
    def calls(self):
        return self.mode != _wire.MODE_EXCEPTIONS

    def hello_fields(self):
        fields = {"mode": self.mode, "include": list(self.include), "exclude": list(self.exclude),
                  "service_name": self.service_name, "resource_attributes": self.resource_attributes,
                  "platform_environment": list(self.platform_environment),
                  "counts_invocations": bool(self.startup and self.ready_on_lambda)}
        if self.mode == _wire.MODE_BURST:
            fields.update(window_ns=self.window_ns, period_ns=self.period_ns,
                          overhead_budget_ppm=int(round(self.budget * 1_000_000)))
        return fields


def read_settings(mode=None, default_mode=_wire.MODE_FULL, socket_path=None, service_name=None, autostart=False,
                  environ=None, ready_on=None):
    """Settings from the arguments of the entry point (when given), the environment, and the
    defaults. `autostart`: the entry point is autostart/sitecustomize.py, which also takes the
    service name that a runner handed its children."""
    env = os.environ if environ is None else environ
    problems = []  # messages about values that were ignored
    chosen = (mode or env.get(MODE_ENV, "") or default_mode).strip().lower()
    if chosen not in _wire.MODES:
        problems.append("%s=%r is not one of %s; using %s" % (MODE_ENV, chosen, ", ".join(_wire.MODES), default_mode))
        chosen = default_mode
    window_ms = _at_least(_milliseconds(env, WINDOW_ENV, DEFAULT_WINDOW_MS, problems), WINDOW_ENV, MIN_WINDOW_MS,
                          "ms", problems)
    period_ms = _milliseconds(env, PERIOD_ENV, DEFAULT_PERIOD_MS, problems)
    if period_ms < 2 * window_ms:
        problems.append("%s must be at least twice the window; using %g ms" % (PERIOD_ENV, 2 * window_ms))
        period_ms = 2 * window_ms
    budget = parse_budget(env.get(BUDGET_ENV, ""), problems)
    native = env.get(NATIVE_ENV, "").strip().lower() or "auto"
    if native not in NATIVE_CHOICES:
        problems.append("%s=%r is not one of %s; using auto" % (NATIVE_ENV, native, ", ".join(NATIVE_CHOICES)))
        native = "auto"
    slowdown = _number(env, SLOWDOWN_ENV, 1.0, problems, lambda value: 1 <= value <= 1000,
                       "a factor between 1 and 1000")
    if not service_name and autostart:
        service_name = env.get(SERVICE_NAME_ENV, "")
    ready_on, ready_on_lambda = _ready_on(ready_on, env, problems)
    return Settings(
        mode=chosen,
        # The stretch is in these two already.
        window_ns=int(window_ms * 1e6 * slowdown),
        period_ns=int(period_ms * 1e6 * slowdown),
        budget=budget,  # fraction of wall time (0.01 = 1%); 0: fixed windows
        include=_patterns(env.get(INCLUDE_ENV, "")),
        exclude=_patterns(env.get(EXCLUDE_ENV, "")),
        slowdown=slowdown,
        socket_path=socket_path or default_socket_path(env),
        service_name=service_name or env.get(OTEL_SERVICE_NAME_ENV, ""),
        resource_attributes=env.get(OTEL_RESOURCE_ATTRIBUTES_ENV, ""),
        tool_ids=_tool_ids(env, problems),
        # None: the default of the callbacks that record (the Recorder's choice).
        buffer_events=(int(_number_at_least(env, BUFFER_EVENTS_ENV, DEFAULT_BUFFER_EVENTS, MIN_BUFFER_EVENTS, "events",
                                            problems)) if env.get(BUFFER_EVENTS_ENV, "").strip() else None),
        flush_interval_s=_number_at_least(env, FLUSH_INTERVAL_ENV, DEFAULT_FLUSH_INTERVAL_MS, MIN_FLUSH_INTERVAL_MS,
                                          "ms", problems) / 1000,
        exit_timeout_s=_number_at_least(env, EXIT_TIMEOUT_ENV, DEFAULT_EXIT_TIMEOUT_S, 0.0, "s", problems),
        native=native,
        note_watch=_switch(env, NOTE_WATCH_ENV, True, problems),
        startup=_switch(env, STARTUP_ENV, True, problems),
        ready_on=ready_on,
        ready_on_lambda=ready_on_lambda,
        first_invocations=int(_number(env, FIRST_INVOCATIONS_ENV, DEFAULT_FIRST_INVOCATIONS, problems,
                                      lambda value: 0 <= value <= 1000 and value == int(value),
                                      "a whole number from 0 to 1000")),
        platform_environment=tuple("%s=%s" % (name, env[name]) for name in PLATFORM_ENVIRONMENT if env.get(name)),
        problems=problems,
    )


def _ready_on(given, env, problems):
    """(module, attribute path) of the function whose first call ends the start-up phase, or None;
    and whether it came from AWS Lambda's _HANDLER. `given` (--ready-on) wins over the environment."""
    from ._startup import parse_target

    text = given or env.get(READY_ON_ENV, "")
    if text.strip():
        target = parse_target(text)
        if target is None:
            problems.append("%s=%r is not module:function; the start-up ends at the main module's end" % (
                READY_ON_ENV, text))
        return target, False
    if env.get(LAMBDA_FUNCTION_NAME_ENV) and env.get(LAMBDA_HANDLER_ENV, "").strip():
        return parse_target(env[LAMBDA_HANDLER_ENV]), True
    return None, False


def _switch(env, name, default, problems):
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "on", "true", "yes"):
        return True
    if raw in ("0", "off", "false", "no"):
        return False
    problems.append("%s=%r is not on or off; using %s" % (name, raw, "on" if default else "off"))
    return default


def default_socket_path(environ=None):
    """$TELEMETRY_AGENT_SOCKET, else $XDG_RUNTIME_DIR/telemetry-agent.sock, else /tmp/telemetry-agent-<uid>.sock."""
    env = os.environ if environ is None else environ
    explicit = env.get(SOCKET_ENV)
    if explicit:
        return explicit
    runtime_dir = env.get(RUNTIME_DIR_ENV)
    if runtime_dir:
        return os.path.join(runtime_dir, "telemetry-agent.sock")
    getuid = getattr(os, "getuid", None)
    uid = getuid() if getuid is not None else 0
    return "/tmp/telemetry-agent-%d.sock" % uid


def _tool_ids(env, problems):
    """The tool ids to try, in order: TELEMETRY_SHIM_TOOL_ID first when it names one of TOOL_IDS."""
    raw = env.get(TOOL_ID_ENV, "").strip()
    if not raw:
        return TOOL_IDS
    try:
        wanted = int(raw)
    except ValueError:
        wanted = None
    if wanted not in TOOL_IDS:
        problems.append("%s=%r is not one of %s; using the first free one" % (
            TOOL_ID_ENV, raw, ", ".join(str(tool_id) for tool_id in TOOL_IDS)))
        return TOOL_IDS
    return (wanted,) + tuple(tool_id for tool_id in TOOL_IDS if tool_id != wanted)


def parse_budget(text, problems):
    """`1%`, `0.5%`, `0.01` (a fraction) or `off`/`0` (fixed windows)."""
    text = text.strip().lower()
    if not text:
        return DEFAULT_BUDGET
    if text in ("off", "none", "0", "0%"):
        return 0.0
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 1:
        problems.append("%s=%r is not a percentage between 0 and 100; using %g%%" % (BUDGET_ENV, text, DEFAULT_BUDGET * 100))
        return DEFAULT_BUDGET
    return value


def _milliseconds(env, name, default, problems):
    return _number(env, name, default, problems, lambda value: value > 0, "a positive number of milliseconds")


def _number_at_least(env, name, default, minimum, unit, problems):
    """The number in env[name] (`default` when it is unset or, reported, not a number), at least `minimum`."""
    return _at_least(_number(env, name, default, problems), name, minimum, unit, problems)


def _at_least(value, name, minimum, unit, problems):
    """`value`, or (reported) `minimum` when it is less."""
    if value < minimum:
        problems.append("%s must be at least %g %s; using %g" % (name, minimum, unit, minimum))
        return minimum
    return value


def _number(env, name, default, problems, valid=lambda value: True, expected="a number"):
    """The number in env[name], or `default` when it is unset, or (reported) not a finite number
    that `valid` accepts."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = None
    if value is None or not -_INFINITY < value < _INFINITY or not valid(value):
        problems.append("%s=%r is not %s; using %g" % (name, raw, expected, default))
        return default
    return value


_ON = ("1", "true", "yes", "on")
_OFF = ("0", "false", "no", "off")


def _switch(env, name, default, problems):
    """An on/off setting: `default` when unset or (reported) neither."""
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _ON or raw in _OFF:
        return raw in _ON
    problems.append("%s=%r is not one of %s; using %s" % (name, raw, "/".join(_ON + _OFF), "on" if default else "off"))
    return default


def _patterns(text):
    return tuple(part.strip() for part in text.split(",") if part.strip())


class CodeFilter:
    """Decides once per code object whether its calls are recorded (include, then exclude).

    A pattern is one of: `stdlib` (the standard library, frozen modules included), `site-packages`
    (installed packages), a file glob when it contains `/` (matched against co_filename), or a
    module name (`pkg` matches `pkg` and `pkg.*`; `*` and `?` glob within module names).
    With include patterns only matching code is recorded; exclude patterns then remove code.
    """

    def __init__(self, include, exclude):
        self.include = tuple(include)
        self.exclude = tuple(exclude)
        self._site_dirs = self._stdlib_dirs = ()
        if self.active:  # sysconfig and fnmatch cost milliseconds to import: only when filtering
            import sysconfig

            paths = sysconfig.get_paths()
            self._site_dirs = _directories(paths[key] for key in ("purelib", "platlib"))
            self._stdlib_dirs = _directories(paths[key] for key in ("stdlib", "platstdlib"))

    @property
    def active(self):
        return bool(self.include or self.exclude)

    def records(self, filename, module):
        if self.include and not any(self._matches(p, filename, module) for p in self.include):
            return False
        return not any(self._matches(p, filename, module) for p in self.exclude)

    def _matches(self, pattern, filename, module):
        if pattern == "site-packages":
            return filename.startswith(self._site_dirs) or "/site-packages/" in filename or "/dist-packages/" in filename
        if pattern == "stdlib":
            if filename.startswith("<frozen "):
                return True
            return filename.startswith(self._stdlib_dirs) and not (
                filename.startswith(self._site_dirs) or "/site-packages/" in filename)
        from fnmatch import fnmatchcase

        if "/" in pattern:
            return fnmatchcase(filename, pattern)
        if not module:
            return False
        if any(c in pattern for c in "*?["):
            return fnmatchcase(module, pattern)
        return module == pattern or module.startswith(pattern + ".")


def _directories(paths):
    """Each path as given and resolved, with a trailing separator, for startswith()."""
    out = []
    for path in paths:
        for form in (os.path.abspath(path), os.path.realpath(path)):
            entry = os.path.join(form, "")
            if entry not in out:
                out.append(entry)
    return tuple(out)

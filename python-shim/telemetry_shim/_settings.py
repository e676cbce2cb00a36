"""What to record: the mode, the burst windows, the overhead budget and the code filters.

One set of settings for every way of starting the shim: `start()` arguments win, then the
environment (TELEMETRY_SHIM_MODE, _WINDOW_MS, _PERIOD_MS, _BUDGET, _INCLUDE, _EXCLUDE, _SLOWDOWN), then the
default of the entry point (`full` for the API and `telemetry-agent run`, `burst` for
`python -m telemetry_shim` and autostart). A bad value never stops the program: it is reported
once on stderr and the default is used.
"""

import os

from . import _wire

MODE_ENV = "TELEMETRY_SHIM_MODE"
WINDOW_ENV = "TELEMETRY_SHIM_WINDOW_MS"
PERIOD_ENV = "TELEMETRY_SHIM_PERIOD_MS"
BUDGET_ENV = "TELEMETRY_SHIM_BUDGET"
INCLUDE_ENV = "TELEMETRY_SHIM_INCLUDE"
EXCLUDE_ENV = "TELEMETRY_SHIM_EXCLUDE"
# For measuring the shim under a tool that slows the whole process down (valgrind: about 12 times):
# every interval the shim plans or waits for is stretched by this factor, so that its schedule
# keeps the proportion to the program's progress that it has in a normal run.
SLOWDOWN_ENV = "TELEMETRY_SHIM_SLOWDOWN"

DEFAULT_WINDOW_MS = 10.0
DEFAULT_PERIOD_MS = 1000.0
DEFAULT_BUDGET = 0.01
# Windows shorter than this measure little but the cost of switching the events.
MIN_WINDOW_MS = 1.0


class Settings:
    __slots__ = ("mode", "window_ns", "period_ns", "budget", "include", "exclude", "problems", "slowdown")

    def __init__(self, mode, window_ns, period_ns, budget, include, exclude, problems, slowdown=1.0):
        self.mode = mode
        self.window_ns = window_ns
        self.period_ns = period_ns
        self.budget = budget  # fraction of wall time (0.01 = 1%); 0: fixed windows
        self.include = include
        self.exclude = exclude
        self.problems = problems  # messages about values that were ignored
        self.slowdown = slowdown  # window_ns and period_ns include it already

    @property
    def calls(self):
        return self.mode != _wire.MODE_EXCEPTIONS

    def hello_fields(self):
        fields = {"mode": self.mode, "include": list(self.include), "exclude": list(self.exclude)}
        if self.mode == _wire.MODE_BURST:
            fields.update(window_ns=self.window_ns, period_ns=self.period_ns,
                          overhead_budget_ppm=int(round(self.budget * 1_000_000)))
        return fields


def read_settings(mode=None, default_mode=_wire.MODE_FULL, environ=None):
    """Settings from `mode` (when given), the environment, and the entry point's default mode."""
    env = os.environ if environ is None else environ
    problems = []
    chosen = (mode or env.get(MODE_ENV, "") or default_mode).strip().lower()
    if chosen not in _wire.MODES:
        problems.append("%s=%r is not one of %s; using %s" % (MODE_ENV, chosen, ", ".join(_wire.MODES), default_mode))
        chosen = default_mode
    window_ms = _milliseconds(env, WINDOW_ENV, DEFAULT_WINDOW_MS, problems)
    period_ms = _milliseconds(env, PERIOD_ENV, DEFAULT_PERIOD_MS, problems)
    if window_ms < MIN_WINDOW_MS:
        problems.append("%s must be at least %g ms; using %g" % (WINDOW_ENV, MIN_WINDOW_MS, MIN_WINDOW_MS))
        window_ms = MIN_WINDOW_MS
    if period_ms < 2 * window_ms:
        problems.append("%s must be at least twice the window; using %g ms" % (PERIOD_ENV, 2 * window_ms))
        period_ms = 2 * window_ms
    budget = parse_budget(env.get(BUDGET_ENV, ""), problems)
    slowdown = _number(env, SLOWDOWN_ENV, 1.0, lambda value: 1 <= value <= 1000, "a factor between 1 and 1000",
                       problems)
    return Settings(chosen, int(window_ms * 1e6 * slowdown), int(period_ms * 1e6 * slowdown), budget,
                    _patterns(env.get(INCLUDE_ENV, "")), _patterns(env.get(EXCLUDE_ENV, "")), problems, slowdown)


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
    return _number(env, name, default, lambda value: value > 0, "a positive number of milliseconds", problems)


def _number(env, name, default, valid, expected, problems):
    """The number in env[name], or `default` when it is unset, or (reported) not a number `valid` accepts."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = None
    if value is None or not valid(value):
        problems.append("%s=%r is not %s; using %g" % (name, raw, expected, default))
        return default
    return value


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

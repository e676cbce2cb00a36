"""Start the telemetry shim in any Python process, with no change to its code.

Put this directory and the python-shim directory on PYTHONPATH and set TELEMETRY_SHIM_AUTOSTART=1
(`python -m telemetry_shim` does so for the children of the program it runs). Every other setting
(the socket, the mode, ...) is read by the shim's _settings, as for any other entry point.

TELEMETRY_SHIM_AUTOSTART is the one variable read here rather than in _settings: a process that
does not ask for the shim must be left as it was, without the package imported (its modules in
sys.modules, its start-up cost), and Python 3.11 and older must not import it at all.

This file runs inside `site`, before the program, in every process that inherits that environment,
so it must never break one: any failure turns into at most one line on stderr. It always hands on
to the `sitecustomize` that it shadows (a user's or a distribution's), loaded under that name, as if
this one were not there.

The shim starts when the program's first top-level frame begins (the script's `<module>`, or runpy
for `python -m`), not here: started here, the shim would record the tail of `site` and of the
import system as a stack of its own. The frame that starts the program is seeded rather than
started, so it shows with its time but no call.
"""

import os
import sys

_AUTOSTART_ENV = "TELEMETRY_SHIM_AUTOSTART"
_ENABLED_VALUES = ("1", "true", "yes", "on")
_DISABLED_VALUES = ("", "0", "false", "no", "off")
# Code the interpreter runs at top level before the program (path hooks, the main loader).
_BOOTSTRAP_FILES = (
    "<frozen importlib._bootstrap>",
    "<frozen importlib._bootstrap_external>",
    "<frozen zipimport>",
)
_RUNNER_MODULES = ("telemetry_shim", "telemetry_shim.__main__")


def _warn(message):
    try:
        if sys.stderr is not None:
            sys.stderr.write("telemetry-shim: autostart: %s\n" % message)
    except Exception:
        pass


def _autostart_requested():
    value = os.environ.get(_AUTOSTART_ENV, "")
    flag = value.strip().lower()
    if flag in _DISABLED_VALUES:
        return False
    if flag not in _ENABLED_VALUES:
        _warn("%s=%r is not one of %s; the shim does not start"
              % (_AUTOSTART_ENV, value, ", ".join(_ENABLED_VALUES + _DISABLED_VALUES[1:])))
        return False
    return sys.version_info >= (3, 12)


def _run_by_runner():
    """True when this interpreter was started as `python -m telemetry_shim`, which starts the shim
    itself, with its own options."""
    args = list(getattr(sys, "orig_argv", ())[1:])
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "-" or arg == "--" or not arg.startswith("-"):
            return False  # a script or stdin
        if arg.startswith("--"):
            index += 2 if arg == "--check-hash-based-pycs" else 1
            continue
        # A cluster of short options, as the interpreter's getopt reads it ("bBc:dEhiIJm:OPqRsStuvVW:xX:?").
        for position, letter in enumerate(arg[1:], start=1):
            if letter in "cmWX":
                value = arg[position + 1:]
                if not value:
                    index += 1
                    value = args[index] if index < len(args) else ""
                if letter == "c":
                    return False
                if letter == "m":
                    return value in _RUNNER_MODULES
                break
        index += 1
    return False


def _in_main_interpreter():
    """A subinterpreter (which runs `site` too) is left alone: see _control.start()."""
    import _thread

    is_main = getattr(_thread, "_is_main_interpreter", None)
    return is_main is None or is_main()


def _start_shim():
    try:
        import telemetry_shim
    except Exception as error:
        _warn("the shim cannot be imported, this process is not recorded (%s: %s)"
              % (type(error).__name__, error))
        return
    if telemetry_shim.is_active():
        return
    from telemetry_shim import _control

    # Burst mode unless TELEMETRY_SHIM_MODE says otherwise: autostart is for services.
    started = _control.start(None, None, default_mode="burst", autostart=True)
    if not started:
        _warn("the shim did not start, this process is not recorded")


def _start_when_program_begins(frame, event, arg):
    # A legacy profile function: cheap, on the main thread only, gone after the first program frame.
    if event != "call" or frame.f_back is not None or frame.f_code.co_filename in _BOOTSTRAP_FILES:
        return
    sys.setprofile(None)
    try:
        _start_shim()
    except Exception as error:
        _warn("%s: %s" % (type(error).__name__, error))


def _arm():
    try:
        if not _autostart_requested() or _run_by_runner() or not _in_main_interpreter():
            return
        if sys.getprofile() is None:
            sys.setprofile(_start_when_program_begins)
        else:
            # Someone's profile function is installed: leave it alone and start now, at the price
            # of recording the rest of the interpreter's start-up.
            _start_shim()
    except Exception as error:
        _warn("%s: %s" % (type(error).__name__, error))


def _load_shadowed_sitecustomize():
    """Run the next `sitecustomize` on sys.path, under that name, as if this one were not there.

    Its exceptions propagate, so that `site` reports them exactly as it would have."""
    try:
        import importlib.machinery
        import importlib.util

        here = os.path.realpath(os.path.dirname(__file__))
        search_path = [
            entry for entry in sys.path
            if os.path.realpath(entry or os.curdir) != here
        ]
        spec = importlib.machinery.PathFinder.find_spec("sitecustomize", search_path)
        if spec is None or spec.loader is None:
            return
        if spec.origin and os.path.realpath(spec.origin) == os.path.realpath(__file__):
            return
        module = importlib.util.module_from_spec(spec)
    except Exception as error:
        _warn("cannot look for another sitecustomize (%s: %s)" % (type(error).__name__, error))
        return
    sys.modules["sitecustomize"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop("sitecustomize", None)
        raise


try:
    _load_shadowed_sitecustomize()
finally:
    # After the other sitecustomize, so that its set-up is not recorded and a profile function it
    # installs is respected; even when it fails, as `site` goes on after reporting it.
    _arm()

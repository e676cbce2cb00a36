"""`python -m telemetry_shim`: run a script or a module with the shim recording it.

The program must behave as it does under `python script.py` / `python -m module`: same sys.argv,
sys.path[0], `__main__` module, exit status and traceback text. So the program's code is compiled (or
resolved through runpy's module lookup) and exec'd in a fresh `__main__` module, as cProfile does,
rather than through runpy.run_path, whose frames would be recorded above the program. The runner
lives in the shim package, so its own frames are never recorded or seeded.
"""

import importlib.machinery
import io
import os
import runpy
import sys
import types

from telemetry_shim._package import PACKAGE_DIR, VERSION
from telemetry_shim._settings import AUTOSTART_ENV, MODE_ENV, SERVICE_NAME_ENV, SOCKET_ENV, default_socket_path
from telemetry_shim._wire import MODES

PYTHON_SHIM_DIR = os.path.dirname(PACKAGE_DIR)
AUTOSTART_DIR = os.path.join(PACKAGE_DIR, "autostart")

# Runner options that take a value; needed to find where the program's own arguments begin.
_OPTIONS_WITH_VALUE = ("--socket", "--service-name", "--mode", "--ready-on")
# A service started this way runs in production: burst mode unless told otherwise.
DEFAULT_MODE = "burst"

_DESCRIPTION = """\
Run a Python program with the telemetry shim recording its Python function calls and returns
(every one, or in short windows: --mode) and its exceptions, streamed to a telemetry-agent
listening on a Unix socket. The program runs exactly as it would under
`python script.py` or `python -m module`: same arguments, sys.path, exit status and tracebacks.
Python child processes (subprocess, multiprocessing, os.fork) are recorded as processes of their
own: the runner exports TELEMETRY_AGENT_SOCKET and TELEMETRY_SHIM_AUTOSTART=1 and puts the shim's
autostart directory first on PYTHONPATH for them."""

_EPILOG = """\
Everything after the script path, or after `-m module`, belongs to the program.
examples:
  python -m telemetry_shim app.py --port 8080
  python -m telemetry_shim --socket /run/telemetry-agent.sock -m mypkg.server
exit status: the program's own; 2 for a usage error of the runner itself."""


class UsageError(Exception):
    """The program to run cannot be found; reported as the interpreter reports it."""

    def __init__(self, message, exit_status=1):
        super().__init__(message)
        self.exit_status = exit_status


class CompileError(Exception):
    """The script does not compile; reported as the interpreter reports it, without a traceback."""

    def __init__(self, error):
        super().__init__(str(error))
        self.error = error


class Target:
    """What to run: a script path or a module name, and the program's arguments."""

    def __init__(self, kind, name, args):
        self.kind = kind  # "script" or "module"
        self.name = name
        self.args = args


def build_parser():
    import argparse  # only for --help, --version and usage errors: it costs milliseconds at every start

    parser = argparse.ArgumentParser(
        prog="python -m telemetry_shim",
        usage="%(prog)s [options] (script.py | -m module) [args ...]",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--socket",
        metavar="PATH",
        help="Unix socket of the telemetry-agent (default: $TELEMETRY_AGENT_SOCKET, else %s)"
        % _quiet_default_socket_path(),
    )
    parser.add_argument(
        "--service-name",
        metavar="NAME",
        help="service name reported to the agent for this process and its Python children "
        "(default: $OTEL_SERVICE_NAME)",
    )
    parser.add_argument(
        "--mode",
        choices=MODES,
        help="what to record: every call (full), calls in short windows scaled to the whole run "
        "(burst), or exceptions only (default: $TELEMETRY_SHIM_MODE, else %s); children inherit it"
        % DEFAULT_MODE,
    )
    parser.add_argument(
        "--ready-on",
        metavar="MODULE:FUNCTION",
        help="the function whose first call ends the start-up phase (its first calls are timed as the "
        "first invocations); default: $TELEMETRY_SHIM_READY_ON, on AWS Lambda $_HANDLER, else the "
        "end of the main module",
    )
    parser.add_argument(
        "-m",
        dest="module",
        metavar="module",
        help="run a library module as a script, like `python -m module`",
    )
    parser.add_argument(
        "--version", action="version", version="telemetry_shim %s" % VERSION
    )
    return parser


def _plain_options(runner_args):
    """The runner's options when they are all plain `--name value` or `--name=value` pairs with valid values;
    None for anything else (help, version, a mistake), which argparse then handles."""
    values = {"socket": None, "service_name": None, "mode": None, "ready_on": None, "module": None}
    index = 0
    while index < len(runner_args):
        arg = runner_args[index]
        name, equals, value = arg.partition("=")
        if name not in _OPTIONS_WITH_VALUE:
            return None
        if not equals:
            if index + 1 >= len(runner_args):
                return None
            index += 1
            value = runner_args[index]
        values[name[2:].replace("-", "_")] = value
        index += 1
    if values["mode"] is not None and values["mode"] not in MODES:
        return None
    return types.SimpleNamespace(**values)


def split_command_line(argv):
    """Split argv into (runner options, Target or None).

    Parsing stops at the script path or at the module name after -m: every later argument belongs
    to the program, even when it looks like one of the runner's options.
    """
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg == "--":
            if index + 1 < len(argv):
                return argv[:index], Target("script", argv[index + 1], argv[index + 2:])
            return argv[:index], None
        if arg == "-m":
            if index + 1 >= len(argv):
                return argv, None  # argparse reports the missing module name
            return argv[:index], Target("module", argv[index + 1], argv[index + 2:])
        if arg.startswith("-m") and not arg.startswith("--"):
            return argv[:index], Target("module", arg[2:], argv[index + 1:])
        if arg in _OPTIONS_WITH_VALUE:
            index += 2
            continue
        if arg.startswith("-") and arg != "-":
            index += 1
            continue
        return argv[:index], Target("script", arg, argv[index + 1:])
    return argv, None


def main(argv=None):
    """Entry point of `python -m telemetry_shim`. Returns the exit status when the program ends
    normally; SystemExit and uncaught exceptions of the program propagate as Python would let them."""
    argv = sys.argv[1:] if argv is None else list(argv)
    runner_args, target = split_command_line(argv)
    options = _plain_options(runner_args)
    if options is None or target is None:
        parser = build_parser()
        options = parser.parse_args(runner_args)  # exits 2 with a message on a usage error
        if target is None:
            parser.error("no program given: pass a script path or -m module")

    socket_path = _resolve_socket_path(options.socket)
    _export_child_environment(socket_path, options.service_name, options.mode)

    try:
        if target.kind == "script":
            program = _load_script(target.name)
        else:
            program = _load_module(target.name)
    except UsageError as error:
        # Same wording and status as the interpreter uses for a missing script or module.
        sys.stderr.write("%s: %s\n" % (sys.executable, error))
        return error.exit_status
    except CompileError as failure:
        error = failure.error.with_traceback(None)  # the interpreter shows none for its compile
        sys.excepthook(type(error), error, None)
        return 1

    program.install(target.args)
    from telemetry_shim import _control

    _control.start(socket_path, options.service_name, mode=options.mode, default_mode=DEFAULT_MODE,
                   ready_on=options.ready_on, main_code=program.code)
    program.run()
    return 0


class _Program:
    """A compiled program and the `__main__` module it runs in."""

    def __init__(self, code, module, argv0):
        self.code = code
        self.module = module
        self.argv0 = argv0
        self._launcher_main = None

    def install(self, args):
        sys.argv[:] = [self.argv0, *args]
        # Kept alive: this runner's globals belong to it.
        self._launcher_main = sys.modules.get("__main__")
        sys.modules["__main__"] = self.module

    def run(self):
        try:
            exec(self.code, self.module.__dict__)
        except SystemExit:
            raise
        except BaseException as error:
            # Let the interpreter report it (exit status 1, sys.last_exc, KeyboardInterrupt's
            # SIGINT exit), but print the traceback without the runner's and runpy's frames.
            _hide_launcher_frames(error, self.code)
            raise


def _load_script(path):
    """Compile a script, or find the __main__ module of a directory or zip file, as
    `python path` does."""
    # A directory or a zip file runs its __main__ (a .py file is neither: pkgutil's import is spared).
    if not path.endswith(".py") and _importer_for(path):
        _set_first_path_entry(os.path.abspath(path), even_in_safe_path=True)
        return _load_module_details(path, runpy._get_main_module_details(UsageError)[1:])
    try:
        with io.open_code(path) as source_file:
            source = source_file.read()
    except OSError as error:
        raise UsageError(
            "can't open file %r: [Errno %s] %s"
            % (os.path.abspath(path), error.errno, error.strerror),
            exit_status=2,
        ) from None
    absolute = os.path.abspath(path)
    try:
        code = compile(source, absolute, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as error:
        raise CompileError(error) from None
    module = _fresh_main_module()
    module.__file__ = absolute
    module.__cached__ = None
    module.__loader__ = importlib.machinery.SourceFileLoader("__main__", absolute)
    # The interpreter puts the directory of the script, symlinks resolved, first on sys.path.
    _set_first_path_entry(os.path.dirname(os.path.realpath(path)), even_in_safe_path=False)
    return _Program(code, module, path)


def _importer_for(path):
    import pkgutil

    return pkgutil.get_importer(path) is not None


def _load_module(name):
    # runpy's own lookup, as `python -m` uses: imports parent packages, runs package.__main__,
    # and gives the interpreter's error messages. It runs before the shim starts, as in cProfile.
    # sys.path[0] is already the working directory, put there for this runner's own -m.
    spec_and_code = runpy._get_module_details(name, UsageError)[1:]
    return _load_module_details(None, spec_and_code)


def _load_module_details(argv0, spec_and_code):
    spec, code = spec_and_code
    module = _fresh_main_module()
    # The same attributes runpy._run_code gives a module run as __main__.
    module.__file__ = spec.origin if spec.has_location else None
    module.__cached__ = spec.cached if spec.has_location else None
    module.__loader__ = spec.loader
    module.__package__ = spec.parent
    module.__spec__ = spec
    return _Program(code, module, spec.origin if argv0 is None else argv0)


def _set_first_path_entry(entry, even_in_safe_path):
    # Without -P the interpreter put the working directory first on sys.path for this runner's
    # own -m: that slot becomes the program's. With -P there is no such slot.
    if sys.flags.safe_path:
        if even_in_safe_path:
            sys.path.insert(0, entry)
    elif sys.path:
        sys.path[0] = entry
    else:
        sys.path.insert(0, entry)


def _fresh_main_module():
    module = types.ModuleType("__main__")
    module.__builtins__ = sys.modules["builtins"]
    launcher_main = sys.modules.get("__main__")
    if launcher_main is not None and "__annotations__" in vars(launcher_main):
        # The interpreter gives __main__ an empty __annotations__ (3.12, 3.13).
        module.__annotations__ = {}
    return module


def _hide_launcher_frames(error, program_code):
    """Make the traceback start at the program's first frame when it is printed.

    The entries above it (this runner, runpy) are added as the exception propagates, so they are
    removed where the interpreter prints it: in sys.excepthook, wrapped once for this exception.
    """
    installed_hook = sys.excepthook

    def excepthook(exc_type, exc_value, exc_traceback):
        sys.excepthook = installed_hook
        if exc_value is error:
            trimmed = exc_traceback
            while trimmed is not None and trimmed.tb_frame.f_code is not program_code:
                trimmed = trimmed.tb_next
            if trimmed is not None:
                exc_traceback = trimmed
                exc_value.__traceback__ = trimmed
                sys.last_traceback = trimmed
        installed_hook(exc_type, exc_value, exc_traceback)

    sys.excepthook = excepthook


def _resolve_socket_path(option):
    path = option or default_socket_path()
    if path.startswith(("\0", "@")):
        return path  # Linux abstract socket name
    # Absolute, so that children which change directory still find it.
    return os.path.abspath(path)


def _export_child_environment(socket_path, service_name, mode):
    """The environment handed to child processes so that every Python child starts under the shim
    too (read by autostart/sitecustomize.py and _settings)."""
    os.environ[SOCKET_ENV] = socket_path
    os.environ[AUTOSTART_ENV] = "1"
    if mode:
        os.environ[MODE_ENV] = mode
    if service_name:
        os.environ[SERVICE_NAME_ENV] = service_name
    entries = [
        entry
        for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep)
        if entry and os.path.abspath(entry) not in (AUTOSTART_DIR, PYTHON_SHIM_DIR)
    ]
    os.environ["PYTHONPATH"] = os.pathsep.join([AUTOSTART_DIR, PYTHON_SHIM_DIR, *entries])


def _quiet_default_socket_path():
    try:
        return default_socket_path()
    except Exception:
        return "the shim's default"

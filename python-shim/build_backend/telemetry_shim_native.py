"""Builds the shim's optional C extension (telemetry_shim/_native.c) for the Python that runs this
file, with the compiler and flags that Python was built with (sysconfig: CC, CFLAGS, CCSHARED,
the include directory, EXT_SUFFIX). Standard library only, no network.

    python3.12 build_backend/telemetry_shim_native.py [--sanitize] [--output-dir DIR] [--require]

Prints one line: what it built, or why it could not (then the shim records with its Python
callbacks, as TELEMETRY_SHIM_NATIVE=auto does when the extension is missing). Exits non-zero
only with --require. --sanitize builds with AddressSanitizer and UndefinedBehaviorSanitizer (the
interpreter must then run with libasan preloaded).
"""

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile

SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "telemetry_shim"
SOURCE = os.path.join(SOURCE_ROOT, PACKAGE, "_native.c")
MODULE = "_native"
WARNINGS = ("-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers")
SANITIZE = ("-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer", "-O1")


class BuildError(Exception):
    pass


def extension_name():
    """The extension's file name for the running interpreter, e.g. _native.cpython-312-x86_64-linux-gnu.so."""
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    if not suffix:
        raise BuildError("this Python has no EXT_SUFFIX (sysconfig)")
    return MODULE + suffix


def compile_command(output, sanitize=False, warnings_are_errors=False):
    """The compiler's argv that builds the extension into `output`."""
    if sys.version_info < (3, 12):
        raise BuildError("Python %d.%d has no sys.monitoring" % sys.version_info[:2])
    cc = sysconfig.get_config_var("CC")
    if not cc:
        raise BuildError("this Python does not say which C compiler built it (sysconfig CC)")
    compiler = shlex.split(cc)
    if shutil.which(compiler[0]) is None:
        raise BuildError("no C compiler: %s is not on PATH" % compiler[0])
    include = sysconfig.get_paths().get("include") or ""
    if not os.path.isfile(os.path.join(include, "Python.h")):
        raise BuildError("no Python headers (%s has no Python.h)" % include)
    flags = shlex.split(sysconfig.get_config_var("CFLAGS") or "")
    flags += shlex.split(sysconfig.get_config_var("CCSHARED") or "")
    link = ["-shared"]
    if sys.platform == "darwin":
        link += ["-undefined", "dynamic_lookup"]
    # No build path in the binary: the same source builds the same file wherever it is unpacked.
    extra = ["-ffile-prefix-map=%s=." % SOURCE_ROOT] + list(WARNINGS) + (["-Werror"] if warnings_are_errors else []) + (list(SANITIZE) if sanitize else [])
    return compiler + flags + extra + ["-I", include] + link + [SOURCE, "-o", output]


def build(output_dir=None, sanitize=False, warnings_are_errors=False):
    """Compiles the extension into `output_dir` (default: the package, beside _native.c) and
    returns its path. The file is replaced in one step, so a running process keeps its copy."""
    output_dir = output_dir or os.path.join(SOURCE_ROOT, PACKAGE)
    target = os.path.join(output_dir, extension_name())
    fd, temporary = tempfile.mkstemp(prefix=".native-", suffix=".so", dir=output_dir)
    os.close(fd)
    try:
        command = compile_command(temporary, sanitize, warnings_are_errors)
        try:
            done = subprocess.run(command, capture_output=True, text=True, cwd=SOURCE_ROOT)
        except OSError as exc:
            raise BuildError("the C compiler could not run (%s)" % exc) from None
        if done.returncode != 0:
            raise BuildError("the C compiler failed:\n%s\n%s" % (shlex.join(command), done.stderr.strip()))
        if done.stderr.strip() and warnings_are_errors:
            raise BuildError("the C compiler warned:\n%s" % done.stderr.strip())
        os.chmod(temporary, 0o755)
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return target


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", help="where to write the extension (default: the package)")
    parser.add_argument("--sanitize", action="store_true", help="build with -fsanitize=address,undefined")
    parser.add_argument("--require", action="store_true", help="exit non-zero when it cannot be built")
    parser.add_argument("--werror", action="store_true", help="treat compiler warnings as errors")
    args = parser.parse_args(argv)
    version = "%d.%d" % sys.version_info[:2]
    try:
        path = build(args.output_dir, args.sanitize, args.werror)
    except BuildError as exc:
        print("telemetry_shim: native callbacks not built for Python %s: %s; the Python callbacks will record"
              % (version, exc), file=sys.stderr)
        return 1 if args.require else 0
    print("telemetry_shim: built %s%s for Python %s" % (
        os.path.relpath(path), " (sanitizers)" if args.sanitize else "", version))
    return 0


if __name__ == "__main__":
    sys.exit(main())

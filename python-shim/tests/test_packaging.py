"""pyproject.toml and the in-tree build backend (build_backend/), driven by this interpreter's own
pip, offline and without setuptools: an install into a target folder that a real program then
runs under, a wheel and an sdist (checked entry by entry), a wheel rebuilt from the sdist, and an
editable install into a fresh venv."""

import base64
import csv
import hashlib
import importlib.util
import io
import os
import subprocess
import sys
import tarfile
import textwrap
import unittest
import zipfile

from tests import support

PACKAGE_DIR = os.path.join(support.SHIM_ROOT, "telemetry_shim")
BACKEND_DIR = os.path.join(support.SHIM_ROOT, "build_backend")
DIST_NAME = "telemetry_shim"
PIP_OPTIONS = ("--no-build-isolation", "--no-index", "--no-cache-dir", "--disable-pip-version-check")

PROGRAM = textwrap.dedent("""
    import telemetry_shim
    def work(n):
        return n + 1
    for i in range(3):
        work(i)
    print(telemetry_shim.__file__)
""")


def package_modules():
    """Paths ('/'-separated, from python-shim/) of the package's modules in the source tree."""
    found = set()
    for directory, subdirectories, files in os.walk(PACKAGE_DIR):
        subdirectories[:] = [d for d in subdirectories if d != "__pycache__"]
        relative = os.path.relpath(directory, support.SHIM_ROOT).replace(os.sep, "/")
        found.update("%s/%s" % (relative, name) for name in files if name.endswith(".py"))
    return found


def native_extension():
    """The wheel entry of the C callbacks built for this interpreter, or None where they cannot be built."""
    sys.path.insert(0, BACKEND_DIR)
    try:
        import telemetry_shim_native
    finally:
        sys.path.remove(BACKEND_DIR)
    try:
        telemetry_shim_native.compile_command(os.devnull)
    except telemetry_shim_native.BuildError:
        return None
    return "telemetry_shim/" + telemetry_shim_native.extension_name()


def wheel_tag():
    sys.path.insert(0, BACKEND_DIR)
    try:
        import telemetry_shim_build
    finally:
        sys.path.remove(BACKEND_DIR)
    return telemetry_shim_build.native_wheel_tag() if native_extension() else "py3-none-any"


def wheel_modules():
    """What a wheel built here holds of the package: its modules, and the C callbacks when they build."""
    extension = native_extension()
    return package_modules() | ({extension} if extension else set())


def shim_version():
    from telemetry_shim._package import VERSION  # the source tree's

    return VERSION


@unittest.skipUnless(importlib.util.find_spec("pip") is not None, "pip is not installed for this interpreter")
class PackagingTests(support.TempDirTestCase):
    tmp_prefix = "tashim-packaging-"

    def pip(self, *args, python=None):
        command = [sys.executable, "-m", "pip"] + (["--python", python] if python else []) + list(args)
        env = dict(os.environ, PIP_ROOT_USER_ACTION="ignore")
        env.pop("PYTHONPATH", None)
        result = subprocess.run(command + list(PIP_OPTIONS), cwd=self.tmp, env=env, capture_output=True, text=True,
                                timeout=300)
        self.assertEqual(0, result.returncode, result.stdout + result.stderr)

    def run_installed(self, python, pythonpath=None):
        """Runs PROGRAM under `python -m telemetry_shim`, away from the source tree; returns the
        module file it printed and the calls the agent saw."""
        program = self.write("program.py", PROGRAM)
        env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
        if pythonpath:
            env["PYTHONPATH"] = pythonpath
        with support.RecordingAgent() as agent:
            result = subprocess.run([python, "-m", "telemetry_shim", "--socket", agent.path, "--mode", "full", program],
                                    cwd=self.tmp, env=env, capture_output=True, text=True, timeout=120)
            self.assertEqual((0, ""), (result.returncode, result.stderr))
            conn = agent.wait_for(1)[0]
        self.assertIsNone(conn.error)
        return result.stdout.strip(), support.call_counts(conn)

    def check_record(self, read, names):
        """The RECORD of a wheel or an install names every file with its sha256 and size."""
        record = read("%s-%s.dist-info/RECORD" % (DIST_NAME, shim_version())).decode()
        rows = {row[0]: row[1:] for row in csv.reader(io.StringIO(record))}
        for name in names:
            data = read(name)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            self.assertEqual(["sha256=" + digest, str(len(data))], rows.pop(name), name)
        return rows

    def build_wheel(self, source, folder):
        self.pip("wheel", "--no-deps", "-w", os.path.join(self.tmp, folder), source)
        wheels = os.listdir(os.path.join(self.tmp, folder))
        self.assertEqual(["%s-%s-%s.whl" % (DIST_NAME, shim_version(), wheel_tag())], wheels)
        return os.path.join(self.tmp, folder, wheels[0])

    def test_install_into_a_target_folder_runs_a_program_from_there(self):
        target = os.path.join(self.tmp, "target")
        self.pip("install", "--no-compile", "--target", target, support.SHIM_ROOT)
        installed = {os.path.relpath(os.path.join(directory, name), target).replace(os.sep, "/")
                     for directory, _, files in os.walk(os.path.join(target, "telemetry_shim")) for name in files}
        self.assertEqual(wheel_modules(), installed)

        def read(name):
            with open(os.path.join(target, name), "rb") as f:
                return f.read()

        self.check_record(read, installed)
        module_file, counts = self.run_installed(sys.executable, pythonpath=target)
        self.assertEqual(os.path.join(target, "telemetry_shim", "__init__.py"), module_file)
        self.assertEqual(3, counts["work"])

    def test_wheel_and_sdist_hold_the_package_and_a_wheel_built_from_the_sdist_is_the_same(self):
        wheel_path = self.build_wheel(support.SHIM_ROOT, "wheels")
        dist_info = "%s-%s.dist-info/" % (DIST_NAME, shim_version())
        with zipfile.ZipFile(wheel_path) as wheel:
            names = set(wheel.namelist())
            self.assertEqual(wheel_modules() | {dist_info + name for name in ("METADATA", "WHEEL", "RECORD")}, names)
            self.assertEqual({dist_info + "RECORD": ["", ""]}, self.check_record(wheel.read, names - {dist_info + "RECORD"}))
            metadata = wheel.read(dist_info + "METADATA").decode()
            self.assertIn("Tag: %s\n" % wheel_tag(), wheel.read(dist_info + "WHEEL").decode())
        for line in ("Name: telemetry-shim", "Version: " + shim_version(), "Requires-Python: >=3.12"):
            self.assertIn(line + "\n", metadata)

        # The sdist, from the backend itself (pip builds no sdists), then a wheel from the sdist.
        sdists = os.path.join(self.tmp, "sdists")
        os.mkdir(sdists)
        built = subprocess.run([sys.executable, "-c", "import sys, telemetry_shim_build as b; print(b.build_sdist(sys.argv[1]))",
                                sdists], env=dict(os.environ, PYTHONPATH=BACKEND_DIR), capture_output=True, text=True,
                               timeout=60)
        self.assertEqual(0, built.returncode, built.stderr)
        base = "%s-%s" % (DIST_NAME, shim_version())
        self.assertEqual(base + ".tar.gz", built.stdout.strip())
        with tarfile.open(os.path.join(sdists, base + ".tar.gz")) as sdist:
            members = {member.name[len(base) + 1:] for member in sdist.getmembers()}
            self.assertEqual(package_modules() | {"pyproject.toml", "README.md", "PKG-INFO", "telemetry_shim/_native.c",
                                                  "build_backend/telemetry_shim_build.py",
                                                  "build_backend/telemetry_shim_native.py"}, members)
            sdist.extractall(self.tmp, filter="data")
        from_sdist = self.build_wheel(os.path.join(self.tmp, base), "wheels-from-sdist")
        with open(wheel_path, "rb") as direct, open(from_sdist, "rb") as rebuilt:
            self.assertEqual(direct.read(), rebuilt.read(), "builds are reproducible, from the tree or the sdist")

    def test_editable_install_imports_the_source_tree_and_nothing_else_of_it(self):
        venv = os.path.join(self.tmp, "venv")
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=120)
        python = os.path.join(venv, "bin", "python")
        self.pip("install", "-e", support.SHIM_ROOT, python=python)
        module_file, counts = self.run_installed(python)
        self.assertEqual(os.path.join(PACKAGE_DIR, "__init__.py"), module_file)
        self.assertEqual(3, counts["work"])
        probe = subprocess.run([python, "-c", "import importlib.util as u; print(u.find_spec('tests'), u.find_spec('build_backend'))"],
                               cwd=self.tmp, capture_output=True, text=True, timeout=60)
        self.assertEqual("None None", probe.stdout.strip(), probe.stderr)


if __name__ == "__main__":
    unittest.main()

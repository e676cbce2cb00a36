"""The build backend of telemetry_shim (PEP 517, with PEP 660 editable installs), standard library
only: pyproject.toml names it with `backend-path`, so pip builds the shim offline and without
setuptools (`pip install --no-build-isolation --no-index ./python-shim`).

- build_wheel: telemetry_shim/**/*.py and a .dist-info (METADATA, WHEEL, RECORD), with the C
  callbacks (telemetry_shim_native.py) compiled for the Python that runs the build: tagged for that
  Python and platform (cp312-cp312-linux_x86_64), installed into platlib. Where they cannot be
  compiled (no compiler or headers) it says so once and the wheel is pure Python: py3-none-any,
  installed into purelib, and the shim records with its Python callbacks.
- build_sdist: pyproject.toml, README.md, this backend and the package (its C source too), with PKG-INFO.
- build_editable: a wheel whose .pth imports a finder that loads `telemetry_shim` (and nothing
  else of this folder) from the source tree.

Archives are reproducible: entries sorted, fixed timestamps and modes.
"""

import ast
import base64
import csv
import hashlib
import io
import os
import re
import sys
import tarfile
import tempfile
import tomllib
import zipfile

import telemetry_shim_native

SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "telemetry_shim"
VERSION_FILE = os.path.join(PACKAGE, "_package.py")  # VERSION = "..."
NATIVE_SOURCE = PACKAGE + "/_native.c"
BACKEND_DIR = "build_backend"
SDIST_FILES = ("pyproject.toml", "README.md")
TIMESTAMP = 315532800  # 1980-01-01, the earliest a zip entry can carry
GENERATOR = "telemetry_shim_build"


# ---- PEP 517 / PEP 660 hooks ----------------------------------------------------------------------

def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def get_requires_for_build_editable(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    project = Project.read()
    target = os.path.join(metadata_directory, project.dist_info)
    os.makedirs(target, exist_ok=True)
    for name, data in project.dist_info_files():
        with open(os.path.join(target, name), "wb") as f:
            f.write(data)
    return project.dist_info


prepare_metadata_for_build_editable = prepare_metadata_for_build_wheel


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    project = Project.read()
    files = project.package_files()
    with tempfile.TemporaryDirectory() as scratch:
        try:
            extension = telemetry_shim_native.build(scratch)
        except telemetry_shim_native.BuildError as exc:
            print("telemetry_shim: a pure-Python wheel, without the native callbacks: %s" % exc, file=sys.stderr)
            return _write_wheel(project, wheel_directory, files)
        files.append(("%s/%s" % (PACKAGE, os.path.basename(extension)), _read(extension)))
    return _write_wheel(project, wheel_directory, files, native_wheel_tag())


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    project = Project.read()
    finder = "_%s_editable" % PACKAGE
    files = [(finder + ".py", _editable_finder(SOURCE_ROOT).encode()),
             (finder + ".pth", ("import %s\n" % finder).encode())]
    return _write_wheel(project, wheel_directory, files)


def build_sdist(sdist_directory, config_settings=None):
    project = Project.read()
    base = "%s-%s" % (project.dist_name, project.version)
    files = [(name, _read(os.path.join(SOURCE_ROOT, name))) for name in SDIST_FILES]
    files += [(path, _read(os.path.join(SOURCE_ROOT, path))) for path in _python_files(BACKEND_DIR)]
    files += project.package_files()
    files.append((NATIVE_SOURCE, _read(os.path.join(SOURCE_ROOT, NATIVE_SOURCE))))
    files.append(("PKG-INFO", project.metadata()))
    archive = base + ".tar.gz"
    with tarfile.open(os.path.join(sdist_directory, archive), "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files):
            info = tarfile.TarInfo("%s/%s" % (base, name))
            info.size = len(data)
            info.mtime = TIMESTAMP
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return archive


# ---- the project -----------------------------------------------------------------------------------

class Project:
    """What pyproject.toml's [project] table says, with the version from the package."""

    def __init__(self, table, version):
        self.name = table["name"]
        self.version = version
        self.summary = table.get("description", "")
        self.requires_python = table.get("requires-python", "")
        self.dependencies = table.get("dependencies", [])
        self.readme = table.get("readme")
        self.dist_name = re.sub(r"[-_.]+", "_", self.name).lower()  # file names (wheel, sdist, dist-info)
        self.dist_info = "%s-%s.dist-info" % (self.dist_name, self.version)

    @classmethod
    def read(cls):
        with open(os.path.join(SOURCE_ROOT, "pyproject.toml"), "rb") as f:
            table = tomllib.load(f)["project"]
        if table.get("dynamic") != ["version"]:
            raise ValueError("pyproject.toml: this backend takes only the version as dynamic (from %s)" % VERSION_FILE)
        if not isinstance(table.get("readme", ""), str):
            raise ValueError("pyproject.toml: readme must be a file name")
        return cls(table, _package_version())

    def metadata(self):
        """Core metadata (METADATA in a wheel, PKG-INFO in an sdist)."""
        lines = ["Metadata-Version: 2.1", "Name: " + self.name, "Version: " + self.version]
        if self.summary:
            lines.append("Summary: " + self.summary)
        if self.requires_python:
            lines.append("Requires-Python: " + self.requires_python)
        lines.extend("Requires-Dist: " + dependency for dependency in self.dependencies)
        body = ""
        if self.readme:
            content_type = "text/markdown" if self.readme.endswith(".md") else "text/plain"
            lines.append("Description-Content-Type: " + content_type)
            body = _read(os.path.join(SOURCE_ROOT, self.readme)).decode("utf-8")
        return ("\n".join(lines) + "\n\n" + body).encode("utf-8")

    def dist_info_files(self, tag=None):
        """The .dist-info files other than RECORD: (name, bytes)."""
        tag = tag or PURE_WHEEL_TAG
        wheel = "Wheel-Version: 1.0\nGenerator: %s\nRoot-Is-Purelib: %s\nTag: %s\n" % (
            GENERATOR, "true" if tag == PURE_WHEEL_TAG else "false", tag)
        return [("METADATA", self.metadata()), ("WHEEL", wheel.encode())]

    def package_files(self):
        """(path in the archive, bytes) of every module of the package."""
        return [(path, _read(os.path.join(SOURCE_ROOT, path))) for path in _python_files(PACKAGE)]


def _package_version():
    """VERSION in the package's _package.py, read without importing the package."""
    tree = ast.parse(_read(os.path.join(SOURCE_ROOT, VERSION_FILE)))
    for node in tree.body:
        if (isinstance(node, ast.Assign) and [getattr(target, "id", None) for target in node.targets] == ["VERSION"]
                and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
            return node.value.value
    raise ValueError("%s: no VERSION = \"...\"" % VERSION_FILE)


def _python_files(folder):
    """The .py files under `folder` (relative to the source root, '/'-separated), sorted."""
    found = []
    for directory, subdirectories, files in os.walk(os.path.join(SOURCE_ROOT, folder)):
        subdirectories[:] = sorted(d for d in subdirectories if d != "__pycache__")
        relative = os.path.relpath(directory, SOURCE_ROOT).replace(os.sep, "/")
        found.extend("%s/%s" % (relative, name) for name in files if name.endswith(".py"))
    return sorted(found)


def _read(path):
    with open(path, "rb") as f:
        return f.read()


# ---- wheels ----------------------------------------------------------------------------------------

PURE_WHEEL_TAG = "py3-none-any"


def native_wheel_tag():
    """The tag of a wheel holding an extension built by the running CPython, e.g. cp312-cp312-linux_x86_64."""
    import sysconfig

    interpreter = "cp%d%d" % sys.version_info[:2]
    platform = re.sub(r"[-.]", "_", sysconfig.get_platform())
    return "%s-%s%s-%s" % (interpreter, interpreter, getattr(sys, "abiflags", ""), platform)


def _write_wheel(project, wheel_directory, files, tag=PURE_WHEEL_TAG):
    """A wheel of `files` ((path, bytes)) and the project's .dist-info; returns its file name."""
    name = "%s-%s-%s.whl" % (project.dist_name, project.version, tag)
    entries = sorted(files) + [("%s/%s" % (project.dist_info, file), data)
                               for file, data in project.dist_info_files(tag)]
    record_path = project.dist_info + "/RECORD"
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w", zipfile.ZIP_DEFLATED) as wheel:
        for path, data in entries:
            _add(wheel, path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            writer.writerow((path, "sha256=" + digest, len(data)))
        writer.writerow((record_path, "", ""))
        _add(wheel, record_path, record.getvalue().encode())
    return name


def _add(archive, path, data):
    info = zipfile.ZipInfo(path, date_time=(1980, 1, 1, 0, 0, 0))
    info.external_attr = 0o644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    archive.writestr(info, data)


def _editable_finder(source_root):
    return '''"""Editable install of telemetry_shim: the package is imported from its source tree."""

import sys
from importlib.machinery import PathFinder

SOURCE_ROOT = %r


class EditableFinder:
    """Finds `telemetry_shim` in the source tree, and nothing else that lives there."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == %r:
            return PathFinder.find_spec(name, [SOURCE_ROOT])
        return None


sys.meta_path.append(EditableFinder)
''' % (source_root, PACKAGE)

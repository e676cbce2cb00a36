"""No import cycle between the shim's modules, top-level or inside functions.

Every module of the package is parsed with ast (nothing is imported); every import statement
counts, wherever it stands (module level, functions, try and if blocks), absolute or relative.
An edge goes to the module an import runs: `from .x import name` to x, `from . import x` to x
when x is a module, else to the package itself (whose __init__ must have defined the name).
A submodule's implicit import of its own parent packages is not an edge: they are initialised
before it. Folders without __init__.py (autostart/) hold top-level modules, named by their file.
"""

import ast
import os
import tempfile
import textwrap
import unittest

from tests import support

PACKAGE_DIR = os.path.join(support.SHIM_ROOT, "telemetry_shim")


def package_modules(package_dir):
    """{module name: (path, is_package)} for every .py file under `package_dir`, and (path None: it
    imports nothing) every C extension module whose source (.c) is there."""
    root = os.path.basename(os.path.normpath(package_dir))
    modules = {}
    for directory, subdirectories, files in os.walk(package_dir):
        subdirectories[:] = sorted(d for d in subdirectories if d != "__pycache__")
        relative = os.path.relpath(directory, package_dir)
        parts = [root] + ([] if relative == os.curdir else relative.split(os.sep))
        in_package = all(os.path.exists(os.path.join(package_dir, *parts[1:i], "__init__.py"))
                         for i in range(1, len(parts) + 1))
        for name in sorted(files):
            if name.endswith(".c") and in_package:
                modules[".".join(parts + [name[:-2]])] = (None, False)
                continue
            if not name.endswith(".py"):
                continue
            path = os.path.join(directory, name)
            if not in_package:
                modules[name[:-3]] = (path, False)
            elif name == "__init__.py":
                modules[".".join(parts)] = (path, True)
            else:
                modules[".".join(parts + [name[:-3]])] = (path, False)
    return modules


def import_edges(modules):
    """{module: [(imported module, line)]} for the imports between `modules`."""
    edges = {}
    for name, (path, is_package) in modules.items():
        if path is None:
            edges[name] = []
            continue
        with open(path, "rb") as f:
            tree = ast.parse(f.read(), path)
        found = edges[name] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    target = _deepest_known(alias.name, modules)
                    if target is not None:
                        found.append((target, node.lineno))
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, is_package, node.level, node.module)
                for alias in node.names:
                    submodule = "%s.%s" % (base, alias.name)
                    target = submodule if submodule in modules else _deepest_known(base, modules)
                    if target is not None and target != name:
                        found.append((target, node.lineno))
    return edges


def _resolve(importer, is_package, level, module):
    """The absolute name `from <level dots><module> import ...` refers to, inside `importer`."""
    if level == 0:
        return module
    package = importer.split(".") if is_package else importer.split(".")[:-1]
    base = package[:len(package) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _deepest_known(dotted, modules):
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in modules:
            return ".".join(parts[:end])
    return None


def import_cycles(package_dir):
    """Each cycle once, as ["a (line 3)", "b (line 9)", "a"]: a imports b at line 3, b imports a at line 9."""
    edges = import_edges(package_modules(package_dir))
    cycles = []
    for component in _strongly_connected(edges):
        members = set(component)
        start = min(component)
        if len(component) == 1 and not any(target == start for target, _ in edges[start]):
            continue
        cycles.append(_cycle_through(start, edges, members))
    return cycles


def _strongly_connected(edges):
    """Tarjan's components of the import graph."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target, _ in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            components.append(component)

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return components


def _cycle_through(start, edges, members):
    """A shortest path from `start` back to itself inside one component, with the import lines."""
    paths = {start: []}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target, line in sorted(edges[node]):
                if target not in members:
                    continue
                step = paths[node] + [(node, line)]
                if target == start:
                    return ["%s (line %d)" % hop for hop in step] + [start]
                if target not in paths:
                    paths[target] = step
                    following.append(target)
        frontier = following
    raise AssertionError("no cycle through %s" % start)


class ImportCycleTests(unittest.TestCase):
    def test_the_shim_has_no_import_cycle(self):
        cycles = import_cycles(PACKAGE_DIR)
        self.assertEqual([], cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles))

    def test_every_module_is_seen(self):
        modules = package_modules(PACKAGE_DIR)
        for name in ("telemetry_shim", "telemetry_shim._control", "telemetry_shim._exceptions",
                     "telemetry_shim._exceptions.program_threads", "sitecustomize"):
            self.assertIn(name, modules)
        edges = import_edges(modules)
        # Function-level, relative and absolute imports all count.
        self.assertIn("telemetry_shim._control", [target for target, _ in edges["telemetry_shim"]])
        self.assertIn("telemetry_shim._tables", [target for target, _ in edges["telemetry_shim._exceptions.program_threads"]])
        self.assertIn("telemetry_shim._control", [target for target, _ in edges["sitecustomize"]])

    def test_cycles_through_function_level_and_relative_imports_are_found(self):
        files = {
            "pkg/__init__.py": "def start():\n    from . import a\n",
            "pkg/a.py": "import os\nfrom .sub.b import helper\n",
            "pkg/sub/__init__.py": "",
            "pkg/sub/b.py": "def helper():\n    from .. import a\n    return a\n",
            "pkg/c.py": "from . import a\nfrom pkg import CONSTANT\n",
            "pkg/tools/standalone.py": "import pkg.c\n",  # no __init__.py: a top-level module
        }
        with tempfile.TemporaryDirectory(prefix="tashim-cycles-") as tmp:
            for path, text in files.items():
                os.makedirs(os.path.dirname(os.path.join(tmp, path)), exist_ok=True)
                with open(os.path.join(tmp, path), "w") as f:
                    f.write(textwrap.dedent(text))
            package = os.path.join(tmp, "pkg")
            self.assertEqual({"pkg", "pkg.a", "pkg.c", "pkg.sub", "pkg.sub.b", "standalone"},
                             set(package_modules(package)))
            self.assertEqual([["pkg.a (line 2)", "pkg.sub.b (line 2)", "pkg.a"]], import_cycles(package))
            # `from pkg import CONSTANT` needs pkg's __init__: with it importing c, that is a cycle.
            with open(os.path.join(package, "__init__.py"), "a") as f:
                f.write("from . import c\n")
            self.assertIn(["pkg (line 3)", "pkg.c (line 2)", "pkg"], import_cycles(package))


if __name__ == "__main__":
    unittest.main()

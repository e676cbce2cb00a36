#!/usr/bin/env python3
"""The judge of transparency: CPython's own test suite, plain against under the shim.

For each Python (default: every Python >= 3.12 found the way scripts/common.sh finds them) the judge runs
`python -m test` once plain and once per variant through the real agent
(`telemetry-agent run --mode M -o DIR -- python -m test ...`), reads regrtest's JUnit file (results per
test case) and its progress lines (results per module: env changed, crashes, timeouts), and compares
every variant with plain. It prints, per module that differs, the test cases that passed plain and did
not pass under the variant, with the first and last lines of their tracebacks, and exits 1 when any
difference remains that is not in the by-design list (docs/transparency.md, read from there so that the
doc and the judge cannot disagree).

Usage (see --help and docs/transparency.md):
    tests/cpython/judge.py                          # the fixed core list, every Python, every mode
    tests/cpython/judge.py test_sys test_gc         # named modules
    tests/cpython/judge.py --all --modes exceptions # the whole suite
    tests/cpython/judge.py --variant exceptions:TELEMETRY_SHIM_NATIVE=off

Standard library only (Python 3.11 or later for the judge itself).
"""

import argparse
import dataclasses
import fnmatch
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
CORE_MODULES_FILE = HERE / "core_modules.txt"
BY_DESIGN_DOC = REPO_ROOT / "docs" / "transparency.md"
DEFAULT_AGENT_DLL = REPO_ROOT / "agent" / "src" / "TelemetryAgent" / "bin" / "Release" / "net10.0" / "telemetry-agent.dll"
COMMON_SH = REPO_ROOT / "scripts" / "common.sh"

MODES = ("full", "burst", "exceptions")
# A fixed seed for every run, so that plain and each variant see the same random choices.
DEFAULT_RANDSEED = 669
# Settings of the shim that the caller's environment must not leak into a run: each variant sets its own.
SHIM_ENV_PREFIXES = ("TELEMETRY_SHIM_", "TELEMETRY_AGENT_SOCKET")

# regrtest's module states (test/libregrtest/result.py), from the words of its progress lines.
PASSED, FAILED, ENV_CHANGED, UNCAUGHT_EXC, REFLEAK = "passed", "failed", "env changed", "uncaught exception", "reference leak"
SKIPPED, RESOURCE_DENIED, DID_NOT_RUN = "skipped", "resource denied", "ran no tests"
INTERRUPTED, WORKER_FAILED, WORKER_BUG, TIMEOUT = "interrupted", "crashed", "worker bug", "timed out"
MISSING = "no result"  # regrtest never reported the module (the run broke off)
UNATTRIBUTED = "unattributed"  # test cases the judge could not place in a module: compared, never rerun
_STATE_WORDS = (  # most specific first
    ("failed (env changed)", ENV_CHANGED),
    ("failed (uncaught exception)", UNCAUGHT_EXC),
    ("failed (reference leak)", REFLEAK),
    ("failed", FAILED),
    ("skipped (resource denied)", RESOURCE_DENIED),
    ("skipped", SKIPPED),
    ("passed", PASSED),
    ("ran no tests", DID_NOT_RUN),
    ("interrupted", INTERRUPTED),
    ("worker non-zero exit code", WORKER_FAILED),
    ("worker bug", WORKER_BUG),
    ("timed out", TIMEOUT),
)
# A module in one of these states plain "fails plain": it is not held against the shim.
FAILING_STATES = {FAILED, UNCAUGHT_EXC, REFLEAK, INTERRUPTED, WORKER_FAILED, WORKER_BUG, TIMEOUT, MISSING}
NOT_RUN_STATES = {SKIPPED, RESOURCE_DENIED, DID_NOT_RUN}
RAN_STATES = {PASSED, FAILED, ENV_CHANGED, REFLEAK}  # the states of modules whose test cases are in the JUnit file
QUIET_STATES = NOT_RUN_STATES | {PASSED}  # not echoed while a run goes on, unless --verbose

# Test case outcomes, from regrtest's JUnit elements.
OK, XFAIL, SKIP, FAIL, ERROR, XPASS, ABSENT = "passed", "expected failure", "skipped", "FAIL", "ERROR", "unexpected success", "did not run"
GOOD_OUTCOMES = {OK, XFAIL}

_TIMESTAMP = r"^(?:\d+:\d\d:\d\d )?(?:load avg: \S+ )?"
_PROGRESS = re.compile(_TIMESTAMP + r"\[\s*\d+/\d+(?:/\d+)?\] (\S+) (.*)$")
_RUNNING = re.compile(_TIMESTAMP + r"running \(\d+\):")
_RESULT_HEADER = re.compile(r"^== Tests result: ")


# ---------------------------------------------------------------------------------------------------------
# Variants


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    mode: str | None  # None: plain, no shim
    env: tuple[tuple[str, str], ...] = ()

    @property
    def plain(self):
        return self.mode is None


PLAIN = Variant("plain", None)


def parse_variant(spec):
    """`MODE` or `MODE:NAME=VALUE[,NAME=VALUE...]`, e.g. `exceptions:TELEMETRY_SHIM_NATIVE=off`."""
    mode, _, settings = spec.partition(":")
    mode = mode.strip()
    if mode not in MODES:
        raise ValueError("variant %r: the mode must be one of %s" % (spec, ", ".join(MODES)))
    env = []
    for item in filter(None, (part.strip() for part in settings.split(","))):
        name, equals, value = item.partition("=")
        if not equals or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError("variant %r: %r is not NAME=VALUE" % (spec, item))
        env.append((name, value))
    name = mode + "".join("+%s=%s" % pair for pair in env)
    return Variant(name, mode, tuple(env))


# ---------------------------------------------------------------------------------------------------------
# Results of one run of regrtest


@dataclasses.dataclass
class Case:
    id: str
    outcome: str
    detail: str = ""  # traceback or skip reason


@dataclasses.dataclass
class ModuleResult:
    name: str
    state: str
    status: str  # regrtest's own words, e.g. "failed (9 failures)"
    output: list[str] = dataclasses.field(default_factory=list)  # what regrtest printed for it
    cases: dict[str, Case] = dataclasses.field(default_factory=dict)
    test_seconds: float = 0.0  # the sum of its test cases' times

    @property
    def fails(self):
        return self.state in FAILING_STATES


@dataclasses.dataclass
class Run:
    python: str
    variant: Variant
    modules: dict[str, ModuleResult]
    wall_seconds: float = 0.0
    exit_code: int | None = None
    complete: bool = True  # regrtest printed its result
    problem: str = ""  # why the run is incomplete
    directory: str = ""


def case_key(test_id):
    """The test method a result belongs to: a subtest's id is its test's id and a description
    (`test.m.C.test_x (i=1)`), and regrtest names a test's element after its first failing subtest."""
    return test_id.split(" ", 1)[0]


def state_of(status):
    for words, state in _STATE_WORDS:
        if status.startswith(words):
            return state
    return FAILED  # unknown words: never taken for a pass


def parse_progress(text):
    """Module states and the output regrtest printed for each module, from its console log."""
    modules = {}
    current = None
    complete = False
    for line in text.splitlines():
        match = _PROGRESS.match(line)
        if match:
            name, status = match.group(1), match.group(2)
            status = status.split(" -- running", 1)[0].strip()
            current = modules[name] = ModuleResult(name, state_of(status), status)
            continue
        if _RESULT_HEADER.match(line):
            complete = True
            current = None
        elif current is not None and not _RUNNING.match(line):
            current.output.append(line)
    for module in modules.values():
        while module.output and not module.output[-1].strip():
            module.output.pop()
    return modules, complete


def parse_junit(path, modules):
    """Test cases per module from regrtest's --junit-xml file: {module: (seconds, {test id: Case})}.

    A testsuite element carries no module name. It goes to the module that most of its test ids belong
    to (`test.<module>.` or, for regrtest's --testdir, `<module>.`). A suite whose ids name no module
    (test_datetime runs `test.datetimetester`, test_idle runs `idlelib.idle_test`) goes by position:
    regrtest writes suites in the order of its progress lines (`modules`: {name: state}, in that order),
    so it belongs to the first module after the previous suite's module that ran tests and has no suite
    of its own, else to the previous suite's module."""
    if not os.path.exists(path):
        return {}
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as error:
        raise RuntimeError("%s: not a JUnit file (%s)" % (path, error)) from None
    order = list(modules)
    owners = []  # (owner or None, [(case, seconds)]) per suite, in the file's order
    for suite in root.iter("testsuite"):
        cases = [(_case_of(element), float(element.get("time") or 0)) for element in suite.iter("testcase")]
        if cases:
            votes = {}
            for case, _ in cases:
                name = _module_of(case.id, order)
                if name:
                    votes[name] = votes.get(name, 0) + 1
            owners.append([max(votes, key=votes.get) if votes else None, cases])
    claimed = {owner for owner, _ in owners if owner}
    previous = None
    for entry in owners:
        if entry[0] is None:
            start = order.index(previous) + 1 if previous in order else 0
            following = [name for name in order[start:] if name not in claimed and modules[name] in RAN_STATES]
            entry[0] = following[0] if following else previous or "(unattributed)"
            claimed.add(entry[0])
        previous = entry[0]
    by_module = {}
    for owner, cases in owners:
        seconds, found = by_module.setdefault(owner, [0.0, {}])
        by_module[owner][0] = seconds + sum(case_seconds for _, case_seconds in cases)
        for case, _ in cases:
            found[case.id] = _worse(found.get(case.id), case)
    return {name: (seconds, cases) for name, (seconds, cases) in by_module.items()}


def _module_of(test_id, module_names):
    """The module a test id names (`test.<module>.X.y`, `<module>.X.y`, or a module's own doctest id)."""
    best = None
    for name in module_names:
        for prefix in ("test." + name, name):
            if (test_id == prefix or test_id.startswith(prefix + ".")) and (best is None or len(name) > len(best)):
                best = name
    return best


def _case_of(element):
    name = element.get("name") or "?"
    for tag, outcome in (("error", ERROR), ("failure", FAIL)):
        child = element.find(tag)
        if child is not None:
            return Case(name, outcome, child.text or child.get("message") or "")
    child = element.find("skipped")
    if child is not None:
        return Case(name, SKIP, (child.text or "").strip())
    child = element.find("outcome")
    if child is not None and (child.text or "").strip() == "UNEXPECTED_SUCCESS":
        return Case(name, XPASS)
    if element.find("output") is not None:
        return Case(name, XFAIL)
    return Case(name, OK)


_RANK = {OK: 0, XFAIL: 0, SKIP: 1, ABSENT: 2, XPASS: 3, FAIL: 4, ERROR: 5}


def _worse(old, new):
    return new if old is None or _RANK[new.outcome] >= _RANK[old.outcome] else old


def read_run(python, variant, log_path, junit_path, wall_seconds=0.0, exit_code=None, directory=""):
    text = Path(log_path).read_text(errors="replace") if os.path.exists(log_path) else ""
    modules, complete = parse_progress(text)
    for name, (seconds, cases) in parse_junit(junit_path, {n: m.state for n, m in modules.items()}).items():
        module = modules.setdefault(name, ModuleResult(name, UNATTRIBUTED, "test cases of no known module"))
        module.test_seconds = seconds
        for case in cases.values():
            key = case_key(case.id)
            module.cases[key] = _worse(module.cases.get(key), case)
    run = Run(python, variant, modules, wall_seconds, exit_code, complete, directory=directory)
    if not complete:
        run.problem = "regrtest did not print its result (see %s)" % log_path
    return run


# ---------------------------------------------------------------------------------------------------------
# Tests that cannot pass by design


@dataclasses.dataclass(frozen=True)
class Exclusion:
    pattern: str  # a module (`test_monitoring`) or a test id: a glob, with {a,b} for alternatives
    modes: frozenset[str]
    reason: str
    not_run: bool = False  # listed under NOT_RUN_HEADING: left out of every run, plain too (regrtest -i)

    @property
    def globs(self):
        return expand_braces(self.pattern)

    def matches_module(self, module, mode):
        return mode in self.modes and any(fnmatch.fnmatchcase(module, glob) for glob in self.globs)

    def matches_case(self, module, case_id, mode):
        return mode in self.modes and any(fnmatch.fnmatchcase(module, glob)
                                          or fnmatch.fnmatchcase(case_key(case_id), glob) for glob in self.globs)

    def concerns(self, module):
        """Whether the entry can match anything of this module (for entries that matched nothing)."""
        return any(fnmatch.fnmatchcase(module, glob) or fnmatch.fnmatchcase(glob.split("*")[0], prefix % module + "*")
                   for glob in self.globs for prefix in ("test.%s.", "%s."))


def expand_braces(pattern):
    """`a.{B,C}.*` -> [`a.B.*`, `a.C.*`] (one level, several groups)."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if not match:
        return [pattern]
    head, tail = pattern[:match.start()], pattern[match.end():]
    return [expanded for choice in match.group(1).split(",")
            for expanded in expand_braces(head + choice.strip() + tail)]


BY_DESIGN_HEADING = "## Tests that cannot pass by design"
# The subsection of tests that crash the process under the shim and take their whole module with them: no
# run runs them, plain included, so that the rest of the module is judged.
NOT_RUN_HEADING = "### Not run"


def load_by_design(path=BY_DESIGN_DOC):
    """The tables under BY_DESIGN_HEADING in docs/transparency.md (one, or one per ### subsection): | test |
    modes | reason |. `test` is a module or a test id (globs allowed), `modes` is `all` or a comma-separated
    list."""
    text = Path(path).read_text()
    start = text.find(BY_DESIGN_HEADING)
    if start < 0:
        raise ValueError("%s: no %r section" % (path, BY_DESIGN_HEADING))
    section = text[start + len(BY_DESIGN_HEADING):]
    end = re.search(r"^#{1,2} ", section, re.MULTILINE)
    section = section[:end.start()] if end else section
    exclusions = []
    not_run = False
    for line in section.splitlines():
        row = line.strip()
        if row.startswith("### "):
            not_run = row.startswith(NOT_RUN_HEADING)
        if not row.startswith("|"):
            continue
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", row.strip("|"))]
        if cells[0] == "test" or all(set(cell) <= set("-: ") for cell in cells):
            continue  # a table's header and its separator
        if len(cells) != 3:
            raise ValueError("%s: by-design row %r: expected | test | modes | reason |" % (path, row))
        pattern, modes_text, reason = (cell.strip("`").replace("\\|", "|") for cell in cells)
        modes = set(MODES) if modes_text.lower() == "all" else {m.strip() for m in modes_text.split(",")}
        if not modes <= set(MODES) or not pattern or not reason:
            raise ValueError("%s: by-design row %r: modes must be 'all' or among %s, and test and reason "
                             "must be given" % (path, row, ", ".join(MODES)))
        if not_run and modes != set(MODES):
            raise ValueError("%s: by-design row %r: a test that is not run is not run in any mode" % (path, row))
        exclusions.append(Exclusion(pattern, frozenset(modes), reason, not_run))
    return exclusions


# ---------------------------------------------------------------------------------------------------------
# Comparing a variant with plain


@dataclasses.dataclass
class CaseDiff:
    id: str
    plain: str
    outcome: str
    detail: str = ""
    exclusion: "Exclusion | None" = None  # the by-design entry, when excluded


@dataclasses.dataclass
class ModuleDiff:
    module: str
    plain_state: str
    plain_status: str
    state: str
    status: str
    kind: str  # IDENTICAL, DIFFERS, FAILS_PLAIN, EXCLUDED, NOT_RUN or NOT_REPRODUCED
    held: list[CaseDiff] = dataclasses.field(default_factory=list)
    excluded: list[CaseDiff] = dataclasses.field(default_factory=list)
    other: list[CaseDiff] = dataclasses.field(default_factory=list)  # changes not held: plain failures, fixes
    module_level: bool = False  # the module's state itself regressed (env changed, crash, timeout...)
    output: list[str] = dataclasses.field(default_factory=list)
    exclusion: "Exclusion | None" = None  # the by-design entry when the whole module is excluded
    not_reproduced: bool = False


IDENTICAL, DIFFERS, FAILS_PLAIN, EXCLUDED, NOT_RUN, NOT_REPRODUCED = (
    "identical", "differs", "fails plain", "excluded by design", "not run", "did not reproduce")
KIND_COUNTED = {DIFFERS: "differ", FAILS_PLAIN: "fail plain", NOT_RUN: "skipped plain",
                EXCLUDED: "only by-design differences", NOT_REPRODUCED: "differed once, not again"}


def compare_module(name, plain, variant, mode, exclusions):
    """How one module's results under a variant differ from its plain results."""
    if plain is None:
        plain = ModuleResult(name, MISSING, "not run plain")
    if variant is None:
        variant = ModuleResult(name, MISSING, "no result")
    diff = ModuleDiff(name, plain.state, plain.status, variant.state, variant.status, IDENTICAL,
                      output=variant.output)
    whole = next((e for e in exclusions if e.matches_module(name, mode)), None)
    for key in sorted(set(plain.cases) | set(variant.cases)):
        before = plain.cases.get(key)
        after = variant.cases.get(key)
        before_outcome = before.outcome if before else ABSENT
        after_outcome = after.outcome if after else ABSENT
        if before_outcome == after_outcome:
            continue
        change = CaseDiff(after.id if after else key, before_outcome, after_outcome, after.detail if after else "")
        if before_outcome not in GOOD_OUTCOMES or plain.fails:
            diff.other.append(change)  # not passing plain, or its module fails plain
            continue
        if after_outcome in GOOD_OUTCOMES:
            diff.other.append(change)
            continue
        exclusion = whole or next((e for e in exclusions if e.matches_case(name, key, mode)), None)
        if exclusion:
            change.exclusion = exclusion
            diff.excluded.append(change)
        else:
            diff.held.append(change)
    # The module's own state: passed (or env changed) plain, worse under the variant.
    if not plain.fails and variant.state != plain.state and not (
            variant.state == PASSED and plain.state == ENV_CHANGED):
        only_excluded_failures = (variant.state == FAILED and diff.excluded and not diff.held)
        if not only_excluded_failures and not (variant.state in NOT_RUN_STATES and plain.state in NOT_RUN_STATES):
            diff.module_level = True
    if plain.fails:
        diff.kind = FAILS_PLAIN
    elif whole and (diff.held or diff.module_level or diff.excluded):
        diff.kind, diff.exclusion = EXCLUDED, whole
        diff.excluded.extend(dataclasses.replace(c, exclusion=whole) for c in diff.held)
        diff.held, diff.module_level = [], False
    elif diff.held or diff.module_level:
        diff.kind = DIFFERS
    elif diff.excluded:
        diff.kind = EXCLUDED
    elif plain.state in NOT_RUN_STATES:
        diff.kind = NOT_RUN
    return diff


def merge_plain(runs):
    """Plain results over several runs of the same modules: a case passed plain if it passed in any run,
    a module passed plain if it passed in any run (timing-sensitive tests must not be held against the shim
    because plain was unlucky once)."""
    merged = {}
    for run in runs:
        for name, module in run.modules.items():
            best = merged.get(name)
            if best is None:
                merged[name] = dataclasses.replace(module, cases=dict(module.cases))
                continue
            if best.fails and not module.fails:
                best.state, best.status, best.output = module.state, module.status, module.output
            for key, case in module.cases.items():
                old = best.cases.get(key)
                if old is None or _RANK[case.outcome] < _RANK[old.outcome]:
                    best.cases[key] = case
    return merged


def compare(plain_modules, variant_runs, mode, exclusions):
    """Module diffs of a variant against plain. `variant_runs` are the variant's first run and its reruns
    (of the modules that differed); a difference is held only when it shows in every run that ran the
    module, so one unlucky run under load is reported as not reproduced rather than failing the judge."""
    first = variant_runs[0]
    names = sorted(set(plain_modules) | set(first.modules))
    diffs = {}
    for name in names:
        diff = compare_module(name, plain_modules.get(name), first.modules.get(name), mode, exclusions)
        for rerun in variant_runs[1:]:
            if diff.kind != DIFFERS or name not in rerun.modules:
                continue
            again = compare_module(name, plain_modules.get(name), rerun.modules[name], mode, exclusions)
            still = {c.id for c in again.held} | {case_key(c.id) for c in again.held}
            kept = [c for c in diff.held if c.id in still or case_key(c.id) in still]
            diff.other.extend(c for c in diff.held if c not in kept)
            diff.held = kept
            diff.module_level = diff.module_level and again.module_level
            if not diff.held and not diff.module_level:
                diff.kind, diff.not_reproduced = NOT_REPRODUCED, True
        diffs[name] = diff
    return diffs


# ---------------------------------------------------------------------------------------------------------
# Running regrtest


def find_pythons():
    """Every Python >= 3.12, by scripts/common.sh's all_pythons (one place decides which Pythons count)."""
    result = subprocess.run(["bash", "-c", 'source "$1"; all_pythons', "_", str(COMMON_SH)],
                            capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError("scripts/common.sh all_pythons failed: %s" % result.stderr.strip())
    return [line for line in result.stdout.splitlines() if line.strip()]


def python_info(python):
    """The version and the test package's directory of an interpreter."""
    code = "import os, sys, test; print('%d.%d.%d' % sys.version_info[:3]); print(os.path.dirname(test.__file__))"
    result = subprocess.run([python, "-I", "-c", code], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError("%s has no test package: %s" % (python, result.stderr.strip()[-500:]))
    version, test_dir = result.stdout.split("\n")[:2]
    return version, test_dir


def module_exists(test_dir, name):
    path = os.path.join(test_dir, *name.split("."))
    return os.path.isfile(path + ".py") or os.path.isdir(path)


def read_module_list(path):
    names = []
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.extend(line.split())
    return names


def run_environment(variant):
    # Nothing else is added, not even PYTHONUNBUFFERED for a livelier log: test_cmd_line checks the default
    # buffering of the processes it starts, which inherit this environment.
    env = {k: v for k, v in os.environ.items() if not k.startswith(SHIM_ENV_PREFIXES)}
    env.update(variant.env)
    return env


def regrtest_command(python, variant, modules, options, junit_path, agent_output):
    command = [python, "-m", "test", "-j%d" % options.jobs, "--timeout", str(options.timeout),
               "--randseed", str(options.randseed), "--junit-xml", str(junit_path)]
    if options.testdir:
        command += ["--testdir", str(options.testdir)]
    if options.use:
        command += ["-u", options.use]
    for glob in options.not_run:
        command += ["-i", glob]
    command += modules
    if variant.plain:
        return command
    agent = ["dotnet", str(options.agent_dll), "run", "--mode", variant.mode, "-o", str(agent_output)]
    if options.shim_path:
        agent += ["--shim-path", str(options.shim_path)]
    return agent + ["--"] + command


def run_regrtest(python, version, variant, modules, options, directory, echo):
    """One `python -m test` run (through the agent unless plain), its log and JUnit file in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / "output.log"
    junit_path = directory / "junit.xml"
    for stale in (log_path, junit_path):
        if stale.exists():
            stale.unlink()
    command = regrtest_command(python, variant, modules, options, junit_path, directory / "agent")
    (directory / "command.txt").write_text(" ".join(command) + "\n")
    agent_output = directory / "agent"
    if agent_output.exists():
        shutil.rmtree(agent_output)
    count = len(modules) if modules else 500
    deadline = options.timeout * (count // max(options.jobs, 1) + 2) + 600
    started = time.monotonic()
    exit_code = None
    problem = ""
    with open(log_path, "w", buffering=1) as log:  # line by line, as regrtest flushes its output
        process = subprocess.Popen(command, cwd=directory, env=run_environment(variant), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1,
                                   start_new_session=True, preexec_fn=_default_sigint)
        try:
            for line in _lines_until(process, started + deadline):
                log.write(line)
                match = _PROGRESS.match(line.rstrip("\n"))
                if match and (options.verbose or state_of(match.group(2)) not in QUIET_STATES):
                    echo("  [%s %s] %s %s" % (version, variant.name, match.group(1), match.group(2).split(" -- ")[0]))
            exit_code = process.wait(timeout=max(1, started + deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            problem = "stopped after %d s (the run's deadline)" % deadline
            _stop(process)
        except KeyboardInterrupt:
            _stop(process)
            raise
    wall = time.monotonic() - started
    if not options.keep_agent_output:
        _keep_only(agent_output, "summary.json")
    run = read_run(version, variant, log_path, junit_path, wall, exit_code, str(directory))
    if problem:
        run.complete, run.problem = False, problem
    elif not run.complete and exit_code is not None:
        tail = Path(log_path).read_text(errors="replace").strip().splitlines()[-5:]
        run.problem = "exit code %d, regrtest did not print its result: %s" % (exit_code, " / ".join(tail))
    return run


def _default_sigint():
    """In the run's process, before exec: SIGINT back to its default. A judge started as a background job
    inherits SIGINT ignored (the shell's rule for asynchronous commands), Python then installs no
    KeyboardInterrupt handler: regrtest's signal tests (test_generators, test_signal, test_asyncio's runners)
    then fail plain and under the shim alike, and judge nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _keep_only(directory, name):
    """The agent's flame graphs and folded stacks of a whole test suite run into gigabytes; its summary
    (processes, events, drops, how each connection ended) is what helps to read a difference."""
    if directory.is_dir():
        for entry in directory.iterdir():
            if entry.name != name:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def _lines_until(process, deadline):
    import selectors
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise subprocess.TimeoutExpired(process.args, deadline)
            if not selector.select(timeout=min(remaining, 5)):
                continue
            line = process.stdout.readline()
            if not line:
                return
            yield line


def _stop(process):
    """Ctrl-C to the run's process group (the agent hands it to regrtest, which stops its workers), then
    SIGKILL if it does not end."""
    for sig, wait in ((signal.SIGINT, 60), (signal.SIGKILL, 30)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


# ---------------------------------------------------------------------------------------------------------
# Reports


def plural(count, one, many):
    return "%d %s" % (count, one if count == 1 else many)


def format_seconds(seconds):
    minutes, seconds = divmod(int(round(seconds)), 60)
    return "%d min %02d s" % (minutes, seconds) if minutes else "%d s" % seconds


_UNITTEST_FRAME = re.compile(r'^\s*File ".*[/\\]unittest[/\\][^"]*", line \d+')


def condensed_traceback(text, head=4, tail=6):
    """The lines of a traceback that say something: the unittest runner's own frames and caret lines
    dropped, then the first `head` and the last `tail` lines."""
    lines = []
    skip_code = False
    for line in text.rstrip().splitlines():
        if _UNITTEST_FRAME.match(line):
            skip_code = True
            continue
        if skip_code and line.startswith("    "):
            continue
        skip_code = False
        if not line.strip() or set(line.strip()) <= set("^~") or line.startswith("Traceback (most recent"):
            continue
        lines.append(line)
    if len(lines) > head + tail + 1:
        # Exception lines (not indented) in between stay: a chain's first error is often the cause.
        middle = [line for line in lines[head:-tail] if not line.startswith(" ")]
        lines = lines[:head] + ["  ..."] + middle + (["  ..."] if middle else []) + lines[-tail:]
    return lines


def describe_module(diff, plain_word="plain"):
    return "%s: %s -> %s" % (diff.module, "%s %s" % (diff.plain_status, plain_word), diff.status)


def text_report(results, exclusions, options):
    """results: list of (python, version, plain_runs, {variant name: (variant, runs, diffs)})."""
    out = []
    held_total = 0
    for python, version, plain_runs, by_variant in results:
        plain = plain_runs[0]
        held_total += 0 if plain.complete else 1
        out.append("")
        out.append("Python %s (%s)" % (version, python))
        cases = sum(len(m.cases) for m in plain.modules.values())
        out.append("  %-28s %4d modules, %6d test cases, %s%s" % (
            "plain", len(plain.modules), cases, format_seconds(plain.wall_seconds),
            "" if plain.complete else "  INCOMPLETE: " + plain.problem))
        for name, (variant, runs, diffs) in by_variant.items():
            counts = {}
            for diff in diffs.values():
                counts[diff.kind] = counts.get(diff.kind, 0) + 1
            held = counts.get(DIFFERS, 0) + (0 if runs[0].complete else 1)
            held_total += held
            parts = ["%d %s" % (counts[k], KIND_COUNTED.get(k, k)) for k in (IDENTICAL, DIFFERS, EXCLUDED, NOT_REPRODUCED, FAILS_PLAIN, NOT_RUN)
                     if counts.get(k)]
            rerun_seconds = sum(r.wall_seconds for r in runs[1:])
            out.append("  %-28s %4d modules: %s; %s%s%s" % (
                name, len(diffs), ", ".join(parts), format_seconds(runs[0].wall_seconds),
                " (+%s reruns)" % format_seconds(rerun_seconds) if runs[1:] else "",
                "" if runs[0].complete else "  INCOMPLETE: " + runs[0].problem))
    for python, version, plain_runs, by_variant in results:
        fails_plain = [m for m in merge_plain(plain_runs).values() if m.fails]
        if fails_plain:
            out.append("")
            out.append("Python %s: %s on this machine (not held against the shim):" % (
                version, plural(len(fails_plain), "module fails plain", "modules fail plain")))
            for module in fails_plain:
                out.append("  %s: %s" % (module.name, module.status))
        for name, (variant, runs, diffs) in by_variant.items():
            interesting = [d for d in diffs.values() if d.kind in (DIFFERS, NOT_REPRODUCED)]
            excluded = [d for d in diffs.values() if d.excluded]
            if not interesting and not excluded:
                continue
            out.append("")
            differing = sum(d.kind == DIFFERS for d in diffs.values())
            out.append("== Python %s, %s: %s from plain" % (version, name, plural(differing, "module differs",
                                                                                     "modules differ")))
            for diff in interesting:
                out.append("")
                label = "did not reproduce in a rerun (not held)" if diff.not_reproduced else "DIFFERS"
                out.append("%s  [%s]" % (describe_module(diff), label))
                if diff.module_level and diff.output:
                    out.extend("    | " + line for line in diff.output[:options.lines])
                for case in diff.held + ([] if not diff.not_reproduced else [c for c in diff.other
                                                                           if c.outcome not in GOOD_OUTCOMES]):
                    if case.outcome == ABSENT:
                        continue
                    out.append("  %s: %s plain, %s" % (case.id, case.plain, case.outcome))
                    out.extend("      " + line for line in condensed_traceback(case.detail)[:options.lines])
                absent = sum(c.outcome == ABSENT for c in diff.held)
                if absent:
                    out.append("  %s that passed plain did not run" % plural(absent, "test case", "test cases"))
            for diff in excluded:
                out.append("  %s: %s excluded by design (%s)" % (
                    diff.module, plural(len(diff.excluded), "test case", "test cases"),
                    (diff.exclusion or diff.excluded[0].exclusion).reason))
    run_modules = {m for _, _, _, bv in results for _, _, diffs in bv.values() for m in diffs}
    used = {id(d.exclusion) for _, _, _, bv in results for _, _, diffs in bv.values() for d in diffs.values()}
    used |= {id(c.exclusion) for _, _, _, bv in results for _, _, diffs in bv.values() for d in diffs.values()
             for c in d.excluded}
    unused = [e for e in exclusions
              if id(e) not in used and not e.not_run and any(e.concerns(m) for m in run_modules)]
    if unused and results:
        out.append("")
        out.append("By-design entries that matched no difference in this run (remove them if they pass now):")
        out.extend("  %s (%s)" % (e.pattern, ", ".join(sorted(e.modes))) for e in unused)
    out.append("")
    out.append("RESULT: %s" % ("%d differences not excluded by design" % held_total if held_total
                               else "no difference from plain (apart from the by-design list)"))
    return "\n".join(out) + "\n", held_total


def json_report(results, options, held_total):
    def run_json(run):
        return {"wall_seconds": round(run.wall_seconds, 1), "exit_code": run.exit_code, "complete": run.complete,
                "problem": run.problem, "directory": run.directory,
                "modules": {name: {"state": m.state, "status": m.status, "test_cases": len(m.cases),
                                   "test_seconds": round(m.test_seconds, 2)}
                            for name, m in sorted(run.modules.items())}}

    def by_design(exclusion):
        return {"pattern": exclusion.pattern, "reason": exclusion.reason} if exclusion else None

    def case_json(case):
        detail = condensed_traceback(case.detail) if case.outcome in (FAIL, ERROR) else case.detail
        return {"id": case.id, "plain": case.plain, "outcome": case.outcome, "detail": detail,
                "by_design": by_design(case.exclusion)}

    def diff_json(diff):
        value = {"kind": diff.kind, "plain_state": diff.plain_state, "plain_status": diff.plain_status,
                 "state": diff.state, "status": diff.status, "module_level": diff.module_level,
                 "not_reproduced": diff.not_reproduced, "by_design": by_design(diff.exclusion),
                 "held": [case_json(c) for c in diff.held], "excluded": [case_json(c) for c in diff.excluded],
                 "other": [case_json(c) for c in diff.other]}
        if diff.module_level:
            value["output"] = diff.output[:options.lines]
        return value

    return {
        "held_differences": held_total,
        "options": {"all": options.all, "jobs": options.jobs, "timeout": options.timeout,
                    "randseed": options.randseed, "use": options.use, "reruns": options.reruns},
        "pythons": [{
            "python": python, "version": version,
            "plain": [run_json(run) for run in plain_runs],
            "variants": {name: {"mode": variant.mode, "env": dict(variant.env),
                                "runs": [run_json(run) for run in runs],
                                "modules": {n: diff_json(d) for n, d in sorted(diffs.items()) if d.kind != IDENTICAL},
                                "identical": sorted(n for n, d in diffs.items() if d.kind == IDENTICAL)}
                         for name, (variant, runs, diffs) in by_variant.items()},
        } for python, version, plain_runs, by_variant in results],
    }


# ---------------------------------------------------------------------------------------------------------
# Main


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Run CPython's test suite plain and under each mode of the shim (through the real agent) "
                    "and print what differs. Exit status 1 when a difference remains that is not excluded by "
                    "design (docs/transparency.md), 2 on a usage or setup error.")
    parser.add_argument("modules", nargs="*", help="test modules (default: the fixed core list, %s)" %
                        CORE_MODULES_FILE.relative_to(REPO_ROOT))
    parser.add_argument("--all", action="store_true", help="the whole suite (regrtest's own selection)")
    parser.add_argument("--modules-file", type=Path, default=CORE_MODULES_FILE,
                        help="the module list when none are named (default: %(default)s)")
    parser.add_argument("--python", action="append", dest="pythons", metavar="PATH",
                        help="a Python >= 3.12 to judge (repeatable; default: every one found, as scripts/common.sh finds them)")
    parser.add_argument("--modes", default=",".join(MODES),
                        help="the shim's modes to run, comma-separated (default: %(default)s; '' for none)")
    parser.add_argument("--variant", action="append", default=[], metavar="MODE:NAME=VALUE[,...]",
                        help="one more variant: a mode with extra environment variables, "
                             "e.g. exceptions:TELEMETRY_SHIM_NATIVE=off (repeatable)")
    parser.add_argument("-j", "--jobs", type=int, default=2, help="regrtest's worker processes (default: %(default)s)")
    parser.add_argument("--timeout", type=int, default=900,
                        help="seconds one test module may take before regrtest stops it (default: %(default)s)")
    parser.add_argument("--randseed", type=int, default=DEFAULT_RANDSEED,
                        help="regrtest's random seed, the same for every run (default: %(default)s)")
    parser.add_argument("--testdir", type=Path,
                        help="run the test modules of this folder instead of the Python's own suite (regrtest's --testdir)")
    parser.add_argument("-u", "--use", default="", help="regrtest's resources (-u), e.g. 'all,-network,-cpu' (default: none)")
    parser.add_argument("--reruns", type=int, default=1,
                        help="times a differing module is run again (alone with the others that differ) before "
                             "its difference is held; modules failing plain are rerun plain as often (default: %(default)s)")
    parser.add_argument("-o", "--output", type=Path,
                        help="folder for the runs' logs, JUnit files, agent outputs, summary.txt and summary.json "
                             "(default: a new folder under the system's temporary directory)")
    parser.add_argument("--agent-dll", type=Path,
                        default=Path(os.environ.get("TELEMETRY_AGENT_DLL") or DEFAULT_AGENT_DLL),
                        help="the built agent (default: $TELEMETRY_AGENT_DLL, else the Release build in the repository)")
    parser.add_argument("--shim-path", type=Path,
                        help="the folder holding the telemetry_shim package to judge (the agent's --shim-path; "
                             "default: the copy next to the agent, as users run it)")
    parser.add_argument("--keep-agent-output", action="store_true",
                        help="keep every output of the agent (flame graphs, folded stacks: gigabytes for a large run); "
                             "by default only its summary.json is kept")
    parser.add_argument("--by-design", type=Path, default=BY_DESIGN_DOC,
                        help="the document whose table lists the tests that cannot pass by design (default: %(default)s)")
    parser.add_argument("--lines", type=int, default=12, help="lines shown of each traceback or module output (default: %(default)s)")
    parser.add_argument("-v", "--verbose", action="store_true", help="echo every module's progress line, not only those that did not pass")
    options = parser.parse_args(argv)
    if options.all and options.modules:
        parser.error("--all and named modules exclude each other")
    if options.testdir:
        options.testdir = options.testdir.resolve()
    if options.shim_path:
        options.shim_path = options.shim_path.resolve()
    try:
        options.variants = [parse_variant(m) for m in filter(None, (x.strip() for x in options.modes.split(",")))]
        options.variants += [parse_variant(spec) for spec in options.variant]
    except ValueError as error:
        parser.error(str(error))
    names = [v.name for v in options.variants]
    if len(set(names)) != len(names):
        parser.error("a variant is given twice: %s" % ", ".join(names))
    if options.jobs < 1 or options.timeout < 1 or options.reruns < 0:
        parser.error("--jobs and --timeout must be positive, --reruns not negative")
    return options


def main(argv=None):
    options = parse_args(sys.argv[1:] if argv is None else argv)
    echo = lambda text: print(text, flush=True)  # noqa: E731
    try:
        exclusions = load_by_design(options.by_design)
        options.not_run = [glob for e in exclusions if e.not_run for glob in e.globs]
        if any(not v.plain for v in options.variants):
            if not options.agent_dll.is_file():
                raise RuntimeError("no agent at %s: build it first (dotnet build TelemetryAgent.sln -c Release) "
                                   "or give --agent-dll" % options.agent_dll)
            if shutil.which("dotnet") is None:
                raise RuntimeError("dotnet is not on PATH (the agent needs the .NET 10 runtime)")
        pythons = options.pythons or find_pythons()
        if not pythons:
            raise RuntimeError("no Python 3.12 or later found: give --python or set TELEMETRY_PYTHON")
        listed = [] if options.all else (options.modules or read_module_list(options.modules_file))
    except (OSError, ValueError, RuntimeError, subprocess.SubprocessError) as error:
        print("judge: %s" % error, file=sys.stderr)
        return 2

    output = options.output.resolve() if options.output else Path(tempfile.mkdtemp(prefix="cpython-judge-"))
    output.mkdir(parents=True, exist_ok=True)
    results = []
    labels = set()
    for python in pythons:
        try:
            version, test_dir = python_info(python)
            test_dir = str(options.testdir) if options.testdir else test_dir
        except (OSError, RuntimeError, subprocess.SubprocessError) as error:
            print("judge: %s" % error, file=sys.stderr)
            return 2
        label = version
        while label in labels:
            label += "'"
        labels.add(label)
        modules = [m for m in listed if module_exists(test_dir, m)]
        for missing in (m for m in listed if m not in modules):
            echo("Python %s has no %s: left out" % (version, missing))
        where = output / ("python" + label)

        echo("Python %s (%s): plain, %s" % (version, python, "the whole suite" if options.all else plural(len(modules), "module", "modules")))
        plain_runs = [run_regrtest(python, label, PLAIN, modules, options, where / "plain", echo)]
        echo("  plain: %s" % format_seconds(plain_runs[0].wall_seconds))
        for attempt in range(1, options.reruns + 1):
            failing = sorted(n for n, m in merge_plain(plain_runs).items() if m.fails)
            if not failing:
                break
            echo("  plain again for the modules that failed: %s" % " ".join(failing))
            plain_runs.append(run_regrtest(python, label, PLAIN, failing, options, where / ("plain-rerun%d" % attempt), echo))
        plain_modules = merge_plain(plain_runs)

        by_variant = {}
        for variant in options.variants:
            echo("Python %s: %s" % (version, variant.name))
            folder = re.sub(r"[^\w.=+-]", "_", variant.name)
            runs = [run_regrtest(python, label, variant, modules, options, where / folder, echo)]
            echo("  %s: %s" % (variant.name, format_seconds(runs[0].wall_seconds)))
            diffs = compare(plain_modules, runs, variant.mode, exclusions)
            for attempt in range(1, options.reruns + 1):
                differing = sorted(n for n, d in diffs.items() if d.kind == DIFFERS and d.state != UNATTRIBUTED)
                if not differing:
                    break
                echo("  %s again for the modules that differ: %s" % (variant.name, " ".join(differing)))
                runs.append(run_regrtest(python, label, variant, differing, options,
                                         where / ("%s-rerun%d" % (folder, attempt)), echo))
                diffs = compare(plain_modules, runs, variant.mode, exclusions)
            by_variant[variant.name] = (variant, runs, diffs)
        results.append((python, label, plain_runs, by_variant))

    text, held = text_report(results, exclusions, options)
    (output / "summary.txt").write_text(text)
    (output / "summary.json").write_text(json.dumps(json_report(results, options, held), indent=1) + "\n")
    print(text, end="")
    print("Logs, JUnit files and summary.json: %s" % output)
    return 1 if held else 0


if __name__ == "__main__":
    sys.exit(main())

"""Tests of the judge (tests/cpython/judge.py): its reading of regrtest's output and JUnit files, its
comparison of a variant with plain, the by-design list, and one real run through the agent.

Run: python3 -m unittest discover -s tests/cpython
"""

import os
import subprocess
import sys
import tempfile
import textwrap
import unittest
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import judge  # noqa: E402

TRACEBACK = """Traceback (most recent call last):
  File "/py/lib/python3.12/unittest/case.py", line 58, in testPartExecutor
    yield
  File "/py/lib/python3.12/unittest/case.py", line 636, in run
    self._callTestMethod(testMethod)
  File "/py/lib/python3.12/test/test_sample.py", line 10, in test_b
    self.assertIsNone(obj)
    ^^^^^^^^^^^^^^^^^^^^^^
AssertionError: <MyObj object at 0x7f> is not None
"""


def junit_file(directory, name, suites):
    """A JUnit file in the shape regrtest writes: suites is a list of [(test id, outcome, detail)]."""
    root = ET.Element("testsuites")
    for cases in suites:
        suite = ET.SubElement(root, "testsuite", start="2024-01-01 00:00:00")
        for test_id, outcome, detail in cases:
            case = ET.SubElement(suite, "testcase", name=test_id, status="run", result="completed", time="0.5")
            if outcome in (judge.FAIL, judge.ERROR):
                ET.SubElement(case, "system-out").text = ""
                tag = "failure" if outcome == judge.FAIL else "error"
                child = ET.SubElement(case, tag, type="AssertionError", message="AssertionError: x")
                child.text = detail
            elif outcome == judge.SKIP:
                ET.SubElement(case, "skipped").text = detail
            elif outcome == judge.XFAIL:
                ET.SubElement(case, "output", type="AssertionError", message="x").text = detail
            elif outcome == judge.XPASS:
                ET.SubElement(case, "outcome").text = "UNEXPECTED_SUCCESS"
    path = Path(directory) / name
    ET.ElementTree(root).write(path)
    return path


def log_file(directory, name, lines):
    path = Path(directory) / name
    path.write_text("\n".join(["Using random seed: 669", "0:00:00 load avg: 1.00 Run 2 tests in parallel using 2 worker processes"]
                              + lines + ["", "== Tests result: SUCCESS ==", "", "Result: SUCCESS"]) + "\n")
    return path


class Sample:
    """A plain run and runs of a variant, built from progress lines and test cases."""

    def __init__(self, test):
        self.directory = tempfile.mkdtemp()
        test.addCleanup(lambda: subprocess.run(["rm", "-rf", self.directory], check=True))
        self.count = 0

    def run(self, statuses, cases, variant=judge.PLAIN):
        """statuses: {module: regrtest's words}; cases: [(test id, outcome, detail)], grouped into one suite
        per module by their prefix."""
        self.count += 1
        lines = ["0:00:01 load avg: 1.00 [%2d/%d] %s %s" % (i + 1, len(statuses), name, status)
                 for i, (name, status) in enumerate(statuses.items())]
        suites = {}
        for test_id, outcome, detail in cases:
            suites.setdefault(test_id.split(".")[1], []).append((test_id, outcome, detail))
        log = log_file(self.directory, "log%d" % self.count, lines)
        xml = junit_file(self.directory, "junit%d.xml" % self.count, list(suites.values()))
        return judge.read_run("3.12", variant, log, xml)


FULL = judge.parse_variant("full")
EXCEPTIONS = judge.parse_variant("exceptions")


BASELINE = {
    "test.test_sample.C.test_a": (judge.OK, ""),
    "test.test_sample.C.test_b": (judge.OK, ""),
    "test.test_sample.C.test_c": (judge.SKIP, "needs a network"),
    "test.test_other.D.test_d": (judge.OK, ""),
}


class ComparisonTests(unittest.TestCase):
    def setUp(self):
        self.sample = Sample(self)
        self.plain = self.sample.run({"test_sample": "passed", "test_other": "passed"},
                                     [(test_id, *result) for test_id, result in BASELINE.items()])

    def variant(self, sample_status, changes=None, renamed=None):
        """A full-mode run of the baseline's cases with some outcomes changed ({test id: (outcome, detail)})
        and ids renamed ({test id: new id}); test_other passes."""
        cases = [((renamed or {}).get(test_id, test_id), *(changes or {}).get(test_id, result))
                 for test_id, result in BASELINE.items()]
        return self.sample.run({"test_sample": sample_status, "test_other": "passed"}, cases, FULL)

    def compare(self, variant_runs, exclusions=(), mode="full", plain_runs=None):
        plain = judge.merge_plain(plain_runs or [self.plain])
        return judge.compare(plain, variant_runs, mode, list(exclusions))

    def test_a_difference_is_found_with_its_traceback(self):
        variant = self.variant("failed (1 failure)", {"test.test_sample.C.test_b": (judge.FAIL, TRACEBACK)})
        diffs = self.compare([variant])
        self.assertEqual(diffs["test_other"].kind, judge.IDENTICAL)
        diff = diffs["test_sample"]
        self.assertEqual(diff.kind, judge.DIFFERS)
        self.assertEqual([(c.id, c.plain, c.outcome) for c in diff.held],
                         [("test.test_sample.C.test_b", judge.OK, judge.FAIL)])
        lines = judge.condensed_traceback(diff.held[0].detail)
        self.assertEqual(lines, ['  File "/py/lib/python3.12/test/test_sample.py", line 10, in test_b',
                                 "    self.assertIsNone(obj)",
                                 "AssertionError: <MyObj object at 0x7f> is not None"])
        report, held = judge.text_report([("py", "3.12", [self.plain], {"full": (FULL, [variant], diffs)})],
                                         [], Options())
        self.assertEqual(held, 1)
        self.assertIn("test.test_sample.C.test_b: passed plain, FAIL", report)
        self.assertIn("AssertionError: <MyObj object at 0x7f> is not None", report)

    def test_a_module_that_fails_plain_is_not_held_against_the_shim(self):
        plain = self.sample.run({"test_sample": "failed (1 failure)"}, [
            ("test.test_sample.C.test_a", judge.FAIL, TRACEBACK),
            ("test.test_sample.C.test_b", judge.OK, ""),
        ])
        variant = self.sample.run({"test_sample": "failed (2 failures)"}, [
            ("test.test_sample.C.test_a", judge.FAIL, TRACEBACK),
            ("test.test_sample.C.test_b", judge.FAIL, TRACEBACK),
        ], FULL)
        diff = self.compare([variant], plain_runs=[plain])["test_sample"]
        self.assertEqual(diff.kind, judge.FAILS_PLAIN)
        self.assertEqual(diff.held, [])
        self.assertEqual([c.id for c in diff.other], ["test.test_sample.C.test_b"])  # shown, not held
        report, held = judge.text_report([("py", "3.12", [plain], {"full": (FULL, [variant], {"test_sample": diff})})],
                                         [], Options())
        self.assertEqual(held, 0)
        self.assertIn("1 module fails plain on this machine", report)

    def test_plain_that_passes_on_its_rerun_is_the_baseline(self):
        unlucky = self.sample.run({"test_sample": "failed (1 failure)"}, [
            ("test.test_sample.C.test_a", judge.OK, ""),
            ("test.test_sample.C.test_b", judge.FAIL, TRACEBACK),
        ])
        again = self.sample.run({"test_sample": "passed"}, [
            ("test.test_sample.C.test_a", judge.OK, ""),
            ("test.test_sample.C.test_b", judge.OK, ""),
        ])
        variant = self.sample.run({"test_sample": "failed (1 failure)"}, [
            ("test.test_sample.C.test_a", judge.OK, ""),
            ("test.test_sample.C.test_b", judge.FAIL, TRACEBACK),
        ], FULL)
        diff = self.compare([variant], plain_runs=[unlucky, again])["test_sample"]
        self.assertEqual(diff.kind, judge.DIFFERS)
        self.assertEqual([c.id for c in diff.held], ["test.test_sample.C.test_b"])

    def test_an_excluded_test_is_not_held_in_its_modes_only(self):
        variant = self.variant("failed (1 failure)", {"test.test_sample.C.test_b": (judge.FAIL, TRACEBACK)})
        exclusion = judge.Exclusion("test.test_sample.{X,C}.test_b", frozenset({"full", "burst"}), "it counts tool ids")
        diff = self.compare([variant], [exclusion], mode="full")["test_sample"]
        self.assertEqual(diff.kind, judge.EXCLUDED)
        self.assertEqual((diff.held, diff.module_level), ([], False))
        self.assertEqual([(c.id, c.exclusion.reason) for c in diff.excluded],
                         [("test.test_sample.C.test_b", "it counts tool ids")])
        self.assertEqual(self.compare([variant], [exclusion], mode="exceptions")["test_sample"].kind, judge.DIFFERS)

    def test_entries_that_matched_nothing_in_the_modules_run_are_reported(self):
        variant = self.variant("passed")
        passing_now = judge.Exclusion("test.test_sample.C.test_b", frozenset(judge.MODES), "used to fail")
        elsewhere = judge.Exclusion("test.test_monitoring.*", frozenset(judge.MODES), "not run here")
        diffs = self.compare([variant], [passing_now, elsewhere])
        report, held = judge.text_report([("py", "3.12", [self.plain], {"full": (FULL, [variant], diffs)})],
                                         [passing_now, elsewhere], Options())
        self.assertEqual(held, 0)
        self.assertIn("matched no difference in this run (remove them if they pass now):\n"
                      "  test.test_sample.C.test_b (burst, exceptions, full)\n", report)
        self.assertNotIn("test_monitoring", report)

    def test_an_excluded_module_is_not_held_even_when_it_crashes(self):
        variant = self.sample.run({"test_sample": "worker non-zero exit code (Exit code -11 (SIGSEGV))",
                                   "test_other": "passed"}, [("test.test_other.D.test_d", judge.OK, "")], FULL)
        exclusion = judge.Exclusion("test_sample", frozenset(judge.MODES), "tests the tool ids")
        diff = self.compare([variant], [exclusion])["test_sample"]
        self.assertEqual((diff.kind, diff.held, diff.module_level), (judge.EXCLUDED, [], False))

    def test_a_changed_module_state_is_a_difference(self):
        variant = self.variant("failed (env changed)")
        diff = self.compare([variant])["test_sample"]
        self.assertEqual((diff.kind, diff.module_level, diff.held), (judge.DIFFERS, True, []))
        self.assertEqual(diff.state, judge.ENV_CHANGED)

    def test_a_crash_holds_the_cases_that_did_not_run(self):
        variant = self.sample.run({"test_sample": "worker non-zero exit code (Exit code -11 (SIGSEGV))",
                                   "test_other": "passed"}, [("test.test_other.D.test_d", judge.OK, "")], FULL)
        diff = self.compare([variant])["test_sample"]
        self.assertEqual((diff.kind, diff.state, diff.module_level), (judge.DIFFERS, judge.WORKER_FAILED, True))
        self.assertEqual(sorted((c.id, c.outcome) for c in diff.held),
                         [("test.test_sample.C.test_a", judge.ABSENT), ("test.test_sample.C.test_b", judge.ABSENT)])

    def test_a_failing_subtest_is_its_test_failing(self):
        variant = self.variant("failed (1 failure)", {"test.test_sample.C.test_b": (judge.FAIL, TRACEBACK)},
                               {"test.test_sample.C.test_b": "test.test_sample.C.test_b (i=2)"})
        diff = self.compare([variant])["test_sample"]
        self.assertEqual([(c.id, c.plain) for c in diff.held], [("test.test_sample.C.test_b (i=2)", judge.OK)])

    def test_a_skip_or_an_unexpected_success_under_the_variant_is_held(self):
        variant = self.variant("passed", {"test.test_sample.C.test_a": (judge.SKIP, "the program is being traced"),
                                          "test.test_other.D.test_d": (judge.XPASS, "")})
        diffs = self.compare([variant])
        self.assertEqual([(c.id, c.outcome) for c in diffs["test_sample"].held],
                         [("test.test_sample.C.test_a", judge.SKIP)])
        self.assertEqual([(c.id, c.outcome) for c in diffs["test_other"].held],
                         [("test.test_other.D.test_d", judge.XPASS)])

    def test_a_difference_that_a_rerun_does_not_show_is_not_held(self):
        first = self.variant("failed (1 failure)", {"test.test_sample.C.test_b": (judge.FAIL, TRACEBACK)})
        rerun = self.variant("passed")
        diff = self.compare([first, rerun])["test_sample"]
        self.assertEqual((diff.kind, diff.held, diff.not_reproduced), (judge.NOT_REPRODUCED, [], True))
        reproduced = self.compare([first, first])["test_sample"]
        self.assertEqual([c.id for c in reproduced.held], ["test.test_sample.C.test_b"])


class Options:
    lines = 12


class ReadingTests(unittest.TestCase):
    def test_progress_lines(self):
        text = textwrap.dedent("""\
            0:00:00 load avg: 6.05 Run 6 tests in parallel using 2 worker processes
            0:00:01 load avg: 6.05 [1/6] test_raise passed
            0:01:31 load avg: 6.05 [2/6] test_asyncio.test_tasks passed (1 min 30 sec) -- running (1): test_signal (31.2 sec)
            0:01:32 load avg: 6.05 running (1): test_signal (32.0 sec)
            0:01:33 load avg: 6.05 [3/6/1] test_signal failed (env changed)
            Warning -- threading_cleanup() failed to clean up threads
            0:01:34 [4/6/2] test_code worker non-zero exit code (Exit code -11 (SIGSEGV))
            Fatal Python error: Segmentation fault
            [5/6/3] test_sys timed out (15 min)
            [6/6/3] test_tk skipped (resource denied)

            == Tests result: FAILURE ==
            """)
        modules, complete = judge.parse_progress(text)
        self.assertTrue(complete)
        self.assertEqual({name: m.state for name, m in modules.items()}, {
            "test_raise": judge.PASSED, "test_asyncio.test_tasks": judge.PASSED, "test_signal": judge.ENV_CHANGED,
            "test_code": judge.WORKER_FAILED, "test_sys": judge.TIMEOUT, "test_tk": judge.RESOURCE_DENIED})
        self.assertEqual(modules["test_signal"].output, ["Warning -- threading_cleanup() failed to clean up threads"])
        self.assertEqual(modules["test_code"].output, ["Fatal Python error: Segmentation fault"])
        self.assertEqual(modules["test_asyncio.test_tasks"].status, "passed (1 min 30 sec)")
        self.assertFalse(judge.parse_progress("[1/2] test_raise passed\n")[1])

    def test_unknown_words_are_never_a_pass(self):
        self.assertEqual(judge.state_of("exploded"), judge.FAILED)

    def test_junit_suites_go_to_the_module_of_most_of_their_tests_or_by_position(self):
        with tempfile.TemporaryDirectory() as directory:
            path = junit_file(directory, "j.xml", [
                [("test.test_generators.__test__.tut", judge.OK, ""),
                 ("test.test_generators.SignalAndYieldFromTest.test_raise_and_yield_from", judge.FAIL, TRACEBACK),
                 ("test.test_contextlib.ContextManagerTestCase.test_a", judge.OK, "")],
                [("test.test_extcall", judge.OK, "")],  # a module's own doctests
                [("test.datetimetester.CapiTest_Pure.test_x", judge.OK, "")],  # test_datetime's
                [("test.test_asyncio.test_tasks.CTask_CFuture_Tests.test_x", judge.XFAIL, ""),
                 ("test.test_asyncio.test_tasks.CTask_CFuture_Tests.test_y", judge.XPASS, "")],
                [("sample_local.Case.test_z", judge.ERROR, TRACEBACK)],
                [("idlelib.idle_test.test_x.T.test_y", judge.SKIP, "no tk")],  # test_idle's
            ])
            progress = {"test_generators": judge.PASSED, "test_contextlib": judge.PASSED,
                        "test_extcall": judge.PASSED, "test_curses": judge.RESOURCE_DENIED,
                        "test_datetime": judge.PASSED, "test_asyncio.test_tasks": judge.FAILED,
                        "sample_local": judge.FAILED, "test_idle": judge.PASSED, "test_zlib": judge.PASSED}
            found = judge.parse_junit(path, progress)
        self.assertEqual(sorted(found), ["sample_local", "test_asyncio.test_tasks", "test_datetime", "test_extcall",
                                         "test_generators", "test_idle"])
        seconds, cases = found["test_generators"]
        self.assertEqual(seconds, 1.5)
        self.assertEqual(cases["test.test_generators.SignalAndYieldFromTest.test_raise_and_yield_from"].outcome,
                         judge.FAIL)
        self.assertEqual(list(found["test_datetime"][1]), ["test.datetimetester.CapiTest_Pure.test_x"])
        outcomes = {case.outcome for case in found["test_asyncio.test_tasks"][1].values()}
        self.assertEqual(outcomes, {judge.XFAIL, judge.XPASS})

    def test_a_run_that_broke_off_is_incomplete_and_held(self):
        with tempfile.TemporaryDirectory() as directory:
            log = Path(directory) / "log"
            log.write_text("0:00:01 load avg: 1.00 [1/2] test_raise passed\n")
            broken = judge.read_run("3.12", FULL, log, Path(directory) / "missing.xml")
            whole = log_file(directory, "whole", ["0:00:01 load avg: 1.00 [1/2] test_raise passed"])
            plain = judge.read_run("3.12", judge.PLAIN, whole, Path(directory) / "missing.xml")
        self.assertFalse(broken.complete)
        self.assertIn("did not print its result", broken.problem)
        diffs = judge.compare(judge.merge_plain([plain]), [broken], "full", [])
        self.assertEqual(diffs["test_raise"].kind, judge.IDENTICAL)
        report, held = judge.text_report([("py", "3.12", [plain], {"full": (FULL, [broken], diffs)})], [], Options())
        self.assertEqual(held, 1)
        self.assertIn("INCOMPLETE: regrtest did not print its result", report)
        report, held = judge.text_report([("py", "3.12", [broken], {})], [], Options())
        self.assertEqual(held, 1)


class ByDesignListTests(unittest.TestCase):
    def write(self, text):
        handle = tempfile.NamedTemporaryFile("w", suffix=".md", delete=False)
        self.addCleanup(os.unlink, handle.name)
        handle.write(text)
        handle.close()
        return handle.name

    def test_the_table_is_read_from_its_section(self):
        path = self.write(textwrap.dedent("""\
            # Doc
            | not | this | table |
            | --- | --- | --- |
            | `x` | all | no |

            ## Tests that cannot pass by design

            Some words.

            | test | modes | reason |
            | --- | --- | --- |
            | `test.test_monitoring.{A,B}.*` | all | claims tool ids \\| checks them |
            | `test_sys` | full, burst | counts calls |

            ### A second table

            | test | modes | reason |
            | --- | --- | --- |
            | `test_gc` | exceptions | frames |

            ### Not run: they crash

            | test | modes | reason |
            | --- | --- | --- |
            | `test_capi.T.{test_a,test_b}` | all | aborts |

            ## Figures
            | a | b | c |
            """))
        exclusions = judge.load_by_design(path)
        self.assertEqual([(e.pattern, sorted(e.modes), e.reason, e.not_run) for e in exclusions], [
            ("test.test_monitoring.{A,B}.*", sorted(judge.MODES), "claims tool ids | checks them", False),
            ("test_sys", ["burst", "full"], "counts calls", False), ("test_gc", ["exceptions"], "frames", False),
            ("test_capi.T.{test_a,test_b}", sorted(judge.MODES), "aborts", True)])
        self.assertTrue(exclusions[0].matches_case("test_monitoring", "test.test_monitoring.B.test_x (i=1)", "full"))
        self.assertFalse(exclusions[0].matches_case("test_monitoring", "test.test_monitoring.C.test_x", "full"))
        self.assertFalse(exclusions[1].matches_module("test_sys", "exceptions"))

    def test_a_bad_row_is_an_error(self):
        for row in ("| `x` | sometimes | r |", "| `x` | all |", "| `x` | all | |", "### Not run\n| `x` | full | r |"):
            path = self.write("## Tests that cannot pass by design\n| test | modes | reason |\n| - | - | - |\n%s\n" % row)
            with self.assertRaises(ValueError):
                judge.load_by_design(path)

    def test_the_documented_list_is_valid(self):
        for exclusion in judge.load_by_design():
            self.assertTrue(exclusion.reason and exclusion.modes <= set(judge.MODES), exclusion)


class VariantTests(unittest.TestCase):
    def test_variants(self):
        self.assertEqual(judge.parse_variant("full"), judge.Variant("full", "full"))
        variant = judge.parse_variant("exceptions:TELEMETRY_SHIM_NATIVE=off, TELEMETRY_SHIM_BUDGET=0.05")
        self.assertEqual(variant.name, "exceptions+TELEMETRY_SHIM_NATIVE=off+TELEMETRY_SHIM_BUDGET=0.05")
        self.assertEqual(variant.env, (("TELEMETRY_SHIM_NATIVE", "off"), ("TELEMETRY_SHIM_BUDGET", "0.05")))
        for bad in ("fast", "full:NATIVE", "full:1X=2"):
            with self.assertRaises(ValueError):
                judge.parse_variant(bad)

    def test_the_callers_shim_settings_never_leak_into_a_run(self):
        os.environ["TELEMETRY_SHIM_MODE"] = "burst"
        self.addCleanup(os.environ.pop, "TELEMETRY_SHIM_MODE")
        env = judge.run_environment(judge.parse_variant("full:TELEMETRY_SHIM_NATIVE=on"))
        self.assertNotIn("TELEMETRY_SHIM_MODE", env)
        self.assertEqual(env["TELEMETRY_SHIM_NATIVE"], "on")
        self.assertNotIn("TELEMETRY_SHIM_NATIVE", judge.run_environment(judge.PLAIN))


SEES_SHIM = '''\
import sys, unittest

class SeesShim(unittest.TestCase):
    def test_every_tool_id_is_free(self):
        self.assertEqual([i for i in range(6) if sys.monitoring.get_tool(i) is not None], [])

    def test_transparent(self):
        self.assertEqual(sum(range(10)), 45)
'''
CRASHES_BESIDE_THE_SHIM = '''\
import os, sys, unittest

class Crashes(unittest.TestCase):
    def test_aborts_beside_the_shim(self):
        if any(sys.monitoring.get_tool(i) is not None for i in range(6)):
            os.abort()

    def test_passes(self):
        pass
'''
FAILS_PLAIN = '''\
import unittest

class FailsEverywhere(unittest.TestCase):
    def test_fails(self):
        self.fail("fails plain too")
'''


@unittest.skipUnless(Path(os.environ.get("TELEMETRY_AGENT_DLL") or judge.DEFAULT_AGENT_DLL).is_file(),
                     "the agent is not built (dotnet build TelemetryAgent.sln -c Release)")
class RealRunTests(unittest.TestCase):
    """The judge on two small test modules, run by a real regrtest plain and through the real agent."""

    def test_a_test_that_sees_the_shim_is_held_until_it_is_listed_by_design(self):
        pythons = judge.find_pythons()
        if not pythons:
            self.skipTest("no Python 3.12 or later")
        with tempfile.TemporaryDirectory() as directory:
            tests = Path(directory) / "tests"
            tests.mkdir()
            (tests / "test_sees_shim.py").write_text(SEES_SHIM)
            (tests / "test_fails_plain.py").write_text(FAILS_PLAIN)
            empty = Path(directory) / "empty.md"
            empty.write_text("## Tests that cannot pass by design\n| test | modes | reason |\n| --- | --- | --- |\n")
            listed = Path(directory) / "listed.md"
            listed.write_text(empty.read_text() + "| `test_sees_shim.SeesShim.test_every_tool_id_is_free` | all "
                                                  "| the shim holds a tool id |\n")
            common = [sys.executable, str(HERE / "judge.py"), "--python", pythons[0], "--testdir", str(tests),
                      "--modes", "exceptions", "--reruns", "0", "--timeout", "120", "test_sees_shim", "test_fails_plain"]
            held = subprocess.run(common + ["--by-design", str(empty), "-o", str(Path(directory) / "a")],
                                  capture_output=True, text=True, timeout=600)
            self.assertEqual(held.returncode, 1, held.stdout + held.stderr)
            self.assertIn("test_sees_shim.SeesShim.test_every_tool_id_is_free: passed plain, FAIL", held.stdout)
            self.assertNotIn("test_transparent", held.stdout)
            self.assertIn("1 module fails plain on this machine", held.stdout)
            self.assertIn("test_fails_plain: failed (1 failure)", held.stdout)

            excluded = subprocess.run(common + ["--by-design", str(listed), "-o", str(Path(directory) / "b")],
                                      capture_output=True, text=True, timeout=600)
            self.assertEqual(excluded.returncode, 0, excluded.stdout + excluded.stderr)
            self.assertIn("1 test case excluded by design (the shim holds a tool id)", excluded.stdout)
            summary = (Path(directory) / "b" / "summary.json").read_text()
            self.assertIn('"held_differences": 0', summary)
            agent_files = os.listdir(Path(directory) / "b" / ("python" + judge.python_info(pythons[0])[0])
                                     / "exceptions" / "agent")
            self.assertEqual(agent_files, ["summary.json"])

            # A test that crashes its process under the shim takes its module with it, unless no run runs it.
            (tests / "test_crashes.py").write_text(CRASHES_BESIDE_THE_SHIM)
            not_run = Path(directory) / "not_run.md"
            not_run.write_text(listed.read_text() + "\n### Not run\n\n| test | modes | reason |\n| --- | --- | --- |\n"
                                                    "| `test_crashes.Crashes.test_aborts_*` | all | aborts |\n")
            crashes = common[:-2] + ["test_sees_shim", "test_crashes"]
            crashed = subprocess.run(crashes + ["--by-design", str(listed), "-o", str(Path(directory) / "c")],
                                     capture_output=True, text=True, timeout=600)
            self.assertEqual(crashed.returncode, 1, crashed.stdout + crashed.stderr)
            self.assertIn("test_crashes: passed plain -> worker non-zero exit code", crashed.stdout)
            judged = subprocess.run(crashes + ["--by-design", str(not_run), "-o", str(Path(directory) / "d")],
                                    capture_output=True, text=True, timeout=600)
            self.assertEqual(judged.returncode, 0, judged.stdout + judged.stderr)
            for run in ("plain", "exceptions"):
                run_directory = Path(directory) / "d" / ("python" + judge.python_info(pythons[0])[0]) / run
                self.assertIn("-i test_crashes.Crashes.test_aborts_*", (run_directory / "command.txt").read_text())
                cases = (run_directory / "junit.xml").read_text()
                self.assertIn("test_passes", cases)
                self.assertNotIn("test_aborts_beside_the_shim", cases)


if __name__ == "__main__":
    unittest.main()

"""Lets `python -m unittest discover -s python-shim/tests -t python-shim` import the test
modules' shared `support` module, as discovery from the tests directory itself does."""

import os
import sys

_TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

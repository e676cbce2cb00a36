"""The shim's test suite, a package so that the tests share `tests.support`. Run from python-shim/:
`python -m unittest discover -s tests -t .` (the working directory makes telemetry_shim importable;
nothing here edits sys.path)."""

"""python -m telemetry_shim [options] (script.py | -m module) [args ...]; see _runner.py."""

import sys

if sys.version_info < (3, 12):
    sys.stderr.write(
        "telemetry_shim needs Python 3.12 or newer (sys.monitoring, PEP 669); this is %s\n"
        % sys.version.split()[0]
    )
    sys.exit(2)

from telemetry_shim._runner import main  # noqa: E402  (after the version check, on purpose)

# A program that ends normally returns through runpy, as under `python -m module`: no SystemExit(0).
_status = main()
if _status:
    sys.exit(_status)

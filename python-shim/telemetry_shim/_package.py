"""What the package is: its version and its directory (code under it is the shim's own and never
recorded). It imports nothing of the package, so that every module may import it."""

import os

VERSION = "0.1.0"
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))

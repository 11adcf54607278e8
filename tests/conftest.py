"""Suite-wide settings: the export command's latency check against float is skipped (tests time nothing).

Set before any test runs, so `pt2e-int8 export` subprocesses inherit it too; the check itself is
tested with the variable removed (tests/cli/test_export_shapes.py).
"""

import os

os.environ.setdefault("PT2E_INT8_NO_SPEED_CHECK", "1")

"""The end-to-end chain shares the daemon's stand-ins (tests/daemon/daemon_harness.py) and the
stack's mocked Pulumi run (tests/stacks/stack_harness.py)."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).parent
for sub in ("daemon", "stacks"):
    path = str(HERE.parent / sub)
    if path not in sys.path:
        sys.path.insert(0, path)

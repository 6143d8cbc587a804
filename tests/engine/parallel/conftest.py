"""Tensor-parallel tests: a collective waits at most 60 s for a hung peer (a dead one is
noticed at once), so no test can hang on one."""

from __future__ import annotations

import os

os.environ.setdefault("ENGINE_TP_TIMEOUT_S", "60")

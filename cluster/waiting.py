"""Bounded waits: poll a condition until it holds, or fail with what was awaited (drills, tests)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(
    pred: Callable[[], Any],
    timeout: float,
    what: str,
    *,
    period: float = 0.05,
    error: type[Exception] = AssertionError,
    prefix: str = "",
) -> Any:
    """Poll ``pred`` every ``period`` s until it returns something true (returned); raise ``error`` at ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(period)
    raise error(f"{prefix}timed out after {timeout:.0f} s waiting for {what}")

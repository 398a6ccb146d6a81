"""Loops that never die: a camera reader that raises is logged, counted and started again after a backoff."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from actors.capture import Capture

VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")


@pytest.mark.skipif(not VTEST.exists(), reason=f"{VTEST} not found: install Debian's opencv-doc package")
def test_a_reader_that_raises_is_counted_and_reopened() -> None:
    cap = Capture("cam-1", str(VTEST), playback="fast", loop=True)
    original = cap._read_frames
    calls = []

    def flaky(vc: Any, generation: int) -> None:
        calls.append(generation)
        if len(calls) == 1:
            raise OverflowError("cannot convert float infinity to integer")
        original(vc, generation)

    cap._read_frames = flaky  # type: ignore[method-assign,assignment]
    cap.start()
    try:
        item = None
        for _ in range(60):  # each next() waits up to 1 s for a frame
            item = cap.next(timeout=1.0)
            if isinstance(item, tuple):
                break
        assert isinstance(item, tuple), item
        assert cap.stats.reader_restarts == 1
        assert cap.stats.last_error == "reader failed: OverflowError: cannot convert float infinity to integer"
        assert calls == [1, 2]  # the second reader is a new generation
        assert cap.stats.state == "running"
    finally:
        cap.stop()

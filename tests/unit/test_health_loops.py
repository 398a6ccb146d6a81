"""Loops that never die (a camera reader that raises is logged, counted and started again after a backoff), and the
test-only fault hook of the fail-inference drill."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from actors.capture import Capture
from cluster import unsafe
from cluster.errors import ConfigError

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


def test_test_faults_parse_and_refuse_unknown_values() -> None:
    assert unsafe.test_faults({}) == frozenset()
    assert unsafe.test_faults({"EDGEPAIR_TEST_FAULTS": " fail-inference "}) == frozenset({"fail-inference"})
    with pytest.raises(ConfigError, match="EDGEPAIR_TEST_FAULTS='fail-disk': unknown value 'fail-disk'; allowed"):
        unsafe.test_faults({"EDGEPAIR_TEST_FAULTS": "fail-disk"})


def test_fail_inference_raises_only_while_its_trigger_exists(tmp_path: Path) -> None:
    trigger = unsafe.fail_inference_trigger(tmp_path / "data", "ws-a")
    assert trigger == tmp_path / ".ws-a.fail-inference"

    def count(frames: list[int]) -> list[int]:
        return [len(frames)]

    detect = unsafe.failing_while(trigger, count)
    assert detect([1, 2]) == [2]
    trigger.touch()
    with pytest.raises(RuntimeError, match="test-only fail-inference: the ONNX session raises while"):
        detect([1, 2])
    trigger.unlink()
    assert detect([1]) == [1]


def test_the_reader_backoff_grows_with_failures_in_a_row_only() -> None:
    """Review of issue 15: the backoff used the camera's lifetime count of failures, so after seven failures in a
    day every later one cost 30 s of video. It grows with failures in a row (no frame in between) only."""
    cap = Capture("cam-1", "rtsp://127.0.0.1:1/none", is_stream=True)
    assert [cap._next_backoff() for _ in range(9)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    cap.stats.frames_read += 25  # frames flowed again
    assert [cap._next_backoff() for _ in range(2)] == [0.5, 1.0]

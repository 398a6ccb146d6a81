"""Review of issue 20: stream: auto tries two streams in one connection attempt. Each open may take up to its timeout
(half the watchdog's), so two blackholed streams (no refusal, just silence) take the watchdog's whole time: the
watchdog then takes the first attempt for a hung read and starts a second reader beside it."""

from __future__ import annotations

import time
from typing import Any

import pytest

import actors.capture as capture_mod
from actors.capture import Capture
from cluster.errors import SourceError


def test_two_silent_streams_are_not_taken_for_a_hung_read(monkeypatch: pytest.MonkeyPatch) -> None:
    def silent(source: str, _is_stream: bool, timeout_ms: int, *_a: Any, **_k: Any) -> Any:
        time.sleep(timeout_ms / 1000 * 1.1)  # FFmpeg's open timeout, overshot a little as it is
        raise SourceError(f"cannot open stream {source}: check the URL, the camera and the network")

    monkeypatch.setattr(capture_mod, "_open", silent)
    cap = Capture("cam-1", "rtsp://10.0.0.5/main", is_stream=True, substream="rtsp://10.0.0.5/sub", stream="auto",
                  min_width=640, watchdog_s=1.0, max_backoff_s=5.0)  # fmt: skip
    cap.start()
    try:
        time.sleep(1.6)
    finally:
        cap.stop()
    assert "read hung" not in cap.stats.last_error
    assert (cap.stats.reconnects, cap._generation) == (0, 1)


def test_a_capture_stopped_while_one_stream_opens_does_not_open_the_other(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []

    def silent(source: str, _is_stream: bool, timeout_ms: int, *_a: Any, **_k: Any) -> Any:
        opened.append(source)
        time.sleep(0.4)
        raise SourceError(f"cannot open stream {source}: check the URL, the camera and the network")

    monkeypatch.setattr(capture_mod, "_open", silent)
    cap = Capture("cam-1", "rtsp://10.0.0.5/main", is_stream=True, substream="rtsp://10.0.0.5/sub", stream="auto",
                  min_width=640, watchdog_s=5.0)  # fmt: skip
    cap.start()
    time.sleep(0.1)
    cap.stop()
    assert cap._reader is not None
    cap._reader.join(2.0)
    assert opened == ["rtsp://10.0.0.5/sub"]  # stopped during the sub-stream's open: the main one is not tried


def test_a_narrow_sub_stream_opened_before_a_stop_is_released(monkeypatch: pytest.MonkeyPatch) -> None:
    class Narrow:
        released = False

        def get(self, prop: int) -> float:
            return {3: 384.0, 4: 288.0}.get(prop, 0.0)  # CAP_PROP_FRAME_WIDTH, CAP_PROP_FRAME_HEIGHT

        def release(self) -> None:
            self.released = True

    narrow = Narrow()
    cap = Capture("cam-1", "rtsp://10.0.0.5/main", is_stream=True, substream="rtsp://10.0.0.5/sub", stream="auto",
                  min_width=640)  # fmt: skip

    def opening(source: str, *_a: Any, **_k: Any) -> Any:
        cap.stop()  # the capture is stopped while the sub-stream opens
        return narrow

    monkeypatch.setattr(capture_mod, "_open", opening)
    with pytest.raises(capture_mod._Abandon):
        cap._open_stream(None)
    assert narrow.released

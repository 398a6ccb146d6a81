"""Review of issue 20's stream choice (``Capture._open_stream``) on fake streams: a sub-stream whose size OpenCV does
not report before the first frame, and the secrets of both streams when neither opens."""

from __future__ import annotations

import logging
import time
from typing import Any

import cv2
import numpy as np
import pytest

import actors.capture as capture_mod
from actors.capture import Capture
from cluster.credentials import CredentialSource
from cluster.errors import SourceError


class FakeCap:
    """A stream that opened: ``reported`` is what CAP_PROP_FRAME_WIDTH/HEIGHT say, ``size`` what its frames are."""

    def __init__(self, size: tuple[int, int], reported: tuple[int, int] | None = None) -> None:
        self.size = size
        self.reported = size if reported is None else reported
        self.released = False

    def get(self, prop: int) -> float:
        return {cv2.CAP_PROP_FRAME_WIDTH: self.reported[0], cv2.CAP_PROP_FRAME_HEIGHT: self.reported[1]}.get(prop, 0.0)

    def read(self) -> tuple[bool, Any]:
        return True, np.zeros((self.size[1], self.size[0], 3), np.uint8)

    def isOpened(self) -> bool:
        return True

    def release(self) -> None:
        self.released = True


def _fake_open(streams: dict[str, FakeCap | None]) -> Any:
    def fake(source: str, *_args: Any, **_kw: Any) -> FakeCap:
        cap = streams[source]
        if cap is None:
            raise SourceError(f"cannot open stream {source}: check the URL, the camera and the network")
        return cap

    return fake


def _capture() -> Capture:
    return Capture(
        "cam-1",
        "rtsp://10.0.0.5/main",
        is_stream=True,
        substream="rtsp://10.0.0.5/sub",
        stream="auto",
        min_width=640,
    )


def test_a_sub_stream_whose_size_is_not_reported_is_measured_on_a_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    """MJPEG over HTTP and some RTSP cameras report width 0 until a frame is decoded: 0 is unknown, not narrow. The
    survey measures the same sub-stream on its frames and would say the node reads it."""
    sub = FakeCap((768, 576), reported=(0, 0))
    main = FakeCap((3840, 2160))
    monkeypatch.setattr(capture_mod, "_open", _fake_open({"rtsp://10.0.0.5/main": main, "rtsp://10.0.0.5/sub": sub}))
    cap = _capture()
    chosen = cap._open_stream(None)
    assert (cap.stats.extra["stream"], chosen) == ("sub", sub), cap.stats.extra
    assert "0x0" not in cap.stats.extra["stream_why"]
    assert cap._sub_too_narrow == ""  # and it is not written off for the capture's life
    assert not main.released  # never opened: the sub-stream was wide enough


def test_a_sub_stream_of_unknown_size_that_delivers_nothing_is_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    class Dead(FakeCap):
        def read(self) -> tuple[bool, Any]:
            return False, None

    sub = Dead((0, 0))
    main = FakeCap((3840, 2160))
    monkeypatch.setattr(capture_mod, "_open", _fake_open({"rtsp://10.0.0.5/main": main, "rtsp://10.0.0.5/sub": sub}))
    cap = _capture()
    assert cap._open_stream(None) is main
    assert cap.stats.extra["stream"] == "main" and sub.released


def test_a_narrow_sub_stream_still_gives_way_to_the_main_one(monkeypatch: pytest.MonkeyPatch) -> None:
    sub = FakeCap((384, 288))
    main = FakeCap((3840, 2160))
    monkeypatch.setattr(capture_mod, "_open", _fake_open({"rtsp://10.0.0.5/main": main, "rtsp://10.0.0.5/sub": sub}))
    cap = _capture()
    assert cap._open_stream(None) is main and sub.released
    assert "384x288, narrower than" in cap.stats.extra["stream_why"]


def test_no_secret_of_either_stream_reaches_the_error_the_status_or_the_log(caplog: pytest.LogCaptureFixture) -> None:
    """Both streams down (nothing listens on port 9 of 127.0.0.1), the user and password from the environment-like
    credential source, a token in the sub-stream's query: the error, stream_why and log lines show none of them."""
    creds = CredentialSource("cam-1", url_userinfo="admin:Main-Pw-4242")
    cap = Capture(
        "cam-1",
        "rtsp://127.0.0.1:9/main?password=Q-Main-5151",
        is_stream=True,
        substream="rtsp://127.0.0.1:9/sub?token=Q-Sub-6161&x=1",
        stream="auto",
        min_width=640,
        credentials=creds,
        watchdog_s=2.0,
    )
    with caplog.at_level(logging.DEBUG), pytest.raises(SourceError) as info:
        cap._open_stream(None)
    shown = str(info.value) + repr(cap.stats) + caplog.text
    for secret in ("Main-Pw-4242", "Q-Main-5151", "Q-Sub-6161"):
        assert secret not in shown, secret
    assert "the sub-stream" in str(info.value)


class LiveCap(FakeCap):
    """A stream that sends a frame every 20 ms while ``state["<name>"]`` is up, and fails its reads when down."""

    def __init__(self, name: str, size: tuple[int, int], state: dict[str, bool]) -> None:
        super().__init__(size)
        self.name, self.state = name, state

    def read(self) -> tuple[bool, Any]:
        time.sleep(0.02)
        return (True, np.zeros((self.size[1], self.size[0], 3), np.uint8)) if self.state[self.name] else (False, None)


def _live(monkeypatch: pytest.MonkeyPatch, state: dict[str, bool]) -> Capture:
    sizes = {"main": (1536, 1152), "sub": (768, 576)}

    def fake(source: str, *_args: Any, **_kw: Any) -> FakeCap:
        name = source.rsplit("/", 1)[1]
        if not state[name]:
            raise SourceError(f"cannot open stream {source}: check the URL, the camera and the network")
        return LiveCap(name, sizes[name], state)

    monkeypatch.setattr(capture_mod, "_open", fake)
    monkeypatch.setattr(capture_mod, "reader_backoff", lambda _n: 0.05)
    cap = Capture("cam-1", "rtsp://10.0.0.5/main", is_stream=True, substream="rtsp://10.0.0.5/sub", stream="auto",
                  min_width=640, watchdog_s=5.0, max_backoff_s=0.2)  # fmt: skip
    cap.start()
    return cap


def _width_within(cap: Capture, width: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        item = cap.next(timeout=0.5)
        if isinstance(item, tuple) and item[1].width == width:
            return True
    return False


def test_the_sub_stream_is_read_again_after_the_main_one_it_fell_back_to_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    state = {"main": True, "sub": True}
    cap = _live(monkeypatch, state)
    try:
        assert _width_within(cap, 768, 3.0)
        state["sub"] = False  # the sub-stream dies: the main one is read
        assert _width_within(cap, 1536, 3.0)
        assert cap.stats.extra["stream"] == "main" and "does not open" in cap.stats.extra["stream_why"]
        state["sub"] = True
        state["main"] = False  # then the main one fails: the sub-stream, back, is read
        assert _width_within(cap, 768, 3.0)
        state["main"] = True
    finally:
        cap.stop()


def test_a_sub_stream_back_up_is_read_again_while_the_main_one_works(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sub-stream that was down for a moment (a camera reboot of its second encoder, a network blip on its path)
    must not leave the node decoding the main stream (4K: a core) for good: it is tried again in the background
    (capture_mod.SUB_RETRY_S, 30 s in the product, 0.3 s here) and read again once it opens."""
    monkeypatch.setattr(capture_mod, "SUB_RETRY_S", 0.3)
    state = {"main": True, "sub": True}
    cap = _live(monkeypatch, state)
    try:
        assert _width_within(cap, 768, 3.0)
        state["sub"] = False
        assert _width_within(cap, 1536, 3.0)
        state["sub"] = True
        assert _width_within(cap, 768, 5.0)
    finally:
        cap.stop()


def test_a_main_stream_down_is_tried_once_per_attempt_when_the_sub_stream_was_found_narrow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each try of a silent main stream costs its open timeout (half the watchdog's): trying it twice in one attempt
    doubles the time the camera is without frames."""
    opened: list[str] = []
    streams: dict[str, FakeCap | None] = {"rtsp://10.0.0.5/main": FakeCap((3840, 2160)), "rtsp://10.0.0.5/sub": None}
    fake = _fake_open(streams)

    def counting(source: str, *args: Any, **kw: Any) -> FakeCap:
        opened.append(source.rsplit("/", 1)[1])
        return fake(source, *args, **kw)

    monkeypatch.setattr(capture_mod, "_open", counting)
    cap = _capture()
    streams["rtsp://10.0.0.5/sub"] = FakeCap((384, 288))
    assert cap._open_stream(None) is streams["rtsp://10.0.0.5/main"] and cap._sub_too_narrow
    opened.clear()
    streams["rtsp://10.0.0.5/main"] = None  # the main stream goes down: the narrow sub-stream beats none
    sub = streams["rtsp://10.0.0.5/sub"]
    assert cap._open_stream(None) is sub
    assert opened == ["main", "sub"]
    assert cap.stats.extra["stream"] == "sub" and "the main stream does not open" in cap.stats.extra["stream_why"]


def test_the_log_names_the_stream_being_read(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Reading the sub-stream, a failed read named the main stream's URL: the operator checks the wrong stream."""
    state = {"main": True, "sub": True}
    with caplog.at_level(logging.WARNING, logger="actors.capture"):
        cap = _live(monkeypatch, state)
        try:
            assert _width_within(cap, 768, 3.0)
            state["sub"] = False
            assert _width_within(cap, 1536, 3.0)
        finally:
            cap.stop()
    failed = [r.getMessage() for r in caplog.records if "read failed" in r.getMessage()]
    assert failed and all("rtsp://10.0.0.5/sub" in m for m in failed), failed

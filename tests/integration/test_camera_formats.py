"""The camera compatibility matrix: one short live stream per format from a real RTSP server (GStreamer's, through
``cluster/camsim.py``), read by the product's own capture (``actors.capture.Capture``, FFmpeg through OpenCV, RTP
over TCP): H.264, H.265 and MJPEG over RTSP at the file's size, and H.264 at 4K. Each must deliver frames of the
size served, decoded (not grey), and keep delivering. The README's matrix is this test's table."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from actors.capture import Capture, _open
from tests.rtsp import RtspServer, skip_unless_available

VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
FOURCC = {"h264": "h264", "h265": "hevc", "mjpeg": "mjpg"}
"""What FFmpeg reports for each codec served (the stream really is that codec)."""
FORMATS = [
    ("h264", None, (576, 768)),
    ("h265", None, (576, 768)),
    ("mjpeg", None, (576, 768)),
    ("h264", "3840x2160", (1080, 1920)),  # scaled down once, as it is decoded (runtime.max_frame_width: 1920)
]


@pytest.mark.skipif(not VTEST.exists(), reason=f"{VTEST} not found: install Debian's opencv-doc package")
@pytest.mark.parametrize(("codec", "size", "shape"), FORMATS, ids=[f"{c}-{s or 'file'}" for c, s, _ in FORMATS])
def test_a_camera_of_each_format_is_read(codec: str, size: str | None, shape: tuple[int, int]) -> None:
    skip_unless_available()
    extra = ("--codec", codec, "--fps", "10", *(("--size", size) if size else ()))
    with RtspServer({"cam": VTEST}, extra_args=extra) as server:
        probe = _open(server.url("cam"), True, 10_000)
        try:
            fourcc = int(probe.get(cv2.CAP_PROP_FOURCC) or 0)
        finally:
            probe.release()
        assert "".join(chr((fourcc >> (8 * i)) & 0xFF) for i in range(4)).lower() == FOURCC[codec]
        cap = Capture("cam", server.url("cam"), is_stream=True, watchdog_s=10.0, max_width=1920)
        cap.start()
        try:
            frames = []
            for _ in range(40):  # each next() waits up to 1 s
                item = cap.next(timeout=1.0)
                if isinstance(item, tuple):
                    frames.append(item[0])
                    if len(frames) == 5:
                        break
            assert len(frames) == 5, (cap.stats, server.log_path.read_text()[-2000:])
            for frame in frames:
                assert frame.shape == (*shape, 3)
                assert float(np.std(frame)) > 20.0  # a decoded picture, not a grey or green error frame
            assert (cap.stats.state, cap.stats.reconnects) == ("running", 0)
        finally:
            cap.stop()

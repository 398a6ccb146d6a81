"""The camera compatibility matrix: one short live stream per format from a real RTSP server (GStreamer's, through
``cluster/camsim.py``), read by the product's own capture (``actors.capture.Capture``, FFmpeg through OpenCV, RTP
over TCP): H.264, H.265 and MJPEG over RTSP at the file's size, and H.264 at 4K; RTP over UDP; MJPEG over HTTP; a
camera's sub-stream chosen by its size. Each must deliver frames of the size served, decoded (not grey), and keep
delivering. The README's matrix is this test's table."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from actors.capture import Capture, _open
from failover.etcd_cluster import free_port
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


def _udp_addresses(pid: int) -> set[tuple[str, int]]:
    """The local (address, port) of every IPv4 UDP socket process ``pid`` holds (``/proc``: ``ss -lunp``'s source)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().as_posix()
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = set()
    for line in Path(f"/proc/{pid}/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[9] in inodes:
            hexaddr, hexport = fields[1].split(":")
            out.add((".".join(str(int(hexaddr[i : i + 2], 16)) for i in (6, 4, 2, 0)), int(hexport, 16)))
    return out


def _frames(cap: Capture, want: int) -> list[np.ndarray]:
    """Up to ``want`` frames, each next() waiting up to 1 s, 40 waits at most."""
    frames: list[np.ndarray] = []
    for _ in range(40):
        item = cap.next(timeout=1.0)
        if isinstance(item, tuple):
            frames.append(item[0])
            if len(frames) == want:
                break
    return frames


@pytest.mark.skipif(not VTEST.exists(), reason=f"{VTEST} not found: install Debian's opencv-doc package")
def test_a_camera_that_sends_rtp_over_udp_only_is_read() -> None:
    """The camera refuses RTP over TCP (461 Unsupported transport); FFmpeg, asked to prefer TCP, falls back to UDP,
    whose ports the camera binds on 127.0.0.1 only."""
    skip_unless_available()
    with RtspServer({"cam": VTEST}, extra_args=("--transport", "udp", "--fps", "10")) as server:
        cap = Capture("cam", server.url("cam"), is_stream=True, watchdog_s=10.0)
        cap.start()
        try:
            frames = _frames(cap, 5)
            assert len(frames) == 5, (cap.stats, server.log_text()[-2000:])
            assert all(f.shape == (576, 768, 3) and float(np.std(f)) > 20.0 for f in frames)
            assert (cap.stats.state, cap.stats.reconnects) == ("running", 0)
            bound = _udp_addresses(server.pid)
            assert bound and {host for host, _ in bound} == {"127.0.0.1"}, bound  # RTP/RTCP on loopback only
            assert all(40000 <= port <= 49999 for _, port in bound), bound
        finally:
            cap.stop()


@pytest.mark.skipif(not VTEST.exists(), reason=f"{VTEST} not found: install Debian's opencv-doc package")
def test_mjpeg_over_http_is_read_and_paced_by_arrival_not_by_the_rate_it_declares() -> None:
    """An HTTP camera's multipart JPEG stream declares no frame rate (FFmpeg says 25); the camera sends 10 frames a
    second and the config asks for 5: about every other frame is processed, not every fifth."""
    skip_unless_available()
    with RtspServer({"cam": VTEST}, extra_args=("--http", "--fps", "10")) as server:
        url = server.url("cam")
        assert url.startswith("http://")
        probe = _open(url, True, 10_000)
        try:
            fourcc = int(probe.get(cv2.CAP_PROP_FOURCC) or 0)
            declared = probe.get(cv2.CAP_PROP_FPS)
        finally:
            probe.release()
        assert "".join(chr((fourcc >> (8 * i)) & 0xFF) for i in range(4)).lower() == "mjpg"
        assert declared == 25.0  # what FFmpeg makes up: the rate the old frame picking trusted
        cap = Capture("cam", url, is_stream=True, fps=5, watchdog_s=10.0, queue_size=64)
        cap.start()
        try:
            frames = _frames(cap, 12)
            assert len(frames) == 12, (cap.stats, server.log_text()[-2000:])
            assert all(f.shape == (576, 768, 3) and float(np.std(f)) > 20.0 for f in frames)
            read, delivered = cap.stats.frames_read, cap.stats.frames_delivered + cap.stats.frames_dropped
        finally:
            cap.stop()
        # 10 read for 5 taken: every other frame (arrival jitter can shift one); the declared 25 would take 1 in 5
        assert 0.4 <= delivered / read <= 0.6, (read, delivered)


@pytest.fixture(scope="module")
def two_streams() -> Iterator[dict[str, str]]:
    """One camera's main stream (1536x1152) and two candidate sub-streams: 768x576 and 384x288."""
    if not VTEST.exists():
        pytest.skip(f"{VTEST} not found: install Debian's opencv-doc package")
    skip_unless_available()
    with (
        RtspServer({"main": VTEST}, extra_args=("--fps", "10", "--size", "1536x1152")) as main,
        RtspServer({"sub": VTEST}, extra_args=("--fps", "10")) as wide,
        RtspServer({"sub": VTEST}, extra_args=("--fps", "10", "--size", "384x288")) as narrow,
    ):
        closed = free_port()  # nothing listens there: a sub-stream that does not open
        yield {
            "main": main.url("main"),
            "sub": wide.url("sub"),
            "narrow": narrow.url("sub"),
            "down": f"rtsp://127.0.0.1:{closed}/sub",
        }


SUBSTREAM_CASES = [
    # (stream setting, sub-stream, frame width read, stream read, why contains)
    ("auto", "sub", 768, "sub", "768x576, at least 640 wide"),
    ("auto", "narrow", 1536, "main", "the sub-stream is 384x288, narrower than runtime.substream_min_width 640"),
    ("auto", "down", 1536, "main", "the sub-stream does not open"),
    ("sub", "narrow", 384, "sub", ""),
    ("main", "sub", 1536, "main", ""),
]


@pytest.mark.parametrize(
    ("stream", "sub", "width", "reads", "why"), SUBSTREAM_CASES, ids=[f"{c[0]}-{c[1]}" for c in SUBSTREAM_CASES]
)
def test_the_sub_stream_is_read_when_it_is_wide_enough(
    two_streams: dict[str, str], stream: str, sub: str, width: int, reads: str, why: str
) -> None:
    cap = Capture(
        "cam",
        two_streams["main"],
        is_stream=True,
        watchdog_s=10.0,
        max_width=0,
        substream=two_streams[sub],
        stream=stream,
        min_width=640,
    )
    cap.start()
    try:
        frames = _frames(cap, 3)
        assert len(frames) == 3, cap.stats
        assert {f.shape[1] for f in frames} == {width}
        assert cap.stats.extra["stream"] == reads
        assert why in cap.stats.extra["stream_why"] if why else cap.stats.extra["stream_why"] == ""  # "" in x: always
        assert (cap.stats.state, cap.stats.reconnects) == ("running", 0)
    finally:
        cap.stop()


@pytest.mark.skipif(not VTEST.exists(), reason=f"{VTEST} not found: install Debian's opencv-doc package")
def test_the_http_camera_serves_a_bounded_number_of_clients_and_drops_idle_ones() -> None:
    """camsim's HTTP server holds a thread per client: at most 32 at once (503 beyond), and a client that sends no
    request is disconnected after 10 s rather than holding its thread for good."""
    import socket

    skip_unless_available()
    with RtspServer({"cam": VTEST}, extra_args=("--http", "--fps", "10")) as server:
        idle = socket.create_connection(("127.0.0.1", server.port), timeout=15)
        clients = []
        try:
            for _ in range(32):
                c = socket.create_connection(("127.0.0.1", server.port), timeout=10)
                c.sendall(b"GET /cam HTTP/1.0\r\n\r\n")
                assert c.recv(12).startswith(b"HTTP/1.0 200"), server.log_text()[-2000:]
                clients.append(c)
            extra = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            extra.sendall(b"GET /cam HTTP/1.0\r\n\r\n")
            assert extra.recv(12).startswith(b"HTTP/1.0 503")
            extra.close()
            assert idle.recv(1) == b""  # closed by the server (a timeout here would raise)
        finally:
            for c in [*clients, idle]:
                c.close()

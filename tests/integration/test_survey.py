"""``edgepair survey`` on real sources: a video file, a missing file, a real ceiling fisheye frame (CEPDOF) with no
lens in the config, a real ONNX detector timed on this host, and TCP checks against a port that listens (opened by
the test on loopback) and one that does not. The CLI as an installer runs it; its JSON and HTML are read back."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from cluster.cli import main
from tests.integration.test_fisheye import CEPDOF, YOLOX, needs_cepdof

VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
HEADER = """
store: {{id: s1, timezone: Europe/London}}
model: {{path: {yolox}}}
storage: {{data_dir: {data}}}
security: {{tls: false}}
"""


@needs_cepdof
@pytest.mark.skipif(not VTEST.exists(), reason=f"{VTEST} not found: install Debian's opencv-doc package")
def test_survey_reports_each_camera_the_host_and_the_network(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    listeners = [socket.socket() for _ in range(4)]  # ws-a's replication port and three etcd members
    for sock in listeners:
        sock.bind(("127.0.0.1", 0))
        sock.listen(4)
    port = [sock.getsockname()[1] for sock in listeners]
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: refused
    try:
        fisheye = CEPDOF / "video_0" / "Lunch3_000001.jpg"
        cfg = tmp_path / "store.yaml"
        cfg.write_text(
            HEADER.format(yolox=YOLOX, data=tmp_path / "data")
            + f"""
cameras:
  - {{id: door, source: {VTEST}, fps: 25}}
  - {{id: gone, source: {tmp_path / "missing.mp4"}}}
  - {{id: ceiling, source: {fisheye}, anchor: center}}
cluster:
  etcd_endpoints: [http://127.0.0.1:{port[1]}, http://127.0.0.1:{port[2]}, http://127.0.0.1:{port[3]}]
  nodes:
    - {{name: ws-a, host: 127.0.0.1, flight_port: {port[0]}, metrics_port: 9101}}
    - {{name: ws-b, host: 127.0.0.1, flight_port: {closed.getsockname()[1]}, metrics_port: 9102}}
"""
        )
        (tmp_path / "data").mkdir()
        out = tmp_path / "report"
        rc = main(["-q", "survey", "--config", str(cfg), "--out", str(out), "--frames", "5"])
    finally:
        for sock in [*listeners, closed]:
            sock.close()
    printed = capsys.readouterr().out
    assert rc == 1, printed  # things to change: the missing camera, the fisheye without a lens, ws-b's port, 10 fps
    doc = json.loads((out / "survey.json").read_text())
    cams = {c["camera"]: c for c in doc["facts"]["cameras"]}
    door, gone, ceiling = cams["door"], cams["gone"], cams["ceiling"]
    assert (door["opened"], door["width"], door["height"], door["fps"], door["frames"]) == (True, 768, 576, 10.0, 5)
    assert door["circle"] is None
    assert (gone["opened"], gone["frames"]) == (False, 0)
    assert "not found" in gone["error"]
    assert (ceiling["opened"], ceiling["width"], ceiling["height"], ceiling["frames"]) == (True, 2048, 2048, 1)
    assert ceiling["circle"] == [0.4998, 0.5, 0.4998]  # what calibrate-lens finds on this frame
    machine = doc["facts"]["machine"]
    assert (machine["model"], machine["model_error"]) == ("yolox_nano_coco.onnx", "")
    assert machine["detect_ms"] > 0 and "CPUExecutionProvider" in machine["providers"]
    ports = {p["what"]: p["reachable"] for p in doc["facts"]["ports"]}
    etcd = {f"etcd 127.0.0.1:{p}": True for p in port[1:]}
    assert ports == {**etcd, "replication ws-a": True, "replication ws-b": False}
    changes = sorted(f["check"] for f in doc["findings"] if not f["ok"] and f["check"] != "capacity")
    assert changes == ["camera ceiling lens", "camera door rate", "camera gone", "network replication ws-b"], changes
    # Capacity depends on this host's speed: the verdict must follow from the measured time (door at its source's
    # 10 fps under the 25 asked, the ceiling's image at the rate OpenCV gives it, 10 when none).
    (capacity,) = [f for f in doc["findings"] if f["check"] == "capacity"]
    asked = 10.0 + (ceiling["fps"] or 10.0)
    assert capacity["ok"] == (asked <= 0.8 * 1000.0 / machine["detect_ms"]), capacity
    assert f"they ask {asked:g}" in capacity["message"]
    assert doc["ready"] is False
    page = (out / "survey.html").read_text()
    assert page.count("CHANGE") == 4 + (not capacity["ok"]) and "calibrate-lens" in page and "<script" not in page
    assert "fix: edgepair camera calibrate-lens --config STORE.yaml --camera ceiling" in printed


@pytest.mark.skipif(not VTEST.exists(), reason=f"{VTEST} not found: install Debian's opencv-doc package")
def test_survey_of_a_live_rtsp_camera(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A real RTSP camera (GStreamer's RTSP server, H.264) and one whose port nobody serves: the first is read with
    its codec and size, the second is one finding naming the stream (without its password) and what to check. The
    first is the sub-stream of a camera whose main stream is down: the survey says the node reads the sub-stream."""
    from tests.rtsp import RtspServer, skip_unless_available

    skip_unless_available()
    with RtspServer({"door": VTEST}) as server:
        url = server.url("door")
        dead = url.rsplit(":", 1)[0] + ":9/none"  # the discard port: nothing listens there
        with_password = dead.replace("rtsp://", "rtsp://admin:s3cret@")
        cfg = tmp_path / "store.yaml"
        cfg.write_text(
            HEADER.format(yolox=YOLOX, data=tmp_path / "data")
            + f"""
cameras:
  - {{id: door, source: "{dead}", substream: "{url}", fps: 5}}
  - {{id: yard, source: "{with_password}"}}
"""
        )
        rc = main(["-q", "survey", "--config", str(cfg), "--out", str(tmp_path / "out"), "--frames", "10"])
    printed = capsys.readouterr().out
    assert rc == 1, printed
    doc = json.loads((tmp_path / "out" / "survey.json").read_text())
    cams = {c["camera"]: c for c in doc["facts"]["cameras"]}
    # the door camera's main stream is down, its sub-stream (the live one) is read: the node would read it too
    main_door, door, yard = cams["door"], cams["door sub-stream"], cams["yard"]
    assert (main_door["opened"], main_door["reads"], door["sub_of"]) == (False, "sub", "door")
    assert (door["opened"], door["stream"], door["width"], door["height"], door["frames"]) == (True, True, 768, 576, 10)
    assert door["codec"].lower() == "h264" and door["open_s"] > 0
    assert (yard["opened"], yard["frames"]) == (False, 0)
    everything = (tmp_path / "out" / "survey.json").read_text() + (tmp_path / "out" / "survey.html").read_text()
    assert "s3cret" not in everything + printed and "admin" not in everything + printed
    assert sorted(f["check"] for f in doc["findings"] if not f["ok"] and f["check"] != "capacity") == [
        "camera door",
        "camera yard",
    ]

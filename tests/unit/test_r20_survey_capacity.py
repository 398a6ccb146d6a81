"""Review of issue 20's survey: the capacity counts each camera once, by the stream the node will read; a camera
whose main stream is down and whose sub-stream the node reads asks the detector for its frames too."""

from __future__ import annotations

from dataclasses import replace

from cluster.survey_checks import CameraFact, HostFact, SurveyFacts, diagnose

MAIN = CameraFact("door", "rtsp://10.0.0.5/main", True, True, codec="h264", width=3840, height=2160, fps=25.0,
                  frames=30, open_s=0.8, configured_fps=10.0)  # fmt: skip
SUB = replace(MAIN, camera="door sub-stream", source="rtsp://10.0.0.5/sub", width=640, height=360, sub_of="door")


def _capacity_ok(detect_ms: float, cameras: tuple[CameraFact, ...]) -> bool:
    host = HostFact(2, 8 << 30, 50 << 30, 256 << 20, True, ("CPUExecutionProvider",), "ssd.onnx",
                    detect_ms=detect_ms, provider="CPUExecutionProvider")  # fmt: skip
    found = diagnose(SurveyFacts("s1", "ws-a", cameras, host))
    return all(f.ok for f in found if f.check == "capacity")


def test_a_camera_read_through_its_sub_stream_while_its_main_stream_is_down_is_counted() -> None:
    down = replace(MAIN, opened=False, frames=0, width=0, height=0, reads="sub")
    assert not _capacity_ok(400.0, (MAIN,))  # 10 frames/s at 400 ms a frame does not fit
    assert not _capacity_ok(400.0, (down, SUB))  # nor does it through the sub-stream (it was counted as 0)


def test_each_camera_is_counted_once_whichever_stream_is_read() -> None:
    assert _capacity_ok(50.0, (replace(MAIN, reads="sub"), SUB))
    assert _capacity_ok(50.0, (replace(MAIN, reads="main"), SUB))
    assert not _capacity_ok(50.0, (replace(MAIN, reads="main"), SUB, replace(MAIN, camera="yard")))

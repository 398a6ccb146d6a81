"""Review of issue 20: lines and zones are fractions of the frame, so a sub-stream of another shape than the main
stream (4:3 sub-streams of 16:9 cameras are common: 640x480 beside 1920x1080) moves every line whenever the node
switches stream (stream: auto falls back either way). The survey says so, with the fix."""

from __future__ import annotations

from dataclasses import replace

from cluster.survey_checks import CameraFact, HostFact, SurveyFacts, diagnose

MAIN = CameraFact("door", "rtsp://10.0.0.5/main", True, True, codec="h264", width=1920, height=1080, fps=25.0,
                  frames=30, open_s=0.8, configured_fps=10.0, reads="sub")  # fmt: skip
SUB = replace(
    MAIN, camera="door sub-stream", source="rtsp://10.0.0.5/sub", width=640, height=360, reads="", sub_of="door"
)
HOST = HostFact(2, 8 << 30, 50 << 30, 256 << 20, True, ("CPUExecutionProvider",), "ssd.onnx", detect_ms=20.0,
                provider="CPUExecutionProvider")  # fmt: skip


def _bad(*cameras: CameraFact) -> list[str]:
    return sorted(f.check for f in diagnose(SurveyFacts("s1", "ws-a", cameras, HOST)) if not f.ok)


def test_a_sub_stream_of_another_shape_is_a_finding() -> None:
    assert _bad(MAIN, SUB) == []
    assert _bad(MAIN, replace(SUB, width=640, height=480)) == ["camera door sub-stream shape"]
    assert _bad(MAIN, replace(SUB, width=704, height=576)) == ["camera door sub-stream shape"]  # D1 PAL beside 16:9
    assert _bad(MAIN, replace(SUB, width=642, height=360)) == []  # a few pixels of rounding are no shape


def test_a_sub_stream_or_main_stream_that_is_down_has_no_shape_to_compare() -> None:
    assert "camera door sub-stream shape" not in _bad(MAIN, replace(SUB, opened=False, frames=0, width=0, height=0))
    down = replace(MAIN, opened=False, frames=0, width=0, height=0)
    assert "camera door sub-stream shape" not in _bad(down, replace(SUB, height=480))

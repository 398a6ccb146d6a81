"""A camera's two streams (issue 20): the config's ``substream``/``stream`` keys, the rule that picks one (in the
capture and in the survey), and frame picking on arrival times for streams that declare no true rate. The streams
themselves are read in ``tests/integration/test_camera_formats.py``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from actors.capture import Capture, StreamPacer
from cluster.config import parse_config
from cluster.errors import ConfigError
from cluster.survey import stream_read
from cluster.survey_checks import CameraFact, HostFact, SurveyFacts, diagnose

STORE = """
store: {id: s1, timezone: Europe/London}
cameras:
  - id: cam-1
    source: rtsp://10.0.0.5:554/s1
    lines: [{id: door, start: [0.1, 0.5], end: [0.9, 0.5], in_point: [0.5, 0.9]}]
"""


def _cam(extra: str, source: str = "rtsp://10.0.0.5:554/s1") -> str:
    return STORE.replace("rtsp://10.0.0.5:554/s1", source) + "".join(f"    {line}\n" for line in extra.splitlines())


def test_a_camera_without_a_sub_stream_reads_its_main_stream_and_keeps_its_version() -> None:
    cfg = parse_config(STORE, base_dir=Path("/srv/store"))
    assert cfg.version() == "830755164e10"  # the pinned version of this config (test_config_secrets)
    assert (cfg.cameras[0].substream, cfg.cameras[0].stream, cfg.cameras[0].stream_choice()) == (None, "auto", "main")
    with_sub = parse_config(_cam("substream: rtsp://10.0.0.5:554/s2"), base_dir=Path("/srv/store"))
    assert with_sub.cameras[0].stream_choice() == "auto"
    assert with_sub.version() != cfg.version()  # other pixels may count otherwise: rows say which config
    wider = parse_config(STORE + "runtime: {substream_min_width: 720}\n", base_dir=Path("/srv/store"))
    assert wider.version() != cfg.version()
    same = parse_config(STORE + "runtime: {substream_min_width: 640}\n", base_dir=Path("/srv/store"))
    assert same.version() == cfg.version()


@pytest.mark.parametrize(
    ("extra", "source", "message"),
    [
        ("substream: rtsp://10.0.0.5/s2", "/srv/video.mp4", "substream applies to a stream: source is a video file"),
        ("stream: sub", "rtsp://10.0.0.5:554/s1", "stream: sub needs a substream URL"),
        ("substream: /srv/sub.mp4", "rtsp://10.0.0.5:554/s1", "substream must be a stream URL"),
        ("substream: ftp://10.0.0.5/s2", "rtsp://10.0.0.5:554/s1", "URL scheme 'ftp' is not supported"),
        ("stream: second", "rtsp://10.0.0.5:554/s1", "cameras[0].stream"),
    ],
)
def test_a_sub_stream_that_cannot_work_is_refused_with_the_fix(extra: str, source: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_cam(extra, source), base_dir=Path("/srv/store"))
    assert message in str(info.value)


def test_a_password_in_the_sub_stream_url_is_refused_and_never_shown() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_cam("substream: rtsp://admin:Sub-Pw-0042@10.0.0.5/s2"), source="s.yaml")
    text = str(info.value)
    assert "no user or password in the URL" in text
    assert "Sub-Pw-0042" not in text
    with pytest.raises(ValueError, match="must not hold user info"):
        Capture("cam-1", "rtsp://10.0.0.5/s1", is_stream=True, substream="rtsp://u:p@10.0.0.5/s2", stream="auto")


def test_a_fisheye_camera_reads_its_main_stream_unless_told() -> None:
    lens = "lens: {type: fisheye, centre: [0.5, 0.5], radius: 0.5}"
    auto = parse_config(_cam(f"substream: rtsp://10.0.0.5/s2\n{lens}"), base_dir=Path("/srv/store"))
    assert auto.cameras[0].stream_choice() == "main"  # its views are crops: they need the main stream's pixels
    told = parse_config(_cam(f"substream: rtsp://10.0.0.5/s2\nstream: sub\n{lens}"), base_dir=Path("/srv/store"))
    assert told.cameras[0].stream_choice() == "sub"


def test_the_worker_hands_both_streams_and_the_rule_to_its_capture() -> None:
    from actors.worker import CameraWorker

    cfg = parse_config(
        _cam("substream: rtsp://10.0.0.5/s2") + "runtime: {substream_min_width: 704}\nstorage: {data_dir: /tmp/x}\n",
        base_dir=Path("/srv/store"),
    )
    worker = CameraWorker(cfg, "cam-1", lambda f: f, lambda d: d, autostart=False)
    cap = worker.capture
    assert (cap.source, cap.substream, cap.stream, cap.min_width) == (
        "rtsp://10.0.0.5:554/s1",
        "rtsp://10.0.0.5/s2",
        "auto",
        704,
    )


MAIN = CameraFact("door", "rtsp://10.0.0.5/main", True, True, codec="h264", width=3840, height=2160, fps=25.0,
                  frames=30, open_s=0.8, configured_fps=10.0)  # fmt: skip
SUB = replace(MAIN, camera="door sub-stream", source="rtsp://10.0.0.5/sub", width=640, height=360, sub_of="door")


@pytest.mark.parametrize(
    ("choice", "sub", "main", "reads"),
    [
        ("auto", SUB, MAIN, "sub"),
        ("auto", replace(SUB, width=639), MAIN, "main"),  # narrower than 640
        ("auto", replace(SUB, opened=False, frames=0), MAIN, "main"),  # does not open
        ("auto", replace(SUB, width=320), replace(MAIN, opened=False, frames=0), "sub"),  # a narrow one beats none
        ("main", SUB, MAIN, "main"),
        ("sub", replace(SUB, width=320), MAIN, "sub"),
    ],
)
def test_the_survey_predicts_the_stream_with_the_capture_rule(
    choice: str, sub: CameraFact, main: CameraFact, reads: str
) -> None:
    assert stream_read(choice, main, sub, 640) == reads


def test_a_4k_camera_read_through_its_sub_stream_is_no_problem_and_the_sub_stream_is_not_a_camera() -> None:
    host = HostFact(2, 8 << 30, 50 << 30, 256 << 20, True, ("CPUExecutionProvider",), "ssd.onnx", detect_ms=50.0,
                    provider="CPUExecutionProvider")  # fmt: skip
    found = diagnose(SurveyFacts("s1", "ws-a", (replace(MAIN, reads="sub"), SUB), host))
    bad = sorted(f.check for f in found if not f.ok)
    assert bad == []  # at 50 ms a frame 10 fps fit, 2 x 10 would not: the sub-stream row is not counted twice
    assert [f.message for f in found if f.check == "camera door stream"] == [
        "the node reads its sub stream (stream: auto's rule)"
    ]
    alone = diagnose(SurveyFacts("s1", "ws-a", (MAIN,), host))
    assert [f.check for f in alone if not f.ok] == ["camera door size"]
    assert "cameras[door].substream" in next(f.fix for f in alone if f.check == "camera door size")


def _pick(fps: float | None, arrivals: list[float]) -> list[int]:
    pacer = StreamPacer(fps)
    return [i for i, t in enumerate(arrivals) if pacer.take(t)]


def test_frames_are_picked_on_arrival_at_the_configured_rate() -> None:
    ten = [i * 0.1 for i in range(20)]
    assert _pick(5, ten) == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]  # 10 frames/s at 5: every other one
    assert _pick(None, ten) == list(range(20))
    assert _pick(20, ten) == list(range(20))  # a source slower than asked: every frame
    # jitter of 9 ms each way around 10 frames/s keeps 5 frames/s (not 3.3, as a strict due time would)
    jittered = [t + (0.009 if i % 2 else -0.009) for i, t in enumerate(ten)]
    assert _pick(5, jittered) == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]
    # 25 frames/s at 10: 10 a second, phase kept
    assert len(_pick(10, [i * 0.04 for i in range(250)])) == 100


def test_a_stalled_stream_earns_no_burst_when_it_comes_back() -> None:
    arrivals = [i * 0.1 for i in range(10)] + [3.0 + i * 0.1 for i in range(10)]  # 2.1 s without a frame
    assert _pick(5, arrivals) == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]

"""The survey's judgements (``cluster.survey_checks``), pure: each fact that is in the way gives one finding with
what to change, and only that one."""

from __future__ import annotations

from dataclasses import replace

from cluster.survey_checks import CameraFact, HostFact, PortFact, SurveyFacts, check_camera, diagnose

CAM = CameraFact("door", "rtsp://10.0.0.5/main", True, True, codec="h264", width=1280, height=720, fps=25.0,
                 frames=30, open_s=0.8, configured_fps=10.0)  # fmt: skip
HOST = HostFact(2, 8 << 30, 50 << 30, 256 << 20, True, ("CPUExecutionProvider",), "ssd.onnx", detect_ms=20.0,
                provider="CPUExecutionProvider")  # fmt: skip


def changes(facts: SurveyFacts) -> list[str]:
    return sorted(f.check for f in diagnose(facts) if not f.ok)


def test_a_good_site_is_ready() -> None:
    assert changes(SurveyFacts("s1", "ws-a", (CAM,), HOST, (PortFact("etcd", "10.0.0.2", 2379, True, 0.4),))) == []


def test_each_problem_is_one_finding_with_its_fix() -> None:
    cams = (
        replace(CAM, camera="wide", width=3840, height=2160),  # 4K main stream: the sub-stream
        replace(CAM, camera="slow", open_s=7.5),  # a long GOP: a takeover waits as long
        replace(CAM, camera="low", fps=6.0),  # 6 fps source, 10 asked
        replace(CAM, camera="dead", opened=False, frames=0, error="connection refused"),
        replace(CAM, camera="fish", width=2048, height=2048, circle=(0.5, 0.5, 0.5)),  # no lens in the config
        replace(CAM, camera="fish2", width=2048, height=2048, circle=(0.5, 0.5, 0.5), lens="fisheye", views=12),
    )
    host = replace(HOST, free_bytes=100 << 20, clock_synced=False)
    ports = (PortFact("replication ws-b", "10.0.0.3", 8815, False, error="Connection refused"),)
    found = diagnose(SurveyFacts("s1", "ws-a", cams, host, ports))
    bad = {f.check: f for f in found if not f.ok}
    assert sorted(bad) == [
        "camera dead", "camera fish lens", "camera low rate", "camera slow open", "camera wide size", "capacity",
        "clock", "disk", "network replication ws-b",
    ]  # fmt: skip
    assert "sub-stream" in bad["camera wide size"].fix
    assert bad["camera fish lens"].fix.startswith("edgepair camera calibrate-lens --config STORE.yaml --camera fish")
    assert bad["camera low rate"].fix == "set cameras[low].fps to 6 or less, or raise the camera's frame rate"
    # wide, slow and fish at 10 fps, low at its source's 6, fish2 10 x 12 views (dead reads nothing): 156
    assert "they ask 156" in bad["capacity"].message
    assert "open TCP 8815" in bad["network replication ws-b"].fix


def test_a_camera_that_gives_no_frame_is_one_finding_naming_the_source() -> None:
    (f,) = check_camera(replace(CAM, opened=True, frames=0, error="opened, but no frame came"))
    assert (f.ok, f.message) == (False, "rtsp://10.0.0.5/main: opened, but no frame came")

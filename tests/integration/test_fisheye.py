"""Fisheye cameras on real frames: CEPDOF (ceiling fisheye, rotated-box ground truth) through real ONNX detectors, the
image circle estimated from a frame, the preview image, and counting on the synthetic scene with exact crossings.

Needs ``../shared`` (models, footage); each test skips with the reason when it is absent. The bench-scale runs (all
10 frames, every model, longer scenes) are in ``bench/fisheye.py``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from actors.fisheye import make_views, merge_views, plan_views, rotated_iou
from actors.inference import Detector
from actors.lens import Lens, estimate_circle
from cluster.cli import main
from tests.cepdof import axis_rotated, load_cepdof, matches

SHARED = Path(__file__).resolve().parents[3] / "shared"
CEPDOF = SHARED / "footage" / "fisheye-cepdof"
YOLOX = SHARED / "models" / "yolox_nano_coco.onnx"
NANODET = SHARED / "models" / "nanodet_m_416_coco.onnx"
ONE_BY_ONE = SHARED / "footage" / "one-by-one" / "one-by-one-person-detection.mp4"

needs_cepdof = pytest.mark.skipif(
    not (CEPDOF.exists() and YOLOX.exists()), reason=f"needs {CEPDOF} and {YOLOX} (../shared)"
)


@pytest.fixture(scope="module")
def cepdof() -> tuple[list[np.ndarray], list[np.ndarray]]:
    frames, truths, _ = load_cepdof(CEPDOF)
    return frames[:2], truths[:2]


@needs_cepdof
def test_image_circle_of_a_cepdof_frame(cepdof: tuple[list[np.ndarray], list[np.ndarray]]) -> None:
    circle = estimate_circle(cepdof[0][0])
    assert circle is not None
    assert (round(circle.cx), round(circle.cy), round(circle.radius)) == (1024, 1024, 1024)


@needs_cepdof
def test_fisheye_path_finds_the_people_the_plain_detector_misses(
    cepdof: tuple[list[np.ndarray], list[np.ndarray]],
) -> None:
    frames, truths = cepdof
    lens = Lens.equidistant(1023.5, 1024.0, 1023.6)
    views = plan_views(lens, 12)
    det = Detector(YOLOX, threads=1)
    fish_tp = fish_n = plain_tp = plain_n = 0
    for frame, truth in zip(frames, truths, strict=True):
        boxes = merge_views(det.detect_batch(make_views(frame, views)), views, lens).boxes
        fish_tp += matches(rotated_iou(boxes, truth))
        fish_n += len(boxes)
        plain = axis_rotated(det.detect(frame).xyxy)
        plain_tp += matches(rotated_iou(plain, truth))
        plain_n += len(plain)
    assert sum(len(t) for t in truths) == 14
    assert (fish_tp, fish_n) == (14, 14)  # recall 14/14, precision 1.0 at rotated IoU 0.5 (first round: 13 of 13)
    assert (plain_tp, plain_n) == PLAIN


def _config(tmp_path: Path, lens: bool) -> Path:
    frame = CEPDOF / "video_0" / "Lunch3_000001.jpg"
    text = f"""
store: {{id: s1, timezone: Europe/London}}
model: {{path: {YOLOX}}}
cameras:
  - id: ceiling
    source: {frame}
    anchor: center
{"    lens: {type: fisheye, centre: [0.5, 0.5], radius: 0.5, views: 8}" if lens else ""}
    lines:
      - {{id: door, start: [0.1, 0.25], end: [0.9, 0.25], in_point: [0.5, 0.9]}}
    zones:
      - {{id: table, polygon: [[0.2, 0.6], [0.45, 0.6], [0.45, 0.8], [0.2, 0.8]]}}
"""
    path = tmp_path / "store.yaml"
    path.write_text(text)
    return path


@needs_cepdof
def test_calibrate_lens_prints_the_lens_block(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-q", "camera", "calibrate-lens", "--config", str(_config(tmp_path, False)), "--camera", "ceiling",
                 "--image", str(CEPDOF / "video_0" / "Lunch3_000001.jpg")]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert out.splitlines()[:5] == [
        "lens:", "  type: fisheye", "  centre: [0.4998, 0.5000]", "  radius: 0.4998", "  size: [2048, 2048]"
    ]  # fmt: skip


@needs_cepdof
@pytest.mark.parametrize("fisheye", [True, False])
def test_preview_draws_the_set_up_where_the_config_puts_it(tmp_path: Path, fisheye: bool) -> None:
    out = tmp_path / "preview.png"
    args = ["-q", "camera", "preview", "--config", str(_config(tmp_path, fisheye)), "--camera", "ceiling"]
    assert main([*args, "--out", str(out), "--frames", "1"]) == 0
    image = cv2.imread(str(out))
    assert image.shape == (2048, 2048, 3)
    # BGR colours of actors.preview: line red, zone blue, lens circle yellow, detections green.
    assert image[512, 1024].tolist() == [0, 0, 255]  # the line's midpoint, (0.5, 0.25)
    assert image[1434, 410].tolist() == [255, 0, 0]  # the zone's left edge, (0.2, 0.7)
    top_of_circle = image[3, 1024].tolist()
    assert (top_of_circle == [0, 255, 255]) is fisheye
    green = int(np.all(image == (0, 255, 0), axis=2).sum())
    # Detections drawn in both cases: their outline pixels, exactly (the fisheye path's boxes, the plain detector's 4).
    assert green == (GREEN_FISHEYE if fisheye else GREEN_PLAIN)


needs_scene = pytest.mark.skipif(
    not (ONE_BY_ONE.exists() and NANODET.exists() and YOLOX.exists()),
    reason=f"needs {ONE_BY_ONE}, {NANODET} and {YOLOX} (../shared)",
)


def _count(seed: int, walkers: int, seconds: float, model: Path, views: int) -> tuple[dict, dict]:
    from tests.fisheye_scene import build_scene, count_scene

    scene = build_scene(seed, walkers=walkers, seconds=seconds)
    return scene.truth, count_scene(scene, Detector(model, threads=1), fisheye=True, views=views)


@needs_scene
def test_counting_under_the_lens_against_exact_crossings() -> None:
    """The camera worker's path (``wrap_detection``, ``build_analytics``) on a small scene: 3 people, 8 s at 5 fps,
    NanoDet-m through 12 views; the true crossings follow from the floor paths exactly."""
    truth, counted = _count(1, 3, 8.0, NANODET, 12)
    assert truth == SMALL_TRUTH
    assert counted == SMALL_COUNTED


@needs_scene
@pytest.mark.slow  # 80 frames x 12 views through NanoDet-m: about 40 s on a quiet 2-core machine, minutes under load
def test_counting_a_busier_scene_under_the_lens() -> None:
    """Held-out seed 2 of ``bench/fisheye.py --counting`` (6 people, 16 s), NanoDet-m through 12 views."""
    truth, counted = _count(2, 6, 16.0, NANODET, 12)
    assert truth == BUSY_TRUTH
    assert counted == BUSY_COUNTED


PLAIN = (4, 4)  # the plain detector: 4 of the 14 people, no false box
GREEN_FISHEYE, GREEN_PLAIN = 33777, 16179  # pure green pixels of the preview (measured; cv2 line drawing is exact)
# Measured with the merge of this round (bench/fisheye.py --counting prints the same scenes' errors per path).
SMALL_TRUTH = {"across": {"in": 2, "out": 1}, "along": {"in": 1, "out": 1}}
SMALL_COUNTED = SMALL_TRUTH  # every crossing, none extra (count error 0 of 5)
BUSY_TRUTH = {"across": {"in": 1, "out": 2}, "along": {"in": 3, "out": 1}}
BUSY_COUNTED = BUSY_TRUTH  # count error 0 of 7 (the first round's merge too; the plain detector 7 of 7)

"""Real ONNX Runtime sessions on every model in ``../shared/models`` and real PETS09-S2L1 frames (``vtest.avi``).

Counts of true and false positives are exact: ORT on CPU with one thread is deterministic. They were measured once
(onnxruntime 1.32, OpenCV 5.0, x86-64) and hard-coded; a change means the decoding or preprocessing changed.
If an upgrade of onnxruntime/OpenCV moves one borderline box, re-measure (the test prints recall and precision).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from actors.detections import Detections
from actors.inference import Detector
from actors.tracking import iou
from cluster.errors import ModelError

SHARED = Path(__file__).parents[2].parent / "shared"
MODELS = SHARED / "models"
GT_FILE = SHARED / "footage" / "pets09-s2l1" / "gt.txt"
VIDEO = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
FRAME_INDICES = list(range(0, 800, 40))  # 20 frames spread over the 795 (OpenCV read index; GT frame = index + 1)
IOU_MATCH = 0.5


@dataclass(frozen=True)
class Case:
    model: str
    options: dict[str, Any] = field(default_factory=dict)
    tp: int = 0
    fp: int = 0
    readme: tuple[float, float] | None = None  # (recall, precision) the shared README reports on the whole sequence


CASES = [
    Case("ssdlite_pedestrian.onnx", {}, tp=72, fp=24, readme=(0.67, 0.78)),
    Case("ssdlite_pedestrian.onnx", {"tiles": 2}, tp=96, fp=7, readme=(0.80, 0.87)),
    Case("picodet_s_416_coco.onnx", {}, tp=107, fp=11, readme=(0.89, 0.87)),
    Case("picodet_s_320_coco.onnx", {}, tp=103, fp=11, readme=(0.87, 0.89)),
    Case("nanodet_m_416_coco.onnx", {}, tp=95, fp=6, readme=None),
    Case("yolox_nano_coco.onnx", {}, tp=103, fp=18, readme=(0.90, 0.86)),
]


# ----------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def models() -> Path:
    if not MODELS.is_dir():
        pytest.skip(f"../shared/models not found: {MODELS} (real-model tests need the shared folder beside the repo)")
    return MODELS


@pytest.fixture(scope="module")
def frames(models: Path) -> dict[int, np.ndarray]:
    if not VIDEO.is_file():
        pytest.skip(f"test footage not found: {VIDEO} (apt-get install opencv-doc)")
    capture = cv2.VideoCapture(str(VIDEO))
    wanted, index = set(FRAME_INDICES), 0
    found: dict[int, np.ndarray] = {}
    try:
        while len(found) < len(wanted):
            ok, frame = capture.read()
            if not ok:
                break
            if index in wanted:
                found[index] = frame
            index += 1
    finally:
        capture.release()
    assert len(found) == len(wanted), f"read {len(found)} of {len(wanted)} frames from {VIDEO}"
    return found


@pytest.fixture(scope="module")
def ground_truth(models: Path) -> np.ndarray:
    if not GT_FILE.is_file():
        pytest.skip(f"ground truth not found: {GT_FILE}")
    return np.loadtxt(GT_FILE, delimiter=",", ndmin=2)


# ------------------------------------------------------------------------------------------------------ scoring


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (N, 4) with every box in ``b`` (M, 4), xyxy: the tracker's own."""
    return iou(np.asarray(a, np.float32), np.asarray(b, np.float32))


def gt_boxes(ground_truth: np.ndarray, frame_index: int) -> tuple[np.ndarray, np.ndarray]:
    """(considered, ignored) xyxy boxes of the GT frame ``frame_index + 1`` (MOT: x, y, w, h; flag column 7)."""
    rows = ground_truth[ground_truth[:, 0] == frame_index + 1]
    xyxy = np.stack([rows[:, 2], rows[:, 3], rows[:, 2] + rows[:, 4], rows[:, 3] + rows[:, 5]], axis=1)
    return xyxy[rows[:, 6] == 1], xyxy[rows[:, 6] == 0]


def count_matches(det: Detections, considered: np.ndarray, ignored: np.ndarray) -> tuple[int, int]:
    """(true positives, false positives): one-to-one matching at IoU >= 0.5 with considered boxes; an unmatched
    detection on an ignored box (flag 0) is neither."""
    unmatched = np.ones(len(det), dtype=bool)
    tp = 0
    if len(det) and len(considered):
        iou = iou_matrix(det.xyxy, considered)
        rows, cols = linear_sum_assignment(-iou)
        good = iou[rows, cols] >= IOU_MATCH
        tp = int(good.sum())
        unmatched[rows[good]] = False
    if unmatched.any() and len(ignored):
        unmatched &= iou_matrix(det.xyxy, ignored).max(axis=1) < IOU_MATCH
    return tp, int(unmatched.sum())


# --------------------------------------------------------------------------------------------------- accuracy


@pytest.mark.parametrize(
    "case", CASES, ids=lambda c: f"{c.model.removesuffix('.onnx')}-tiles{c.options.get('tiles', 1)}"
)
def test_exact_counts_on_pets09(
    case: Case, models: Path, frames: dict[int, np.ndarray], ground_truth: np.ndarray
) -> None:
    detector = Detector(models / case.model, threads=1, **case.options)
    tp = fp = total = 0
    for index in FRAME_INDICES:
        considered, ignored = gt_boxes(ground_truth, index)
        frame_tp, frame_fp = count_matches(detector.detect(frames[index]), considered, ignored)
        tp, fp, total = tp + frame_tp, fp + frame_fp, total + len(considered)
    recall, precision = tp / total, tp / max(tp + fp, 1)
    print(f"{case.model} {case.options}: tp={tp} fp={fp} gt={total} recall={recall:.3f} precision={precision:.3f}")
    assert (tp, fp) == (case.tp, case.fp), f"recall {recall:.3f} precision {precision:.3f} on {total} GT boxes"
    if case.readme is not None:  # sanity: the neighbourhood of the README's whole-sequence figures
        assert abs(recall - case.readme[0]) < 0.1 and abs(precision - case.readme[1]) < 0.1


# ------------------------------------------------------------------------------------------------- behaviour


@pytest.mark.parametrize(
    ("model", "family", "size", "threshold"),
    [
        ("ssdlite_pedestrian.onnx", "ssd", None, 0.3),
        ("picodet_s_416_coco.onnx", "gfl", 416, 0.5),
        ("picodet_s_320_coco.onnx", "gfl", 320, 0.45),
        ("nanodet_m_416_coco.onnx", "gfl", 416, 0.5),
        ("yolox_nano_coco.onnx", "yolox", 640, 0.5),
    ],
)
def test_properties(model: str, family: str, size: int | None, threshold: float, models: Path) -> None:
    detector = Detector(models / model)
    assert (detector.family, detector.input_size, detector.threshold) == (family, size, threshold)
    assert detector.provider == "CPUExecutionProvider"  # this CI has no GPU
    assert detector.model_sha256 == hashlib.sha256((models / model).read_bytes()).hexdigest()
    # onnxruntime's threads do not busy-wait between runs unless asked (bench/spinning.py)
    options = detector._session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    spinning = Detector(models / model, spinning=True)._session.get_session_options()
    assert spinning.get_session_config_entry("session.intra_op.allow_spinning") == "1"


@pytest.mark.parametrize(
    ("model", "options"),
    [("ssdlite_pedestrian.onnx", {"tiles": 2}), ("ssdlite_pedestrian.onnx", {}), ("picodet_s_320_coco.onnx", {})],
)
def test_detect_batch_matches_detect(
    model: str, options: dict[str, Any], models: Path, frames: dict[int, np.ndarray]
) -> None:
    """The SSD has a dynamic batch dim (one session call for 3 frames x tiles); PicoDet's is fixed (a loop)."""
    detector = Detector(models / model, **options)
    batch = [frames[i] for i in FRAME_INDICES[:3]]
    for one, many in zip([detector.detect(f) for f in batch], detector.detect_batch(batch), strict=True):
        assert len(one) == len(many)
        np.testing.assert_allclose(one.xyxy, many.xyxy, atol=0.05)
        np.testing.assert_allclose(one.confidence, many.confidence, atol=1e-4)
    assert detector.detect_batch([]) == []


def test_detect_keeps_boxes_inside_the_frame(models: Path, frames: dict[int, np.ndarray]) -> None:
    det = Detector(models / "yolox_nano_coco.onnx").detect(frames[0])
    assert len(det) > 0 and det.class_id.tolist() == [0] * len(det)
    assert det.xyxy[:, 0::2].min() >= 0 and det.xyxy[:, 0::2].max() <= 768
    assert det.xyxy[:, 1::2].min() >= 0 and det.xyxy[:, 1::2].max() <= 576


@pytest.mark.parametrize(
    ("frame", "match"),
    [
        (np.zeros((576, 768), np.uint8), r"frame 0: expected a BGR uint8 array of shape \(H, W, 3\)"),
        (np.zeros((576, 768, 4), np.uint8), "got shape"),
        (np.zeros((576, 768, 3), np.float32), "dtype float32"),
        ("frame.jpg", "got str"),
        (np.zeros((0, 768, 3), np.uint8), "empty frame"),
    ],
)
def test_detect_rejects_bad_frames(frame: Any, match: str, models: Path) -> None:
    with pytest.raises(ValueError, match=match):
        Detector(models / "picodet_s_320_coco.onnx").detect(frame)


# ------------------------------------------------------------------------------------------------------ errors


def test_missing_model_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.onnx"
    with pytest.raises(ModelError, match="detector model not found") as info:
        Detector(path)
    assert str(path) in str(info.value) and "edgepair model install" in str(info.value)


def test_corrupt_model_file(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.onnx"
    path.write_bytes(b"this is not a protobuf \x00\xff" * 100)
    with pytest.raises(ModelError, match="not a valid ONNX model") as info:
        Detector(path)
    assert str(path) in str(info.value) and "model.path" in str(info.value)


def test_onnx_model_that_is_not_a_detector(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx", reason="the `onnx` package (a test dependency) builds the non-detector model")
    helper = onnx.helper
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["out"]),
        ],
        "not_a_detector",
        [helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, [1, 3, 224, 224])],
        [helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, [1, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "classifier.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelError, match="cannot tell the detector family") as info:
        Detector(path)
    message = str(info.value)
    assert str(path) in message and "image tensor(float) [1, 3, 224, 224]" in message and "yolox" in message


def test_unknown_family_name(models: Path) -> None:
    with pytest.raises(ModelError, match="unknown detector family 'detr'"):
        Detector(models / "picodet_s_320_coco.onnx", family="detr")


def test_unavailable_provider(models: Path) -> None:
    with pytest.raises(ModelError, match="not in this onnxruntime build"):
        Detector(models / "picodet_s_320_coco.onnx", providers=["NoSuchExecutionProvider"])

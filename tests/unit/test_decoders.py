"""Decoders on small synthetic raw outputs whose boxes are known exactly (no model, no onnxruntime)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from actors import decoders
from actors.decoders import FrameTransform
from actors.detections import Detections
from cluster.errors import ModelError

IDENTITY = FrameTransform(1.0, 1.0, 0.0, 0.0, 1000, 1000)
BIG = 100.0  # a bin logit this far above the others gives a softmax of exactly one-hot in float32


# ------------------------------------------------------------------------------------------------------ helpers


def gfl_maps(size: int, strides: tuple[int, ...], classes: int = 80) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Zero score maps ``[1, N, C]`` and uniform box maps ``[1, N, 32]`` for a ``size`` x ``size`` input."""
    scores = [np.zeros((1, (size // s) ** 2, classes), np.float32) for s in strides]
    boxes = [np.zeros((1, (size // s) ** 2, 32), np.float32) for s in strides]
    return scores, boxes


def one_hot_bins(left: int, top: int, right: int, bottom: int) -> np.ndarray:
    """32 bin logits whose per-side softmax expectation is exactly (left, top, right, bottom) bins."""
    bins = np.zeros((4, 8), np.float32)
    for side, k in enumerate((left, top, right, bottom)):
        bins[side, k] = BIG
    return bins.reshape(32)


def yolox_flat(levels: list[np.ndarray]) -> np.ndarray:
    """Rows ``[N_l, 5+C]`` per stride -> the export's layout: blocks ``[5+C, N_l]`` concatenated, as ``[1, N, 5+C]``."""
    flat = np.concatenate([rows.T.reshape(-1) for rows in levels])
    channels = levels[0].shape[1]
    return flat.reshape(1, -1, channels)


def yolox_levels(size: int, classes: int = 80) -> list[np.ndarray]:
    """YOLOX rows with objectness logit -20 everywhere (score ~ 2e-9)."""
    levels = [np.zeros(((size // s) ** 2, 5 + classes), np.float32) for s in (8, 16, 32)]
    for rows in levels:
        rows[:, 4] = -20.0
    return levels


# --------------------------------------------------------------------------------------------------------- ssd


def ssd_outputs(boxes: list[list[float]], scores: list[float], classes: list[float], count: int) -> dict:
    pad = 5 - len(boxes)
    return {
        "num_detections:0": np.array([count], np.float32),
        "detection_boxes:0": np.array([boxes + [[0, 0, 0, 0]] * pad], np.float32),
        "detection_scores:0": np.array([scores + [0.0] * pad], np.float32),
        "detection_classes:0": np.array([classes + [1.0] * pad], np.float32),
    }


@pytest.mark.parametrize(
    ("boxes", "scores", "classes", "count", "expected"),
    [
        pytest.param([[0.1, 0.2, 0.5, 0.4]], [0.9], [1], 1, [[40, 10, 80, 50]], id="one-person"),
        pytest.param([[0.1, 0.2, 0.5, 0.4]], [0.29], [1], 1, [], id="below-threshold"),
        pytest.param([[0.1, 0.2, 0.5, 0.4]], [0.9], [2], 1, [], id="not-a-person"),
        pytest.param([[0.1, 0.2, 0.5, 0.4], [0, 0, 1, 1]], [0.9, 0.8], [1, 1], 1, [[40, 10, 80, 50]], id="num-cuts"),
        pytest.param([[-0.1, 0.9, 0.5, 1.2]], [0.5], [1], 1, [[180, 0, 200, 50]], id="clipped"),
    ],
)
def test_decode_ssd(boxes: list, scores: list, classes: list, count: int, expected: list) -> None:
    _, transform = decoders.preprocess_ssd(np.zeros((100, 200, 3), np.uint8))
    det = decoders.decode_ssd(ssd_outputs(boxes, scores, classes, count), transform, threshold=0.3)
    np.testing.assert_allclose(det.xyxy, np.array(expected, np.float32).reshape(-1, 4), atol=1e-4)
    assert det.class_id.tolist() == [0] * len(expected)


def test_preprocess_ssd_is_full_size_rgb() -> None:
    frame = np.zeros((4, 6, 3), np.uint8)
    frame[..., 0] = 7  # blue
    tensor, transform = decoders.preprocess_ssd(frame)
    assert tensor.shape == (1, 4, 6, 3) and tensor.dtype == np.uint8
    assert tensor[0, 0, 0].tolist() == [0, 0, 7]
    assert (transform.scale_x, transform.scale_y) == (1 / 6, 1 / 4)


# --------------------------------------------------------------------------------------------------------- gfl


@pytest.mark.parametrize(
    ("strides", "level", "cell", "bins", "expected"),
    [
        # PicoDet: centre (col + 0.5) * stride = (28, 20); one-hot distances (1, 2, 3, 4) * 8.
        pytest.param((8, 16, 32, 64), 0, (2, 3), one_hot_bins(1, 2, 3, 4), [20, 4, 52, 52], id="picodet-onehot"),
        # PicoDet stride 16, cell (1, 1): centre (24, 24); uniform bins -> 3.5 * 16 = 56 on every side.
        pytest.param((8, 16, 32, 64), 1, (1, 1), np.zeros(32, np.float32), [-32, -32, 80, 80], id="picodet-uniform"),
        # PicoDet stride 64, the single cell: centre (32, 32); distances (0, 0, 7, 7) * 64.
        pytest.param((8, 16, 32, 64), 3, (0, 0), one_hot_bins(0, 0, 7, 7), [32, 32, 480, 480], id="picodet-s64"),
        # NanoDet: centre col * stride + (stride - 1) / 2 = (27.5, 19.5).
        pytest.param((8, 16, 32), 0, (2, 3), one_hot_bins(1, 2, 3, 4), [19.5, 3.5, 51.5, 51.5], id="nanodet-onehot"),
        # NanoDet stride 32, cell (1, 0): centre (32 + 15.5, 15.5).
        pytest.param((8, 16, 32), 2, (0, 1), one_hot_bins(1, 0, 0, 1), [15.5, 15.5, 47.5, 47.5], id="nanodet-s32"),
    ],
)
def test_decode_gfl_single_cell(
    strides: tuple[int, ...], level: int, cell: tuple[int, int], bins: np.ndarray, expected: list[float]
) -> None:
    size = 64
    scores, boxes = gfl_maps(size, strides)
    row, col = cell
    index = row * (size // strides[level]) + col
    scores[level][0, index, 0] = 0.9
    scores[level][0, index, 5] = 0.99  # another class: ignored
    boxes[level][0, index] = bins
    det = decoders.decode_gfl(scores + boxes, IDENTITY, threshold=0.5, input_size=size)
    np.testing.assert_allclose(det.xyxy, [np.clip(expected, 0, 1000)], atol=1e-4)
    np.testing.assert_allclose(det.confidence, [0.9])


def test_decode_gfl_maps_back_through_plain_resize() -> None:
    scores, boxes = gfl_maps(64, (8, 16, 32, 64))
    scores[0][0, 19, 0] = 0.8
    boxes[0][0, 19] = one_hot_bins(1, 2, 3, 4)  # model box (20, 4, 52, 52), see above
    _, transform = decoders.preprocess_gfl(np.zeros((64, 128, 3), np.uint8), 64)  # x scaled by 0.5
    det = decoders.decode_gfl(scores + boxes, transform, threshold=0.5, input_size=64)
    np.testing.assert_allclose(det.xyxy, [[40, 4, 104, 52]], atol=1e-4)


def test_decode_gfl_output_order_does_not_matter_and_nms_applies() -> None:
    scores, boxes = gfl_maps(64, (8, 16, 32))
    for index, score in ((19, 0.9), (20, 0.7)):  # neighbouring cells, same distances: IoU 24/40 = 0.6 -> suppressed
        scores[0][0, index, 0] = score
        boxes[0][0, index] = one_hot_bins(1, 2, 3, 4)
    shuffled = [boxes[2], scores[1], boxes[0], scores[2], scores[0], boxes[1]]
    det = decoders.decode_gfl(shuffled, IDENTITY, threshold=0.5, input_size=64)
    np.testing.assert_allclose(det.confidence, [0.9])
    np.testing.assert_allclose(det.xyxy, [[19.5, 3.5, 51.5, 51.5]], atol=1e-4)


def test_decode_gfl_rejects_unpaired_maps() -> None:
    scores, boxes = gfl_maps(64, (8, 16, 32))
    with pytest.raises(ModelError, match="pairs"):
        decoders.decode_gfl(scores + boxes[:2], IDENTITY, threshold=0.5, input_size=64)


def test_preprocess_gfl_layout_and_normalisation() -> None:
    frame = np.full((10, 20, 3), (103, 116, 123), np.uint8)
    tensor, transform = decoders.preprocess_gfl(frame, 32)
    assert tensor.shape == (1, 3, 32, 32) and tensor.dtype == np.float32
    np.testing.assert_allclose(
        tensor[0, :, 0, 0], [(103 - 103.53) / 57.375, (116 - 116.28) / 57.12, (123 - 123.675) / 58.395], atol=1e-6
    )
    assert (transform.scale_x, transform.scale_y, transform.pad_x, transform.pad_y) == (1.6, 3.2, 0.0, 0.0)


# ------------------------------------------------------------------------------------------------------- yolox


@pytest.mark.parametrize(
    ("level", "cell", "row", "expected"),
    [
        # stride 16, cell (gx=1, gy=2): cx = (0.5 + 1) * 16 = 24, cy = (0.25 + 2) * 16 = 36, w = 32, h = 64.
        pytest.param(1, (1, 2), [0.5, 0.25, math.log(2), math.log(4)], [8, 4, 40, 68], id="stride16"),
        # stride 8, cell (gx=3, gy=0): cx = 28, cy = 4, w = h = 8.
        pytest.param(0, (3, 0), [0.5, 0.5, 0.0, 0.0], [24, 0, 32, 8], id="stride8"),
        # stride 32, cell (gx=1, gy=1): cx = cy = 32, w = 32 e, h = 32.
        pytest.param(2, (1, 1), [0.0, 0.0, 1.0, 0.0], [32 - 16 * math.e, 16, 32 + 16 * math.e, 48], id="stride32"),
    ],
)
def test_decode_yolox_single_row(level: int, cell: tuple[int, int], row: list[float], expected: list[float]) -> None:
    size = 64
    levels = yolox_levels(size)
    gx, gy = cell
    index = gy * (size // (8, 16, 32)[level]) + gx
    levels[level][index, :4] = row
    levels[level][index, 4] = 2.0  # objectness logit
    levels[level][index, 5] = 1.0  # person logit
    levels[level][index, 6] = 9.0  # another class: ignored
    det = decoders.decode_yolox(yolox_flat(levels), IDENTITY, threshold=0.5, input_size=size)
    sigmoid = 1 / (1 + math.exp(-2.0)) / (1 + math.exp(-1.0))
    np.testing.assert_allclose(det.xyxy, [np.clip(expected, 0, 1000)], atol=1e-4)  # clipped to the frame
    np.testing.assert_allclose(det.confidence, [sigmoid], rtol=1e-6)


def test_decode_yolox_logits_below_threshold_and_nms() -> None:
    levels = yolox_levels(64)
    levels[0][0, :5] = [0.5, 0.5, 1.0, 1.0, 0.0]  # score sigmoid(0) * sigmoid(20) = 0.5: not > 0.5
    levels[0][0, 5] = 20.0
    levels[1][5, :6] = [0.0, 0.0, 1.0, 1.0, 5.0, 5.0]  # stride 16, (1, 1): box centred (16, 16)
    levels[1][0, :6] = [1.0, 1.0, 1.0, 1.0, 4.0, 4.0]  # stride 16, (0, 0): same box, lower score -> suppressed
    det = decoders.decode_yolox(yolox_flat(levels), IDENTITY, threshold=0.5, input_size=64)
    assert len(det) == 1
    np.testing.assert_allclose(det.confidence, [(1 / (1 + math.exp(-5.0))) ** 2], rtol=1e-6)


def test_decode_yolox_rejects_wrong_size() -> None:
    with pytest.raises(ModelError, match="does not split"):
        decoders.decode_yolox(np.zeros((1, 85, 85), np.float32), IDENTITY, threshold=0.5, input_size=64)


@pytest.mark.parametrize(("family", "pad_y", "top_value"), [("yolox", 0, None), ("yolov8", 80, 114 / 255)])
def test_letterbox_transforms(family: str, pad_y: int, top_value: float | None) -> None:
    frame = np.full((576, 768, 3), 200, np.uint8)
    tensor, transform = decoders.preprocess(family, frame, 640)
    assert tensor.shape == (1, 3, 640, 640) and tensor.dtype == np.float32
    assert (transform.scale_x, transform.scale_y) == (640 / 768, 480 / 576)
    assert (transform.pad_x, transform.pad_y) == (0.0, pad_y)
    if top_value is not None:
        np.testing.assert_allclose(tensor[0, :, 0, 0], [top_value] * 3, rtol=1e-6)
    model_box = np.array([[64, pad_y + 40, 128, pad_y + 120]], np.float32)
    np.testing.assert_allclose(transform.to_frame(model_box), [[76.8, 48, 153.6, 144]], rtol=1e-5)


def test_preprocess_yolox_normalises_rgb_with_imagenet_stats() -> None:
    frame = np.zeros((640, 640, 3), np.uint8)
    frame[..., 2] = 255  # red in BGR
    tensor, _ = decoders.preprocess_yolox(frame)
    np.testing.assert_allclose(
        tensor[0, :, 0, 0], [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (0 - 0.406) / 0.225], rtol=1e-5
    )


# ------------------------------------------------------------------------------------------------------ yolov8


def yolov8_raw(columns: list[tuple[list[float], int, float]], anchors: int = 100) -> np.ndarray:
    """``[1, 84, anchors]`` with the given (cxcywh, class, score) columns, zeros elsewhere.

    ``anchors`` must exceed 84: the decoder tells ``[1, 4+C, N]`` from ``[1, N, 4+C]`` by the smaller dim."""
    raw = np.zeros((1, 84, anchors), np.float32)
    for index, (cxcywh, cls, score) in enumerate(columns):
        raw[0, :4, index] = cxcywh
        raw[0, 4 + cls, index] = score
    return raw


@pytest.mark.parametrize(
    ("columns", "expected", "confidence"),
    [
        pytest.param([([100, 50, 20, 40], 0, 0.9)], [[90, 30, 110, 70]], [0.9], id="one-person"),
        pytest.param([([100, 50, 20, 40], 5, 0.95)], [], [], id="bus-ignored"),
        pytest.param([([100, 50, 20, 40], 0, 0.39)], [], [], id="below-threshold"),
        pytest.param(
            [([100, 50, 20, 40], 0, 0.6), ([101, 50, 20, 40], 0, 0.8), ([300, 50, 20, 40], 0, 0.5)],
            [[91, 30, 111, 70], [290, 30, 310, 70]],
            [0.8, 0.5],
            id="nms-keeps-best",
        ),
    ],
)
def test_decode_yolov8(columns: list, expected: list, confidence: list) -> None:
    raw = yolov8_raw(columns)
    for layout in (raw, raw.transpose(0, 2, 1)):  # [1, 84, N] as exported, and the transposed variant
        det = decoders.decode_yolov8(layout, IDENTITY, threshold=0.4)
        np.testing.assert_allclose(det.xyxy, np.array(expected, np.float32).reshape(-1, 4), atol=1e-4)
        np.testing.assert_allclose(det.confidence, confidence, rtol=1e-6)


def test_decode_yolov8_through_centred_letterbox() -> None:
    _, transform = decoders.preprocess_yolov8(np.zeros((576, 768, 3), np.uint8))  # pad_y 80, scale 5/6
    det = decoders.decode_yolov8(yolov8_raw([([320, 320, 100, 200], 0, 0.9)]), transform, threshold=0.4)
    np.testing.assert_allclose(det.xyxy, [[324, 168, 444, 408]], rtol=1e-5)


# --------------------------------------------------------------------------------------------------------- NMS


@pytest.mark.parametrize(
    ("boxes", "scores", "iou", "kept"),
    [
        pytest.param([[0, 0, 10, 10], [1, 0, 11, 10]], [0.9, 0.8], 0.5, [0], id="iou-0.82-suppressed"),
        pytest.param([[0, 0, 10, 10], [5, 0, 15, 10]], [0.9, 0.8], 0.5, [0, 1], id="iou-0.33-kept"),
        pytest.param([[0, 0, 10, 10], [5, 0, 15, 10]], [0.9, 0.8], 0.3, [0], id="iou-0.33-low-threshold"),
        pytest.param([[0, 0, 10, 10], [1, 0, 11, 10]], [0.7, 0.8], 0.5, [1], id="best-wins"),
        pytest.param(
            [[0, 0, 10, 10], [20, 0, 30, 10], [1, 0, 11, 10], [21, 0, 31, 10]],
            [0.5, 0.9, 0.6, 0.4],
            0.5,
            [1, 2],
            id="two-clusters",
        ),
        pytest.param([[0, 0, 10, 10], [0, 0, 10, 10]], [0.5, 0.5], 0.5, [0], id="tie-keeps-first"),
    ],
)
def test_nms(boxes: list, scores: list, iou: float, kept: list[int]) -> None:
    xyxy, conf = np.array(boxes, np.float32), np.array(scores, np.float32)
    assert decoders.nms(xyxy, conf, iou).tolist() == kept
    assert decoders.nms_numpy(xyxy, conf, iou).tolist() == kept


def test_nms_opencv_and_numpy_agree_on_random_boxes() -> None:
    rng = np.random.default_rng(7)
    for trial in range(100):
        n = int(rng.integers(1, 50))
        corner = rng.uniform(0, 100, (n, 2))
        xyxy = np.concatenate([corner, corner + rng.uniform(1, 40, (n, 2))], axis=1).astype(np.float32)
        scores = rng.uniform(0, 1, n).astype(np.float32)
        if trial % 3 == 0:
            scores = np.round(scores, 1)  # ties
        for iou in (0.3, 0.5, 0.7):
            assert decoders.nms(xyxy, scores, iou).tolist() == decoders.nms_numpy(xyxy, scores, iou).tolist()


def test_nms_empty() -> None:
    assert decoders.nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5).tolist() == []


# ------------------------------------------------------------------------------------------------------- tiles


@pytest.mark.parametrize(
    ("width", "tiles", "expected"),
    [
        (768, 1, [(0, 768)]),
        (768, 2, [(0, 427), (341, 768)]),
        (1000, 3, [(0, 385), (308, 692), (615, 1000)]),
    ],
)
def test_tile_windows(width: int, tiles: int, expected: list[tuple[int, int]]) -> None:
    assert decoders.tile_windows(width, tiles) == expected


def test_tile_windows_rejects_zero() -> None:
    with pytest.raises(ValueError, match="tiles must be >= 1"):
        decoders.tile_windows(768, 0)


def test_merge_tiles_shifts_and_suppresses_duplicates_across_the_seam() -> None:
    left = Detections(xyxy=np.array([[300, 10, 400, 100], [10, 10, 50, 90]]), confidence=np.array([0.9, 0.6]))
    # Right strip starts at x=341: (0, 10, 59, 100) is (341, 10, 400, 100) in the frame, IoU 0.59 with the left box.
    right = Detections(xyxy=np.array([[0, 10, 59, 100], [200, 20, 260, 120]]), confidence=np.array([0.7, 0.8]))
    merged = decoders.merge_tiles([left, right], [0, 341], iou_threshold=0.5)
    np.testing.assert_allclose(merged.xyxy, [[300, 10, 400, 100], [541, 20, 601, 120], [10, 10, 50, 90]])
    np.testing.assert_allclose(merged.confidence, [0.9, 0.8, 0.6])


def test_merge_tiles_empty() -> None:
    assert len(decoders.merge_tiles([Detections.empty(), Detections.empty()], [0, 341], 0.5)) == 0


# ------------------------------------------------------------------------------------------ family detection


@dataclass
class FakeArg:
    name: str
    type: str
    shape: list[Any]


@dataclass
class FakeSession:
    inputs: list[FakeArg]
    outputs: list[FakeArg] = field(default_factory=list)

    def get_inputs(self) -> list[FakeArg]:
        return self.inputs

    def get_outputs(self) -> list[FakeArg]:
        return self.outputs


def gfl_session(size: int, strides: tuple[int, ...]) -> FakeSession:
    n = [(size // s) ** 2 for s in strides]
    outs = [FakeArg(f"s{i}", "tensor(float)", [1, k, 80]) for i, k in enumerate(n)]
    outs += [FakeArg(f"b{i}", "tensor(float)", [1, k, 32]) for i, k in enumerate(n)]
    return FakeSession([FakeArg("image", "tensor(float)", [1, 3, size, size])], outs)


SSD_SESSION = FakeSession(
    [FakeArg("image_tensor:0", "tensor(uint8)", ["b", "h", "w", 3])],
    [
        FakeArg("num_detections:0", "tensor(float)", ["b"]),
        FakeArg("detection_boxes:0", "tensor(float)", ["b", "k", 4]),
        FakeArg("detection_scores:0", "tensor(float)", ["b", "k"]),
        FakeArg("detection_classes:0", "tensor(float)", ["b", "k"]),
    ],
)
FLOAT_640 = [FakeArg("images", "tensor(float)", [1, 3, 640, 640])]


@pytest.mark.parametrize(
    ("session", "family", "size"),
    [
        pytest.param(SSD_SESSION, "ssd", None, id="ssd"),
        pytest.param(gfl_session(416, (8, 16, 32, 64)), "gfl", 416, id="picodet-416"),
        pytest.param(gfl_session(320, (8, 16, 32, 64)), "gfl", 320, id="picodet-320"),
        pytest.param(gfl_session(416, (8, 16, 32)), "gfl", 416, id="nanodet-416"),
        pytest.param(
            FakeSession(FLOAT_640, [FakeArg("output", "tensor(float)", [1, 8400, 85])]), "yolox", 640, id="yolox"
        ),
        pytest.param(
            FakeSession(FLOAT_640, [FakeArg("output0", "tensor(float)", [1, 84, 8400])]), "yolov8", 640, id="v8"
        ),
        pytest.param(
            FakeSession(
                [FakeArg("images", "tensor(float)", ["batch", 3, "height", "width"])],
                [FakeArg("output0", "tensor(float)", ["batch", 84, "anchors"])],
            ),
            "yolov8",
            640,
            id="yolov8-dynamic",
        ),
    ],
)
def test_detect_family(session: FakeSession, family: str, size: int | None) -> None:
    assert decoders.detect_family(session) == family
    assert decoders.input_size_of(session, family) == size


@pytest.mark.parametrize(
    "session",
    [
        pytest.param(FakeSession(FLOAT_640, [FakeArg("logits", "tensor(float)", [1, 1000])]), id="classifier"),
        pytest.param(FakeSession(FLOAT_640, [FakeArg("mask", "tensor(float)", [1, 1, 640, 640])]), id="segmenter"),
        pytest.param(FakeSession([FakeArg("text", "tensor(int64)", [1, 77])], []), id="text-model"),
    ],
)
def test_detect_family_unknown_lists_what_it_saw(session: FakeSession) -> None:
    with pytest.raises(ModelError) as info:
        decoders.detect_family(session)
    message = str(info.value)
    assert session.inputs[0].name in message
    assert "supported families: ssd" in message and "yolov8" in message


@pytest.mark.parametrize(
    ("family", "size", "tiles", "expected"),
    [
        ("ssd", None, 1, 0.3),
        ("ssd", None, 2, 0.2),
        ("gfl", 320, 1, 0.45),
        ("gfl", 416, 1, 0.5),
        ("yolox", 640, 1, 0.5),
        ("yolov8", 640, 1, 0.4),
    ],
)
def test_default_threshold(family: str, size: int | None, tiles: int, expected: float) -> None:
    assert decoders.default_threshold(family, size, tiles) == expected


def test_unknown_family_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="supported families are ssd, gfl, yolox, yolov8"):
        decoders.preprocess("detr", np.zeros((4, 4, 3), np.uint8), 640)


@pytest.mark.parametrize(
    ("frame", "match"),
    [
        (np.zeros((4, 4), np.uint8), r"shape \(H, W, 3\)"),
        (np.zeros((4, 4, 4), np.uint8), r"shape \(H, W, 3\)"),
        (np.zeros((4, 4, 3), np.float32), "uint8"),
        (np.zeros((0, 4, 3), np.uint8), "empty"),
    ],
)
def test_preprocess_rejects_bad_frames(frame: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        decoders.preprocess_ssd(frame)

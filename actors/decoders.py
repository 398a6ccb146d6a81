"""Model-family decoders: raw ONNX outputs in, person ``Detections`` in original-frame pixels out.

One preprocessing function and one decoder per family; nothing after this module knows which model ran.
Pure module: numpy, plus OpenCV for resizing (``preprocess_*``) and for NMS when ``cv2.dnn.NMSBoxes`` exists
(a numpy NMS with the same semantics is used otherwise).

Families (all outputs are for batch item 0; the caller slices a batched run into ``[1, ...]`` pieces):

``ssd``
    TF Object Detection API export. Input uint8 ``[1, H, W, 3]`` RGB of any size (the graph resizes).
    Outputs ``detection_boxes`` ``[1, K, 4]`` normalised ``[ymin, xmin, ymax, xmax]``, ``detection_scores``
    ``[1, K]``, ``detection_classes`` ``[1, K]`` (1 = person), ``num_detections`` ``[1]``. NMS is in the graph.
``gfl``
    PicoDet / NanoDet (Generalized Focal Loss heads). Input float32 ``[1, 3, S, S]``, plain resize, BGR,
    ``(x - mean) / std``. Outputs one score map ``[1, N, C]`` (already sigmoid) and one box map ``[1, N, 32]``
    (4 sides x 8 bins) per stride, ``N = (S / stride)^2``, cells row-major. Four levels (strides 8/16/32/64) is
    PicoDet, cell centre ``(i + 0.5) * stride``; three levels (8/16/32) is NanoDet, centre ``i*stride + (stride-1)/2``.
``yolox``
    YOLOX. Input float32 ``[1, 3, 640, 640]``, top-left letterbox padded with 114, RGB / 255 then ImageNet
    mean/std. Output declared ``[1, 8400, 85]`` but laid out as three blocks ``[85, 6400]``, ``[85, 1600]``,
    ``[85, 400]`` (strides 8/16/32), each transposed here; rows are ``(dx, dy, log w, log h, obj, 80 classes)``
    as logits: ``cx = (dx + gx) * stride``, ``w = exp(log w) * stride``, score = sigmoid(obj) * sigmoid(cls).
``yolov8``
    Ultralytics YOLOv8 / YOLO11. Input float32 ``[1, 3, 640, 640]``, centred letterbox padded with 114,
    RGB / 255. Output ``[1, 84, 8400]``: ``(cx, cy, w, h)`` in input pixels and 80 class scores (already
    sigmoid, no objectness).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from actors.detections import Detections
from cluster.errors import ModelError

log = logging.getLogger(__name__)

FAMILIES: tuple[str, ...] = ("ssd", "gfl", "yolox", "yolov8")
COCO_PERSON = 0
SSD_PERSON = 1
GFL_BINS = 8
GFL_MEAN = np.array([103.53, 116.28, 123.675], dtype=np.float32)  # BGR
GFL_STD = np.array([57.375, 57.12, 58.395], dtype=np.float32)
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)  # RGB
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
YOLO_STRIDES: tuple[int, ...] = (8, 16, 32)
YOLO_SIZE = 640
LETTERBOX_FILL = 114
TILE_OVERLAP = 0.2
# IoU above which a lower-scored box is suppressed. "ssd" applies to merging tiles (the graph has its own NMS).
# gfl 0.5 measured on PETS09-S2L1 (0.6 adds 1.5-2.5 points of false positives); yolox and yolov8 upstream defaults.
NMS_IOU: dict[str, float] = {"ssd": 0.5, "gfl": 0.5, "yolox": 0.45, "yolov8": 0.7}


@dataclass(frozen=True)
class FrameTransform:
    """Affine map between frame pixels and model coordinates: ``model = frame * scale + pad`` per axis.

    ``width``/``height`` are the frame's size; boxes mapped back are clipped to it.
    """

    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float
    width: int
    height: int

    def to_frame(self, xyxy: np.ndarray) -> np.ndarray:
        """(N, 4) boxes in model coordinates -> (N, 4) float32 boxes in frame pixels, clipped to the frame."""
        out = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4).copy()
        out[:, 0::2] = (out[:, 0::2] - self.pad_x) / self.scale_x
        out[:, 1::2] = (out[:, 1::2] - self.pad_y) / self.scale_y
        out[:, 0::2] = np.clip(out[:, 0::2], 0, self.width)
        out[:, 1::2] = np.clip(out[:, 1::2], 0, self.height)
        return out


# --------------------------------------------------------------------------------------------------- thresholds


def default_threshold(family: str, input_size: int | None = None, tiles: int = 1) -> float:
    """Score threshold measured on PETS09-S2L1 (see shared README): ssd 0.3 (0.2 on tiles, where each strip is
    seen larger), gfl 0.45 at 320 else 0.5, yolox 0.5, yolov8 0.4 (Ultralytics' scores have no objectness
    factor; not measured here, no such model available)."""
    if family == "ssd":
        return 0.3 if tiles <= 1 else 0.2
    if family == "gfl":
        return 0.45 if input_size is not None and input_size <= 320 else 0.5
    if family == "yolox":
        return 0.5
    if family == "yolov8":
        return 0.4
    raise ModelError(f"unknown detector family {family!r}: supported families are {', '.join(FAMILIES)}")


# ---------------------------------------------------------------------------------------------------------- NMS


def nms_numpy(xyxy: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS: indices (int64, best first) of boxes kept; a box is dropped when IoU > ``iou_threshold``
    with a kept higher-scored box. Ties in score keep the lower index first (stable sort)."""
    order = np.argsort(-scores, kind="stable")
    areas = np.clip(xyxy[:, 2] - xyxy[:, 0], 0, None) * np.clip(xyxy[:, 3] - xyxy[:, 1], 0, None)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        iw = np.clip(np.minimum(xyxy[i, 2], xyxy[rest, 2]) - np.maximum(xyxy[i, 0], xyxy[rest, 0]), 0, None)
        ih = np.clip(np.minimum(xyxy[i, 3], xyxy[rest, 3]) - np.maximum(xyxy[i, 1], xyxy[rest, 1]), 0, None)
        inter = iw * ih
        union = areas[i] + areas[rest] - inter
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def nms(xyxy: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices (int64, best first) of the boxes kept by greedy NMS; OpenCV's ``NMSBoxes`` when available."""
    if len(xyxy) == 0:
        return np.zeros(0, dtype=np.int64)
    nms_boxes = getattr(getattr(cv2, "dnn", None), "NMSBoxes", None)
    if nms_boxes is None:
        return nms_numpy(xyxy, scores, iou_threshold)
    xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1).astype(np.float64)
    # OpenCV keeps only scores > score_threshold >= 0: shift scores to >= 1 (exact for float32 inputs, same order).
    shifted = scores.astype(np.float64) - float(np.min(scores)) + 1.0
    idx = nms_boxes(xywh.tolist(), shifted.tolist(), 0.0, float(iou_threshold))
    return np.asarray(idx, dtype=np.int64).reshape(-1)


def _persons(xyxy: np.ndarray, scores: np.ndarray, iou_threshold: float | None) -> Detections:
    """Person Detections (class 0) from frame-pixel boxes, after NMS unless ``iou_threshold`` is None."""
    if iou_threshold is not None and len(xyxy):
        keep = nms(xyxy, scores, iou_threshold)
        xyxy, scores = xyxy[keep], scores[keep]
    return Detections(xyxy=xyxy, confidence=scores, class_id=np.zeros(len(xyxy), dtype=np.int64))


# ------------------------------------------------------------------------------------------------ preprocessing


def _check_frame(frame_bgr: np.ndarray) -> tuple[int, int]:
    if not isinstance(frame_bgr, np.ndarray) or frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3:
        got = frame_bgr.shape if isinstance(frame_bgr, np.ndarray) else type(frame_bgr).__name__
        raise ValueError(f"frame must be a BGR image of shape (H, W, 3), got {got}")
    if frame_bgr.dtype != np.uint8:
        raise ValueError(f"frame must be uint8 (as OpenCV decodes it), got {frame_bgr.dtype}")
    height, width = frame_bgr.shape[:2]
    if height == 0 or width == 0:
        raise ValueError(f"frame is empty: shape {frame_bgr.shape}")
    return height, width


def preprocess_ssd(frame_bgr: np.ndarray) -> tuple[np.ndarray, FrameTransform]:
    """BGR uint8 ``[H, W, 3]`` -> RGB uint8 ``[1, H, W, 3]`` at full size; the transform maps to normalised boxes."""
    height, width = _check_frame(frame_bgr)
    tensor = np.ascontiguousarray(frame_bgr[None, :, :, ::-1])
    return tensor, FrameTransform(1.0 / width, 1.0 / height, 0.0, 0.0, width, height)


def preprocess_gfl(frame_bgr: np.ndarray, size: int) -> tuple[np.ndarray, FrameTransform]:
    """BGR uint8 ``[H, W, 3]`` -> float32 ``[1, 3, S, S]``: plain (aspect-changing) resize, BGR, (x - mean) / std."""
    height, width = _check_frame(frame_bgr)
    resized = cv2.resize(frame_bgr, (size, size), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    tensor = ((resized - GFL_MEAN) / GFL_STD).transpose(2, 0, 1)[None]
    return np.ascontiguousarray(tensor, dtype=np.float32), FrameTransform(
        size / width, size / height, 0.0, 0.0, width, height
    )


def _letterbox(frame_bgr: np.ndarray, size: int, centred: bool) -> tuple[np.ndarray, FrameTransform]:
    """Resize keeping aspect into a ``size`` x ``size`` canvas of 114; top-left (YOLOX) or centred (Ultralytics)."""
    height, width = _check_frame(frame_bgr)
    ratio = min(size / width, size / height)
    new_w, new_h = round(width * ratio), round(height * ratio)
    pad_x = (size - new_w) / 2 if centred else 0.0
    pad_y = (size - new_h) / 2 if centred else 0.0
    left, top = round(pad_x - 0.1), round(pad_y - 0.1)  # Ultralytics' rounding of the split pad
    canvas = np.full((size, size, 3), LETTERBOX_FILL, dtype=np.uint8)
    resized = cv2.resize(frame_bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    canvas[top : top + new_h, left : left + new_w] = resized
    return canvas, FrameTransform(new_w / width, new_h / height, float(left), float(top), width, height)


def preprocess_yolox(frame_bgr: np.ndarray, size: int = YOLO_SIZE) -> tuple[np.ndarray, FrameTransform]:
    """BGR uint8 ``[H, W, 3]`` -> float32 ``[1, 3, S, S]``: top-left letterbox (114), RGB / 255, ImageNet mean/std."""
    canvas, transform = _letterbox(frame_bgr, size, centred=False)
    rgb = canvas[:, :, ::-1].astype(np.float32) / 255.0
    tensor = ((rgb - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)[None]
    return np.ascontiguousarray(tensor, dtype=np.float32), transform


def preprocess_yolov8(frame_bgr: np.ndarray, size: int = YOLO_SIZE) -> tuple[np.ndarray, FrameTransform]:
    """BGR uint8 ``[H, W, 3]`` -> float32 ``[1, 3, S, S]``: centred letterbox (114), RGB / 255."""
    canvas, transform = _letterbox(frame_bgr, size, centred=True)
    tensor = (canvas[:, :, ::-1].astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
    return np.ascontiguousarray(tensor, dtype=np.float32), transform


def preprocess(family: str, frame_bgr: np.ndarray, input_size: int | None) -> tuple[np.ndarray, FrameTransform]:
    """The family's preprocessing; ``input_size`` is the square model side (ignored by ``ssd``)."""
    if family == "ssd":
        return preprocess_ssd(frame_bgr)
    if family == "gfl":
        if input_size is None:
            raise ModelError("gfl models need a fixed square input size; none was found in the model")
        return preprocess_gfl(frame_bgr, input_size)
    if family == "yolox":
        return preprocess_yolox(frame_bgr, input_size or YOLO_SIZE)
    if family == "yolov8":
        return preprocess_yolov8(frame_bgr, input_size or YOLO_SIZE)
    raise ModelError(f"unknown detector family {family!r}: supported families are {', '.join(FAMILIES)}")


# ----------------------------------------------------------------------------------------------------- decoders


def _by_suffix(outputs: Mapping[str, np.ndarray], key: str) -> np.ndarray:
    for name, value in outputs.items():
        if name.split(":")[0].endswith(key):
            return value
    raise ModelError(f"ssd model output {key!r} missing: outputs are {sorted(outputs)}")


def decode_ssd(outputs: Mapping[str, np.ndarray], transform: FrameTransform, threshold: float) -> Detections:
    """TF OD API outputs (see module doc) -> persons (class 1 in the graph) scoring >= ``threshold``."""
    count = int(np.asarray(_by_suffix(outputs, "num_detections")).reshape(-1)[0])
    boxes = np.asarray(_by_suffix(outputs, "detection_boxes"), dtype=np.float32).reshape(-1, 4)[:count]
    scores = np.asarray(_by_suffix(outputs, "detection_scores"), dtype=np.float32).reshape(-1)[:count]
    classes = np.asarray(_by_suffix(outputs, "detection_classes")).reshape(-1)[:count]
    keep = (scores >= threshold) & (np.round(classes) == SSD_PERSON)
    yxyx = boxes[keep]
    xyxy = transform.to_frame(yxyx[:, [1, 0, 3, 2]])
    return _persons(xyxy, scores[keep], None)


def _gfl_levels(outputs: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pair score maps ``[1, N, C]`` with box maps ``[1, N, 32]`` by N, finest level first."""
    maps = [np.asarray(o).reshape(o.shape[-2], o.shape[-1]) for o in outputs]
    boxes = {m.shape[0]: m for m in maps if m.shape[1] == 4 * GFL_BINS}
    scores = {m.shape[0]: m for m in maps if m.shape[1] != 4 * GFL_BINS}
    if len(scores) != len(maps) // 2 or sorted(scores) != sorted(boxes):
        shapes = [tuple(o.shape) for o in outputs]
        raise ModelError(f"gfl outputs must be pairs [1,N,C] + [1,N,{4 * GFL_BINS}] per stride, got {shapes}")
    return [(scores[n], boxes[n]) for n in sorted(scores, reverse=True)]


def _gfl_distances(bins: np.ndarray) -> np.ndarray:
    """``[K, 4*8]`` bin logits -> ``[K, 4]`` expected distances in strides (softmax over 8 bins, times 0..7)."""
    logits = bins.reshape(-1, 4, GFL_BINS).astype(np.float32)
    logits = logits - logits.max(axis=2, keepdims=True)
    prob = np.exp(logits)
    prob /= prob.sum(axis=2, keepdims=True)
    return prob @ np.arange(GFL_BINS, dtype=np.float32)


def decode_gfl(
    outputs: Sequence[np.ndarray], transform: FrameTransform, threshold: float, input_size: int
) -> Detections:
    """PicoDet (4 levels) / NanoDet (3 levels) maps (see module doc) -> persons (COCO class 0) after NMS."""
    levels = _gfl_levels(outputs)
    picodet = len(levels) == 4
    all_boxes, all_scores = [], []
    for scores, bins in levels:
        cells = round(math.sqrt(scores.shape[0]))
        stride = input_size / cells
        idx = np.nonzero(scores[:, COCO_PERSON] > threshold)[0]
        row, col = np.divmod(idx, cells)
        offset = 0.5 * stride if picodet else (stride - 1) / 2
        cx, cy = col * stride + offset, row * stride + offset
        dist = _gfl_distances(bins[idx]) * stride
        model_xyxy = np.stack([cx - dist[:, 0], cy - dist[:, 1], cx + dist[:, 2], cy + dist[:, 3]], axis=1)
        all_boxes.append(transform.to_frame(model_xyxy))
        all_scores.append(scores[idx, COCO_PERSON].astype(np.float32))
    return _persons(np.concatenate(all_boxes), np.concatenate(all_scores), NMS_IOU["gfl"])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float32)))


def _yolox_rows(raw: np.ndarray, input_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat YOLOX output -> (``[N, 5+C]`` rows, ``[N, 3]`` (gx, gy, stride)); undoes the blockwise layout."""
    flat = np.asarray(raw, dtype=np.float32).reshape(-1)
    sizes = [(input_size // s) ** 2 for s in YOLO_STRIDES]
    channels, rem = divmod(flat.size, sum(sizes))
    if rem or channels < 6:
        raise ModelError(f"yolox output of {flat.size} values does not split into {sum(sizes)} rows of 5+C")
    rows, grids, start = [], [], 0
    for stride, n in zip(YOLO_STRIDES, sizes, strict=True):
        rows.append(flat[start : start + channels * n].reshape(channels, n).T)
        start += channels * n
        cells = input_size // stride
        gy, gx = np.divmod(np.arange(n), cells)
        grids.append(np.stack([gx, gy, np.full(n, stride)], axis=1).astype(np.float32))
    return np.concatenate(rows), np.concatenate(grids)


def decode_yolox(
    raw: np.ndarray, transform: FrameTransform, threshold: float, input_size: int = YOLO_SIZE
) -> Detections:
    """YOLOX logits (see module doc) -> persons scoring sigmoid(obj) * sigmoid(cls0) > ``threshold``, after NMS."""
    rows, grid = _yolox_rows(raw, input_size)
    scores = _sigmoid(rows[:, 4]) * _sigmoid(rows[:, 5 + COCO_PERSON])
    keep = scores > threshold
    rows, grid, scores = rows[keep], grid[keep], scores[keep]
    stride = grid[:, 2]
    cx, cy = (rows[:, 0] + grid[:, 0]) * stride, (rows[:, 1] + grid[:, 1]) * stride
    half_w, half_h = np.exp(rows[:, 2]) * stride / 2, np.exp(rows[:, 3]) * stride / 2
    model_xyxy = np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1)
    return _persons(transform.to_frame(model_xyxy), scores, NMS_IOU["yolox"])


def decode_yolov8(raw: np.ndarray, transform: FrameTransform, threshold: float) -> Detections:
    """Ultralytics ``[1, 4+C, N]`` (or ``[1, N, 4+C]``) -> persons with class-0 score > ``threshold``, after NMS."""
    out = np.asarray(raw, dtype=np.float32).reshape(raw.shape[-2], raw.shape[-1])
    if out.shape[0] < out.shape[1]:
        out = out.T  # -> [N, 4+C]
    scores = out[:, 4 + COCO_PERSON]
    keep = scores > threshold
    cx, cy, w, h = out[keep, :4].T
    model_xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    return _persons(transform.to_frame(model_xyxy), scores[keep], NMS_IOU["yolov8"])


def decode(
    family: str,
    outputs: Mapping[str, np.ndarray],
    transform: FrameTransform,
    threshold: float,
    input_size: int | None,
) -> Detections:
    """Dispatch to the family's decoder; ``outputs`` maps output name -> array in the session's output order."""
    if family == "ssd":
        return decode_ssd(outputs, transform, threshold)
    if family == "gfl":
        return decode_gfl(list(outputs.values()), transform, threshold, int(input_size or 0))
    if family == "yolox":
        return decode_yolox(next(iter(outputs.values())), transform, threshold, input_size or YOLO_SIZE)
    if family == "yolov8":
        return decode_yolov8(next(iter(outputs.values())), transform, threshold)
    raise ModelError(f"unknown detector family {family!r}: supported families are {', '.join(FAMILIES)}")


# -------------------------------------------------------------------------------------------------------- tiles


def tile_windows(width: int, tiles: int, overlap: float = TILE_OVERLAP) -> list[tuple[int, int]]:
    """``tiles`` vertical strips ``(x0, x1)`` covering ``[0, width)``, neighbours sharing ``overlap`` of a strip.

    Strip width is ``width / (1 + (tiles - 1) * (1 - overlap))``; 2 tiles of a 768-wide frame -> (0, 427), (341, 768).
    """
    if tiles < 1:
        raise ValueError(f"tiles must be >= 1, got {tiles}")
    if tiles == 1:
        return [(0, width)]
    strip = width / (1 + (tiles - 1) * (1 - overlap))
    step = strip * (1 - overlap)
    windows = [(round(i * step), round(i * step + strip)) for i in range(tiles)]
    windows[-1] = (windows[-1][0], width)
    return windows


def merge_tiles(parts: Sequence[Detections], offsets: Sequence[int], iou_threshold: float) -> Detections:
    """Shift each strip's detections right by its ``x0`` offset, concatenate, and NMS across strips."""
    shifted = []
    for part, x0 in zip(parts, offsets, strict=True):
        xyxy = part.xyxy.copy()
        xyxy[:, 0::2] += x0
        shifted.append(Detections(xyxy=xyxy, confidence=part.confidence, class_id=part.class_id))
    merged = Detections.merge(shifted)
    if len(merged) == 0:
        return merged
    return merged[nms(merged.xyxy, merged.confidence, iou_threshold)]


# ------------------------------------------------------------------------------------------- family detection


def _shape(arg: Any) -> list[Any]:
    return list(getattr(arg, "shape", None) or [])


def _describe(session: Any) -> str:
    ins = ", ".join(f"{i.name} {i.type} {_shape(i)}" for i in session.get_inputs())
    outs = ", ".join(f"{o.name} {o.type} {_shape(o)}" for o in session.get_outputs())
    return f"inputs [{ins}]; outputs [{outs}]"


def _is_ssd(inputs: list[Any], outputs: list[Any]) -> bool:
    names = {o.name.split(":")[0] for o in outputs}
    shape = _shape(inputs[0])
    return (
        {"detection_boxes", "detection_scores", "detection_classes", "num_detections"} <= names
        and "uint8" in inputs[0].type
        and len(shape) == 4
        and shape[-1] == 3
    )


def _is_gfl(outputs: list[Any]) -> bool:
    shapes = [_shape(o) for o in outputs]
    if len(shapes) not in (6, 8) or any(len(s) != 3 or not all(isinstance(d, int) for d in s[1:]) for s in shapes):
        return False
    boxes = sorted(s[1] for s in shapes if s[2] == 4 * GFL_BINS)
    scores = sorted(s[1] for s in shapes if s[2] != 4 * GFL_BINS)
    return boxes == scores and len(boxes) == len(shapes) // 2


def _yolo_kind(outputs: list[Any]) -> str | None:
    """``yolox`` for ``[B, N, 5+C]`` (channels last), ``yolov8`` for ``[B, 4+C, N]`` (channels in the middle)."""
    if len(outputs) != 1 or len(_shape(outputs[0])) != 3:
        return None
    _, mid, last = _shape(outputs[0])
    small_last = isinstance(last, int) and 6 <= last < 1000 and (not isinstance(mid, int) or mid > last)
    small_mid = isinstance(mid, int) and 5 <= mid < 1000 and (not isinstance(last, int) or last > mid)
    if small_last:
        return "yolox"
    if small_mid:
        return "yolov8"
    return None


def detect_family(session: Any) -> str:
    """Family of an onnxruntime session from its inputs/outputs (names, dtypes, shapes); ModelError if unknown."""
    inputs, outputs = list(session.get_inputs()), list(session.get_outputs())
    family: str | None = None
    if len(inputs) == 1 and _is_ssd(inputs, outputs):
        family = "ssd"
    elif len(inputs) == 1 and "float" in inputs[0].type and len(_shape(inputs[0])) == 4:
        family = "gfl" if _is_gfl(outputs) else _yolo_kind(outputs)
    if family is None:
        raise ModelError(
            f"cannot tell the detector family of this model ({_describe(session)}); supported families: "
            "ssd (TF Object Detection API export), gfl (PicoDet/NanoDet), yolox, yolov8 (Ultralytics YOLOv8/YOLO11)"
        )
    log.debug("detected family %s from %s", family, _describe(session))
    return family


def input_size_of(session: Any, family: str) -> int | None:
    """Square model side from the input shape ``[B, 3, S, S]``; None for ``ssd`` (any size); 640 if dynamic."""
    if family == "ssd":
        return None
    shape = _shape(session.get_inputs()[0])
    side = shape[-1] if len(shape) == 4 else None
    if isinstance(side, int) and side > 0:
        return side
    if family == "gfl":
        finest = max(_shape(o)[1] for o in session.get_outputs())
        return round(math.sqrt(finest)) * YOLO_STRIDES[0]
    return YOLO_SIZE

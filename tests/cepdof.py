"""CEPDOF (ceiling fisheye frames with rotated-box ground truth): loading and one-to-one matching. Shared by
``bench/fisheye.py`` and ``tests/integration/test_fisheye.py``; test and bench harness, never imported by the product.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from actors.fisheye import RotatedBoxes

SHARED = Path(__file__).resolve().parents[2] / "shared"
CEPDOF = SHARED / "footage" / "fisheye-cepdof"
IOU = 0.5


def load_cepdof(root: Path = CEPDOF) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """Frames (BGR) and their ground truth (``(K, 5)`` rotated boxes) in file order, with the file names."""
    ann = json.loads((root / "annotations" / "video_0.json").read_text())
    frames, truths, names = [], [], []
    for image in sorted(ann["images"], key=lambda i: i["file_name"]):
        frame = cv2.imread(str(root / "video_0" / image["file_name"]))
        if frame is None:
            raise FileNotFoundError(f"cannot read {root / 'video_0' / image['file_name']}")
        boxes = [a["bbox"] for a in ann["annotations"] if a["image_id"] == image["id"]]
        frames.append(np.asarray(frame))
        truths.append(np.asarray(boxes, np.float64).reshape(-1, 5))
        names.append(image["file_name"])
    return frames, truths, names


def hull_of(rotated: np.ndarray) -> np.ndarray:
    return RotatedBoxes(np.asarray(rotated, np.float32).reshape(-1, 5), np.zeros(len(rotated), np.float32)).hulls()


def axis_rotated(xyxy: np.ndarray) -> np.ndarray:
    """Axis-aligned ``xyxy`` -> rotated rows at angle 0."""
    x = np.asarray(xyxy, np.float64).reshape(-1, 4)
    return np.column_stack(
        [(x[:, 0] + x[:, 2]) / 2, (x[:, 1] + x[:, 3]) / 2, x[:, 2] - x[:, 0], x[:, 3] - x[:, 1], np.zeros(len(x))]
    )


def matches(iou: np.ndarray, threshold: float = IOU) -> int:
    """One-to-one greedy matches (highest IoU first) at ``iou >= threshold``."""
    if iou.size == 0:
        return 0
    iou = iou.copy()
    n = 0
    while True:
        i, j = np.unravel_index(int(np.argmax(iou)), iou.shape)
        if iou[i, j] < threshold:
            return n
        n += 1
        iou[i, :] = -1
        iou[:, j] = -1

"""The one data type of the video path: a batch of boxes in one frame (after supervision's ``Detections``).

Pure module: numpy only. Checked once in ``__post_init__`` so that every later stage can trust the shapes.
Boxes are ``xyxy`` in pixels of the original frame (float32). ``tracker_id`` is -1 for untracked rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Detections:
    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray = field(default=None)  # type: ignore[arg-type]
    tracker_id: np.ndarray = field(default=None)  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        self.xyxy = (
            np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
            if np.size(self.xyxy)
            else np.zeros((0, 4), np.float32)
        )
        n = len(self.xyxy)
        self.confidence = np.asarray(self.confidence, dtype=np.float32).reshape(-1)
        if self.class_id is None:
            self.class_id = np.zeros(n, dtype=np.int64)
        self.class_id = np.asarray(self.class_id, dtype=np.int64).reshape(-1)
        if self.tracker_id is None:
            self.tracker_id = np.full(n, -1, dtype=np.int64)
        self.tracker_id = np.asarray(self.tracker_id, dtype=np.int64).reshape(-1)
        for name in ("confidence", "class_id", "tracker_id"):
            got = len(getattr(self, name))
            if got != n:
                raise ValueError(f"Detections.{name} has {got} rows, expected {n} (one per box in xyxy)")
        if n and not np.all(np.isfinite(self.xyxy)):
            raise ValueError("Detections.xyxy contains NaN or infinite coordinates")

    @classmethod
    def empty(cls) -> Detections:
        return cls(xyxy=np.zeros((0, 4), np.float32), confidence=np.zeros(0, np.float32))

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index: np.ndarray | slice | list[int]) -> Detections:
        return Detections(
            xyxy=self.xyxy[index],
            confidence=self.confidence[index],
            class_id=self.class_id[index],
            tracker_id=self.tracker_id[index],
        )

    @staticmethod
    def merge(parts: list[Detections]) -> Detections:
        parts = [p for p in parts if len(p)]
        if not parts:
            return Detections.empty()
        return Detections(
            xyxy=np.concatenate([p.xyxy for p in parts]),
            confidence=np.concatenate([p.confidence for p in parts]),
            class_id=np.concatenate([p.class_id for p in parts]),
            tracker_id=np.concatenate([p.tracker_id for p in parts]),
        )

    def anchors(self, anchor: str = "bottom_center") -> np.ndarray:
        """(N, 2) points used for line crossing and zone membership: ``bottom_center`` (feet) or ``center``."""
        x = (self.xyxy[:, 0] + self.xyxy[:, 2]) / 2
        if anchor == "center":
            y = (self.xyxy[:, 1] + self.xyxy[:, 3]) / 2
        elif anchor == "bottom_center":
            y = self.xyxy[:, 3]
        else:
            raise ValueError(f"unknown anchor {anchor!r}: expected 'bottom_center' or 'center'")
        return np.stack([x, y], axis=1)

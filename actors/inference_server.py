"""The node's shared inference server: one detector for every camera of the node, concurrent calls batched. A plain
class, turned into a Ray actor in ``actors.ray_actors`` (its process is ``ray::InferenceServer``)."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from actors.detections import Detections
from cluster.config import Config

log = logging.getLogger("actors.worker")


class InferenceServer:
    """Runs the detector for every camera of the node; concurrent calls are batched (up to ``max_batch``)."""

    def __init__(self, config: Config, model_path: str, max_batch: int = 8) -> None:
        from actors.inference import Detector

        m = config.model
        self.detector = Detector(
            model_path, family=m.family, threshold=m.threshold, tiles=m.tiles, threads=m.threads or 0
        )
        self.max_batch = max_batch
        self._lock = threading.Condition()
        self._pending: deque[_Slot] = deque()
        self.frames = 0
        self.batches = 0
        self.busy_s = 0.0
        # Profile (bench/pipeline_fps.py): seconds summed over frames, a clock read or two per frame. ``queue_s``: from
        # a frame's arrival to the start of its batch (batching wait); ``handover_s``: from the caller's ``sent_at`` to
        # the arrival (serialisation, object store, RPC), over the ``handed`` frames that came with one.
        self.queue_s = 0.0
        self.handover_s = 0.0
        self.handed = 0
        self._thread = threading.Thread(target=self._serve, name="inference", daemon=True)
        self._thread.start()
        log.info("inference: model %s family %s on %s", model_path, self.detector.family, self.detector.provider)

    def info(self) -> dict[str, Any]:
        return {
            "provider": self.detector.provider,
            "family": self.detector.family,
            "model_sha256": self.detector.model_sha256,
            "frames": self.frames,
            "batches": self.batches,
            "busy_s": round(self.busy_s, 3),
            "queue_s": round(self.queue_s, 3),
            "handover_s": round(self.handover_s, 3),
            "handed": self.handed,
        }

    def detect(self, frame: np.ndarray, sent_at: float | None = None) -> Detections:
        """Persons in ``frame``, run in the next batch. ``sent_at``: the caller's ``time.monotonic()`` when it sent
        the frame (one clock for every process of the machine), for the hand-over time of the profile."""
        slot = _Slot(frame, arrived=time.monotonic())
        with self._lock:
            if sent_at is not None:  # under the lock: Ray calls this from several threads
                self.handover_s += max(0.0, slot.arrived - sent_at)
                self.handed += 1
            self._pending.append(slot)
            self._lock.notify_all()
        slot.done.wait()
        if slot.error is not None:
            raise slot.error
        assert slot.result is not None
        return slot.result

    def _serve(self) -> None:
        while True:
            with self._lock:
                while not self._pending:
                    self._lock.wait()
                batch = [self._pending.popleft() for _ in range(min(self.max_batch, len(self._pending)))]
            t0 = time.perf_counter()
            began = time.monotonic()
            self.queue_s += sum(began - s.arrived for s in batch)
            try:
                results = self.detector.detect_batch([s.frame for s in batch])
                for s, r in zip(batch, results, strict=True):
                    s.result = r
            except Exception as exc:  # reported to every caller of the batch
                for s in batch:
                    s.error = exc
            self.busy_s += time.perf_counter() - t0
            self.frames += len(batch)
            self.batches += 1
            for s in batch:
                s.done.set()


@dataclass
class _Slot:
    frame: np.ndarray
    arrived: float = 0.0  # time.monotonic() when the frame reached the server
    result: Detections | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

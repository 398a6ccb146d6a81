"""Person detector: an ONNX Runtime session plus the decoder of its model family (plain class, no Ray).

``Detector(path).detect(frame_bgr)`` takes an OpenCV BGR uint8 ``[H, W, 3]`` frame and returns person
``Detections`` in that frame's pixels. Model-family specifics live in ``actors.decoders``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from actors import decoders
from actors.decoders import FrameTransform
from actors.detections import Detections
from cluster.errors import ModelError

log = logging.getLogger(__name__)

FIX_HINT = "run `edgepair model install` or set model.path in the store config"
# Tried in this order by providers="auto". TensorRT is opt-in (explicit list): it builds an engine per model
# at start-up, which takes minutes and needs the TensorRT libraries beside onnxruntime-gpu.
AUTO_PROVIDERS: tuple[str, ...] = ("CUDAExecutionProvider", "CPUExecutionProvider")


def resolve_providers(providers: str | Sequence[str]) -> list[str]:
    """``"auto"`` -> CUDA when this onnxruntime build has it, then CPU; an explicit list is passed through."""
    available = set(ort.get_available_providers())
    if providers == "auto":
        return [p for p in AUTO_PROVIDERS if p in available] or ["CPUExecutionProvider"]
    wanted = [providers] if isinstance(providers, str) else list(providers)
    missing = [p for p in wanted if p not in available]
    if missing:
        raise ModelError(f"execution providers {missing} are not in this onnxruntime build (has {sorted(available)})")
    return wanted


def _open_session(path: Path, threads: int, providers: list[str], spinning: bool = False) -> ort.InferenceSession:
    """Load the model, translating onnxruntime's load errors into ModelError naming the file and the fix."""
    if not path.is_file():
        raise ModelError(f"detector model not found: {path}; {FIX_HINT}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # No busy-waiting between runs unless asked: onnxruntime's intra-op threads spin after each run by default, which
    # on a workstation that also decodes, tracks and writes burns the cores the rest needs (bench/spinning.py measures
    # both side by side; README, "Performance").
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.log_severity_level = 3  # errors only: some exports warn about initializers listed as inputs
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises several unrelated types (InvalidProtobuf, Fail, RuntimeError)
        raise ModelError(f"cannot load detector model {path}: not a valid ONNX model ({exc}); {FIX_HINT}") from exc


class Detector:
    """Runs one ONNX detector on BGR frames and returns person Detections in frame pixels.

    ``family``: ``"auto"`` (from the model's inputs/outputs) or one of ``decoders.FAMILIES``.
    ``threshold``: score threshold; None picks the family default (``decoders.default_threshold``).
    ``tiles``: run on that many overlapping vertical strips and merge (2 = left/right halves, 20 % overlap).
    ``threads``: onnxruntime intra-op threads (inter-op is 1). ``providers``: ``"auto"`` or a list.
    ``spinning``: let those threads busy-wait between runs (onnxruntime's default; off here, see ``_open_session``).
    """

    def __init__(
        self,
        model_path: str | Path,
        family: str = "auto",
        threshold: float | None = None,
        tiles: int = 1,
        threads: int = 1,
        providers: str | Sequence[str] = "auto",
        spinning: bool = False,
    ) -> None:
        if tiles < 1:
            raise ValueError(f"tiles must be >= 1, got {tiles}")
        self.model_path = Path(model_path)
        self.tiles = tiles
        self._session = _open_session(self.model_path, threads, resolve_providers(providers), spinning)
        self._family = self._resolve_family(family)
        self._input_size = decoders.input_size_of(self._session, self._family)
        self.threshold = (
            threshold if threshold is not None else decoders.default_threshold(self._family, self._input_size, tiles)
        )
        model_input = self._session.get_inputs()[0]
        self._input_name = model_input.name
        self._batched = not isinstance(model_input.shape[0], int)
        self._output_names = [o.name for o in self._session.get_outputs()]
        log.info(
            "detector %s: family=%s provider=%s input_size=%s threshold=%.2f tiles=%d threads=%d",
            self.model_path.name,
            self._family,
            self.provider,
            self._input_size,
            self.threshold,
            tiles,
            threads,
        )

    def _resolve_family(self, family: str) -> str:
        if family == "auto":
            try:
                return decoders.detect_family(self._session)
            except ModelError as exc:
                raise ModelError(f"{self.model_path}: {exc}; {FIX_HINT}") from exc
        if family not in decoders.FAMILIES:
            raise ModelError(f"unknown detector family {family!r}: expected 'auto' or one of {decoders.FAMILIES}")
        return family

    # ------------------------------------------------------------------------------------------- properties

    @property
    def family(self) -> str:
        return self._family

    @property
    def provider(self) -> str:
        """The execution provider actually in use (first of ``session.get_providers()``)."""
        return str(self._session.get_providers()[0])

    @property
    def input_size(self) -> int | None:
        """Square model input side in pixels; None when the model takes any size (``ssd``)."""
        return self._input_size

    @cached_property
    def model_sha256(self) -> str:
        digest = hashlib.sha256()
        with self.model_path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()

    # ------------------------------------------------------------------------------------------ detection

    def detect(self, frame_bgr: np.ndarray) -> Detections:
        """Persons in one BGR uint8 ``[H, W, 3]`` frame."""
        return self.detect_batch([frame_bgr])[0]

    def detect_batch(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        """Persons in each frame; one session call for all frames (and tiles) when the batch dim is dynamic."""
        for index, frame in enumerate(frames):
            _check_frame(frame, index)
        jobs = [self._jobs(frame) for frame in frames]
        flat = [job for frame_jobs in jobs for job in frame_jobs]
        if not flat:
            return []
        if self._batched and len(flat) > 1 and len({job[0].shape for job in flat}) == 1:
            raw = self._run(np.concatenate([job[0] for job in flat]))
            outputs = [{name: value[i : i + 1] for name, value in raw.items()} for i in range(len(flat))]
        else:
            outputs = [self._run(job[0]) for job in flat]
        results, start = [], 0
        for frame_jobs in jobs:
            mine = outputs[start : start + len(frame_jobs)]
            parts = [self._decode(out, job[1]) for out, job in zip(mine, frame_jobs, strict=True)]
            results.append(self._merge(parts, [job[2] for job in frame_jobs]))
            start += len(frame_jobs)
        return results

    def _jobs(self, frame: np.ndarray) -> list[tuple[np.ndarray, FrameTransform, int]]:
        """(input tensor, transform, x offset) for each tile of the frame."""
        jobs = []
        for x0, x1 in decoders.tile_windows(frame.shape[1], self.tiles):
            tensor, transform = decoders.preprocess(self._family, frame[:, x0:x1], self._input_size)
            jobs.append((tensor, transform, x0))
        return jobs

    def _run(self, tensor: np.ndarray) -> dict[str, np.ndarray]:
        values: list[Any] = self._session.run(self._output_names, {self._input_name: tensor})
        return dict(zip(self._output_names, values, strict=True))

    def _decode(self, outputs: dict[str, np.ndarray], transform: FrameTransform) -> Detections:
        return decoders.decode(self._family, outputs, transform, self.threshold, self._input_size)

    def _merge(self, parts: list[Detections], offsets: list[int]) -> Detections:
        if len(parts) == 1:
            return parts[0]
        return decoders.merge_tiles(parts, offsets, decoders.NMS_IOU[self._family])

    def __repr__(self) -> str:
        return f"Detector({str(self.model_path)!r}, family={self._family!r}, provider={self.provider!r})"


def _check_frame(frame: Any, index: int) -> None:
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        got = f"shape {frame.shape} dtype {frame.dtype}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise ValueError(f"frame {index}: expected a BGR uint8 array of shape (H, W, 3) as OpenCV reads it, got {got}")
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ValueError(f"frame {index}: empty frame of shape {frame.shape}")

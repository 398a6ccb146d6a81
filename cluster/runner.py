"""``edgepair run``: one workstation, no etcd, every camera of the config, until the files end or a signal."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster.config import Config
from cluster.errors import ModelError, StorageError
from cluster.models import default_model_path, verify_installed
from cluster.redact import install_log_redaction, redact

log = logging.getLogger(__name__)

MIN_FREE_BYTES = 64 * 1024 * 1024


@dataclass
class RunResult:
    cameras: dict[str, dict[str, Any]] = field(default_factory=dict)
    inference: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0

    @property
    def failed(self) -> list[str]:
        return [c for c, s in self.cameras.items() if s.get("error") and s.get("state") != "ended"]


def resolve_model(config: Config) -> Path:
    if config.model.path is not None:
        if not config.model.path.exists():
            raise ModelError(
                f"model file {config.model.path} not found: fix model.path in the store config, "
                "or remove it to use the default model (`edgepair model install`)"
            )
        return config.model.path
    path = default_model_path()
    verify_installed(path)
    return path


def check_data_dir(data_dir: Path) -> None:
    """Fail before any camera starts if segments could not be written."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe = data_dir / f".write-probe-{os.getpid()}.tmp"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise StorageError(
            f"cannot write to the data directory {data_dir}: {exc.strerror}; fix storage.data_dir or its permissions"
        ) from None
    free = shutil.disk_usage(data_dir).free
    if free < MIN_FREE_BYTES:
        raise StorageError(
            f"only {free // (1024 * 1024)} MiB free on the disk of {data_dir} ({errno.errorcode[errno.ENOSPC]}): "
            "free some space or move storage.data_dir"
        )


def load_detector_info(config: Config, model_path: Path) -> dict[str, Any]:
    """Open the model once in this process, so a bad model is one clear error before Ray starts."""
    from actors.inference import Detector

    det = Detector(
        str(model_path), family=config.model.family, threshold=config.model.threshold, tiles=config.model.tiles
    )
    return {"family": det.family, "provider": det.provider, "model_sha256": det.model_sha256}


def _standalone_signing(config: Config) -> Any:
    """A standalone workstation signs its segments when its certificate is in ``security.cert_dir`` (checked now, so
    a wrong file is one clear error); without one (a laptop, a test) it writes them unsigned and says so."""
    from storage.signing import SignerRef

    ref = SignerRef.from_config(config)
    if ref is None:
        return None
    if not (config.security.cert_dir / f"{config.node}.crt").exists():
        log.warning(
            "node %s: no certificate %s.crt in %s: segments are written unsigned (`edgepair verify` will list them)",
            config.node,
            config.node,
            config.security.cert_dir,
        )
        return None
    ref.load()
    return ref


def run_store(config: Config, *, run_dir: Path | None = None, progress: bool = True) -> RunResult:
    import ray

    from actors.ray_actors import start_camera, start_inference, start_ray
    from storage.segments import sweep_temp_files

    install_log_redaction()  # this process's own log lines; each camera actor installs it in its worker process
    model_path = resolve_model(config)
    info = load_detector_info(config, model_path)
    check_data_dir(config.storage.data_dir)
    sweep_temp_files(config.storage.data_dir)
    from cluster.node import record_store_setup

    record_store_setup(config)  # store.json and the KPI definitions history, as a node records them
    run_dir = run_dir or config.storage.data_dir.parent / f".run-{config.node}"
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    started = time.monotonic()
    signing = _standalone_signing(config)
    start_ray(config, run_dir)
    for s in (signal.SIGINT, signal.SIGTERM):  # again: ray.init installs handlers of its own
        signal.signal(s, lambda *_: stop.set())
    result = RunResult()
    try:
        inference = start_inference(config, str(model_path))
        result.inference = ray.get(inference.info.remote())
        log.info("node %s: inference on %s (%s)", config.node, result.inference["provider"], info["family"])
        workers = {
            cam.id: start_camera(
                config, cam.id, inference, token=0, model_version=info["model_sha256"][:12], signing=signing
            )
            for cam in config.cameras
        }
        last_print = 0.0
        while not stop.is_set():
            statuses = _poll(workers)
            result.cameras.update(statuses)
            if all(s.get("done") for s in result.cameras.values()) and len(result.cameras) == len(workers):
                break
            if progress and time.monotonic() - last_print > 5:
                last_print = time.monotonic()
                line = ", ".join(f"{c}: {s.get('frames', 0)} frames {s.get('state')}" for c, s in statuses.items())
                log.info("node %s: %s", config.node, line)
            stop.wait(0.5)
        # Drain: every camera finishes its visits and flushes its open segment.
        refs = {c: w.stop.remote() for c, w in workers.items()}
        for cam_id, ref in refs.items():
            try:
                result.cameras[cam_id] = redact_status(ray.get(ref, timeout=60))
            except Exception as exc:  # a dead actor: report, keep the others
                result.cameras.setdefault(cam_id, {})["error"] = redact(f"stop failed: {exc}")
        result.inference = ray.get(inference.info.remote())
    finally:
        ray.shutdown()
        for s, h in previous.items():
            signal.signal(s, h)
    result.wall_s = time.monotonic() - started
    return result


def redact_status(status: dict[str, Any]) -> dict[str, Any]:
    """A camera status with its error texts redacted (they can quote the camera's URL or an echo of its password)."""
    out = dict(status)
    if out.get("error"):
        out["error"] = redact(out["error"])
    capture = out.get("capture")
    if isinstance(capture, dict) and capture.get("last_error"):
        out["capture"] = {**capture, "last_error": redact(capture["last_error"])}
    return out


def _poll(workers: dict[str, Any]) -> dict[str, dict[str, Any]]:
    import ray

    out: dict[str, dict[str, Any]] = {}
    refs = {c: w.status.remote() for c, w in workers.items()}
    for cam_id, ref in refs.items():
        try:
            out[cam_id] = redact_status(ray.get(ref, timeout=10))
        except Exception as exc:  # restarting actor: Ray brings it back, its loop resumes in __init__
            first = (str(exc) or repr(exc)).splitlines()[0]
            out[cam_id] = {"state": "restarting", "done": False, "error": redact(first)}
    return out

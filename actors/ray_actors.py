"""The one place where plain classes become Ray actors, with their names, resources and restart options."""

from __future__ import annotations

import logging
import os
import secrets
import time
from pathlib import Path
from typing import Any

import ray

from actors.inference_server import InferenceServer
from actors.worker import CameraWorker
from cluster import unsafe
from cluster.config import Config
from cluster.errors import StorageError
from storage.signing import SignerRef

log = logging.getLogger(__name__)

INFERENCE_OPTIONS: dict[str, Any] = {
    "name": "inference",
    "num_cpus": 1,
    "max_concurrency": 64,  # callers wait in InferenceServer's batch queue, not in Ray's
    "max_restarts": -1,
}


_started = 0


def camera_options(camera_id: str, cpu: float, token: int = 0) -> dict[str, Any]:
    # I/O-bound (decode + tracking): a fraction of a CPU, or it can stay pending forever without an error.
    # The name is unique per start, so a camera stopped and started again never waits for its old name.
    global _started
    _started += 1
    name = f"camera-{camera_id}-t{token}-{_started}"
    return {"name": name, "num_cpus": cpu, "max_concurrency": 4, "max_restarts": -1}


def ray_root(run_dir: Path) -> Path:
    """The private folder (mode 0700, ours) that holds this node's Ray temp dirs, one per agent pid.

    ``<run_dir>/ray`` when its path is short enough for the unix socket paths Ray makes inside it (108 bytes in
    all), else a folder under /tmp named from the run dir. Never a world-writable folder: Ray's sockets, logs and
    spilled objects are readable by this node's user only.
    """
    import hashlib

    root = Path(run_dir).resolve() / "ray"
    if len(str(root)) > 40:
        root = Path("/tmp") / f"ep-{os.getuid()}-{hashlib.sha256(str(root).encode()).hexdigest()[:10]}"
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = root.stat()
    if st.st_uid != os.getuid():
        raise StorageError(f"Ray folder {root} belongs to uid {st.st_uid}, not to this node's user: remove it")
    if st.st_mode & 0o077:
        root.chmod(0o700)
    return root


def start_ray(
    config: Config, run_dir: Path, *, num_cpus: int | None = None, runtime_env: dict[str, Any] | None = None
) -> None:
    """A private local Ray for this node: its own temp dir (mode 0700), no dashboard, its own auth token.

    Ray is told to use 127.0.0.1 as the node's address, so its clients talk over loopback. Ray 2.60's core servers
    (gcs_server, raylet, workers) still listen on every interface whatever the node address (measured; Ray has no
    setting for it), so two guards remain: token authentication with a token of this node's own (mode 0600), and
    the store firewall (deploy/ansible store_base) that drops every inbound connection to a port it does not name.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    token_file = run_dir / "ray_auth_token"
    if not token_file.exists():
        from cluster.pki import write_private

        write_private(token_file, secrets.token_hex(32).encode())
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(token_file)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray reads RAY_AUTH_MODE into its config when it is imported: refresh it, as ray.init does for its default.
    from ray._raylet import Config as _RayConfig  # type: ignore[attr-defined]

    _RayConfig.initialize("")
    cpus = num_cpus or config.runtime.num_cpus or os.cpu_count() or 2
    root = ray_root(run_dir)
    temp_dir = root / str(os.getpid())
    _sweep_dead_temp_dirs(root, "")
    # Two local Rays starting at the same moment on one machine can race for the ports they pick: try again once.
    for attempt in (1, 2):
        try:
            ray.init(
                num_cpus=max(cpus, 2),
                include_dashboard=False,
                _temp_dir=str(temp_dir) + ("" if attempt == 1 else "-2"),
                _node_ip_address="127.0.0.1",
                object_store_memory=256 * 1024 * 1024,
                log_to_driver=True,
                logging_level=logging.WARNING,
                configure_logging=False,
                runtime_env=runtime_env,
            )
            break
        except Exception as exc:
            ray.shutdown()
            if attempt == 2:
                raise
            log.warning("node %s: local Ray did not start (%s); trying once more", config.node, exc)
    log.info("node %s: local Ray started with %d CPUs in %s", config.node, max(cpus, 2), temp_dir)


def _sweep_dead_temp_dirs(root: Path, prefix: str) -> None:
    """Remove the Ray temp dirs an earlier agent of this node left when it was killed (its pid is gone, and no
    process still names the dir, as orphaned Ray processes of a killed agent do until they are stopped)."""
    import shutil

    dead = []
    for d in root.glob(f"{prefix}*"):
        pid = d.name[len(prefix) :].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists():
            dead.append(d)
    if not dead:
        return
    cmdlines = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdlines.append((proc / "cmdline").read_bytes())
        except OSError:
            continue
    for d in dead:
        if not any(str(d).encode() in c for c in cmdlines):
            shutil.rmtree(d, ignore_errors=True)
            log.info("removed %s, the Ray temp dir of an agent no longer running", d)


def start_inference(config: Config, model_path: str) -> Any:
    actor = ray.remote(InferenceServer).options(**INFERENCE_OPTIONS)
    return actor.remote(config, model_path, config.runtime.inference_batch)


class _RemoteDetect:
    """Picklable submit/resolve pair that sends frames to the shared inference actor."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    def submit(self, frame: Any) -> Any:
        # The send time (one monotonic clock for the machine's processes) gives the profile its hand-over time.
        return self.handle.detect.remote(frame, time.monotonic())

    def resolve(self, ref: Any) -> Any:
        return ray.get(ref)

    def ready(self, ref: Any, timeout: float) -> bool:
        done, _ = ray.wait([ref], timeout=timeout)
        return bool(done)


def start_camera(
    config: Config,
    camera_id: str,
    inference: Any,
    *,
    token: int,
    model_version: str,
    fps: float | None = None,
    fence_deadline: float | None = None,
    autostart: bool = True,
    signing: SignerRef | None = None,
) -> Any:
    """A camera actor. ``signing`` (plain data: the certificate folder and node name, see
    :meth:`storage.signing.SignerRef.from_config`) lets the actor load this node's key and sign its segments."""
    n = max(1, len(config.cameras))
    total = max(config.runtime.num_cpus or os.cpu_count() or 2, 2)
    cpu = max(0.01, min(0.25, (total - 1) / n))
    remote = _RemoteDetect(inference)
    actor = ray.remote(CameraWorker).options(**camera_options(camera_id, cpu, token))
    return actor.remote(
        config,
        camera_id,
        remote.submit,
        remote.resolve,
        token=token,
        model_version=model_version,
        fps=fps,
        fence_deadline=fence_deadline,
        autostart=autostart,
        signing=signing,
        ready=remote.ready,
    )


def start_failable_inference(config: Any, model_path: str, trigger: Path) -> Any:
    """``fail-inference`` (:mod:`cluster.unsafe`): the node's inference actor, its detector wrapped by
    :func:`cluster.unsafe.failing_while`. The class keeps the name ``InferenceServer`` (its process is
    ``ray::InferenceServer``, as the hang-inference drill looks for)."""
    from actors import inference_server

    class InferenceServer(inference_server.InferenceServer):
        def __init__(self, config: Any, model_path: str, max_batch: int, trigger: Path) -> None:
            super().__init__(config, model_path, max_batch)
            self.detector.detect_batch = unsafe.failing_while(trigger, self.detector.detect_batch)  # type: ignore[method-assign,assignment]

    actor = ray.remote(InferenceServer).options(**INFERENCE_OPTIONS)
    return actor.remote(config, model_path, config.runtime.inference_batch, trigger)

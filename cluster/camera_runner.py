"""The node's runner of camera actors (:class:`RayCameraRunner`): the HA loop's ``Fenced`` runner, camera actors in
the node's own Ray, each with its own fence (:mod:`cluster.fencing`). Part of ``edgepair node`` (:mod:`cluster.node`);
it logs under the node's logger, as before it had its own module."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cluster import unsafe
from cluster.config import Config
from cluster.errors import ConfigError
from cluster.fencing import Fence
from failover.decide import given_elsewhere
from failover.fence import FENCE_FRACTION

if TYPE_CHECKING:
    from failover.dcs import Cluster

log = logging.getLogger("cluster.node")


class RayCameraRunner:
    """The HA loop's runner (a ``Fenced`` runner): camera actors in this node's Ray, each with its own fence.

    Fence rules: the deadline is ``at + 0.8 x ttl`` for the latest renewal sent at ``at`` (``-inf`` before the
    first: nothing starts); a later renewal never moves it back. Each renewal pushes it to every running camera
    actor, which pauses by itself once ``clock()`` reaches it; a camera is started (or activated, or retokened) only
    while ``clock() < deadline``, and is handed the deadline when it starts.

    ``clock`` is the monotonic clock of the fence (the HA loop's renewal times are on it). ``unsafe_break`` is the
    node's test-only break set (:mod:`cluster.unsafe`); with ``fence`` in it, :meth:`stop_camera` stops a camera
    only when ``cluster()`` (the node's last read of etcd) gives it to another node, or once :attr:`shutting_down`.
    ``ray_api`` and ``start_actor`` (default: the ``ray`` module and :func:`actors.ray_actors.start_camera`) are the
    Ray edge, replaced by fakes in unit tests.
    """

    def __init__(
        self,
        config: Config,
        inference: Any,
        model_version: str,
        ttl: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        unsafe_break: frozenset[str] = frozenset(),
        cluster: Callable[[], Cluster | None] = lambda: None,
        clock_ok_at: Callable[[], float] = lambda: float("-inf"),
        ray_api: Any = None,
        start_actor: Callable[..., Any] | None = None,
    ) -> None:
        if ray_api is None:
            import ray as ray_api
        if start_actor is None:
            from actors.ray_actors import start_camera

            start_actor = start_camera
        self.config = config
        self.inference = inference
        self.model_version = model_version
        self.window = FENCE_FRACTION * ttl
        self.clock = clock
        self.unsafe_break = frozenset(unsafe_break)
        self.cluster = cluster
        self.clock_ok_at = clock_ok_at  # when the node's clock probe last passed (handed to the actors at renewals)
        self.ray = ray_api
        self.start_actor = start_actor
        self.shutting_down = False  # set by the node before the HA loop's shutdown stops every camera
        self.fence = Fence(self.window, clock)  # -inf before the first renewal: nothing starts
        self.actors: dict[str, tuple[Any, float, int]] = {}
        self.standby: dict[str, Any] = {}  # camera -> an idle actor ready to take it over (see prepare_standby)
        # Stopped actors still holding windows their disk refused (see _stop): key -> (camera, actor, frames).
        self.kept: dict[str, tuple[str, Any, int]] = {}
        self.kept_seq = 0
        self.kept_lost = 0  # frames of kept windows lost with their actor's process
        self.pending_written: list[tuple[str, str, str, float]] = []  # from cameras already stopped
        # camera -> (its actor's instance, the last written-segment number received from it): the acknowledgement
        # the next drain_written call carries (actors.worker.CameraWorker.drain_written).
        self.acked: dict[str, tuple[str, int]] = {}
        self.lock = threading.RLock()

    @property
    def deadline(self) -> float:
        return self.fence.deadline

    def renewed(self, at: float) -> None:
        with self.lock:
            self.fence.renewed(at)
            clock_ok_at = self.clock_ok_at()
            for actor, _fps, _token in self.actors.values():
                actor.renew.remote(self.deadline, clock_ok_at)

    def effective_fps(self, camera_id: str, fps: float | None) -> float | None:
        """The rate a camera runs at: the planned ``fps`` capped by the camera's configured one (None: none given,
        the source's own rate). The one place this is computed: a start, an activation and Ray's restart of an actor
        all use it (the restart used to lose the plan when the camera had no ``fps`` of its own)."""
        cam = next((c for c in self.config.cameras if c.id == camera_id), None)
        if cam is None:
            raise ConfigError(
                f"camera {camera_id} is assigned to node {self.config.node} but not in its config: give both"
                " workstations the same cameras (roll the config out to both)"
            )
        return min(fps, cam.fps) if cam.fps and fps else (fps or None)

    def _new_actor(self, camera_id: str, fps: float | None, token: int, *, standby: bool) -> Any:
        from storage.signing import SignerRef

        return self.start_actor(
            self.config,
            camera_id,
            self.inference,
            token=token,
            model_version=self.model_version,
            fps=self.effective_fps(camera_id, fps),
            fence_deadline=None if standby else self.deadline,
            autostart=not standby,
            signing=SignerRef.from_config(self.config),
        )

    def prepare_standby(self) -> None:
        """A standby actor (process spawned, nothing opened) for every camera not running here.

        A takeover then only activates it: no worker process to start and import, which is most of a camera's
        start-up time. The standby actors hold the CPU share their cameras would hold, no frames, no source.
        """
        with self.lock:
            for cam in self.config.cameras:
                if cam.id not in self.actors and cam.id not in self.standby:
                    self.standby[cam.id] = self._new_actor(cam.id, None, 0, standby=True)

    def start_camera(self, camera_id: str, fps: float, token: int) -> None:
        with self.lock:
            if self.fence.expired():
                log.warning("node %s: not starting %s: fenced", self.config.node, camera_id)
                return
            current = self.actors.get(camera_id)
            if current is not None and current[1:] == (fps, token):
                return
            if current is not None and current[1] == fps and token > current[2]:
                current[0].retoken.remote(token)  # a new leader kept it here: no restart, no gap
                self.actors[camera_id] = (current[0], fps, token)
                log.info("node %s: %s carries on under token %d", self.config.node, camera_id, token)
                return
            if current is not None:
                self._stop(camera_id)
            actor = self.standby.pop(camera_id, None)
            warm = actor is not None
            if actor is None and self.unsafe_break:
                # Test-only breaks reach an actor through activate(): an idle one, activated at once (a restarted
                # one comes back idle too, and statuses() activates it again, with the breaks).
                actor = self._new_actor(camera_id, None, 0, standby=True)
            if actor is not None:
                actor.activate.remote(token, self.effective_fps(camera_id, fps), self.deadline, self.unsafe_break)
            else:
                actor = self._new_actor(camera_id, fps, token, standby=False)
            self.actors[camera_id] = (actor, fps, token)
            log.info(
                "node %s: started %s at %.1f fps under token %d%s",
                self.config.node,
                camera_id,
                fps,
                token,
                " (standby actor)" if warm else "",
            )

    def stop_camera(self, camera_id: str) -> None:
        """The HA loop's stop: drain the camera's actor and put a standby one in its place."""
        if (
            unsafe.FENCE in self.unsafe_break
            and not self.shutting_down
            and not given_elsewhere(self.cluster(), self.config.node, camera_id)
        ):
            log.warning(
                "node %s: UNSAFE test-only break fence: not stopping %s (no current assignment gives it to another"
                " node)",
                self.config.node,
                camera_id,
            )
            return
        self._stop(camera_id)

    def _stop(self, camera_id: str) -> None:
        ray = self.ray
        with self.lock:
            entry = self.actors.pop(camera_id, None)
        if entry is None:
            return
        actor = entry[0]
        try:
            status = ray.get(actor.stop.remote(), timeout=30)
            log.info(
                "node %s: stopped %s (%d frames, %d segments)",
                self.config.node,
                camera_id,
                status.get("frames", 0),
                status.get("segments", 0),
            )
            instance, entries = ray.get(actor.drain_written.remote(*self._ack(camera_id)), timeout=10)
            written = self._received(camera_id, instance, entries)
            with self.lock:
                self.pending_written.extend(written)
            if int(status.get("frames_pending", 0)) > 0:
                # Its last flush failed (a full or failing disk): the windows are only in the actor's memory. Keep
                # the actor (stopped: no source, no frames) until they are written; killing it would lose them.
                self._keep(camera_id, actor, int(status["frames_pending"]), instance)
                self.prepare_standby()
                return
        except Exception as exc:
            log.warning("node %s: %s did not drain cleanly: %s", self.config.node, camera_id, exc)
        ray.kill(actor, no_restart=True)
        self.prepare_standby()

    def _keep(self, camera_id: str, actor: Any, frames: int, instance: str) -> None:
        with self.lock:
            self.kept_seq += 1
            key = f"{camera_id}#kept-{self.kept_seq}"
            self.kept[key] = (camera_id, actor, frames)
            # What the node received from this actor so far, and its instance: one Ray restarted holds nothing.
            self.acked[key] = self.acked.get(camera_id, (instance, 0))
        log.warning(
            "node %s: %s stopped with %d frames in windows its disk did not take: its actor is kept until they are"
            " written (tried again every push)",
            self.config.node,
            camera_id,
            frames,
        )

    def write_kept(self) -> list[tuple[str, str, str, float]]:
        """Try again to write the windows of stopped actors whose disk failed (see ``_stop``); an actor whose windows
        are all written is killed. Returns the segments written (for the replicator's push)."""
        ray = self.ray
        with self.lock:
            kept = dict(self.kept)
        out = []
        for key, (cam, actor, held) in kept.items():
            kept_instance = self._ack(key)[0]
            try:
                status = ray.get(actor.write_kept.remote(), timeout=10)
                instance, entries = ray.get(actor.drain_written.remote(*self._ack(key)), timeout=10)
                if instance != kept_instance:
                    raise RuntimeError(f"its process was restarted (instance {instance}, was {kept_instance})")
            except Exception as exc:  # its process died: what it held is gone, and said so once
                log.error("node %s: %s: the actor holding unwritten windows is gone: %s", self.config.node, cam, exc)
                with self.lock:
                    self.kept.pop(key, None)
                    self.acked.pop(key, None)
                    self.kept_lost += held
                with contextlib.suppress(Exception):
                    ray.kill(actor, no_restart=True)
                continue
            out.extend(self._received(key, instance, entries))
            pending = int(status.get("frames_pending", 0))
            with self.lock:
                if pending > 0:
                    self.kept[key] = (cam, actor, pending)
                    continue
                self.kept.pop(key, None)
                self.acked.pop(key, None)
            log.info("node %s: %s: the windows kept in memory are written", self.config.node, cam)
            ray.kill(actor, no_restart=True)
        return out

    def kept_frames(self) -> dict[str, int]:
        """Frames per camera held in stopped actors' memory until their disk takes them (0 entries: none)."""
        with self.lock:
            out: dict[str, int] = {}
            for cam, _actor, frames in self.kept.values():
                out[cam] = out.get(cam, 0) + frames
            return out

    def running(self) -> set[str]:
        with self.lock:
            return set(self.actors)

    def drain_written(self) -> list[tuple[str, str, str, float]]:
        """The segments the cameras wrote since the last call, each once (for the replicator's push). A camera that
        does not answer in time keeps its list: the next call gets it (the actor drops only what was acknowledged)."""
        ray = self.ray
        kept = self.write_kept() if self.kept else []
        with self.lock:
            calls = {c: a.drain_written.remote(*self._ack(c)) for c, (a, _f, _t) in self.actors.items()}
            out, self.pending_written = self.pending_written + kept, []
        for cam, ref in calls.items():
            try:
                instance, entries = ray.get(ref, timeout=5)
            except Exception as exc:  # busy, restarting or just unfrozen: nothing is lost, asked again next time
                log.debug("node %s: %s did not hand over its written segments yet: %s", self.config.node, cam, exc)
                continue
            out.extend(self._received(cam, instance, entries))
        return out

    def _ack(self, camera_id: str) -> tuple[str, int]:
        with self.lock:
            return self.acked.get(camera_id, ("", 0))

    def _received(
        self, camera_id: str, instance: str, entries: list[tuple[int, str, str, str, float]]
    ) -> list[tuple[str, str, str, float]]:
        """The entries of a drain_written reply not received before (two calls in flight can return the same ones);
        records the acknowledgement for the next call."""
        with self.lock:
            prev_instance, prev = self.acked.get(camera_id, ("", 0))
            seen = prev if instance == prev_instance else 0
            fresh = [e for e in entries if e[0] > seen]
            last = max([seen, *(e[0] for e in entries)])
            self.acked[camera_id] = (instance, last)
        return [(sid, path, sha, at) for _n, sid, path, sha, at in fresh]

    def statuses(self) -> dict[str, dict[str, Any]]:
        """Each running camera's status; an actor Ray restarted (its process died) is set going again here."""
        ray = self.ray
        with self.lock:
            entries = dict(self.actors)
        refs = {c: a.status.remote() for c, (a, _f, _t) in entries.items()}
        out = {}
        for cam, ref in refs.items():
            try:
                out[cam] = ray.get(ref, timeout=5)
            except Exception as exc:
                out[cam] = {"state": "restarting", "error": str(exc).splitlines()[0]}
                continue
            actor, fps, token = entries[cam]
            if not out[cam].get("active", True) or int(out[cam].get("token", token)) < token:
                # Restarted from its constructor arguments: a standby one is idle, a retokened one has its old
                # token. Activate it under the current token and fence (both idempotent).
                log.info(
                    "node %s: %s restarted by Ray: activating it again under token %d", self.config.node, cam, token
                )
                actor.activate.remote(token, self.effective_fps(cam, fps), self.deadline, self.unsafe_break)
        return out

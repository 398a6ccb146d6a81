"""``edgepair node``: the one long-running process of a workstation.

It joins etcd (``failover.HALoop``), runs its own private Ray (own temp dir and token: the two workstations share no
Ray cluster, so neither is a single point of failure for the other), starts and stops camera actors as the
assignment says, and serves ``/health`` (JSON) and ``/metrics`` (Prometheus text). SIGTERM drains: the cameras flush
their open segments, leadership is handed over, the process exits 0.

Fencing lives with the cameras: every camera actor has its own deadline on the machine's monotonic clock, pushed by
each lease renewal of the HA loop. A frozen or cut-off agent cannot renew, so its cameras stop by themselves before
its lease can have expired, even though they run in other processes.

The test-only break switch ``EDGEPAIR_UNSAFE_BREAK`` (:mod:`cluster.unsafe`, never in production) is read once when
the node is created: it is logged as a WARNING, every ``/health`` document carries ``"unsafe_break"`` (the sorted
values, ``[]`` when none), and the set is handed to the camera actors when they are activated.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from cluster import unsafe
from cluster.camera_runner import RayCameraRunner
from cluster.config import Config
from cluster.errors import ConfigError
from cluster.health import HealthMonitor, LoopRestarts, Settings, Sources, backoff, disk_state, time_synced
from cluster.runner import check_data_dir, load_detector_info, redact_status, resolve_model
from cluster.supervise import write_lease
from failover.timing import Durations

log = logging.getLogger(__name__)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("edgepair")
    except PackageNotFoundError:  # running from a source tree without installing
        return "0.0.0+source"


VERSION = _version()


def record_store_setup(cfg: Config) -> None:
    """The dataset's store.json and KPI definitions history, from this config, recorded when it first runs here
    (replication merges the peer's history, so both workstations date a definition change alike)."""
    from storage.analytics import ensure_store_file, record_definition
    from storage.kpis import StoreSetup

    setup = StoreSetup.from_config(cfg)
    ensure_store_file(cfg.storage.data_dir, setup)
    record_definition(cfg.storage.data_dir, setup.definition())


def node_run_dir(config: Config, name: str) -> Path:
    """The node's private run dir (Ray's folders, its lease file): beside its data dir."""
    return config.storage.data_dir.parent / f".run-{name}"


def revoke_lease(config: Config, name: str, lease: int) -> None:
    """Revoke session lease ``lease`` of node ``name`` in etcd, with the node's own identity (its supervisor's step
    after the agent died: member and leader keys vanish at once)."""
    from failover.etcd_dcs import EtcdDCS

    dcs = EtcdDCS(config.cluster.etcd_endpoints, config.store.id, config.cluster.ttl_s, identity=config.identity(name))
    dcs.lease_id = lease
    try:
        dcs.revoke()
    finally:
        dcs.close()


class InferenceProber:
    """The inference probe: a small black frame sent to the inference actor, at most one in flight at a time (a
    hung actor is not sent a pile of them); :meth:`probe` waits for it up to the deadline."""

    def __init__(self, inference: Any, ray_api: Any = None, clock: Callable[[], float] = time.monotonic) -> None:
        if ray_api is None:
            import ray as ray_api
        import numpy as np

        self.inference = inference
        self.ray = ray_api
        self.clock = clock
        self.frame = np.zeros((96, 96, 3), dtype=np.uint8)
        self.ref: Any = None
        self.sent_at = 0.0
        self.latencies = Durations()  # answered probes (issue 21's soak reads their distribution from /health)

    def probe(self, deadline_s: float) -> tuple[float | None, str]:
        if self.ref is None:
            self.ref = self.inference.detect.remote(self.frame)
            self.sent_at = self.clock()
        waited = self.clock() - self.sent_at
        ready, _ = self.ray.wait([self.ref], timeout=max(0.0, deadline_s - waited))
        elapsed = self.clock() - self.sent_at
        if not ready:
            return None, ""
        ref, self.ref = self.ref, None
        self.latencies.add(elapsed)
        try:
            self.ray.get(ref, timeout=1)
        except Exception as exc:
            return elapsed, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return elapsed, ""


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.fps = Gauge("edgepair_camera_fps", "Frames processed a second", ["camera"], registry=r)
        self.frames = Gauge(
            "edgepair_camera_frames", "Frames processed since the camera started", ["camera"], registry=r
        )
        self.dropped = Gauge("edgepair_camera_dropped_frames", "Frames dropped (backpressure)", ["camera"], registry=r)
        self.fence_pauses = Gauge(
            "edgepair_camera_fence_pauses",
            "Times the camera's worker paused on its fence (lease not renewed in time) since it started here",
            ["camera"],
            registry=r,
        )
        self.renew_gap_max = Gauge(
            "edgepair_lease_renewal_gap_max_seconds",
            "Longest time between two successful lease renewals since the node started (the fence expires at"
            " fence fraction x TTL)",
            registry=r,
        )
        self.latency = Gauge("edgepair_inference_latency_seconds", "Mean inference time a frame", registry=r)
        self.role = Gauge("edgepair_role_leader", "1 when this node leads", registry=r)
        self.token = Gauge("edgepair_fencing_token", "Fencing token of the assignment this node runs", registry=r)
        self.lag = Gauge("edgepair_replication_lag_seconds", "Replication lag to the peer", registry=r)
        self.cameras = Gauge("edgepair_cameras_running", "Cameras running on this node", registry=r)
        self.refused = Gauge(
            "edgepair_replication_refused", "Files or calls refused by replication, by reason", ["reason"], registry=r
        )
        self.healthy = Gauge("edgepair_node_healthy", "1 when this node's health verdict is healthy", registry=r)
        self.probe_ok = Gauge(
            "edgepair_health_probe_ok", "1 when the health probe passes (cluster.health)", ["probe"], registry=r
        )
        self.loop_restarts = Gauge(
            "edgepair_loop_restarts_total",
            "Iterations of a long-running loop that raised and were retried, by loop",
            ["loop"],
            registry=r,
        )
        self.cert_expiry = Gauge(
            "edgepair_certificate_expiry_timestamp_seconds", "When this node's TLS certificate expires", registry=r
        )
        # Issue 20 (alerts, deploy/prometheus/edgepair.rules.yml): the data dir's filesystem, and fence pauses.
        self.disk_free = Gauge("edgepair_data_dir_free_bytes", "Free bytes of the data dir's filesystem", registry=r)
        self.disk_size = Gauge("edgepair_data_dir_size_bytes", "Size of the data dir's filesystem", registry=r)
        self.fenced = Gauge("edgepair_cameras_fenced", "Cameras of this node paused on their fence now", registry=r)
        self.labelled: set[str] = set()  # cameras with per-camera series now
        self.probed: set[str] = set()  # probes with an edgepair_health_probe_ok series now


class Node:
    def __init__(self, config: Config, name: str, run_dir: Path | None = None) -> None:
        if not config.cluster.etcd_endpoints:
            raise ConfigError("cluster.etcd_endpoints is empty: a node needs etcd (use `edgepair run` without it)")
        self.me = config.node_config(name)
        self.config = config.model_copy(update={"node": name})
        self.run_dir = run_dir or node_run_dir(config, name)
        self.metrics = NodeMetrics()
        self.stop_event = threading.Event()
        self.started = time.time()
        self.loop: Any = None
        self.runner: RayCameraRunner | None = None
        self.inference: Any = None
        self.replicator: Any = None
        self.monitor: Any = None  # cluster.health.HealthMonitor, once Ray and the HA loop run
        self.prober: InferenceProber | None = None
        self._info_ref: Any = None  # the inference actor's info() request in flight (see _inference_latency)
        self.restarts = LoopRestarts()
        self.unsafe_break = unsafe.breaks()  # test-only (cluster.unsafe); ConfigError on an unknown value
        self.test_faults = unsafe.test_faults()  # test-only fault hooks (cluster.unsafe)
        if self.test_faults:
            log.warning(
                "node %s: test-only fault hook %s active (%s): for the gray-failure drills only, never in production",
                name,
                ",".join(sorted(self.test_faults)),
                unsafe.FAULTS_ENV,
            )
        if self.unsafe_break:
            log.warning(
                "node %s: UNSAFE: test-only break %s active (%s): for tests of the drills only, never in production",
                name,
                ",".join(sorted(self.unsafe_break)),
                unsafe.ENV,
            )
        self.health: dict[str, Any] = {
            "node": name,
            "healthy": False,
            "role": "starting",
            "version": VERSION,
            "unsafe_break": sorted(self.unsafe_break),
        }
        self.identity = self.config.identity(name)  # None when security.tls is off; PKIError when files are wrong
        if self.identity is None:
            log.warning(
                "node %s: security.tls is false: etcd, replication and /health run in PLAIN TEXT without"
                " authentication and segments are not signed; never run a store network like this",
                name,
            )

    def _test_runtime_env(self) -> dict[str, Any] | None:
        """``clock-jump`` (test-only, cluster.unsafe): this process and every Ray worker read the offset clock."""
        if unsafe.CLOCK_JUMP not in self.test_faults:
            return None
        path = unsafe.clock_offset_file(self.config.storage.data_dir, self.me.name)
        os.environ[unsafe.CLOCK_FILE_ENV] = str(path)
        unsafe.install_clock_offset(path)
        return {"worker_process_setup_hook": "cluster.unsafe.install_clock_offset_from_env"}

    # --- life cycle ---------------------------------------------------------------------------------------------
    def run(self) -> int:
        import ray

        from actors.ray_actors import start_ray
        from failover.etcd_dcs import EtcdDCS
        from failover.loop import HALoop
        from storage.segments import sweep_temp_files

        cfg = self.config
        model_path = resolve_model(cfg)
        info = load_detector_info(cfg, model_path)
        check_data_dir(cfg.storage.data_dir)
        sweep_temp_files(cfg.storage.data_dir)
        record_store_setup(cfg)
        if self.identity is not None:
            from cluster.pki import cert_info, load_certs

            self.metrics.cert_expiry.set(cert_info(load_certs(self.identity.cert)[0]).not_after.timestamp())
        server = self._serve_http()
        # etcd's gRPC channel first, then Ray: Ray starts its processes with fork+exec, which gRPC survives.
        dcs = EtcdDCS(cfg.cluster.etcd_endpoints, cfg.store.id, cfg.cluster.ttl_s, identity=self.identity)
        dcs.on_grant = lambda lease: write_lease(self.run_dir, lease)  # for the supervisor (cluster.supervise)
        start_ray(cfg, self.run_dir, runtime_env=self._test_runtime_env())
        # After ray.init, which installs its own fatal-signal handlers: SIGTERM must drain, not crash.
        for s in (signal.SIGTERM, signal.SIGINT):
            signal.signal(s, lambda *_: self.stop_event.set())
        try:
            self._start_inference(model_path)
            self.runner = RayCameraRunner(
                cfg,
                self.inference,
                info["model_sha256"][:12],
                cfg.cluster.ttl_s,
                unsafe_break=self.unsafe_break,
                cluster=lambda: getattr(self.loop, "last_cluster", None),
                clock_ok_at=lambda: self.monitor.clock_ok_at if self.monitor is not None else float("-inf"),
            )
            self.runner.prepare_standby()
            cameras = {c.id: float(c.fps or 10.0) for c in cfg.cameras}
            self.monitor = self._health_monitor()
            self.loop = HALoop(
                dcs,
                self.me.name,
                cameras,
                self.me.capacity,
                self.runner,
                ttl=cfg.cluster.ttl_s,
                health=self.monitor.report,
            )
            self.monitor.on_change = self.loop.wake
            self._start_replication()
            ha = self._start_threads()
            self._metrics_loop()
            log.info("node %s: draining (SIGTERM)", self.me.name)
            self.runner.shutting_down = True
            self.loop.shutdown(release=True)
            ha.join(timeout=10)
            self._final_push()
        finally:
            if self.replicator is not None:
                self.replicator.stop()
            dcs.close()
            ray.shutdown()
            server.shutdown()
        log.info("node %s: stopped", self.me.name)
        return 0

    def _start_inference(self, model_path: Path) -> None:
        """The node's one inference actor (its detector failing on demand under the ``fail-inference`` test hook)."""
        import ray

        from actors.ray_actors import start_failable_inference, start_inference

        cfg = self.config
        if unsafe.FAIL_INFERENCE in self.test_faults:
            trigger = unsafe.fail_inference_trigger(cfg.storage.data_dir, self.me.name)
            self.inference = start_failable_inference(cfg, str(model_path), trigger)
        else:
            self.inference = start_inference(cfg, str(model_path))
        inf = ray.get(self.inference.info.remote())
        log.info("node %s: inference on %s", self.me.name, inf["provider"])

    def _start_threads(self) -> threading.Thread:
        """The HA loop, the health monitor, the push, housekeeping and (optional) Raft-leader loops; the HA thread."""
        assert self.loop is not None and self.monitor is not None
        ha = threading.Thread(target=self.loop.run, name="ha-loop", daemon=True)
        ha.start()
        threading.Thread(
            target=self.monitor.run, args=(self.stop_event, lambda: self.restarts.add("health")), daemon=True
        ).start()
        threading.Thread(target=self._push_loop, name="push", daemon=True).start()
        threading.Thread(target=self._housekeeping_loop, name="housekeeping", daemon=True).start()
        if self.config.cluster.raft_leader:
            threading.Thread(target=self._raft_leader_loop, name="raft-leader", daemon=True).start()
        return ha

    def _metrics_loop(self) -> None:
        """Refresh /health and /metrics every second until the node stops; it never dies (log, count, back off)."""
        failures = 0
        while not self.stop_event.wait(1.0 + backoff(failures)):
            try:
                self._refresh_health()
                failures = 0
            except Exception:
                failures += 1
                self.restarts.add("metrics")
                log.exception("node %s: refreshing /health and /metrics failed", self.me.name)

    def _final_push(self, bound_s: float = 5.0) -> None:
        """Hand the segments flushed by the drain to the peer before the replicator stops (bounded)."""
        if self.runner is None or self.replicator is None:
            return
        for seg_id, path, sha, at in self.runner.drain_written():
            self.replicator.notify(seg_id, Path(path), sha, at)
        deadline = time.monotonic() + bound_s
        while time.monotonic() < deadline:
            peers = self.replicator.status().get("peers", {})
            if all(p.get("lag_segments", 0) == 0 or not p.get("connected") for p in peers.values()):
                return
            time.sleep(0.1)
        log.warning("node %s: the peer still lacks segments after the drain; anti-entropy will copy them", self.me.name)

    def _push_loop(self) -> None:
        """Hand every new segment to the replicator within a quarter of a second of its writing."""
        failures = 0
        while not self.stop_event.wait(0.25 + backoff(failures, base_s=0.25, cap_s=5.0)):
            if self.runner is None or self.replicator is None:
                continue
            try:
                for seg_id, path, sha, at in self.runner.drain_written():
                    self.replicator.notify(seg_id, Path(path), sha, at)
                failures = 0
            except Exception as exc:
                self.restarts.add("push")
                failures += 1
                if failures == 1 or failures % 20 == 0:  # not one warning every quarter of a second
                    log.warning("node %s: push of new segments failed (%d in a row): %s", self.me.name, failures, exc)

    def _housekeeping_loop(self) -> None:
        """Compaction (one node of the pair compacts, the other follows) and retention, every minute."""
        from storage.compaction import compact
        from storage.kpibuild import refresh_kpis
        from storage.retention import enforce_retention

        cfg = self.config
        compactor = sorted(n.name for n in cfg.cluster.nodes)[0] == self.me.name if cfg.cluster.nodes else True
        ident = self.identity
        signer = ident.signer() if ident is not None else None
        verifier = ident.verifier() if ident is not None else None
        nodes = [n.name for n in cfg.cluster.nodes]
        while not self.stop_event.wait(60.0):
            try:
                compact(
                    cfg.storage.data_dir,
                    node=self.me.name,
                    compactor=compactor,
                    signer=signer,
                    verifier=verifier,
                    nodes=nodes,
                )
                enforce_retention(
                    cfg.storage.data_dir,
                    days=cfg.storage.retention_days,
                    timezone=cfg.store.timezone,
                    node=self.me.name,
                    verifier=verifier,
                )
                refresh_kpis(  # materialised KPI days (storage.kpimat), signed like segments
                    cfg.storage.data_dir, node=self.me.name, signer=signer, verifier=verifier, nodes=nodes or None
                )
            except Exception as exc:
                self.restarts.add("housekeeping")
                log.warning("node %s: housekeeping failed: %s", self.me.name, exc)

    def _raft_leader_loop(self, period_s: float = 5.0) -> None:
        """While this node leads, keep etcd's raft leader on the configured member (the witness): see failover.raft."""
        from failover.raft import keep_raft_leader_on

        cfg = self.config.cluster
        assert cfg.raft_leader is not None
        said = ""
        while not self.stop_event.wait(period_s):
            if self.loop is None or self.loop.leader is None:
                continue
            try:
                what = keep_raft_leader_on(cfg.etcd_endpoints, cfg.raft_leader, identity=self.identity)
            except Exception as exc:  # never let this housekeeping take the agent down
                self.restarts.add("raft-leader")
                what = f"raft leader: check failed: {exc}"
            if what != said:
                log.info("node %s: %s", self.me.name, what)
                said = what

    def _start_replication(self) -> None:
        peers = [n for n in self.config.cluster.nodes if n.name != self.me.name]
        if not peers:
            return
        peer = peers[0]
        try:
            from storage.replication import Replicator

            self.replicator = Replicator(
                self.config.storage.data_dir,
                self.config.store.id,
                self.me.name,
                f"grpc://{peer.host}:{peer.flight_port}",
                port=self.me.flight_port,
                host=self.me.host,
                retention_days=self.config.storage.retention_days,
                identity=self.identity,
                max_token=self._max_token,
                nodes=[n.name for n in self.config.cluster.nodes],
            )
            self.replicator.start()
        except Exception as exc:  # the node still runs its cameras; replication reports its own state
            log.error("node %s: replication to %s not started: %s", self.me.name, peer.name, exc)
            self.replicator = None

    TOKEN_MARGIN = 10_000
    """How far above the newest fencing token this node has read from etcd a received file's token may be: a new
    leader elected since our last read has a greater token (each etcd write adds one revision; renewals and member
    writes add a few a second), while a token from the future (a forged 10^15) is refused. Such a refusal is retried
    at the next anti-entropy, so a legitimate file is never lost to a stale view."""

    def _max_token(self) -> int | None:
        """The greatest fencing token a received file may carry (None while this node has read no leader)."""
        cluster = getattr(self.loop, "last_cluster", None)
        if cluster is None or cluster.leader is None:
            return None
        tokens = [cluster.leader.token] + ([cluster.assignment.token] if cluster.assignment is not None else [])
        return max(tokens) + self.TOKEN_MARGIN

    # --- health and metrics -------------------------------------------------------------------------------------
    def _health_monitor(self) -> HealthMonitor:
        """The health probes (cluster.health) on this node's Ray, data dir, replicator and last etcd read."""
        assert self.runner is not None
        runner = self.runner
        prober = self.prober = InferenceProber(self.inference)

        def replication() -> tuple[str, bool | None, str]:
            rep = self.replicator
            if rep is None:
                peers = [n.name for n in self.config.cluster.nodes if n.name != self.me.name]
                return (peers[0], False, "replication not started") if peers else ("", None, "")
            for peer, p in rep.status().get("peers", {}).items():
                return str(peer), bool(p.get("connected")), str(p.get("last_error") or "")
            return "", None, ""

        seen: dict[str, tuple[float, float]] = {}  # peer -> (its last wall value, our monotonic time when seen)

        def peer_wall() -> tuple[str, float | None]:
            """The peer's wall clock now: its member key's last value, moved on by the time elapsed since it changed
            on this node's monotonic clock (a frozen peer's stale key does not look further and further behind,
            and a step of this node's own wall clock still shows against it)."""
            cluster = getattr(self.loop, "last_cluster", None)
            if cluster is None:
                return "", None
            mono = time.monotonic()
            for name, m in sorted(cluster.members.items()):
                if name != self.me.name and m.wall > 0:
                    if name not in seen or seen[name][0] != m.wall:
                        seen[name] = (m.wall, mono)
                    return name, seen[name][0] + (mono - seen[name][1])
            return "", None

        synced: list[tuple[float, bool | None]] = []

        def synced_now() -> bool | None:
            """The host's time synchronisation, asked at most every 10 s (a subprocess)."""
            mono = time.monotonic()
            if not synced or mono - synced[0][0] > 10.0:
                synced[:] = [(mono, time_synced())]
            return synced[0][1]

        data_dir = self.config.storage.data_dir
        return HealthMonitor(
            self.me.name,
            Settings.from_config(self.config.cluster.health),
            Sources(
                inference=prober.probe,
                cameras=runner.statuses,
                disk=lambda: disk_state(data_dir),
                replication=replication,
                peer_wall=peer_wall,
                time_synced=synced_now,
            ),
        )

    def _refresh_health(self) -> None:
        if self.loop is None or self.runner is None:
            return
        st = self.loop.status()
        cams = self.runner.statuses()
        m = self.metrics
        self._camera_metrics(cams)
        tokens = [s.get("token", 0) for s in cams.values()]
        m.role.set(1 if self.live_role()["role"] == "leader" else 0)
        m.token.set(max(tokens) if tokens else (st.get("token") or 0))
        m.cameras.set(len(cams))
        m.renew_gap_max.set(self.loop.renew_gap.max)
        m.fenced.set(sum(1 for s in cams.values() if s.get("state") == "fenced"))
        with contextlib.suppress(OSError):
            usage = shutil.disk_usage(self.config.storage.data_dir)
            m.disk_free.set(usage.free)
            m.disk_size.set(usage.total)
        lag = self._replication_metrics()
        self._inference_latency()
        verdict = self.monitor.verdict().as_dict() if self.monitor is not None else {}
        m.healthy.set(1 if st.get("healthy", True) else 0)
        self._probe_metrics(verdict.get("probes") or {})
        restarts = self.restarts.snapshot()
        restarts["ha"] = int(getattr(self.loop, "tick_errors", 0))
        restarts["camera-reader"] = sum(int((s.get("capture") or {}).get("reader_restarts", 0)) for s in cams.values())
        if self.replicator is not None:
            restarts.update(getattr(self.replicator, "loop_restarts", {}))
        for loop_name, n in restarts.items():
            m.loop_restarts.labels(loop_name).set(n)
        self.health = {
            "node": self.me.name,
            # Answering and not fenced; the measured health is "member_healthy" (what the member key says).
            "healthy": st.get("mode") in ("normal", "failsafe"),
            "member_healthy": st.get("healthy", True),
            "health_reasons": st.get("health_reasons", []),
            "failing": st.get("failing", []),
            "probes": verdict.get("probes", {}),
            "loop_restarts": restarts,
            "fence_pauses": {c: int(v.get("fence_pauses", 0)) for c, v in cams.items()},
            # Frames in windows of stopped cameras that this node's disk refused, held until it takes them.
            "kept_frames": self.runner.kept_frames() if self.runner is not None else {},
            "kept_frames_lost": self.runner.kept_lost if self.runner is not None else 0,
            "timing": {
                **st.get("timing", {}),
                "inference_probe": self.prober.latencies.summary() if self.prober is not None else {},
            },
            "leader": st.get("leader"),
            "token": max(tokens) if tokens else st.get("token"),
            "cameras": sorted(cams),
            "camera_status": {c: redact_status(v) for c, v in cams.items()},
            "replication_lag_s": lag,
            "reason": st.get("reason"),
            "version": VERSION,
            "uptime_s": round(time.time() - self.started, 1),
            "unsafe_break": sorted(self.unsafe_break),
            "test_faults": sorted(self.test_faults),
        }

    def _camera_metrics(self, cams: dict[str, dict[str, Any]]) -> None:
        """Each running camera's series; a camera moved away has its series ended (no stale value left behind)."""
        m = self.metrics
        for cam, s in cams.items():
            m.fps.labels(cam).set(s.get("fps", 0))
            m.frames.labels(cam).set(s.get("frames", 0))
            m.dropped.labels(cam).set(s.get("dropped", 0))
            m.fence_pauses.labels(cam).set(s.get("fence_pauses", 0))
        for cam in m.labelled - set(cams):
            for gauge in (m.fps, m.frames, m.dropped, m.fence_pauses):
                with contextlib.suppress(KeyError):
                    gauge.remove(cam)
        m.labelled = set(cams)

    def _replication_metrics(self) -> float:
        """The replication lag to the peer (s; -1 when the replicator cannot say) and the refusals, as metrics."""
        lag = 0.0
        if self.replicator is not None:
            try:
                peers = self.replicator.status().get("peers", {})
                lag = max((float(p.get("lag_s") or 0.0) for p in peers.values()), default=0.0)
            except Exception:
                lag = -1.0
        self.metrics.lag.set(lag)
        if self.replicator is not None:
            for reason, n in self.replicator.refusal_counts().items():
                self.metrics.refused.labels(reason).set(n)
        return lag

    def _probe_metrics(self, probes: dict[str, Any]) -> None:
        """Each health probe's verdict; a camera's probe ends when the camera moved away."""
        m = self.metrics
        for name, p in probes.items():
            m.probe_ok.labels(name).set(1 if p["ok"] else 0)
        for name in m.probed - set(probes):
            with contextlib.suppress(KeyError):
                m.probe_ok.remove(name)
        m.probed = set(probes)

    def _inference_latency(self) -> None:
        """The inference actor's mean time a frame, without waiting for it: a hung actor (the gray drill's SIGSTOP)
        must not hold /health and /metrics still (one request in flight at a time, read when it is answered)."""
        import ray

        try:
            if self._info_ref is None:
                self._info_ref = self.inference.info.remote()
            ready, _ = ray.wait([self._info_ref], timeout=0.2)
            if ready:
                ref, self._info_ref = self._info_ref, None
                inf = ray.get(ref, timeout=1)
                self.metrics.latency.set(inf["busy_s"] / max(1, inf["frames"]))
        except Exception:
            self._info_ref = None  # an actor restarted by Ray answers a fresh request

    def live_role(self) -> dict[str, Any]:
        """Role read at request time, never cached: a node is leader only while it holds the key under a valid
        fence (its lease renewed within 0.8 x TTL), so two nodes never both answer leader."""
        loop, runner = self.loop, self.runner
        if loop is None or runner is None:
            return {"role": "starting"}
        leader = loop.leader
        valid = leader is not None and loop.mode in ("normal", "failsafe") and not runner.fence.expired()
        return {
            "role": "leader" if valid else "follower",
            "leader_token": leader.token if valid and leader is not None else None,
            "mode": loop.mode,
        }

    def _serve_http(self) -> ThreadingHTTPServer:
        """``/health`` and ``/metrics``: mutual TLS on the node's host (``security.metrics: tls``, the default), or
        plain HTTP on 127.0.0.1 only (``loopback``, for a local agent that scrapes); plain on the node's host only
        when ``security.tls`` is off (the logged opt-out)."""
        node = self
        sec = self.config.security

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/health"):
                    body = json.dumps({**node.health, **node.live_role()}, default=str).encode()
                    self.send_response(200 if node.health.get("healthy") else 503)
                    self.send_header("Content-Type", "application/json")
                elif self.path.startswith("/metrics"):
                    body = generate_latest(node.metrics.registry)
                    self.send_response(200)
                    self.send_header("Content-Type", CONTENT_TYPE_LATEST)
                else:
                    body = b'{"error": "not found: use /health or /metrics"}'
                    self.send_response(404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        tls = self.identity is not None and sec.metrics == "tls"
        host = "127.0.0.1" if sec.metrics == "loopback" else self.me.host
        server = _HTTPServer((host, self.me.metrics_port), Handler)
        if tls:
            assert self.identity is not None
            server.ssl_context = self.identity.server_ssl_context()
        threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
        scheme = "https" if tls else "http"
        log.info(
            "node %s: health on %s://%s:%d/health%s",
            self.me.name,
            scheme,
            host,
            self.me.metrics_port,
            " (client certificate of the store CA required)" if tls else "",
        )
        return server


class _HTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that, given an ``ssl_context``, speaks TLS on each accepted connection.

    The handshake runs in the request's own thread (not in the accept loop), and every connection is bounded: at
    most :attr:`max_connections` at once (more are closed at accept), and :attr:`timeout_s` for the handshake and for
    each read, so a client that connects and sends nothing, or dribbles, cannot hold the node's threads. A failed
    handshake (no or untrusted client certificate) closes that connection only.
    """

    daemon_threads = True
    ssl_context: Any = None
    timeout_s = 5.0
    max_connections = 32

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = threading.BoundedSemaphore(self.max_connections)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One line, not socketserver's traceback on stderr: a client that went away mid-answer (a poller's short
        timeout, a scanner) is routine; anything else is logged as an error with its type."""
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # ConnectionError, ssl.SSLError, TimeoutError
            log.debug("/health: client %s went away: %s", client_address[0], type(exc).__name__)
        else:
            log.error("/health: request from %s failed: %s: %s", client_address[0], type(exc).__name__, exc)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # every slot busy: refuse at once rather than queue without bound
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            request.settimeout(self.timeout_s)
            if self.ssl_context is not None:
                import ssl

                try:
                    request = self.ssl_context.wrap_socket(request, server_side=True)
                except (ssl.SSLError, OSError) as exc:
                    log.debug("health: TLS handshake from %s refused: %s", client_address[0], exc)
                    self.shutdown_request(request)
                    return
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

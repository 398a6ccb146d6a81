"""What a drill runs against: one interface, two implementations (a local pair here, a deployed store over SSH).

:mod:`cluster.drill` measures; a :class:`DrillTarget` observes and breaks. The measuring code only ever uses the
interface: each node's ``/health``, each node's data dir (read locally, a copy for a remote store), the node
configuration, and :meth:`DrillTarget.inject`, which applies a scenario's fault at once and returns what restores it.

:class:`LocalPair` is a pair started by ``edgepair pair up`` on this machine (its ``pair.json``); faults are signals
to pids, restarts of the same command lines and an nftables black hole (:mod:`cluster.drill_faults`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from cluster import drill_faults as faults
from cluster.errors import EdgepairError
from cluster.pair import admin_identity, load_state, node_health

GRAY_SCENARIOS = (
    "hang-inference",
    "fail-inference",
    "disk-full",
    "readonly-disk",
    "camera-cut",
    "clock-jump",
    "bad-key",
)
"""Gray failures (a workstation alive but broken): the victim's health probes (cluster.health) see it and the leader
moves its cameras; ``camera-cut`` moves only the camera the victim can no longer reach. ``bad-key`` breaks nothing on
a workstation: a malformed member and assignment key in etcd."""

GRAY_NODE_FAULTS = ("hang-inference", "fail-inference", "disk-full", "readonly-disk", "clock-jump")
"""Gray failures whose victim is the leader workstation: its cameras must move to the other one."""

CLOCK_JUMP_S = 300.0
"""How far ``clock-jump`` steps the victim's wall clock (forward; the restore steps it back)."""

DISK_FULL_LEAVE_BYTES = 32 * 1024 * 1024
"""What ``disk-full`` leaves free on the victim's data dir tmpfs: below the node's minimum (256 MiB by default), so
the node reports it and hands its cameras over before a write fails."""

SCENARIOS = (
    "kill-node",
    "kill-leader",
    "freeze-node",
    "kill-etcd-leader",
    "partition",
    "lose-quorum",
    "kill-actor",
    "switchover",
    *GRAY_SCENARIOS,
)
"""Every drill scenario, in the order the README explains them."""

NODE_FAULTS = ("kill-node", "kill-leader", "freeze-node", "partition", *GRAY_NODE_FAULTS)
"""Scenarios whose victim is the leader workstation: its cameras must move to the other one."""

Restore = Callable[[], None]


def cut_camera(place: dict[str, str], leader: str) -> tuple[str, str]:
    """(workstation, camera) ``camera-cut`` cuts apart: the first camera (by id) the leader's workstation runs, or,
    when it runs none (an earlier cut moved its camera away: per-camera moves stay), the first one the other runs."""
    cams = sorted(c for c, n in place.items() if n == leader) or sorted(place)
    if not cams:
        raise EdgepairError(f"camera-cut: no camera runs (placement {place})")
    return place[cams[0]], cams[0]


class DrillTarget(Protocol):
    """A running pair a drill observes and breaks."""

    name: str  # for the report: the run dir, or the store id and inventory
    store: str
    timezone: str
    nodes: list[str]  # the two workstations

    def health(self, node: str, timeout: float = 1.0) -> dict[str, Any] | None:
        """The node's /health document, None when it does not answer within ``timeout``."""
        ...

    def node_config(self) -> dict[str, Any]:
        """The store configuration the nodes run (the YAML as a mapping; secrets are never in it)."""
        ...

    def config_path(self) -> Path | None:
        """A local copy of that configuration that :func:`cluster.config.load_config` reads and whose camera sources
        can be opened here (for the baseline replay), or None when the sources are not replayable here."""
        ...

    def data_dirs(self, since: float, until: float) -> dict[str, Path]:
        """Each node's data dir, readable here, holding at least every file whose window overlaps [since, until)
        (UTC epoch s): a local pair's own dirs; a remote store's copied first (only the date folders of that span)
        into a private folder, with the same layout (``events/store=../date=../camera=../<id>.parquet`` and
        ``.sig``)."""
        ...

    def prepare(self) -> None:
        """Called once before a run: remember what restarts need (argv of processes and the like)."""
        ...

    def inject(self, scenario: str, *, leader: str, place: dict[str, str], hold_s: float) -> tuple[str, Restore]:
        """Apply ``scenario``'s fault now; return (the victim, in words; the callable that repairs it, which may
        first wait ``hold_s`` for the faults that last)."""
        ...


def seq(*steps: Callable[[], object]) -> Restore:
    """One restore callable that runs ``steps`` in order."""

    def run() -> None:
        for step in steps:
            step()

    return run


class LocalPair:
    """A pair started by ``edgepair pair up`` from ``run_dir`` on this machine."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir).resolve()
        self.state = load_state(self.run_dir)
        self.name = str(self.run_dir)
        self.store = str(self.state["store"])
        self.timezone = str(self.state["timezone"])
        self.nodes = list(self.state["nodes"])

    def health(self, node: str, timeout: float = 1.0) -> dict[str, Any] | None:
        return node_health(self.state, node, timeout=timeout)

    def node_config(self) -> dict[str, Any]:
        import yaml

        path = self.config_path()
        assert path is not None
        return dict(yaml.safe_load(path.read_text()))

    def config_path(self) -> Path:
        return Path(next(iter(self.state["nodes"].values()))["config"])

    def data_dirs(self, since: float, until: float) -> dict[str, Path]:
        return {n: Path(v["data_dir"]) for n, v in self.state["nodes"].items()}

    def prepare(self) -> None:
        faults.remember_etcd_argv(self.run_dir, self.state)

    def inject(self, scenario: str, *, leader: str, place: dict[str, str], hold_s: float) -> tuple[str, Restore]:
        run_dir, state = self.run_dir, self.state
        other = next(n for n in state["nodes"] if n != leader)
        if scenario == "kill-node":
            pids = faults.workstation_pids(state, leader)
            faults.kill_all(pids)
            faults.kill_etcd_member(state, leader)
            return leader, seq(
                lambda: faults.reap_orphans(pids),
                lambda: faults.restart_etcd_member(run_dir, state, leader),
                lambda: faults.restart_node(run_dir, state, leader),
            )
        if scenario == "kill-leader":  # the agent alone: its supervisor and its machine live on
            pids = faults.workstation_pids(state, leader)
            faults.kill_all([faults.agent_pid(state, leader)])
            return leader, seq(lambda: faults.reap_orphans(pids), lambda: faults.restart_node(run_dir, state, leader))
        if scenario == "freeze-node":
            pids = faults.workstation_pids(state, leader)
            faults.signal_all(pids, 19)  # SIGSTOP
            return leader, seq(lambda: time.sleep(hold_s), lambda: faults.signal_all(pids, 18))  # SIGCONT
        if scenario == "kill-etcd-leader":
            member = faults.etcd_leader(state) or "witness"
            faults.kill_etcd_member(state, member)
            return member, seq(lambda: time.sleep(hold_s), lambda: faults.restart_etcd_member(run_dir, state, member))
        if scenario == "partition":
            cut = faults.Partition(state, leader)
            cut.cut()
            return leader, seq(lambda: time.sleep(hold_s), cut.heal)
        if scenario == "lose-quorum":
            members = [m for m in state["etcd"] if m != leader][:2]
            for m in members:
                faults.kill_etcd_member(state, m)
            return ",".join(members), seq(
                lambda: time.sleep(hold_s),
                *[functools.partial(faults.restart_etcd_member, run_dir, state, m) for m in members],
            )
        if scenario == "kill-actor":
            cam = sorted(place)[0]
            node = place[cam]
            pid = self._actor_pid(node, cam)
            faults.kill_all([pid])
            return f"{node}/{cam} (pid {pid})", lambda: None
        if scenario == "switchover":
            from failover import admin

            admin.switchover(state["endpoints"], state["store"], to=other, identity=admin_identity(state))
            return leader, lambda: None
        gray = self._inject_gray(scenario, leader, hold_s, place)
        if gray is not None:
            return gray
        raise EdgepairError(f"unknown drill scenario {scenario!r}: choose one of {', '.join(SCENARIOS)}")

    def _inject_gray(
        self, scenario: str, leader: str, hold_s: float, place: dict[str, str]
    ) -> tuple[str, Restore] | None:
        state = self.state
        data_dir = Path(state["nodes"][leader]["data_dir"])
        if scenario == "hang-inference":
            pid = faults.inference_pid(state, leader)
            faults.signal_all([pid], 19)  # SIGSTOP: the process lives, answers nothing
            return f"{leader} inference (pid {pid})", seq(
                lambda: time.sleep(hold_s), lambda: faults.signal_all([pid], 18)
            )
        if scenario == "fail-inference":
            from cluster import unsafe

            if unsafe.FAIL_INFERENCE not in ((self.health(leader) or {}).get("test_faults") or ()):
                raise EdgepairError(
                    f"fail-inference: {leader} runs without the test-only hook: start the pair with"
                    f" {unsafe.FAULTS_ENV}={unsafe.FAIL_INFERENCE}"
                )
            trigger = unsafe.fail_inference_trigger(data_dir, leader)
            trigger.touch()
            return f"{leader} inference (ONNX session raising)", seq(
                lambda: time.sleep(hold_s), lambda: trigger.unlink(missing_ok=True)
            )
        if scenario == "clock-jump":
            from cluster import unsafe

            if unsafe.CLOCK_JUMP not in ((self.health(leader) or {}).get("test_faults") or ()):
                raise EdgepairError(
                    f"clock-jump: {leader} runs without the test-only hook: start the pair with"
                    f" {unsafe.FAULTS_ENV}={unsafe.CLOCK_JUMP}"
                )
            offset = unsafe.clock_offset_file(data_dir, leader)
            offset.write_text(f"{CLOCK_JUMP_S}\n")
            return f"{leader} wall clock (+{CLOCK_JUMP_S:.0f} s)", seq(
                lambda: time.sleep(hold_s), lambda: offset.write_text("0\n")
            )
        if scenario == "disk-full":
            fill = faults.fill_tmpfs(data_dir, DISK_FULL_LEAVE_BYTES)
            return f"{leader} data dir", seq(lambda: time.sleep(hold_s), lambda: fill.unlink())
        if scenario == "readonly-disk":
            faults.remount(data_dir, "ro")
            return f"{leader} data dir", seq(lambda: time.sleep(hold_s), lambda: faults.remount(data_dir, "rw"))
        if scenario == "camera-cut":
            from cluster.drill_cut import CameraCut, camera_port

            node, cam = cut_camera(place, leader)
            source = next(c["source"] for c in self.node_config()["cameras"] if c["id"] == cam)
            cut = CameraCut(self._actor_pid(node, cam), camera_port(source), f"{cam} from {node}")
            cut.cut()
            return f"{node}/{cam} (camera unreachable from {node} only)", seq(lambda: time.sleep(hold_s), cut.heal)
        if scenario == "bad-key":
            faults.write_bad_key(state, "members/ws-bad", '{"healthy": true}')  # no name
            faults.write_bad_key(state, "assignment", '{"cameras": "not a mapping", "token": "x"}')
            return "etcd keys members/ws-bad and assignment", seq(
                lambda: time.sleep(hold_s), lambda: faults.delete_key(state, "members/ws-bad")
            )
        return None

    def _actor_pid(self, node: str, cam: str) -> int:
        """The camera actor's pid: from /health (``pid`` in the status) or the node's one ``ray::CameraWorker``."""
        h = self.health(node) or {}
        pid = ((h.get("camera_status") or {}).get(cam) or {}).get("pid")
        if pid:
            return int(pid)
        workers = [
            p
            for p in faults.descendants(int(self.state["nodes"][node]["pid"]))
            if faults.cmdline(p)[:1] and faults.cmdline(p)[0].startswith("ray::CameraWorker")
        ]
        if len(workers) != 1:
            raise EdgepairError(
                f"cannot tell {cam}'s actor among {len(workers)} CameraWorker processes of {node}: "
                "add its pid to CameraWorker.status()"
            )
        return workers[0]

"""deploy/ansible/ on real SSH hosts: lint and syntax (fast), then on the three-host lab (deploy/lab/lab.py) a store
from nothing, idempotence, --check --diff, a rolling upgrade N -> N+1 under a 0.1 s /health prober, rollback, and a
failed upgrade that must leave the leader alone. The lab scenarios run in file order and share one lab."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from failover.drill import wait_for
from tests.e2e.conftest import ANSIBLE_DIR, CACHE, base_version, build_bundle, playbook, recap, tool

PLAYBOOKS = ["site.yml", "rolling-upgrade.yml", "rollback.yml", "drill.yml"]
WORKSTATIONS = ("ws-a", "ws-b")
V_OLD = base_version()
V_NEW = V_OLD + ".post1"  # PEP 440: newer than V_OLD whatever V_OLD is
V_BAD = V_OLD + ".post2"
LEADERLESS_MAX_S = 6.0  # takeover target with ttl_s 2 (two TTLs and the 1 s health refresh)
CAMERA_GAP_MAX_S = 10.0


def _env() -> dict[str, str]:
    return dict(os.environ, ANSIBLE_CONFIG=str(ANSIBLE_DIR / "ansible.cfg"), ANSIBLE_NOCOLOR="1")


def test_ansible_lint_production_profile() -> None:
    r = subprocess.run(
        [tool("ansible-lint"), "--profile", "production", "--nocolor"],
        cwd=ANSIBLE_DIR,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]


@pytest.mark.parametrize("name", PLAYBOOKS)
def test_syntax_check(name: str) -> None:
    r = subprocess.run(
        [tool("ansible-playbook"), "-i", "inventories/lab", "--syntax-check", name],
        cwd=ANSIBLE_DIR,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr


# --- on the lab -------------------------------------------------------------------------------------------------


def health(lab: ModuleType, host: str) -> dict[str, Any]:
    code = (
        "import json,sys,urllib.request,urllib.error\n"
        "try:\n r=urllib.request.urlopen(sys.argv[1],timeout=2); print(r.read().decode())\n"
        "except urllib.error.HTTPError as e: print(e.read().decode())\n"
        "except Exception as e: print(json.dumps({'error': str(e)}))\n"
    )
    url = f"http://{lab.HOSTS[host]}:9101/health"
    r = subprocess.run(lab.ctl([sys.executable, "-c", code, url]), capture_output=True, text=True, timeout=20)
    return json.loads(r.stdout or "{}")


def main_pid(lab: ModuleType, host: str) -> int:
    return int(lab.ssh(host, "systemctl show --property=MainPID --value edgepair").stdout.strip() or 0)


def leaders(lab: ModuleType) -> list[str]:
    return [h for h in WORKSTATIONS if health(lab, h).get("role") == "leader"]


def wait(pred: Any, timeout: float, what: str) -> Any:
    return wait_for(pred, timeout, what, period=0.5)


class Prober:
    """tests/e2e/prober.py on the controller, stopped by pid."""

    def __init__(self, lab: ModuleType, out: Path) -> None:
        self.out = out
        out.unlink(missing_ok=True)
        urls = [f"http://{lab.HOSTS[h]}:9101/health" for h in WORKSTATIONS]
        script = str(Path(__file__).with_name("prober.py"))
        self.proc = subprocess.Popen(lab.ctl([sys.executable, script, str(out), *urls]))

    def stop(self) -> list[dict[str, Any]]:
        if self.proc.poll() is None:
            self.proc.terminate()  # ip netns exec execs the prober: this pid is the prober
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return [json.loads(line) for line in self.out.read_text().splitlines() if line.strip()]


def analyse(samples: list[dict[str, Any]], cameras: set[str]) -> dict[str, Any]:
    two_leaders = [s["t"] for s in samples if sum(n.get("role") == "leader" for n in s["nodes"].values()) > 1]
    gap = longest = 0.0
    cam_last = {c: samples[0]["t"] for c in cameras}
    cam_gap = dict.fromkeys(cameras, 0.0)
    start = None
    for s in samples:
        led = any(n.get("role") == "leader" for n in s["nodes"].values())
        if not led and start is None:
            start = s["t"]
        if led and start is not None:
            longest = max(longest, s["t"] - start)
            start = None
        running = {c for n in s["nodes"].values() for c in (n.get("cameras") or [])}
        for c in cameras:
            if c in running:
                cam_gap[c] = max(cam_gap[c], s["t"] - cam_last[c])
                cam_last[c] = s["t"]
    if start is not None:
        gap = samples[-1]["t"] - start
    end = samples[-1]["t"]
    for c in cameras:
        cam_gap[c] = max(cam_gap[c], end - cam_last[c])
    return {
        "samples": len(samples),
        "span_s": round(end - samples[0]["t"], 1),
        "two_leader_samples": len(two_leaders),
        "longest_leaderless_s": round(max(longest, gap), 2),
        "longest_camera_gap_s": {c: round(v, 2) for c, v in cam_gap.items()},
    }


@pytest.fixture(scope="module")
def store(lab: ModuleType) -> ModuleType:
    build_bundle(V_OLD)
    return lab


@pytest.mark.slow
def test_site_from_nothing(store: ModuleType) -> None:
    t0 = time.monotonic()
    r = playbook(store, "site.yml", "-e", f"edgepair_version={V_OLD}")
    assert r.returncode == 0, r.stdout[-6000:]
    for h in WORKSTATIONS:
        hh = health(store, h)
        assert hh.get("healthy") is True and hh.get("version") == V_OLD, (h, hh)
    assert len(wait(lambda: leaders(store), 30, "a leader")) == 1
    print(f"site.yml from nothing: {time.monotonic() - t0:.0f} s")


@pytest.mark.slow
def test_site_second_run_changes_nothing(store: ModuleType) -> None:
    r = playbook(store, "site.yml", "-e", f"edgepair_version={V_OLD}")
    assert r.returncode == 0, r.stdout[-6000:]
    counts = recap(r.stdout)
    assert set(counts) == {"ws-a", "ws-b", "witness1"}, r.stdout[-3000:]
    assert all(c["changed"] == 0 and c["failed"] == 0 for c in counts.values()), counts


@pytest.mark.slow
def test_check_diff_changes_nothing(store: ModuleType) -> None:
    r = playbook(store, "site.yml", "-e", f"edgepair_version={V_OLD}", "--check", "--diff")
    assert r.returncode == 0, r.stdout[-6000:]
    assert all(c["changed"] == 0 for c in recap(r.stdout).values()), recap(r.stdout)


@pytest.mark.slow
def test_rolling_upgrade_under_probe(store: ModuleType) -> None:
    build_bundle(V_NEW)
    cameras = {"cam-1", "cam-2"}
    leader_before = wait(lambda: leaders(store), 30, "a leader")[0]
    prober = Prober(store, CACHE / "logs" / "probe-upgrade.jsonl")
    t0 = time.monotonic()
    try:
        r = playbook(store, "rolling-upgrade.yml", "-e", f"edgepair_version={V_NEW}")
        took = time.monotonic() - t0
        time.sleep(3)
    finally:
        samples = prober.stop()
    assert r.returncode == 0, r.stdout[-6000:]
    stats = analyse(samples, cameras)
    print(f"rolling upgrade {V_OLD} -> {V_NEW} in {took:.0f} s (leader before: {leader_before}): {stats}")
    assert stats["samples"] > 10 * took * 0.5, stats  # the prober kept up with its 0.1 s period
    # Both /health answers said "leader" in one 0.1 s round: split brain, or a node reporting a stale role.
    assert stats["two_leader_samples"] == 0, f"two nodes reported role=leader in the same round: {stats}"
    assert stats["longest_leaderless_s"] < LEADERLESS_MAX_S, stats
    assert all(g < CAMERA_GAP_MAX_S for g in stats["longest_camera_gap_s"].values()), stats
    for h in WORKSTATIONS:
        assert health(store, h).get("version") == V_NEW
        prev = store.ssh(h, "readlink /opt/edgepair/previous").stdout.strip()
        assert prev.endswith(f"/{V_OLD}"), (h, prev)
    assert leaders(store) and leaders(store)[0] != leader_before, "leadership was handed to the upgraded standby"


@pytest.mark.slow
def test_rollback(store: ModuleType) -> None:
    t0 = time.monotonic()
    r = playbook(store, "rollback.yml")
    assert r.returncode == 0, r.stdout[-6000:]
    for h in WORKSTATIONS:
        assert health(store, h).get("version") == V_OLD
    assert len(leaders(store)) == 1
    print(f"rollback.yml: {time.monotonic() - t0:.0f} s")


@pytest.mark.slow
def test_failed_upgrade_leaves_the_leader_alone(store: ModuleType) -> None:
    build_bundle(V_BAD, unhealthy=True)
    leader = wait(lambda: leaders(store), 30, "a leader")[0]
    standby = next(h for h in WORKSTATIONS if h != leader)
    pid_before = main_pid(store, leader)
    t0 = time.monotonic()
    r = playbook(store, "rolling-upgrade.yml", "-e", f"edgepair_version={V_BAD}", "-e", "edgepair_health_timeout_s=30")
    took = time.monotonic() - t0
    print(f"failed upgrade stopped after {took:.0f} s")
    assert r.returncode != 0
    assert f"ROLLOUT STOPPED: {standby} did not become healthy on release {V_BAD}" in r.stdout, r.stdout[-6000:]
    assert main_pid(store, leader) == pid_before, "the leader's node was restarted"
    assert store.ssh(leader, "readlink /opt/edgepair/current").stdout.strip().endswith(f"/{V_OLD}")
    lh = health(store, leader)
    assert lh.get("role") == "leader" and lh.get("version") == V_OLD, lh
    # the standby was pointed back at the release it ran
    assert store.ssh(standby, "readlink /opt/edgepair/current").stdout.strip().endswith(f"/{V_OLD}")
    wait(lambda: health(store, standby).get("healthy"), 60, f"{standby} healthy again on {V_OLD}")

"""Failover drills on the deployed lab store (issue 23), each run the way an operator runs one: through
deploy/ansible/drill.yml, which runs `edgepair drill SCENARIO --store <target>` on the controller against the hosts
over SSH, /health over mutual TLS, and fails the play when the report says the store missed its targets.

Real faults: kill-node powers the leading workstation off (deploy/lab/lab.py power-off: its link cut, then its
PID 1 SIGKILLed, which takes every process of the machine at once, its etcd member included) and boots it again;
partition cuts that host off from the other workstation and the witness with nftables inside its own network
namespace, both directions. The cameras are RTSP streams served on the controller (camsim), read by both hosts.
Each drill must pass: every camera taken over, no double running, nothing lost outside the gaps, no event credited
twice, tokens monotonic. The store is the one tests/e2e/test_ansible.py built (or, run alone, installed here).
"""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.e2e.conftest import CACHE, OUTPUTS, PKI, playbook

REPORTS = CACHE / "drill-reports"
CAMERAS = {"cam-1", "cam-2"}
WORKSTATIONS = {"ws-a", "ws-b"}
# Short watches: one lab, six drills in sequence (README: the lab's figures).
DRILL_VARS = ["-e", "drill_pre_s=5", "-e", "drill_hold_s=3", "-e", "drill_settle_s=5"]  # fmt: skip
DRILL_VARS += ["-e", f"drill_report_dir={REPORTS}"]
# (scenario, cameras must move): the node faults hit the leader, whose cameras the other workstation takes over.
# All six run in CI (`make test-lab`), with the two real faults only the lab can make: a whole machine gone
# (kill-node) and a network namespace cut off (partition).
SCENARIOS = [
    ("kill-leader", True),
    ("freeze-node", True),
    ("partition", True),
    ("kill-etcd-leader", False),
    ("switchover", False),  # sticky: the cameras stay where they run, under the new token
    ("kill-node", True),
]
IN_CI = [s for s, _ in SCENARIOS]  # every one: none is lab_extra
RUN_KEYS = {"scenario", "victim", "survivor", "fault_at", "recovered", "detection_s", "takeover_s", "cameras", "ok",
            "failures", "events_credited_twice", "double_running_s", "tokens_monotonic", "running_after"}  # fmt: skip
CAMERA_KEYS = {"gap_s", "gaps", "unexplained_gaps", "frames_missing", "double_running_s", "not_replicated", "tokens",
               "tokens_monotonic", "events"}  # fmt: skip
TIMES: dict[str, float] = {}


@pytest.fixture(scope="module")
def reports(deployed: ModuleType) -> dict[str, dict[str, Any]]:
    shutil.rmtree(REPORTS, ignore_errors=True)
    return {}


def _target(lab: ModuleType, tmp: Path, known_hosts: Path, address: dict[str, str] | None = None) -> Path:
    hosts = {
        h: {
            "address": (address or {}).get(h, ip),
            "role": "witness" if h == "witness1" else "workstation",
            "ssh": {
                "user": "root",
                "key": str(lab.LAB_DIR / "ssh" / "id_ed25519"),
                "args": f"-o UserKnownHostsFile={known_hosts}",
            },
        }
        for h, ip in lab.HOSTS.items()
    }
    path = tmp / "target.json"
    path.write_text(json.dumps({"pki_dir": str(PKI), "hosts": hosts}))
    return path


# On the controller: ask the leader for an even spread of the cameras (one per workstation), with the admin identity.
REBALANCE = """
import sys
from cluster.pki import Identity
from failover import admin
admin.rebalance(sys.argv[2:], "lab-store", identity=Identity.load(sys.argv[1], "root"))
"""


def _placement(lab: ModuleType) -> dict[str, list[str]]:
    """Each workstation's role and the cameras it has been processing for 5 s at least (/health, over mutual TLS
    with the admin certificate)."""
    from tests.e2e.test_ansible import health

    out = {}
    for h in sorted(WORKSTATIONS):
        doc = health(lab, h)
        running = [c for c, st in (doc.get("camera_status") or {}).items()
                   if st.get("state") == "running" and st.get("frames", 0) > 0
                   and float(st.get("first_frame_at") or 0) < time.time() - 5]  # fmt: skip
        out[h] = [str(doc.get("role")), *sorted(running)]
    return out


def _spread(lab: ModuleType) -> dict[str, list[str]]:
    """Make the leader run one camera (the node faults hit the leader: its camera must move): a rebalance when the
    cameras are not one per workstation, then wait (bounded) until they are, settled."""
    from tests.harness.pair import wait_for

    def spread() -> dict[str, list[str]] | None:
        p = _placement(lab)
        roles = sorted(v[0] for v in p.values())
        return p if roles == ["follower", "leader"] and all(len(v) == 2 for v in p.values()) else None

    if spread() is None:
        endpoints = [f"https://{lab.HOSTS[h]}:2379" for h in sorted(lab.HOSTS)]
        r = subprocess.run(lab.ctl([sys.executable, "-c", REBALANCE, str(PKI), *endpoints]), capture_output=True,
                           text=True, timeout=60, cwd=Path(__file__).resolve().parents[2])  # fmt: skip
        assert r.returncode == 0, r.stderr[-2000:]
    return wait_for(spread, 120, "one camera on each workstation, processing for 5 s", period=1.0)


def _cli(lab: ModuleType, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(lab.ctl([sys.executable, "-m", "cluster.cli", *args]), capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[2])  # fmt: skip


@pytest.mark.slow
def test_a_drill_refuses_a_host_it_cannot_trust_or_reach(deployed: ModuleType, tmp_path: Path) -> None:
    """The drill's SSH checks host keys like Ansible (a known_hosts with another key for ws-a's address is refused,
    whatever the inventory says) and names the host and the fix in one line; an address nobody answers the same."""
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True, timeout=30)
    key = " ".join(other.with_suffix(".pub").read_text().split()[:2])
    bad = tmp_path / "known_hosts"
    bad.write_text("".join(f"{h},{ip} {key}\n" for h, ip in deployed.HOSTS.items()))
    r = _cli(deployed, "drill", "kill-leader", "--store", str(_target(deployed, tmp_path, bad)))
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr.startswith(
        "edgepair: error: cannot read the store config from any workstation: ws-a (10.200.0.11): SSH host key not in "
        "the known_hosts the inventory names, or different from it (Host key verification failed.): check the host's "
        "key out of band and enroll it (README, 'SSH host keys');"
    ), r.stderr
    nowhere = _target(deployed, tmp_path, deployed.known_hosts(), {"ws-a": "10.200.0.77", "ws-b": "10.200.0.78"})
    r = _cli(deployed, "drill", "kill-leader", "--store", str(nowhere))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "edgepair: error: cannot read the store config from any workstation: ws-a (10.200.0.77) is unreachable " \
           "over SSH (" in r.stderr, r.stderr  # fmt: skip
    assert "check its address in the inventory and that it is up" in r.stderr, r.stderr


@pytest.mark.slow
@pytest.mark.parametrize(("scenario", "takeover"), SCENARIOS)
def test_drill_through_drill_yml(
    deployed: ModuleType, reports: dict[str, dict[str, Any]], scenario: str, takeover: bool
) -> None:
    before = _spread(deployed) if takeover else _placement(deployed)
    leader = next(h for h, v in before.items() if v[0] == "leader")
    t0 = time.monotonic()
    r = playbook(deployed, "drill.yml", "-e", f"drill_scenario={scenario}", *DRILL_VARS)
    TIMES[scenario] = time.monotonic() - t0
    print(r.stdout[-3000:])
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    assert f"DRILL PASSED: store lab-store met its targets in {scenario}" in r.stdout, r.stdout[-3000:]
    (path,) = sorted(REPORTS.glob(f"lab-store-{scenario}-*.json"))
    assert stat.S_IMODE(REPORTS.stat().st_mode) == 0o700 and stat.S_IMODE(path.stat().st_mode) == 0o600
    report = json.loads(path.read_text())
    reports[scenario] = report
    # the local drill's format: scenario, target, repeat, runs, summary
    assert set(report) == {"scenario", "target", "repeat", "runs", "summary"}, sorted(report)
    assert (report["scenario"], report["repeat"], len(report["runs"])) == (scenario, 1, 1)
    assert report["target"].startswith("store lab-store ("), report["target"]
    (run,) = report["runs"]
    assert RUN_KEYS <= set(run), sorted(RUN_KEYS - set(run))
    assert run["scenario"] == scenario and run["survivor"] in WORKSTATIONS
    assert run["failures"] == [] and run["ok"] is True and report["summary"]["ok"] is True, run["failures"]
    assert run["recovered"] is True
    assert set(run["takeover_s"]) == CAMERAS and set(run["cameras"]) == CAMERAS
    for cam, c in run["cameras"].items():
        assert CAMERA_KEYS <= set(c), (cam, sorted(CAMERA_KEYS - set(c)))
        assert (c["unexplained_gaps"], c["not_replicated"], c["double_running_s"]) == ([], [], 0), (cam, c)
        assert c["tokens_monotonic"] is True, (cam, c["tokens"])
    assert (run["events_credited_twice"], run["double_running_s"], run["tokens_monotonic"]) == (0, 0, True)
    assert set(run["running_after"]) == CAMERAS
    assert "baseline" not in run  # live RTSP streams: no replay (the CLI says so)
    moved = {c for c, v in run["takeover_s"].items() if v is not None}
    if takeover:  # the leader's one camera moved to the other workstation, the other camera did not
        assert moved == set(before[leader][1:]), (moved, before)
        assert run["detection_s"] is not None
        assert run["victim"].split()[0] == leader and run["survivor"] != leader, (run["victim"], before)
    if scenario == "kill-node":
        assert run["victim"].startswith(f"{run['victim'].split()[0]} (machine powered off, in "), run["victim"]
    if scenario == "kill-etcd-leader":
        assert run["victim"] == "witness1", run["victim"]  # the agent keeps etcd's raft leader on the witness
    print(f"{scenario}: drill.yml took {TIMES[scenario]:.0f} s")


@pytest.mark.slow
def test_drills_leave_no_password_and_no_temp_dir(deployed: ModuleType, lab_passwords: dict[str, str]) -> None:
    """The drills' output and reports hold no camera password, and no private temp dir is left behind."""
    from tests.e2e.test_canary import _needles, _scan

    needles = {cam: _needles(pw) for cam, pw in lab_passwords.items()}
    assert _scan([REPORTS], needles, allowed=set()) == []
    assert [cam for cam, ns in needles.items() if any(n in o.encode() for o in OUTPUTS for n in ns)] == []
    assert sorted(Path("/tmp").glob("edgepair-drill-*")) + sorted(Path("/tmp").glob("ep-ssh-*")) == []
    print("drill.yml times: " + ", ".join(f"{s} {t:.0f} s" for s, t in TIMES.items()))

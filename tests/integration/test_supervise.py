"""The node's supervisor (``cluster.supervise``) with real processes: when the agent dies, everything below it is
killed first, then its lease is revoked; a clean stop is passed on to the agent.

The agent here is a small Python program that plays the agent's part (records a lease, starts a "Ray" grandchild
that would outlive it, then dies); the revocation is recorded in a file instead of sent to etcd (the revocation on a
real pair is measured by the kill-leader drill). Each case runs the supervisor in its own process, as
``edgepair node`` does: it becomes a child subreaper, which must not leak into the test process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cluster.pair import _alive, stop_pid

AGENT = r"""
import os, signal, subprocess, sys, time
from pathlib import Path
from cluster.supervise import write_lease
run = Path(sys.argv[1])
ray = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
(run / "ray.pid").write_text(str(ray.pid))
write_lease(run, 0x1234)
(run / "agent.ready").write_text(str(os.getpid()))
if sys.argv[2] == "crash":
    os.kill(os.getpid(), signal.SIGKILL)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # a clean stop: drain and exit 0
time.sleep(600)
"""

SUPERVISOR = r"""
import sys
from pathlib import Path
from cluster.supervise import supervise
run = Path(sys.argv[1])
def revoke(lease):
    alive = (Path("/proc") / (run / "ray.pid").read_text()).exists()
    (run / "revoked").write_text(f"{lease} {alive}")
sys.exit(supervise([sys.executable, "-c", sys.argv[2], str(run), sys.argv[3]], run, revoke, "ws-t"))
"""


def run_supervisor(tmp_path: Path, mode: str) -> subprocess.Popen[bytes]:
    (tmp_path / "lease").write_text(json.dumps({"lease_id": 99}))  # an earlier agent's: never revoked
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    return subprocess.Popen([sys.executable, "-c", SUPERVISOR, str(tmp_path), AGENT, mode], env=env, cwd=repo)


def wait_file(path: Path, proc: subprocess.Popen[bytes], bound_s: float = 60.0) -> str:
    deadline = time.monotonic() + bound_s
    while not path.exists():
        assert proc.poll() is None or path.exists(), f"supervisor exited ({proc.returncode}) before {path.name}"
        assert time.monotonic() < deadline, f"{path.name} not written within {bound_s:.0f} s"
        time.sleep(0.02)
    return path.read_text()


@pytest.mark.parametrize(("mode", "status"), [("crash", 128 + signal.SIGKILL), ("term", 0)])
def test_the_agent_s_processes_die_before_its_lease_is_revoked(tmp_path: Path, mode: str, status: int) -> None:
    sup = run_supervisor(tmp_path, mode)
    try:
        agent = int(wait_file(tmp_path / "agent.ready", sup))
        if mode == "term":
            wait_file(tmp_path / "ray.pid", sup)
            sup.send_signal(signal.SIGTERM)  # passed on to the agent, which exits 0
        rc = sup.wait(timeout=60)
        ray = int((tmp_path / "ray.pid").read_text())
        assert rc == status
        assert (tmp_path / "revoked").read_text() == f"{0x1234} False"  # this agent's lease, the grandchild gone
        assert not _alive(agent) and not _alive(ray)
    finally:
        stop_pid(sup.pid, term_timeout=5)
        for name in ("ray.pid",):
            if (tmp_path / name).exists() and _alive(pid := int((tmp_path / name).read_text())):
                os.kill(pid, signal.SIGKILL)


def test_no_lease_recorded_means_nothing_to_revoke(tmp_path: Path) -> None:
    """An agent that dies before its first lease: nothing is revoked (not the stale file of an earlier agent)."""
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    (tmp_path / "lease").write_text(json.dumps({"lease_id": 99}))
    crash = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    script = SUPERVISOR.replace("sys.argv[2], str(run), sys.argv[3]", "sys.argv[2]")
    rc = subprocess.run([sys.executable, "-c", script, str(tmp_path), crash, "-"], env=env, cwd=repo, timeout=60)
    assert rc.returncode == 128 + signal.SIGKILL
    assert not (tmp_path / "revoked").exists()
    assert not (tmp_path / "lease").exists()

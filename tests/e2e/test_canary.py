"""The secret canary of issue 13 on a whole local pair: a unique password for every camera, found nowhere but in the
credentials files once the pair has run, been asked about, drilled, stopped, reported on and opened by an analyst.

Cameras: cam-1 plays vtest.avi as a live camera (it makes events, so segments, reports and the analytics file are
real); cam-2 and cam-3 are RTSP cameras (camsim, GStreamer's RTSP server) that run while the pair is drilled, then
go away, so that every node tries to open them again and again, with their errors in logs, /health and status.
cam-2's password is in the store's credentials file (mode 0600); cam-3's is written into its URL in the YAML, as a
careless installer would. Every byte written under the test's folder (the store config, the run dir with its logs,
node configs, etcd data, certificates, both data dirs with Parquet and signatures, the drill report, the report, the
analytics file), the nodes' Ray temp dirs, and everything the CLI printed, is scanned for each password, raw and
%-encoded. The only files allowed to hold a password are the credentials files: the store's own and the per-node
copies ``pair`` writes (mode 0600). The store YAML holds cam-3's password because the installer put it there; it is
excluded as the input, and its presence is asserted.
"""

from __future__ import annotations

import os
import secrets
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "cluster" / "examples" / "pair.yaml"
VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
SHARED_MODEL = REPO.parent / "shared" / "models" / "ssdlite_pedestrian.onnx"
BOUND_S = 120.0  # bound on each wait below (data written, the cameras' errors shown)


def _cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "cluster.cli", *args], cwd=REPO, env=env, capture_output=True, timeout=600
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"edgepair {' '.join(args)} exited {proc.returncode}: {proc.stderr.decode()[-2000:]}")
    return proc


def _wait(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + BOUND_S
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {BOUND_S:.0f} s")
        time.sleep(1.0)


def _needles(password: str) -> list[bytes]:
    return sorted({password.encode(), quote(password, safe="").encode(), quote(password).encode()})


def _scan(roots: list[Path], needles: dict[str, list[bytes]], allowed: set[Path]) -> list[str]:
    hits = []
    for root in roots:
        for path in [root, *root.rglob("*")] if root.is_dir() else [root]:
            if path in allowed or path.is_symlink() or not path.is_file():
                continue
            try:
                data = path.read_bytes()
            except OSError:
                continue
            hits += [f"{path}: password of {cam}" for cam, ns in needles.items() if any(n in data for n in ns)]
    return hits


def test_camera_passwords_appear_only_in_the_credentials_files(tmp_path: Path) -> None:
    from actors.ray_actors import ray_root

    if shutil.which("etcd") is None:
        pytest.skip("etcd not found on PATH (Debian: apt-get install etcd-server)")
    if not VTEST.exists():
        pytest.skip(f"{VTEST} not found: install Debian's opencv-doc package")
    from cluster.models import default_model_path

    model = None if default_model_path().exists() else SHARED_MODEL
    if model is not None and not model.exists():
        pytest.skip(f"no detector: neither {default_model_path()} nor {SHARED_MODEL}")
    passwords = {"cam-2": f"Canary2-{secrets.token_hex(6)}!/x", "cam-3": f"Canary3-{secrets.token_hex(6)}"}
    cfg = yaml.safe_load(EXAMPLE.read_text())
    cam1 = dict(cfg["cameras"][0])
    from tests.rtsp import RtspServer, unavailable_reason

    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    server = RtspServer({"cam-2": VTEST, "cam-3": VTEST})
    server.start()
    cam3 = server.url("cam-3").replace("rtsp://", f"rtsp://admin:{quote(passwords['cam-3'], safe='')}@", 1)
    cfg["cameras"] = [cam1, {"id": "cam-2", "source": server.url("cam-2")}, {"id": "cam-3", "source": cam3}]
    cfg["storage"]["data_dir"] = str(tmp_path / "data")
    cfg["runtime"] = {"watchdog_s": 1}
    if model is not None:
        cfg["model"] = {"path": str(model)}
    creds = tmp_path / "cameras.yaml"
    fd = os.open(creds, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump({"cam-2": {"user": "operator", "password": passwords["cam-2"]}}, f)
    cfg["credentials_file"] = str(creds)
    config = tmp_path / "store.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    run_dir = tmp_path / "run"
    outputs: list[bytes] = []

    def cli(*args: str) -> None:
        proc = _cli(*args)
        outputs.extend([proc.stdout, proc.stderr])

    try:
        cli("validate-config", str(config))
        cli("pair", "up", "--config", str(config), "--run-dir", str(run_dir))
        from cluster.pair import load_state, node_health

        state = load_state(run_dir)
        _wait(lambda: all(list(Path(v["data_dir"]).rglob("*.parquet")) for v in state["nodes"].values()), "data")
        # A drill while every camera runs (a switchover: no process restarted, the shortest), its report written
        # and printed. Its verdict is no matter here: only what it writes and prints.
        proc = _cli("drill", "switchover", "--run-dir", str(run_dir), "--pre-s", "3", "--settle-s", "3",
                    "--no-baseline", "--report", str(tmp_path / "drill.json"), check=False)  # fmt: skip
        outputs.extend([proc.stdout, proc.stderr])
        assert (tmp_path / "drill.json").exists(), proc.stderr.decode()[-2000:]
        # Then the RTSP cameras go away: every node tries to open them again and again, with their errors (and
        # URLs) in logs, /health and status.
        server.stop()

        def stream_errors() -> list[str]:
            errors = []
            for node in state["nodes"]:
                h = node_health(state, node, timeout=5.0) or {}
                st = h.get("camera_status") or {}
                errors += [str((s or {}).get("error") or "") for c, s in st.items() if c != "cam-1"]
            return errors

        # Every node tries the streams again and again: wait until a failed open shows (URL in the error).
        _wait(lambda: any("cannot open stream" in e for e in stream_errors()), "the streams' errors")
        cli("status", "--run-dir", str(run_dir))
        cli("pair", "status", "--config", str(config), "--run-dir", str(run_dir))
        cli("replication", "status", "--run-dir", str(run_dir))
        errors = []
        for node in state["nodes"]:
            h = node_health(state, node, timeout=5.0)
            assert h is not None, f"{node} did not answer /health"
            outputs.append(repr(h).encode())
            errors += [(st or {}).get("error") for c, st in (h.get("camera_status") or {}).items() if c != "cam-1"]
        # The cameras whose stream is gone really were tried with their credentials (their errors are in /health).
        assert any(e and "cannot open stream" in e for e in errors), errors
        ray_dirs = [ray_root(Path(v["data_dir"]).parent / f".run-{n}") for n, v in state["nodes"].items()]
    finally:
        if (run_dir / "pair.json").exists():
            cli("pair", "down", "--config", str(config), "--run-dir", str(run_dir))
        server.close()
    for v in state["nodes"].values():  # the pair really wrote data (signed: verify passes below)
        assert list(Path(v["data_dir"]).rglob("*.parquet")), f"{v['data_dir']} holds no segment"
    node_cfg = run_dir / "ws-a.yaml"
    day = time.strftime("%Y-%m-%d", time.gmtime())
    cli("report", "--config", str(node_cfg), "--from", day, "--to", day, "--out", str(tmp_path / "report"))
    cli("analytics", "open", "--config", str(node_cfg), "--out", str(tmp_path / "store.duckdb"))
    cli("verify", "--config", str(node_cfg))

    node_creds = {run_dir / f"{n}.cameras.yaml" for n in state["nodes"]}
    for path in node_creds | {creds}:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, f"{path} is not private"
    assert passwords["cam-3"].encode() in config.read_bytes()  # the careless installer's input, excluded below
    needles = {cam: _needles(pw) for cam, pw in passwords.items()}
    hits = _scan([tmp_path, *ray_dirs], needles, allowed=node_creds | {creds, config})
    hits += [f"CLI output: password of {cam}" for cam, ns in needles.items() for o in outputs for n in ns if n in o]
    assert hits == []
    # Both passwords did reach the nodes' credentials files: the test would show nothing if they had been dropped.
    for path in node_creds:
        text = path.read_bytes()
        assert all(pw.encode() in text for pw in passwords.values()), f"{path} lacks a camera's password"


# --- the Ansible lab's canary (tests/e2e/test_ansible.py, tests/e2e/test_lab_drills.py) -----------------------------

# Where the credentials file is allowed to be, as each lab host sees it. Nothing else may hold a password.
LAB_CREDENTIALS = "/etc/edgepair/cameras.yaml"
# Scanned over SSH on each lab host (tmpfs, not on its disk): the shell reads the patterns from stdin into its own
# arguments, so no password is ever on a command line or in a file.
_LAB_VOLATILE_SCAN = r"""
set -f; set --
while IFS= read -r n; do [ -n "$n" ] && set -- "$@" -e "$n"; done
echo "== files"
grep -rlaF -D skip "$@" /tmp /run /dev/shm 2>/dev/null
echo "== journal"
journalctl --no-pager -o export 2>/dev/null | grep -caF "$@"
true
"""


def lab_canary_hits(lab: Any, passwords: dict[str, str], *, outputs: list[str], controller: list[Path]) -> list[str]:
    """Where any of ``passwords`` (raw or %-encoded) is found, but the lab hosts' credentials file: every file each
    host wrote to its disk (its overlay's upper layer: /etc/edgepair, /var/lib/edgepair with the data, Ray's temp
    dirs and the agent's logs, /opt/edgepair, /var/tmp, the journal files, ...), its tmpfs (/tmp with the units'
    private /tmp, /run, /dev/shm), its journal as journalctl reads it, everything ansible-playbook printed
    (``outputs``) and the controller's files under ``controller`` (logs, fetched reports)."""
    needles = {cam: _needles(pw) for cam, pw in passwords.items()}
    patterns = sorted({n.decode() for ns in needles.values() for n in ns})
    hits = []
    for host in lab.HOSTS:
        hits += [f"{host}:{p} (disk)" for p in lab.disk_grep(host, patterns) if p != LAB_CREDENTIALS]
        out = lab.ssh(host, _LAB_VOLATILE_SCAN, input="\n".join(patterns) + "\n", timeout=300).stdout
        files, _, journal = out.partition("== journal")
        hits += [f"{host}:{p.strip()} (tmpfs)" for p in files.split("== files", 1)[1].splitlines() if p.strip()]
        assert journal.strip().isdigit(), f"{host}: journalctl scan said {journal!r}"
        if int(journal.strip()):
            hits.append(f"{host}: journal, {journal.strip()} entries")
    hits += [f"ansible-playbook output: password of {cam}" for cam, ns in needles.items()
             if any(n in o.encode() for o in outputs for n in ns)]  # fmt: skip
    hits += _scan([p for p in controller if p.exists()], needles, allowed=set())
    return hits


def lab_credentials_files(lab: Any, passwords: dict[str, str]) -> dict[str, str]:
    """Each workstation's credentials file: its mode and owner, and which cameras' passwords it holds."""
    out = {}
    for host in ("ws-a", "ws-b"):
        st = lab.ssh(host, f"stat -c '%a %U' {LAB_CREDENTIALS}").stdout.strip()
        text = lab.ssh(host, f"cat {LAB_CREDENTIALS}").stdout
        out[host] = f"{st} " + ",".join(cam for cam, pw in sorted(passwords.items()) if pw in text)
    return out

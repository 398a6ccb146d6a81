"""``edgepair run`` with a camera password: it appears in no output and in no file the run leaves behind.

The real CLI in a subprocess, a camera whose stream cannot be opened (``rtsp://...@127.0.0.1:1/x``: nobody listens
on port 1), a small watchdog so that it retries often, then SIGTERM. Every byte of stdout, stderr, the run dir, the
data dir and the node's Ray temp dirs is scanned for the password (raw and %-encoded). Once with the password in
the URL (a careless installer), once in the credentials file (mode 0600; the file itself is the one place allowed),
once in the environment.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest

REPO = Path(__file__).resolve().parents[2]

CONFIG = """
store: {{id: s1, timezone: Europe/London}}
model: {{path: {model}}}
cameras:
  - id: cam-1
    source: {source}
runtime: {{watchdog_s: 1, num_cpus: 2}}
storage: {{data_dir: data}}
security: {{tls: false}}
{extra}
"""


def _scan(root: Path, needles: list[bytes], skip: set[Path]) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path in skip or path.is_symlink() or not path.is_file():
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        hits += [f"{path}: {n.decode()}" for n in needles if n in data]
    return hits


@pytest.mark.parametrize("where", ["url", "file", "env"])
def test_run_never_shows_the_camera_password(tmp_path: Path, ssd_model: Path, where: str) -> None:
    password = f"Canary-{secrets.token_hex(8)}!x"
    creds_file = tmp_path / "cameras.yaml"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    extra, source = "", "rtsp://127.0.0.1:1/x"
    if where == "url":
        source = f"rtsp://admin:{password}@127.0.0.1:1/x"
    elif where == "file":
        fd = os.open(creds_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, f"cam-1: {{user: admin, password: '{password}'}}\n".encode())
        os.close(fd)
        extra = "credentials_file: cameras.yaml"
    else:
        env["EDGEPAIR_CAMERA_CAM_1_USER"] = "admin"
        env["EDGEPAIR_CAMERA_CAM_1_PASSWORD"] = password
    config = tmp_path / "store.yaml"
    config.write_text(CONFIG.format(model=ssd_model, source=source, extra=extra))
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cluster.cli", "run", "--config", str(config)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        # Ray starts, the camera fails to open again and again (a 1 s watchdog, backoff up to 30 s): let it try
        # for a while, then stop the run as an operator would.
        time.sleep(25)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = (out + err).decode(errors="replace")
    assert proc.returncode == 1, text[-3000:]  # the camera failed: reported, and the run ends non-zero
    assert "cam-1:" in text and "ERROR: cannot open stream rtsp://127.0.0.1:1/x" in text, text[-3000:]
    needles = [password.encode(), quote(password, safe="").encode(), password[:-2].encode()]
    leaks = [f"stdout/stderr: {n.decode()}" for n in needles if n in out + err]
    from actors.ray_actors import ray_root

    run_dir = tmp_path / ".run-ws-a"
    roots = [tmp_path, ray_root(run_dir)]
    for root in roots:
        leaks += _scan(root, needles, skip={creds_file, config} if where != "url" else {config})
    assert not leaks, "\n".join(leaks)
    assert time.monotonic() - started < 300

"""``edgepair run`` with camera passwords: they appear in no output and in no file the run leaves behind.

The real CLI in a subprocess, cameras whose streams cannot be opened (``rtsp://...@127.0.0.1:1/x``: nobody listens
on port 1), a small watchdog so that it retries often, then SIGTERM. Every byte of stdout, stderr, the run dir, the
data dir and the node's Ray temp dirs is scanned for the passwords (raw and %-encoded). Three cameras, each with its
own password: in the URL (a careless installer), in the credentials file (mode 0600; the file itself is the one
place allowed), in the environment.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

REPO = Path(__file__).resolve().parents[2]

CONFIG = """
store: {{id: s1, timezone: Europe/London}}
model: {{path: {model}}}
cameras:
  - id: cam-1
    source: rtsp://admin:{url_password}@127.0.0.1:1/x1
  - id: cam-2
    source: rtsp://127.0.0.1:1/x2
  - id: cam-3
    source: rtsp://127.0.0.1:1/x3
runtime: {{watchdog_s: 1, num_cpus: 4}}
storage: {{data_dir: data}}
security: {{tls: false}}
credentials_file: cameras.yaml
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


def test_run_never_shows_the_camera_passwords(tmp_path: Path, ssd_model: Path) -> None:
    """One run, three cameras: cam-1's password in its URL, cam-2's in the credentials file, cam-3's in the
    environment (each its own password, so a leak names where it came from)."""
    passwords = {where: f"Canary-{where}-{secrets.token_hex(8)}!x" for where in ("url", "file", "env")}
    creds_file = tmp_path / "cameras.yaml"
    fd = os.open(creds_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, f"cam-2: {{user: admin, password: '{passwords['file']}'}}\n".encode())
    os.close(fd)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env["EDGEPAIR_CAMERA_CAM_3_USER"] = "admin"
    env["EDGEPAIR_CAMERA_CAM_3_PASSWORD"] = passwords["env"]
    config = tmp_path / "store.yaml"
    config.write_text(CONFIG.format(model=ssd_model, url_password=passwords["url"]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "cluster.cli", "run", "--config", str(config)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    err_chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: err_chunks.extend(iter(lambda: proc.stderr.read1(4096), b"")))  # type: ignore[union-attr]
    reader.start()
    try:
        # Ray starts, the cameras fail to open again and again (a 1 s watchdog, backoff up to 30 s): wait (bounded)
        # until each was tried with its credentials, let them retry a while, then stop the run as an operator would.
        tried = [f"cam-{k}: 0 frames unreachable".encode() for k in (1, 2, 3)]  # the runner's status lines
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None and not all(t in b"".join(err_chunks) for t in tried):
            time.sleep(0.5)
        time.sleep(5)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=30)
    err = b"".join(err_chunks)
    text = (out + err).decode(errors="replace")
    assert proc.returncode == 1, text[-3000:]  # the cameras failed: reported, and the run ends non-zero
    for k in (1, 2, 3):  # each camera really was tried (its error, the URL without user info)
        assert f"cam-{k}:" in text and f"ERROR: cannot open stream rtsp://127.0.0.1:1/x{k}" in text, text[-3000:]
    from actors.ray_actors import ray_root

    leaks = []
    for where, password in passwords.items():
        needles = [password.encode(), quote(password, safe="").encode(), password[:-2].encode()]
        leaks += [f"stdout/stderr: password from the {where}" for n in needles if n in out + err]
        for root in (tmp_path, ray_root(tmp_path / ".run-ws-a")):
            leaks += [f"{hit} (password from the {where})" for hit in _scan(root, needles, skip={creds_file, config})]
    assert not leaks, "\n".join(leaks)
    assert passwords["url"].encode() in config.read_bytes()  # the careless installer's input, excluded above
    assert passwords["file"].encode() in creds_file.read_bytes()

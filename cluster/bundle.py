"""``edgepair support-bundle``: one ``.tar.gz`` with what a remote engineer needs, and no secret.

Inside (``MANIFEST.json`` lists every member with its size and what could not be gathered, and why):

- ``doctor.json``: every finding of ``edgepair doctor`` for this workstation;
- ``status.json``: the store's etcd view (leader, members, assignment, tokens), as ``edgepair status --json``;
- ``health/<node>.json`` and ``metrics/<node>.prom``: both workstations' ``/health`` and ``/metrics`` now;
- ``replication.json``: this data dir's replication status; ``certificates.json``: the certificates' public facts;
- ``config/store.yaml``: the store config file as written; ``config/effective.json``: the config as loaded;
- ``logs/``: the last lines of the node's log files (``--log``), or of the journal of its units under systemd;
- ``drills/``: the newest drill reports of ``--drills DIR``; ``versions.json``: edgepair, Python, packages, etcd, OS.

Every text goes through :func:`cluster.redact.redact` after the cameras' passwords were registered as secrets (the
credentials file, the environment, user info written in URLs), and private keys are never read. Before the archive
is named, every member's bytes are searched for each registered secret and for a PEM private key: one found is an
error and nothing is written. The archive is written to a temporary name in the destination folder, fsynced and
renamed (mode 0600), so a crash never leaves a partial bundle under the final name.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

from cluster.config import Config, load_config
from cluster.errors import EdgepairError, StorageError
from cluster.redact import redact, register_secret

LOG_LINES = 20_000
LOG_BYTES = 8 * 1024 * 1024
DRILL_REPORTS = 5
JOURNAL_UNITS = ("edgepair", "edgepair-etcd")
PACKAGES = (
    "edgepair",
    "onnxruntime",
    "onnxruntime-gpu",
    "ray",
    "pyarrow",
    "duckdb",
    "opencv-python-headless",
    "grpcio",
)
PEM_KEY = b"PRIVATE KEY-----"


class Bundle:
    """The members of the archive, in memory (bounded: each log is cut to its last lines), text redacted."""

    def __init__(self) -> None:
        self.members: dict[str, bytes] = {}
        self.errors: dict[str, str] = {}

    def text(self, name: str, text: str) -> None:
        self.members[name] = redact(text).encode()

    def json(self, name: str, doc: Any) -> None:
        self.text(name, json.dumps(doc, indent=2, default=str) + "\n")

    def attempt(self, name: str, fn: Any) -> None:
        """``fn(self)`` adds what it gathers; an expected failure is recorded under ``name``, never fatal."""
        try:
            fn(self)
        except (EdgepairError, OSError, ValueError, subprocess.SubprocessError) as exc:
            self.errors[name] = redact(f"{type(exc).__name__}: {exc}")


def register_camera_secrets(cfg: Config) -> int:
    """Register every camera password the node would use (file, environment, URL) as a secret; how many found."""
    n = 0
    for cam in cfg.cameras:
        try:
            cred = cfg.credential_source(cam.id).resolve()
        except EdgepairError:
            continue
        if cred is not None and getattr(cred, "password", None):
            register_secret(cred.password)
            n += 1
    return n


def _secrets() -> list[bytes]:
    from cluster import redact as r

    return [s.encode() for s in sorted(r._secrets)]


def _tail(path: Path, lines: int = LOG_LINES, limit: int = LOG_BYTES) -> str:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - limit))
        data = f.read()
    return "".join(deque(data.decode(errors="replace").splitlines(keepends=True), maxlen=lines))


def _versions(cfg: Config, status: dict[str, Any] | None) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    pkgs = {}
    for p in PACKAGES:
        try:
            pkgs[p] = version(p)
        except PackageNotFoundError:
            continue
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "packages": pkgs,
        "config_version": cfg.version(),
    }


def _http(url: str, ctx: Any) -> bytes:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5, context=ctx if url.startswith("https") else None) as resp:
            return bytes(resp.read(16 * 1024 * 1024))
    except urllib.error.HTTPError as exc:  # /health answers 503 with its document
        return bytes(exc.read(16 * 1024 * 1024))


def gather(cfg: Config, name: str, config_path: Path, logs: list[Path], drills: Path | None) -> Bundle:
    from cluster.doctor import client_identity, diagnose, health_url, settings_for
    from cluster.doctor import gather as doctor_gather

    b = Bundle()
    register_camera_secrets(cfg)
    b.attempt("config/store.yaml", lambda b: b.text("config/store.yaml", config_path.read_text()))
    b.attempt("config/effective.json", lambda b: b.json("config/effective.json", json.loads(cfg.model_dump_json())))
    identity, broken = client_identity(cfg, name)
    if broken:
        b.errors["tls"] = broken
    ctx = identity.client_ssl_context() if identity is not None else None

    def doctor(b: Bundle) -> None:
        facts = doctor_gather(cfg, name, str(config_path), logs[0] if logs else None)
        b.json("doctor.json", {"node": name, "findings": [f.as_dict() for f in diagnose(facts, settings_for(cfg))]})

    b.attempt("doctor.json", doctor)
    status: dict[str, Any] | None = None

    def etcd_status(b: Bundle) -> None:
        nonlocal status
        from failover import admin

        status = admin.status(cfg.cluster.etcd_endpoints, cfg.store.id, identity=identity)
        b.json("status.json", status)

    if cfg.cluster.etcd_endpoints:
        b.attempt("status.json", etcd_status)
    for node in cfg.cluster.nodes:
        url = health_url(cfg, node.name)
        b.attempt(
            f"health/{node.name}.json", lambda b, u=url, n=node.name: b.text(f"health/{n}.json", _http(u, ctx).decode())
        )
        murl = url.rsplit("/", 1)[0] + "/metrics"
        b.attempt(
            f"metrics/{node.name}.prom",
            lambda b, u=murl, n=node.name: b.text(f"metrics/{n}.prom", _http(u, ctx).decode()),
        )

    def replication(b: Bundle) -> None:
        from storage.replstatus import replication_status

        b.json("replication.json", replication_status(cfg.storage.data_dir))

    b.attempt("replication.json", replication)
    if cfg.security.tls:
        b.attempt("certificates.json", lambda b: b.json("certificates.json", _certificates(cfg.security.cert_dir)))
    _add_logs(b, logs)
    if drills is not None:
        _add_drills(b, drills)
    b.json("versions.json", _versions(cfg, status))
    return b


def _certificates(cert_dir: Path) -> list[dict[str, Any]]:
    """Public facts of every certificate of the folder (never a key)."""
    from cluster.pki import CertDir

    return [i.to_json() for i in CertDir(cert_dir).show()]


def _add_logs(b: Bundle, logs: list[Path]) -> None:
    for path in logs:
        b.attempt(f"logs/{path.name}", lambda b, p=path: b.text(f"logs/{p.name}", _tail(p)))
    if logs or not Path("/run/systemd/system").is_dir():
        return
    for unit in JOURNAL_UNITS:  # under systemd, without --log: the units' journal of the last day

        def journal(b: Bundle, unit: str = unit) -> None:
            done = subprocess.run(
                ["journalctl", "-u", unit, "--since", "-24h", "--no-pager", "-n", str(LOG_LINES)],
                capture_output=True,
                text=True,
                timeout=60,
            )
            b.text(f"logs/{unit}.journal.log", done.stdout[-LOG_BYTES:])

        b.attempt(f"logs/{unit}.journal.log", journal)


def _add_drills(b: Bundle, folder: Path) -> None:
    if not folder.is_dir():
        b.errors["drills/"] = f"{folder}: not a folder"
        return
    reports = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime)[-DRILL_REPORTS:]
    for path in reports:
        b.attempt(f"drills/{path.name}", lambda b, p=path: b.text(f"drills/{p.name}", _tail(p, limit=LOG_BYTES)))


def check_no_secret(members: dict[str, bytes]) -> None:
    """Raise when any member holds a registered secret or a PEM private key (a redaction miss stops the bundle)."""
    secrets = _secrets()
    for name, data in members.items():
        if PEM_KEY in data:
            raise StorageError(f"support bundle: {name} holds a private key; nothing was written")
        if any(s in data for s in secrets):
            raise StorageError(f"support bundle: {name} holds a camera password; nothing was written")


def write_archive(b: Bundle, out: Path, now: float | None = None) -> Path:
    """The members and MANIFEST.json as ``out`` (.tar.gz), atomically: temp name, fsync, rename; mode 0600."""
    now = time.time() if now is None else now
    manifest = {
        "created": dt.datetime.fromtimestamp(now, dt.UTC).isoformat(timespec="seconds"),
        "members": {n: len(d) for n, d in sorted(b.members.items())},
        "not_gathered": dict(sorted(b.errors.items())),
    }
    members = {**b.members, "MANIFEST.json": (json.dumps(manifest, indent=2) + "\n").encode()}
    check_no_secret(members)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w:gz") as tar:
                for name, data in sorted(members.items()):
                    info = tarfile.TarInfo(f"{out.name.removesuffix('.tar.gz')}/{name}")
                    info.size, info.mtime, info.mode = len(data), int(now), 0o600
                    tar.addfile(info, io.BytesIO(data))
            raw.flush()
            os.fsync(raw.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(out.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return out


def cmd_support_bundle(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    name = args.name or cfg.node
    cfg.node_config(name)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out or f"edgepair-support-{cfg.store.id}-{name}-{stamp}.tar.gz")
    if not out.name.endswith(".tar.gz"):
        raise StorageError(f"--out {out}: name the bundle *.tar.gz")
    b = gather(cfg, name, Path(args.config), [Path(p) for p in args.log], Path(args.drills) if args.drills else None)
    write_archive(b, out)
    size = out.stat().st_size
    print(f"support bundle: {out} ({size / 1024:.0f} KiB, {len(b.members) + 1} files)")
    for what, why in sorted(b.errors.items()):
        print(f"  not gathered: {what}: {why}")
    return 0


def add_parser(sub: Any) -> None:
    s = sub.add_parser(
        "support-bundle", help="one .tar.gz for a remote engineer: status, health, logs, config, metrics (redacted)"
    )
    s.add_argument("--config", required=True, help="the store YAML (e.g. /etc/edgepair/store.yaml)")
    s.add_argument("--name", default=None, help="this workstation (default: node: in the config)")
    s.add_argument("--log", action="append", default=[], help="a log file to include (its last lines); repeatable")
    s.add_argument("--drills", default=None, help="a folder of drill reports (*.json): the newest 5 are included")
    s.add_argument("--out", default=None, help="the archive (default: ./edgepair-support-<store>-<node>-<time>.tar.gz)")
    s.set_defaults(func=cmd_support_bundle)

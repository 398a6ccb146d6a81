"""``edgepair doctor``: check one workstation as it runs and print each problem with the command that fixes it.

This module only gathers facts (HTTP to the node's and the peer's ``/health`` over mutual TLS, etcd ``Status`` and
``MemberList``, the data dir, the model file, the certificate files, the tail of the node's log); every judgement
is in :mod:`cluster.doctor_checks`. Each fact is gathered with a bounded timeout, and a failure to gather one is a
fact too (the error), never a traceback. Exit status: 0 when no problem is found, 1 otherwise.
"""

from __future__ import annotations

import argparse
import email.utils
import json
import pwd
import stat
import time
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cluster.config import Config, load_config
from cluster.doctor_checks import (
    CertFact,
    DataDirFact,
    DiskFact,
    EtcdFact,
    Facts,
    HttpFact,
    LogFact,
    MembersFact,
    ModelFact,
    Settings,
    diagnose,
    format_findings,
    problems,
)
from cluster.errors import EdgepairError
from cluster.redact import redact

if TYPE_CHECKING:
    from cluster.pki import Identity

TIMEOUT_S = 3.0
LOG_LINES = 2000
ERROR_MARKS = (" ERROR ", " CRITICAL ", "Traceback (most recent call last)")


def health_url(cfg: Config, name: str) -> str:
    node = cfg.node_config(name)
    loopback = cfg.security.metrics == "loopback"
    tls = cfg.security.tls and not loopback
    host = "127.0.0.1" if loopback else node.host
    return f"{'https' if tls else 'http'}://{host}:{node.metrics_port}/health"


def get_health(url: str, ssl_context: Any, timeout: float = TIMEOUT_S) -> HttpFact:
    """GET ``url``: the JSON document and status (503 answers carry one too), and the host's clock offset."""
    sent = time.time()
    try:
        resp = urllib.request.urlopen(url, timeout=timeout, context=ssl_context if url.startswith("https") else None)
    except urllib.error.HTTPError as exc:
        resp = exc
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        return HttpFact(url, error=redact(f"{type(reason).__name__}: {reason}"))
    with resp:
        body = resp.read(1_000_000)
        received = time.time()
        date = resp.headers.get("Date")
        status = int(resp.status if hasattr(resp, "status") else resp.code)
    offset = None
    if date:
        try:
            # The Date header has whole seconds (truncated): +0.5 s is its expected error's middle.
            offset = email.utils.parsedate_to_datetime(date).timestamp() + 0.5 - (sent + received) / 2
        except (TypeError, ValueError):
            offset = None
    try:
        doc = json.loads(body)
    except ValueError:
        return HttpFact(url, status=status, error=f"HTTP {status}, not JSON", offset_s=offset)
    return HttpFact(url, status=status, doc=doc if isinstance(doc, dict) else None, offset_s=offset)


def etcd_facts(endpoints: list[str], identity: Identity | None) -> tuple[tuple[EtcdFact, ...], MembersFact]:
    import grpc
    from pyetcd import etcdrpc

    from failover.etcd_tls import describe, explain, member_status, open_channel

    out = []
    for e in endpoints:
        try:
            st = member_status(e, identity, TIMEOUT_S)
        except (grpc.RpcError, EdgepairError) as exc:
            out.append(EtcdFact(e, error=redact(explain(exc, e, identity) or describe(exc))))
            continue
        out.append(EtcdFact(e, has_leader=bool(st.leader), version=str(st.version)))
    members = MembersFact(error="no etcd member answers")
    for e in [f.endpoint for f in out if not f.error]:
        channel = open_channel(e, identity)
        try:
            resp = etcdrpc.ClusterStub(channel).MemberList(etcdrpc.MemberListRequest(), TIMEOUT_S)
        except grpc.RpcError as exc:
            members = MembersFact(error=redact(describe(exc)))
            continue
        finally:
            channel.close()
        urls = tuple(sorted(u for m in resp.members for u in m.clientURLs))
        members = MembersFact(client_urls=urls, names=tuple(sorted(m.name for m in resp.members)))
        break
    return tuple(out), members


def disk_fact(data_dir: Path) -> DiskFact:
    import shutil

    from cluster.health import disk_state

    if not data_dir.is_dir():
        return DiskFact(writable_error="no such folder")
    error, free = disk_state(data_dir)
    try:
        total: int | None = shutil.disk_usage(data_dir).total
    except OSError:
        total = None
    return DiskFact(error, free, total)


def data_dir_fact(data_dir: Path) -> DataDirFact:
    try:
        st = data_dir.stat()
    except FileNotFoundError:
        return DataDirFact(str(data_dir), exists=False)
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    closed = next((p for p in data_dir.resolve().parents if p.is_dir() and not p.stat().st_mode & stat.S_IXOTH), None)
    return DataDirFact(
        str(data_dir),
        is_dir=stat.S_ISDIR(st.st_mode),
        mode=stat.S_IMODE(st.st_mode),
        owner=owner,
        closed_parent=str(closed or ""),
    )


def model_fact(cfg: Config) -> ModelFact:
    from cluster.models import default_model_path, sha256_file

    path = cfg.model.path or default_model_path()
    if not path.exists():
        return ModelFact(str(path), exists=False)
    try:
        sha = sha256_file(path)
    except OSError as exc:
        return ModelFact(str(path), error=exc.strerror or str(exc))
    recorded = ""
    manifest = path.with_suffix(".json")  # cluster.models writes it beside every model it installs
    try:
        recorded = str(json.loads(manifest.read_text()).get("sha256") or "")
    except (OSError, ValueError, AttributeError):
        recorded = ""
    return ModelFact(str(path), sha256=sha, recorded_sha256=recorded)


def cert_facts(cert_dir: Path, name: str) -> tuple[CertFact, ...]:
    """The CA bundle, the node's certificate and the admin one (where held), each certificate with its key's mode;
    an error of the node's identity as the node loads it (key not matching, another store) when no file error
    explains it."""
    from cluster.pki import ADMIN_NAME, CA_CERT, Identity, PKIError, cert_info, load_certs

    files = [(cert_dir / CA_CERT, "ca", None), (cert_dir / f"{name}.crt", name, cert_dir / f"{name}.key")]
    if (cert_dir / f"{ADMIN_NAME}.crt").exists():
        files.append((cert_dir / f"{ADMIN_NAME}.crt", ADMIN_NAME, cert_dir / f"{ADMIN_NAME}.key"))
    out = []
    for path, who, key in files:
        try:
            certs = load_certs(path)
        except (PKIError, OSError) as exc:
            out.append(CertFact(str(path), who, error=redact(exc)))
            continue
        key_mode = None
        if key is not None:
            try:
                key_mode = stat.S_IMODE(key.stat().st_mode)
            except OSError:
                key_mode = None
        for cert in certs:
            info = cert_info(cert)
            out.append(
                CertFact(
                    str(path),
                    who,
                    not_before=info.not_before.timestamp(),
                    not_after=info.not_after.timestamp(),
                    key_path=str(key or ""),
                    key_mode=key_mode,
                )
            )
    if all(not c.error and not (c.key_mode or 0) & 0o077 for c in out):  # else those findings say what is wrong
        try:
            Identity.load(cert_dir, name)
        except PKIError as exc:
            out.insert(0, CertFact(str(cert_dir / f"{name}.crt"), name, error=redact(exc)))
    return tuple(out)


def log_fact(path: Path, lines: int = LOG_LINES) -> LogFact:
    try:
        with open(path, errors="replace") as f:
            tail = deque(f, maxlen=lines)
    except OSError as exc:
        return LogFact(str(path), error=exc.strerror or str(exc))
    errors = tuple(redact(line.rstrip())[:300] for line in tail if any(m in line for m in ERROR_MARKS))
    return LogFact(str(path), lines_read=len(tail), errors=errors)


def client_identity(cfg: Config, name: str) -> tuple[Identity | None, str]:
    """The identity to connect with: the node's own, else the admin ``root`` one where held; and why neither loads
    ("" when one does, or when TLS is off). A broken identity is a finding of doctor, never its crash."""
    from cluster.pki import ADMIN_NAME, PKIError

    if not cfg.security.tls:
        return None, ""
    first = ""
    for who in (name, ADMIN_NAME):
        try:
            return cfg.identity(who), ""
        except PKIError as exc:
            first = first or redact(exc)
    return None, first


UNITS = ("edgepair.service", "edgepair-etcd.service")


def unit_states(units: tuple[str, ...] = UNITS) -> tuple[tuple[str, str], ...]:
    """Each unit's ActiveState under systemd (as deployed by Ansible); () on a host without systemd (a local pair)."""
    import subprocess

    if not Path("/run/systemd/system").is_dir():
        return ()
    out = []
    for unit in units:
        try:
            done = subprocess.run(
                ["systemctl", "show", "-p", "ActiveState", "--value", unit],
                capture_output=True,
                text=True,
                timeout=TIMEOUT_S * 3,
            )
            out.append((unit, done.stdout.strip()))
        except (OSError, subprocess.SubprocessError) as exc:
            out.append((unit, f"unreadable ({type(exc).__name__})"))
    return tuple(out)


def gather(cfg: Config, name: str, config_path: str, log_path: Path | None = None) -> Facts:
    """Every fact doctor judges, for workstation ``name`` of ``cfg``."""
    cfg.node_config(name)  # ConfigError naming the nodes when ``name`` is not one of them
    peers = [n for n in cfg.cluster.nodes if n.name != name]
    identity, broken = client_identity(cfg, name)
    ctx = identity.client_ssl_context() if identity is not None else None
    if broken:  # TLS on and no certificate of this host loads: nothing can be asked over the network
        why = f"no certificate to connect with: {broken}"
        etcd = tuple(EtcdFact(e, error=why) for e in cfg.cluster.etcd_endpoints)
        members = MembersFact(error=why)
    else:
        etcd, members = etcd_facts(list(cfg.cluster.etcd_endpoints), identity)

    def health(node: str) -> HttpFact:
        url = health_url(cfg, node)
        return HttpFact(url, error=f"no certificate to connect with: {broken}") if broken else get_health(url, ctx)

    data_dir = cfg.storage.data_dir
    return Facts(
        node=name,
        peer=peers[0].name if peers else "",
        peer_host=peers[0].host if peers else "",
        config_path=config_path,
        cert_dir=str(cfg.security.cert_dir),
        now=time.time(),
        health=health(name),
        peer_health=health(peers[0].name) if peers else None,
        etcd=etcd,
        members=members,
        disk=disk_fact(data_dir),
        data_dir=data_dir_fact(data_dir),
        model=model_fact(cfg),
        certs=cert_facts(cfg.security.cert_dir, name) if cfg.security.tls else (),
        log=log_fact(log_path) if log_path is not None else None,
        tls=cfg.security.tls,
        units=unit_states(),
    )


def settings_for(cfg: Config) -> Settings:
    h = cfg.cluster.health
    return Settings(min_free_bytes=h.min_free_bytes, max_clock_offset_s=h.max_clock_offset_s)


def cmd_doctor(args: argparse.Namespace) -> int:
    from cluster.errors import ConfigError

    cfg = load_config(args.config)
    name = args.name or cfg.node
    if not cfg.cluster.etcd_endpoints:
        raise ConfigError(f"{args.config}: cluster.etcd_endpoints is empty: doctor checks a workstation of a pair")
    log_path = Path(args.log) if args.log else None
    facts = gather(cfg, name, str(args.config), log_path)
    findings = diagnose(facts, settings_for(cfg))
    if args.json:
        print(json.dumps({"node": name, "findings": [f.as_dict() for f in findings]}, indent=2))
    else:
        print(format_findings(facts, findings))
    return 1 if problems(findings) else 0


def add_parser(sub: Any) -> None:
    s = sub.add_parser(
        "doctor", help="check this workstation as it runs (health, etcd, peer, clock, disk, model, certificates, log)"
    )
    s.add_argument("--config", required=True, help="the store YAML (e.g. /etc/edgepair/store.yaml)")
    s.add_argument("--name", default=None, help="the workstation to check (default: node: in the config)")
    s.add_argument("--log", default=None, help="the node's log file, whose last lines are searched for errors")
    s.add_argument("--json", action="store_true", help="the findings as JSON")
    s.set_defaults(func=cmd_doctor)

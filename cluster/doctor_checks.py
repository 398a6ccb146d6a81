"""``edgepair doctor``'s judgement: facts about one workstation in, findings out (pure: no I/O, no clock).

:mod:`cluster.doctor` gathers the :class:`Facts` (HTTP, etcd, files); :func:`diagnose` turns them into one
:class:`Finding` per check, each problem with the command that fixes it. Every rule is here, so the unit tests
(tests/unit/test_doctor_checks.py) pin each finding's exact text from a small table of facts.

Rules:

- **service**: under systemd, the units ``edgepair`` and ``edgepair-etcd`` are active.
- **health**: the node's own ``/health`` answers and says ``healthy`` (answering, not fenced) and
  ``member_healthy`` (its probes); each health reason is listed.
- **etcd**: every configured endpoint answers ``Status`` and has a raft leader; the member list (from any member)
  has exactly the configured endpoints as client URLs.
- **peer**: the other workstation's ``/health`` answers. **clock**: the offset to the peer's clock (its HTTP ``Date``,
  whole seconds, so ±1 s) is within ``cluster.health.max_clock_offset_s``.
- **disk**: the data dir can be written and fsynced, its filesystem keeps ``cluster.health.min_free_bytes`` free
  (the node's own probe) and at least :attr:`Settings.min_free_ratio` of its size.
- **data-dir**: it exists, is a folder, and no other user may read or write it (mode ``& 0o007 == 0``, or a folder
  above it that other users cannot enter).
- **model**: the model file exists and its sha256 equals the one recorded when it was installed.
- **certificate**: each certificate loads, is valid now and for :attr:`Settings.cert_warn_days` more days; each
  private key is mode 0600.
- **log**: no ERROR or CRITICAL line, and no traceback, among the last lines of the node's log (when one is known).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

DAY_S = 86400.0


@dataclass(frozen=True)
class Finding:
    check: str
    ok: bool
    message: str
    fix: str = ""  # the command (or commands) that fix it; problems only

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.check, "ok": self.ok, "message": self.message, "fix": self.fix}


@dataclass(frozen=True)
class HttpFact:
    """A GET of a node's ``/health``: its status and JSON (None when it did not answer), or the error."""

    url: str
    status: int | None = None
    doc: dict[str, Any] | None = None
    error: str = ""
    offset_s: float | None = None  # the answering host's clock minus ours (from its Date header), None unknown


@dataclass(frozen=True)
class EtcdFact:
    endpoint: str
    error: str = ""
    has_leader: bool | None = None
    version: str = ""


@dataclass(frozen=True)
class MembersFact:
    client_urls: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    error: str = ""


@dataclass(frozen=True)
class DiskFact:
    writable_error: str = ""
    free: int | None = None
    total: int | None = None


@dataclass(frozen=True)
class DataDirFact:
    path: str
    exists: bool = True
    is_dir: bool = True
    mode: int | None = None
    owner: str = ""
    closed_parent: str = ""  # the nearest folder above it that other users cannot enter (mode without o+x), if any


@dataclass(frozen=True)
class ModelFact:
    path: str
    exists: bool = True
    sha256: str = ""
    recorded_sha256: str = ""  # from the model's manifest; "" when none was recorded
    error: str = ""


@dataclass(frozen=True)
class CertFact:
    path: str
    name: str
    error: str = ""
    not_before: float | None = None
    not_after: float | None = None
    key_path: str = ""
    key_mode: int | None = None  # None: no key (the CA bundle) or unreadable


@dataclass(frozen=True)
class LogFact:
    path: str
    error: str = ""
    lines_read: int = 0
    errors: tuple[str, ...] = ()  # the ERROR/CRITICAL/traceback lines, redacted, oldest first


@dataclass(frozen=True)
class Facts:
    node: str
    peer: str
    config_path: str
    cert_dir: str
    now: float
    health: HttpFact
    peer_health: HttpFact | None
    etcd: tuple[EtcdFact, ...]
    members: MembersFact
    disk: DiskFact
    data_dir: DataDirFact
    model: ModelFact
    certs: tuple[CertFact, ...] = ()
    log: LogFact | None = None
    tls: bool = True
    peer_host: str = ""
    units: tuple[tuple[str, str], ...] = ()  # (systemd unit, its ActiveState) under systemd; () elsewhere


@dataclass(frozen=True)
class Settings:
    min_free_bytes: int = 256 * 1024 * 1024
    min_free_ratio: float = 0.10
    max_clock_offset_s: float = 5.0
    cert_warn_days: float = 30.0
    log_errors_shown: int = 3


def diagnose(facts: Facts, settings: Settings) -> list[Finding]:
    """Every finding, in a fixed order: services, health, etcd, peer, clock, disk, data dir, model, certificates,
    log."""
    out = [check_unit(unit, state) for unit, state in facts.units]
    out.append(check_health(facts))
    out += check_etcd(facts)
    out += check_peer(facts, settings)
    out.append(check_disk(facts, settings))
    out.append(check_data_dir(facts.data_dir))
    out.append(check_model(facts.model))
    out += check_certs(facts, settings)
    if facts.log is not None:
        out.append(check_log(facts.log, settings))
    return out


def problems(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if not f.ok]


def _restart_node(facts: Facts) -> str:
    return f"systemctl restart edgepair; journalctl -u edgepair -n 200 (on {facts.node})"


def check_unit(unit: str, state: str) -> Finding:
    if state == "active":
        return Finding("service", True, f"{unit} is active")
    return Finding(
        "service", False, f"{unit} is {state or 'unknown'}", f"systemctl restart {unit}; journalctl -u {unit} -n 100"
    )


def check_health(facts: Facts) -> Finding:
    h = facts.health
    if h.doc is None:
        why = h.error or f"HTTP {h.status}"
        return Finding(
            "health", False, f"{facts.node}: /health at {h.url} does not answer: {why}", _restart_node(facts)
        )
    doc = h.doc
    if not doc.get("healthy", False):
        return Finding(
            "health",
            False,
            f"{facts.node}: /health answers but the node is not running normally (mode {doc.get('mode', '?')}):"
            f" {doc.get('reason') or 'no reason given'}",
            f"edgepair status --config {facts.config_path}; docs/runbook.md#edgepairfencepaused",
        )
    if not doc.get("member_healthy", True):
        reasons = "; ".join(str(r) for r in doc.get("health_reasons", [])) or "no reason given"
        return Finding(
            "health",
            False,
            f"{facts.node}: unhealthy: {reasons}",
            f"edgepair status --config {facts.config_path}; docs/runbook.md#edgepairnodeunhealthy",
        )
    cams = doc.get("cameras") or []
    return Finding(
        "health",
        True,
        f"{facts.node}: /health answers: {doc.get('role', '?')}, healthy, {len(cams)} camera(s)"
        f" {', '.join(cams)}".rstrip(),
    )


def check_etcd(facts: Facts) -> list[Finding]:
    out = []
    for e in facts.etcd:
        host = e.endpoint.split("://", 1)[-1].rsplit(":", 1)[0]
        if e.error:
            out.append(
                Finding(
                    "etcd",
                    False,
                    f"etcd member {e.endpoint} does not answer: {e.error}",
                    f"systemctl restart edgepair-etcd; journalctl -u edgepair-etcd -n 100 (on {host})",
                )
            )
        elif not e.has_leader:
            out.append(
                Finding(
                    "etcd",
                    False,
                    f"etcd member {e.endpoint} has no raft leader (quorum lost: fewer than 2 of 3 members reach"
                    " each other)",
                    "systemctl status edgepair-etcd (on every store host); docs/runbook.md#edgepairnoleader",
                )
            )
        else:
            out.append(Finding("etcd", True, f"etcd member {e.endpoint} answers, with a leader (etcd {e.version})"))
    m = facts.members
    wanted = sorted(e.endpoint.rstrip("/") for e in facts.etcd)
    if m.error:
        out.append(Finding("etcd", False, f"etcd member list unreadable: {m.error}", "see the etcd members above"))
    elif sorted(u.rstrip("/") for u in m.client_urls) != wanted:
        out.append(
            Finding(
                "etcd",
                False,
                f"etcd members {', '.join(sorted(m.client_urls)) or 'none'} are not the configured endpoints"
                f" {', '.join(wanted)}",
                "fix cluster.etcd_endpoints in the store config, or re-run the etcd role: ansible-playbook -i"
                " inventories/<store> site.yml",
            )
        )
    else:
        out.append(Finding("etcd", True, f"etcd membership: {', '.join(m.names)} (the configured endpoints)"))
    return out


def check_peer(facts: Facts, settings: Settings) -> list[Finding]:
    h = facts.peer_health
    if h is None:
        return [Finding("peer", True, "no peer configured (one workstation)")]
    if h.doc is None:
        why = h.error or f"HTTP {h.status}"
        on = f" on {facts.peer_host}" if facts.peer_host else ""
        return [
            Finding(
                "peer",
                False,
                f"peer {facts.peer}: /health at {h.url} does not answer: {why}",
                f"systemctl status edgepair; edgepair doctor --config {facts.config_path} --name {facts.peer}{on}",
            )
        ]
    out = [Finding("peer", True, f"peer {facts.peer}: /health answers ({h.doc.get('role', '?')})")]
    if h.offset_s is None:
        out.append(Finding("clock", True, f"clock offset to {facts.peer} unknown (its answer carried no Date)"))
    elif abs(h.offset_s) > settings.max_clock_offset_s:
        out.append(
            Finding(
                "clock",
                False,
                f"clock offset to {facts.peer} {h.offset_s:+.0f} s (bound {settings.max_clock_offset_s:g} s):"
                " one of the two clocks is wrong",
                "timedatectl timesync-status; timedatectl set-ntp true (on the host whose clock is wrong)",
            )
        )
    else:
        out.append(Finding("clock", True, f"clock offset to {facts.peer} {h.offset_s:+.0f} s (±1 s)"))
    return out


def size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def check_disk(facts: Facts, settings: Settings) -> Finding:
    d, path = facts.disk, facts.data_dir.path
    fix_space = (
        f"du -sh {path}/* | sort -h; lower storage.retention_days in {facts.config_path} or give the data dir a"
        " larger disk"
    )
    if d.writable_error:
        return Finding(
            "disk",
            False,
            f"data dir {path} cannot be written: {d.writable_error}",
            f"mount | grep -w {path}; chown -R edgepair:edgepair {path}",
        )
    if d.free is None or d.total is None:
        return Finding("disk", False, f"free space of {path} unknown", f"df -h {path}")
    if d.free < settings.min_free_bytes:
        return Finding(
            "disk",
            False,
            f"data dir {path} has {size(d.free)} free, less than the node's minimum {size(settings.min_free_bytes)}",
            fix_space,
        )
    ratio = d.free / d.total if d.total else 0.0
    if ratio < settings.min_free_ratio:
        return Finding(
            "disk",
            False,
            f"data dir {path} has {size(d.free)} free, {ratio:.0%} of {size(d.total)} (below"
            f" {settings.min_free_ratio:.0%})",
            fix_space,
        )
    return Finding("disk", True, f"data dir {path} writable, {size(d.free)} free ({ratio:.0%})")


def check_data_dir(d: DataDirFact) -> Finding:
    if not d.exists:
        return Finding(
            "data-dir",
            False,
            f"data dir {d.path} does not exist",
            f"install -d -o edgepair -g edgepair -m 0750 {d.path}",
        )
    if not d.is_dir:
        return Finding("data-dir", False, f"data dir {d.path} is not a folder", f"ls -l {d.path}; fix storage.data_dir")
    mode = d.mode or 0
    if mode & 0o007 and d.closed_parent:
        return Finding(
            "data-dir",
            True,
            f"data dir {d.path} mode {mode:04o}, owner {d.owner}; others cannot enter {d.closed_parent}",
        )
    if mode & 0o007:
        return Finding(
            "data-dir",
            False,
            f"data dir {d.path} is mode {mode:04o}: other users may {'write' if mode & 0o002 else 'read'} it",
            f"chmod 0750 {d.path}",
        )
    return Finding("data-dir", True, f"data dir {d.path} mode {mode:04o}, owner {d.owner}")


def check_model(m: ModelFact) -> Finding:
    if not m.exists:
        return Finding(
            "model", False, f"model {m.path} not found", "edgepair model install (or fix model.path in the config)"
        )
    if m.error:
        return Finding("model", False, f"model {m.path} unreadable: {m.error}", f"ls -l {m.path}")
    if not m.recorded_sha256:
        return Finding("model", True, f"model {m.path} sha256 {m.sha256[:12]} (no checksum recorded to compare)")
    if m.sha256 != m.recorded_sha256:
        return Finding(
            "model",
            False,
            f"model {m.path} is corrupt: sha256 {m.sha256[:12]}, recorded {m.recorded_sha256[:12]}",
            "edgepair model install --force (or install the file again with --sha256)",
        )
    return Finding("model", True, f"model {m.path} sha256 {m.sha256[:12]} as recorded")


def _date(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d")


def check_certs(facts: Facts, settings: Settings) -> list[Finding]:
    if not facts.tls:
        return [
            Finding(
                "certificate",
                False,
                "security.tls is false: etcd, replication and /health run in plain text",
                f"set security.tls: true in {facts.config_path} (docs/security.md)",
            )
        ]
    out = []
    rotate = (
        "edgepair certs rotate {name} --dir <the store's pki dir> (on the controller); ansible-playbook -i"
        " inventories/<store> rotate-certs.yml"
    )
    for c in facts.certs:
        fix = (
            rotate.format(name=c.name)
            if c.name != "ca"
            else "edgepair certs rotate-ca --dir <pki dir> (docs/security.md)"
        )
        if c.error:
            out.append(Finding("certificate", False, f"{c.path}: {c.error}", fix))
            continue
        assert c.not_after is not None
        left = (c.not_after - facts.now) / DAY_S
        if c.not_before is not None and c.not_before > facts.now:
            out.append(Finding("certificate", False, f"{c.path} is not valid before {_date(c.not_before)}", fix))
        elif left <= 0:
            out.append(Finding("certificate", False, f"{c.path} expired on {_date(c.not_after)}", fix))
        elif left < settings.cert_warn_days:
            out.append(
                Finding("certificate", False, f"{c.path} expires in {left:.0f} days ({_date(c.not_after)})", fix)
            )
        elif c.key_mode is not None and c.key_mode & 0o077:
            out.append(
                Finding(
                    "certificate",
                    False,
                    f"{c.key_path} is mode {c.key_mode:04o}: other users may read the key",
                    f"chmod 0600 {c.key_path}",
                )
            )
        else:
            out.append(Finding("certificate", True, f"{c.path} valid until {_date(c.not_after)} ({left:.0f} days)"))
    return out


def check_log(log: LogFact, settings: Settings) -> Finding:
    if log.error:
        return Finding("log", False, f"log {log.path} unreadable: {log.error}", f"ls -l {log.path}")
    if not log.errors:
        return Finding("log", True, f"log {log.path}: no error in its last {log.lines_read} lines")
    shown = " | ".join(log.errors[-settings.log_errors_shown :])
    return Finding(
        "log",
        False,
        f"log {log.path}: {len(log.errors)} error line(s) in its last {log.lines_read} lines; latest: {shown}",
        f"grep -n -E 'ERROR|CRITICAL|Traceback' {log.path} | tail -50",
    )


def format_findings(facts: Facts, findings: list[Finding]) -> str:
    lines = [f"edgepair doctor: {facts.node} ({facts.config_path})"]
    for f in findings:
        lines.append(f"  {'ok  ' if f.ok else 'FAIL'}  {f.check:<11} {f.message}")
        if not f.ok and f.fix:
            lines.append(f"        {'':<11} fix: {f.fix}")
    bad = len(problems(findings))
    lines.append(f"{bad} problem(s) found" if bad else "no problem found")
    return "\n".join(lines)

#!/usr/bin/env python3
"""Vulnerability check of a lock file with pip-audit: `make audit` runs it on the release bundle's lock.

    deploy/audit-lock.py LOCK [--services pypi,osv] [--timeout SECONDS]

Exit 0: no known vulnerability in the locked set, or no vulnerability service answered, which is printed as one
`audit: SKIPPED (...)` line with the reason, never silently. Exit 1: a locked package has a known vulnerability
(listed with its fix versions). Exit 2: the audit itself failed for another reason than the network (a lock that
pip-audit refuses, pip-audit missing).

The services are tried in order until one audits the locked packages: `pypi` (PyPI's JSON API, per version) then
`osv` (api.osv.dev). A service that answers "not found" for every package (a PyPI mirror without the per-version
JSON API does) is counted as unreachable, so that a check that looked at nothing is never reported as a pass; one
that misses only some packages names each of them on a `NOT AUDITED` line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

NETWORK_ERRORS = (
    "ConnectionError",
    "NameResolutionError",
    "Max retries exceeded",
    "Failed to resolve",
    "timed out",
    "Timeout",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "Connection refused",
    "SSLError",
    "ProxyError",
)


def pip_audit() -> str | None:
    here = Path(sys.executable).parent / "pip-audit"
    return str(here) if here.exists() else shutil.which("pip-audit")


def run_service(exe: str, lock: Path, service: str, timeout: float) -> tuple[dict | None, str]:
    """(pip-audit's JSON report, '') or (None, why it could not be had)."""
    cmd = [exe, "-r", str(lock), "--require-hashes", "--vulnerability-service", service]
    cmd += ["--format", "json", "--progress-spinner", "off", "--timeout", str(int(timeout))]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout * 8, env=os.environ.copy())
    except subprocess.TimeoutExpired:
        return None, f"{service}: no answer in {int(timeout * 8)} s"
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        err = proc.stderr.strip().splitlines()
        last = err[-1] if err else f"exit {proc.returncode}, no output"
        if any(marker in proc.stderr for marker in NETWORK_ERRORS):
            return None, f"{service}: unreachable ({last[:200]})"
        raise AuditError(f"pip-audit failed on {lock} with {service}: {last}") from None
    return report, ""


class AuditError(Exception):
    pass


def audit(lock: Path, services: list[str], timeout: float) -> int:
    exe = pip_audit()
    if exe is None:
        raise AuditError("pip-audit is not installed (it is in the dev extra: pip install -e '.[dev]')")
    reasons = []
    for service in services:
        report, why = run_service(exe, lock, service, timeout)
        if report is None:
            reasons.append(why)
            continue
        deps = report.get("dependencies", [])
        audited = [d for d in deps if "skip_reason" not in d]
        skipped = [d for d in deps if "skip_reason" in d]
        if not audited:
            first = skipped[0]["skip_reason"] if skipped else "no package in the report"
            reasons.append(f"{service}: audited none of {len(deps)} locked packages ({first})")
            continue
        for dep in skipped:
            print(f"audit: NOT AUDITED {dep['name']}: {dep['skip_reason']}")
        vulnerable = [(d, v) for d in audited for v in d.get("vulns", [])]
        for dep, vuln in vulnerable:
            fixes = ", ".join(vuln.get("fix_versions") or []) or "none yet"
            aliases = ", ".join(vuln.get("aliases") or [])
            print(
                f"audit: VULNERABLE {dep['name']}=={dep['version']}: {vuln['id']}"
                + (f" ({aliases})" if aliases else "")
                + f", fixed in {fixes}"
            )
        if vulnerable:
            print(f"audit: FAILED: {len(vulnerable)} known vulnerabilities in {lock} ({service})")
            return 1
        print(f"audit: OK: {len(audited)} locked packages of {lock}, no known vulnerabilities ({service})")
        return 0
    print(f"audit: SKIPPED ({'; '.join(reasons)}): {lock} was not checked for vulnerabilities")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lock", type=Path)
    parser.add_argument("--services", default="pypi,osv", help="vulnerability services, tried in order")
    parser.add_argument("--timeout", type=float, default=15, help="seconds per request")
    args = parser.parse_args(argv)
    if not args.lock.is_file():
        print(f"audit: error: no lock file {args.lock}", file=sys.stderr)
        return 2
    try:
        return audit(args.lock, [s for s in args.services.split(",") if s], args.timeout)
    except AuditError as exc:
        print(f"audit: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

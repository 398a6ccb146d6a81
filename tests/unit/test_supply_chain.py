"""The release bundle's lock (deploy/requirements/bundle-cpu.lock) and its vulnerability check (deploy/audit-lock.py).

The lock's shape is checked offline here; tests/integration/test_bundle.py builds a real bundle from it offline.
"""

from __future__ import annotations

import importlib.util
import json
import re
import stat
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
REQS = ROOT / "deploy" / "requirements"
LOCK = REQS / "bundle-cpu.lock"
BUILD_LOCK = REQS / "build.lock"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# The platform the stores run and the lock is resolved for: Linux x86_64, CPython 3.11.
TARGET = default_environment() | {
    "python_version": "3.11",
    "python_full_version": "3.11.0",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)\s*(?:;[^\\]*)?\\?$")
HASH = re.compile(r"^--hash=sha256:[0-9a-f]{64}\s*\\?$")


def parse_lock(path: Path) -> dict[str, tuple[str, list[str]]]:
    """{canonical name: (version, [hash lines])}, failing on any line that is not a pin, a hash or a comment."""
    pins: dict[str, tuple[str, list[str]]] = {}
    current = None
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if raw[0].isspace():
            assert current is not None, f"{path.name}:{n}: an option before any requirement: {raw!r}"
            assert HASH.match(line), f"{path.name}:{n}: not a sha256 hash: {raw!r}"
            pins[current][1].append(line)
            continue
        match = PIN.match(line)
        assert match, f"{path.name}:{n}: not a requirement pinned with ==: {raw!r}"
        current = canonicalize_name(match[1])
        assert current not in pins, f"{path.name}:{n}: {current} pinned twice"
        pins[current] = (match[2], [])
    return pins


def runtime_requirements() -> list[Requirement]:
    deps = PYPROJECT["project"]["dependencies"] + PYPROJECT["project"]["optional-dependencies"]["cpu"]
    return [Requirement(d) for d in deps]


@pytest.mark.parametrize("path", [LOCK, BUILD_LOCK], ids=["bundle-cpu", "build"])
def test_every_locked_package_is_pinned_with_hashes(path):
    pins = parse_lock(path)
    assert pins, f"{path} pins nothing"
    for name, (_version, hashes) in pins.items():
        assert hashes, f"{path.name}: {name} has no --hash=sha256:"
    assert "--index-url" not in path.read_text() and "-e " not in path.read_text()


def test_every_runtime_dependency_is_locked_at_an_allowed_version():
    pins = parse_lock(LOCK)
    for req in runtime_requirements():
        if req.marker is not None and not req.marker.evaluate(TARGET):
            continue
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} (pyproject.toml) is not in {LOCK.name}: run `make lock`"
        assert req.specifier.contains(pins[name][0], prereleases=True), (
            f"{LOCK.name} pins {name}=={pins[name][0]}, pyproject.toml wants {req}: run `make lock`"
        )


def test_no_dev_only_package_nor_edgepair_nor_the_gpu_runtime_in_the_lock():
    pins = parse_lock(LOCK)
    runtime = {canonicalize_name(r.name) for r in runtime_requirements()}
    extras = PYPROJECT["project"]["optional-dependencies"]
    dev_only = {canonicalize_name(Requirement(d).name) for d in extras["dev"] + extras["eval"]} - runtime
    assert not dev_only & set(pins), f"dev-only packages in {LOCK.name}: {sorted(dev_only & set(pins))}"
    for name in ("edgepair", "onnxruntime-gpu", "pytest", "pip-audit", "uv", "ansible"):
        assert name not in pins, f"{name} must not be in {LOCK.name}"


def test_the_build_lock_holds_the_build_backend_of_pyproject():
    wanted = {canonicalize_name(Requirement(r).name): Requirement(r) for r in PYPROJECT["build-system"]["requires"]}
    listed = {
        canonicalize_name(Requirement(line).name)
        for line in (REQS / "build.in").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert listed == set(wanted), "deploy/requirements/build.in must list pyproject.toml's [build-system] requires"
    pins = parse_lock(BUILD_LOCK)
    for name, req in wanted.items():
        assert name in pins and req.specifier.contains(pins[name][0]), f"{req} not locked in {BUILD_LOCK.name}"


def test_make_has_lock_and_audit_and_test_runs_the_audit():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^lock:", makefile, re.M) and re.search(r"^audit:", makefile, re.M)
    test_line = re.search(r"^test:(.*)$", makefile, re.M)
    assert test_line and "audit" in test_line[1].split()
    assert "--generate-hashes" in makefile


def test_the_bundle_build_downloads_only_the_locked_set_by_hash():
    script = (ROOT / "deploy" / "build-release.sh").read_text()
    assert "--require-hashes --no-deps" in script
    assert "bundle-$extra.lock" in script and "requirements.txt" in script
    assert (ROOT / "deploy" / "build-release.sh").stat().st_mode & stat.S_IXUSR


# --- deploy/audit-lock.py, with a stand-in pip-audit -------------------------------------------------------------


@pytest.fixture
def audit_mod():
    spec = importlib.util.spec_from_file_location("audit_lock", ROOT / "deploy" / "audit-lock.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_pip_audit(tmp_path: Path, answers: dict[str, tuple[str, str, int]]) -> str:
    """A pip-audit that answers {service: (stdout, stderr, exit code)}."""
    exe = tmp_path / "pip-audit"
    exe.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        f"answers = json.loads({json.dumps(json.dumps(answers))})\n"
        "out, err, rc = answers[sys.argv[sys.argv.index('--vulnerability-service') + 1]]\n"
        "sys.stdout.write(out); sys.stderr.write(err); sys.exit(rc)\n"
    )
    exe.chmod(0o755)
    return str(exe)


NOT_FOUND = json.dumps(
    {"dependencies": [{"name": "ray", "skip_reason": "Dependency not found on PyPI and could not be audited"}]}
)
UNREACHABLE = ("", "requests.exceptions.ConnectionError: Failed to resolve 'api.osv.dev'\n", 1)
CLEAN = json.dumps({"dependencies": [{"name": "ray", "version": "2.60.0", "vulns": []}]})


def run_audit(audit_mod, monkeypatch, tmp_path, answers, capsys):
    monkeypatch.setattr(audit_mod, "pip_audit", lambda: fake_pip_audit(tmp_path, answers))
    rc = audit_mod.main([str(LOCK), "--timeout", "5"])
    return rc, capsys.readouterr()


def test_audit_with_no_service_reachable_is_a_visible_skip(audit_mod, monkeypatch, tmp_path, capsys):
    rc, out = run_audit(audit_mod, monkeypatch, tmp_path, {"pypi": (NOT_FOUND, "", 0), "osv": UNREACHABLE}, capsys)
    assert rc == 0
    assert (
        out.out.startswith("audit: SKIPPED (")
        and "pypi: audited none of 1" in out.out
        and "osv: unreachable" in out.out
    )


def test_audit_reports_a_vulnerable_locked_package_with_its_fix(audit_mod, monkeypatch, tmp_path, capsys):
    vuln = {"id": "PYSEC-2099-1", "fix_versions": ["2.60.1"], "aliases": ["CVE-2099-1"], "description": "x"}
    report = json.dumps({"dependencies": [{"name": "ray", "version": "2.60.0", "vulns": [vuln]}]})
    rc, out = run_audit(audit_mod, monkeypatch, tmp_path, {"pypi": (report, "", 1), "osv": UNREACHABLE}, capsys)
    assert rc == 1
    assert "audit: VULNERABLE ray==2.60.0: PYSEC-2099-1 (CVE-2099-1), fixed in 2.60.1" in out.out


def test_audit_falls_back_to_osv_and_passes_when_clean(audit_mod, monkeypatch, tmp_path, capsys):
    rc, out = run_audit(audit_mod, monkeypatch, tmp_path, {"pypi": UNREACHABLE, "osv": (CLEAN, "", 0)}, capsys)
    assert rc == 0 and out.out.strip().endswith("no known vulnerabilities (osv)")


def test_audit_that_fails_for_another_reason_fails(audit_mod, monkeypatch, tmp_path, capsys):
    bad = ("", "pip_audit: error: requirement 'x' has no hash\n", 1)
    rc, out = run_audit(audit_mod, monkeypatch, tmp_path, {"pypi": bad, "osv": bad}, capsys)
    assert rc == 2 and "audit: error:" in out.err and "SKIPPED" not in out.out

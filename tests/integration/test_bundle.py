"""A real release bundle, built offline from a wheel cache, installed into a fresh venv with --require-hashes.

The cache (EDGEPAIR_WHEEL_CACHE, default ~/.cache/edgepair/wheels) is filled from the locked hashes once, which
needs the package index; the build and the install then run with pip's index switched off (--no-index, no pip
configuration, an index URL that answers nothing).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REQS = ROOT / "deploy" / "requirements"
VERSION = next(
    line.split('"')[1] for line in (ROOT / "pyproject.toml").read_text().splitlines() if line.startswith("version")
)

pytestmark = pytest.mark.skipif(
    sys.version_info[:2] != (3, 11) or platform.machine() != "x86_64" or sys.platform != "linux",
    reason="the bundle is for Linux x86_64 CPython 3.11 (the stores' platform)",
)


def offline_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env |= {"PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHON": sys.executable}
    env["PIP_INDEX_URL"] = "http://127.0.0.1:9/simple"  # nothing listens: any index access fails
    return env


@pytest.fixture(scope="module")
def wheel_cache() -> Path:
    cache = Path(os.environ.get("EDGEPAIR_WHEEL_CACHE", Path.home() / ".cache" / "edgepair" / "wheels"))
    cache.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "download", "--require-hashes", "--no-deps", "--only-binary=:all:"]
    proc = subprocess.run(
        [*pip, "-q", "-d", str(cache), "-r", str(REQS / "bundle-cpu.lock"), "-r", str(REQS / "build.lock")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot fill the wheel cache {cache} from the index: {proc.stderr.strip().splitlines()[-1:]}")
    return cache


def pip_install(venv: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--no-index", "--require-hashes", *args],
        capture_output=True,
        text=True,
        env=offline_env(),
        timeout=900,
    )


def test_bundle_builds_offline_and_installs_with_hashes_only(wheel_cache, tmp_path):
    out = tmp_path / "bundles"
    build = subprocess.run(
        [str(ROOT / "deploy" / "build-release.sh"), str(ROOT), str(out), "cpu"],
        capture_output=True,
        text=True,
        env=offline_env() | {"WHEEL_CACHE": str(wheel_cache)},
        timeout=900,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    tar = out / f"edgepair-{VERSION}-bundle.tar"
    assert build.stdout.strip() == str(tar)

    bundle = tmp_path / "bundle"
    with tarfile.open(tar) as archive:
        archive.extractall(bundle, filter="data")
    reqs = (bundle / "requirements.txt").read_text()
    assert f"edgepair[cpu]=={VERSION} \\\n    --hash=sha256:" in reqs
    wheels = sorted(p.name for p in bundle.glob("*.whl"))
    locked = [line for line in (REQS / "bundle-cpu.lock").read_text().splitlines() if line[:1].isalnum()]
    assert len(wheels) == len(locked) + 1, wheels

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    inst = pip_install(venv, "--find-links", str(bundle), "-r", str(bundle / "requirements.txt"))
    assert inst.returncode == 0, inst.stderr[-3000:]
    check = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    smoke = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import cluster.cli, onnxruntime, cv2, ray, duckdb, pyetcd; print('ok')"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert smoke.stdout.strip() == "ok", smoke.stderr[-2000:]

    # A wheel changed after the build is refused: the same install from a tampered copy fails on its hash.
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    idna = next(bundle.glob("idna-*.whl"))
    (tampered / idna.name).write_bytes(idna.read_bytes() + b"\0")
    pin = next(line.split()[0] for line in reqs.splitlines() if line.startswith("idna=="))
    block = reqs[reqs.index(pin) :].split("\n    # via")[0]  # idna==V with the bundle's hashes
    (tampered / "req.txt").write_text(block + "\n")
    args = ["--dry-run", "--ignore-installed", "--no-deps", "--find-links", str(tampered)]
    bad = pip_install(venv, *args, "-r", str(tampered / "req.txt"))
    assert bad.returncode != 0 and "DO NOT MATCH THE HASHES" in bad.stderr, bad.stderr[-2000:]

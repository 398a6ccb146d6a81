"""Fixtures of the Ansible e2e suite: release bundles built from this repo, and the three-host lab
(deploy/lab/lab.py), always torn down."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "deploy" / "ansible"
CACHE = Path(os.environ.get("EDGEPAIR_LAB_CACHE", "/var/cache/edgepair-lab"))
BUNDLES = CACHE / "bundles"
# The lab store's CA and certificates, made by site.yml on the controller (store_pki role) here rather than under the
# inventory, so that every lab run starts from no CA; the tests use its admin certificate root as their client.
PKI = CACHE / "pki" / "lab-store"
BIN = Path(sys.executable).parent


def load_lab() -> ModuleType:
    spec = importlib.util.spec_from_file_location("edgepair_lab", REPO / "deploy" / "lab" / "lab.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def tool(name: str) -> str:
    path = BIN / name
    return str(path) if path.exists() else (shutil.which(name) or name)


def base_version() -> str:
    m = re.search(r'^version\s*=\s*"([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M)
    assert m, "no version in pyproject.toml"
    return m.group(1)


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{path}: expected {old!r} to patch the release under test (did the code change?)"
    path.write_text(text.replace(old, new))


def build_bundle(version: str, *, unhealthy: bool = False) -> Path:
    """A release bundle of this working tree as ``version``; ``unhealthy``: its /health never says healthy."""
    out = BUNDLES / f"edgepair-{version}-bundle.tar"
    src = CACHE / "src" / version
    shutil.rmtree(src, ignore_errors=True)
    shutil.copytree(
        REPO,
        src,
        ignore=shutil.ignore_patterns(".git", ".venv", "data", "dist", "build", "*.egg-info", "__pycache__", ".*cache"),
    )
    old = base_version()
    if version != old:
        _replace(src / "pyproject.toml", f'version = "{old}"', f'version = "{version}"')
        # node.py and cli.py carry the version as literals (they should read importlib.metadata)
        for rel in ("cluster/node.py", "cluster/cli.py"):
            p = src / rel
            text = p.read_text()
            p.write_text(text.replace(f'"{old}"', f'"{version}"').replace(f"edgepair {old}", f"edgepair {version}"))
    if unhealthy:
        _replace(src / "cluster/node.py", '"healthy": st.get("mode") in ("normal", "failsafe"),', '"healthy": False,')
    env = dict(os.environ, PIP=tool("pip"))
    subprocess.run(
        [str(REPO / "deploy" / "build-release.sh"), str(src), str(BUNDLES)], check=True, env=env, timeout=600
    )
    shutil.rmtree(src, ignore_errors=True)
    assert out.exists()
    return out


@pytest.fixture(scope="session")
def lab_needs() -> None:
    missing = [b for b in ("systemd-nspawn", "sshd", "unshare", "ip") if not shutil.which(b)]
    if os.geteuid() != 0 or missing:
        pytest.skip(
            f"the Ansible lab needs root and {', '.join(missing) or 'nothing more'} (apt-get install "
            "systemd-container openssh-server)"
        )
    if not Path(tool("ansible-playbook")).exists() and not shutil.which("ansible-playbook"):
        pytest.skip("ansible-playbook not installed (pip install ansible)")


@pytest.fixture(scope="session")
def lab(lab_needs: None) -> Iterator[ModuleType]:
    mod = load_lab()
    mod.up()
    try:
        yield mod
    finally:
        mod.down(quiet=True)


# OpenSSH's connection multiplexing on the lab's controller now and then loses a control master as it starts (a busy
# 2-core machine): the play reports the host UNREACHABLE with this line, before any task ran on it, and Ansible's own
# connection retries do not cover it. Such a run is run once more, and says so; any other failure is returned as is.
MUX_FLAKE = "Failed to connect to new control master"


def playbook(lab: ModuleType, name: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    r = _playbook_once(lab, name, *args, timeout=timeout)
    if r.returncode != 0 and MUX_FLAKE in r.stdout + r.stderr:
        print(f"{name}: an SSH control master failed to start ({MUX_FLAKE!r}): running the playbook once more")
        r = _playbook_once(lab, name, *args, timeout=timeout)
    return r


def _playbook_once(lab: ModuleType, name: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    cmd = lab.ctl([tool("ansible-playbook"), "-i", "inventories/lab", name, "-e", f"edgepair_pki_src={PKI}", *args])
    env = lab.ansible_env(
        dict(os.environ, ANSIBLE_CONFIG=str(ANSIBLE_DIR / "ansible.cfg"), ANSIBLE_NOCOLOR="1", PYTHONUNBUFFERED="1")
    )
    try:
        r = subprocess.run(cmd, cwd=ANSIBLE_DIR, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:  # keep what it printed: the task it hung in is the diagnosis
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        r = subprocess.CompletedProcess(cmd, 124, out + f"\nTIMED OUT after {timeout:.0f} s\n", err)
    log = CACHE / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as f:
        f.write(f"\n===== {' '.join(args)} rc={r.returncode}\n{r.stdout}\n{r.stderr}\n")
    return r


def recap(output: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP counts per host."""
    out: dict[str, dict[str, int]] = {}
    for m in re.finditer(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$", output, re.M):
        out[m.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
    return out

"""Fixtures of the Ansible e2e suite: release bundles built from this repo, the three-host lab (deploy/lab/lab.py),
always torn down, and the lab store's camera passwords (the canary of issue 13), made fresh for each session.

The lab's tests share one lab and one store: ``make test-lab`` runs tests/e2e/test_ansible.py (the store from
nothing, upgrades, a failed upgrade, the canary) and then tests/e2e/test_lab_drills.py (failover drills through
drill.yml) in one pytest session. Run alone, the drills install the store first (:func:`deployed`)."""

from __future__ import annotations

import concurrent.futures
import importlib.util
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "deploy" / "ansible"
CACHE = Path(os.environ.get("EDGEPAIR_LAB_CACHE", "/var/cache/edgepair-lab"))
BUNDLES = CACHE / "bundles"
# The lab store's CA and certificates, made by site.yml on the controller (store_pki role) here rather than under the
# inventory, so that every lab run starts from no CA; the tests use its admin certificate root as their client.
PKI = CACHE / "pki" / "lab-store"
BIN = Path(sys.executable).parent
# The camera passwords of this session's lab store (Ansible extra vars, 0600): cam-1's in edgepair_camera_credentials
# (the credentials file Ansible manages with no_log), cam-2's written into its stream URL as a careless installer
# would; the edgepair role must move it into the credentials file. Every playbook of the session gets it.
SECRETS = CACHE / "secrets" / "lab-cameras.yml"
# Everything every ansible-playbook of this session printed (stdout and stderr), for the canary.
OUTPUTS: list[str] = []


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
        [str(REPO / "deploy" / "build-release.sh"), str(src), str(BUNDLES)], check=True, env=env, timeout=1800
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


def write_secrets() -> dict[str, str]:
    """Fresh passwords for the lab's cameras, written as Ansible extra vars (0600); camera id -> password."""
    passwords = {"cam-1": f"Canary1-{secrets.token_hex(6)}!/x", "cam-2": f"Canary2-{secrets.token_hex(6)}"}
    cams = yaml.safe_load((ANSIBLE_DIR / "inventories" / "lab" / "group_vars" / "all.yml").read_text())
    cameras = cams["edgepair_cameras"]
    for cam in cameras:
        if cam["id"] == "cam-2":
            assert cam["source"].startswith("rtsp://"), cam
            cam["source"] = cam["source"].replace("rtsp://", f"rtsp://admin:{passwords['cam-2']}@", 1)
    doc = {
        "edgepair_camera_credentials": {"cam-1": {"user": "operator", "password": passwords["cam-1"]}},
        "edgepair_cameras": cameras,
    }
    SECRETS.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    SECRETS.unlink(missing_ok=True)
    fd = os.open(SECRETS, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(doc, f, sort_keys=False)
    return passwords


def read_passwords() -> dict[str, str]:
    doc = yaml.safe_load(SECRETS.read_text())
    url = next(c["source"] for c in doc["edgepair_cameras"] if c["id"] == "cam-2")
    return {
        "cam-1": doc["edgepair_camera_credentials"]["cam-1"]["password"],
        "cam-2": url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1],
    }


# EDGEPAIR_LAB_REUSE=1: a developer's shortcut: use the lab that `lab.py up` brought up (and its store, CA and
# camera passwords) and leave it up, instead of a new lab and a store from nothing. CI never sets it.
REUSE = os.environ.get("EDGEPAIR_LAB_REUSE") == "1"


@pytest.fixture(scope="session")
def lab(lab_needs: None) -> Iterator[ModuleType]:
    mod = load_lab()
    if REUSE and mod._state().get("hosts"):
        if not SECRETS.exists():
            write_secrets()
        yield mod
        return
    for old in (CACHE / "logs").glob("*.log"):  # the canary scans this session's logs
        old.unlink()
    OUTPUTS.clear()
    mod.up()
    try:
        write_secrets()
        yield mod
    finally:
        mod.down(quiet=True)
        SECRETS.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def lab_passwords(lab: ModuleType) -> dict[str, str]:
    return read_passwords()


@pytest.fixture(scope="session")
def store(lab: ModuleType) -> ModuleType:
    """The lab, with release V_OLD's bundle built and no store CA yet (site.yml makes it)."""
    if REUSE and (BUNDLES / f"edgepair-{base_version()}-bundle.tar").exists():
        return lab
    shutil.rmtree(PKI, ignore_errors=True)  # a store from nothing: site.yml makes its CA
    build_bundle(base_version())
    # The upgrade scenarios' bundles, built while site.yml installs the store (CI's time: about 25 s each).
    for version, unhealthy in ((new_version(), False), (bad_version(), True)):
        _PREBUILT[version] = _BUILDER.submit(build_bundle, version, unhealthy=unhealthy)
    return lab


def new_version() -> str:
    """The release the rolling upgrade rolls out: PEP 440 newer than the base version whatever it is."""
    return base_version() + ".post1"


def bad_version() -> str:
    """The release whose /health never says healthy: the failed upgrade's."""
    return base_version() + ".post2"


_BUILDER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="bundle")
_PREBUILT: dict[str, concurrent.futures.Future[Path]] = {}


def release_bundle(version: str, *, unhealthy: bool = False) -> Path:
    """The bundle of ``version`` (``unhealthy``: see :func:`build_bundle`): built in the background when the store
    fixture asked for it, else now."""
    fut = _PREBUILT.pop(version, None)
    return fut.result(timeout=1800) if fut is not None else build_bundle(version, unhealthy=unhealthy)


def healthy(lab: ModuleType) -> bool:
    """Both workstations answer /health healthy (the admin certificate root as client)."""
    code = (
        "import json,ssl,sys,urllib.request\n"
        "ctx=ssl.create_default_context(cafile=sys.argv[1]); ctx.load_cert_chain(sys.argv[2], sys.argv[3])\n"
        "for u in sys.argv[4:]:\n"
        " try: print(json.loads(urllib.request.urlopen(u, timeout=3, context=ctx).read()).get('healthy'))\n"
        " except Exception as e: print(type(e).__name__)\n"
    )
    if not (PKI / "root.key").exists():
        return False
    urls = [f"https://{lab.HOSTS[h]}:9101/health" for h in ("ws-a", "ws-b")]
    args = [str(PKI / "ca.crt"), str(PKI / "root.crt"), str(PKI / "root.key"), *urls]
    r = subprocess.run(lab.ctl([sys.executable, "-c", code, *args]), capture_output=True, text=True, timeout=30)
    return r.stdout.split() == ["True", "True"]


@pytest.fixture(scope="session")
def deployed(store: ModuleType) -> ModuleType:
    """The lab store running on release V_OLD: as test_ansible.py leaves it, or installed now by site.yml."""
    if not healthy(store):
        t0 = time.monotonic()
        r = playbook(store, "site.yml", "-e", f"edgepair_version={base_version()}")
        assert r.returncode == 0, r.stdout[-6000:]
        print(f"site.yml for the drills: {time.monotonic() - t0:.0f} s")
    return store


# OpenSSH's connection multiplexing on the lab's controller now and then loses a control master as it starts (a busy
# 2-core machine): the play reports the host UNREACHABLE with this line, before any task ran on it, and Ansible's own
# connection retries do not cover it. Such a run is run once more, and says so; any other failure is returned as is.
MUX_FLAKE = "Failed to connect to new control master"


# A bound against a hung play, not a time limit: a 2-core machine shared with other suites has run one playbook for
# over 10 minutes (load 50).
PLAYBOOK_BOUND_S = 1800.0


def playbook(
    lab: ModuleType, name: str, *args: str, timeout: float = PLAYBOOK_BOUND_S, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    r = _playbook_once(lab, name, *args, timeout=timeout, env_extra=env)
    if r.returncode != 0 and MUX_FLAKE in r.stdout + r.stderr:
        print(f"{name}: an SSH control master failed to start ({MUX_FLAKE!r}): running the playbook once more")
        r = _playbook_once(lab, name, *args, timeout=timeout, env_extra=env)
    return r


def _playbook_once(
    lab: ModuleType, name: str, *args: str, timeout: float, env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    extra = ["-e", f"@{SECRETS}"] if SECRETS.exists() else []
    cmd = lab.ctl(
        [tool("ansible-playbook"), "-i", "inventories/lab", name, "-e", f"edgepair_pki_src={PKI}", *extra, *args]
    )
    env = lab.ansible_env(
        dict(os.environ, ANSIBLE_CONFIG=str(ANSIBLE_DIR / "ansible.cfg"), ANSIBLE_NOCOLOR="1", PYTHONUNBUFFERED="1")
    )
    env.update(env_extra or {})
    try:
        r = subprocess.run(cmd, cwd=ANSIBLE_DIR, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:  # keep what it printed: the task it hung in is the diagnosis
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        r = subprocess.CompletedProcess(cmd, 124, out + f"\nTIMED OUT after {timeout:.0f} s\n", err)
    OUTPUTS.extend([r.stdout, r.stderr])
    log = CACHE / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as f:
        f.write(f"\n===== {' '.join(args)} rc={r.returncode}\n{r.stdout}\n{r.stderr}\n")
    return r


def changed_tasks(output: str) -> dict[str, list[str]]:
    """Per host, the tasks and handlers (``role : name``, in the order they ran) that reported changed."""
    out: dict[str, list[str]] = {}
    task = ""
    for line in output.splitlines():
        m = re.match(r"^(?:TASK|RUNNING HANDLER) \[(.+?)\] \*+$", line)
        if m:
            task = m.group(1)
            continue
        m = re.match(r"^changed: \[([^\]]+)\]", line)
        if m and task not in out.setdefault(m.group(1), []):
            out[m.group(1)].append(task)
    return out


def recap(output: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP counts per host."""
    out: dict[str, dict[str, int]] = {}
    for m in re.finditer(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$", output, re.M):
        out[m.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
    return out

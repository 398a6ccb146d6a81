"""Every command of the README that runs on one machine, run exactly as written, in order, in a copy of the repo.

The README's ``sh`` blocks are read from the file itself, so a command added there is run here. Each line runs with
``bash -c`` from the copy's root (the repo's tracked files, its ``.venv`` linked), standard input empty, bounded in
time; it must exit 0 and print no traceback. Lines this test does not run say why, and the reason names what runs
them instead:

- ``make demo`` / ``make test``: CI's ``.ci/run`` runs ``make test`` on a fresh clone; ``make demo`` is that set-up
  plus ``edgepair pair demo``, which runs here with the example pair.
- lines with a ``<placeholder>`` (an inventory, a sha256) and the Ansible block: the lab's tests
  (``tests/e2e/test_ansible.py``, ``tests/e2e/test_lab_drills.py``) run these playbooks and ``drill --store``
  on a real three-host inventory; ``model install`` from a path or URL is ``tests/integration/
  test_accuracy_model_install.py``;
- ``deploy/build-release.sh``: ``tests/integration/test_bundle.py``.

Slow (about 6 minutes: a whole video processed, a pair up and down, the demo): ``make test-all`` runs it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
BOUND_S = 600


def readme_blocks(text: str) -> list[list[str]]:
    """The command lines of each of the README's ``sh`` blocks, in order (blank and comment lines left out)."""
    return [
        [line.strip() for line in block.splitlines() if line.strip() and not line.strip().startswith("#")]
        for block in re.findall(r"```sh\n(.*?)```", text, re.S)
    ]


def readme_commands(text: str) -> list[str]:
    return [line for block in readme_blocks(text) for line in block]


def why_not_run(line: str, in_ansible: bool) -> str | None:
    """None for a line this test runs; else the reason (and what runs it instead)."""
    if line.startswith("make "):
        return ".ci/run runs `make test` on a fresh clone; `make demo` is that set-up plus `pair demo` (run here)"
    if in_ansible or line.startswith("cd deploy/ansible"):
        return "an Ansible playbook on an inventory: tests/e2e/test_ansible.py and test_lab_drills.py run them"
    if re.search(r"<[^<>]+>", line):
        return "a placeholder to fill in: the lab tests and tests/integration/test_accuracy_model_install.py"
    if line.startswith("deploy/build-release.sh"):
        return "tests/integration/test_bundle.py builds and installs the bundle"
    return None


def test_readme_commands_parse_into_what_runs_and_what_does_not() -> None:
    lines = readme_commands((REPO / "README.md").read_text())
    runs = [line for line in lines if why_not_run(line, False) is None]
    assert any(line.startswith(".venv/bin/edgepair pair up") for line in runs)
    assert any(line.startswith(".venv/bin/edgepair sql") for line in runs)
    # The analyst's block comes after the Ansible ones: a `cd deploy/ansible` there does not reach it.
    blocks = readme_blocks((REPO / "README.md").read_text())
    assert any(b[0].startswith("cd deploy/ansible") for b in blocks)
    assert any("/.venv/bin/duckdb " in f"/{line}" for b in blocks for line in b if not b[0].startswith("cd "))
    assert why_not_run("ansible-playbook -i inventories/<store> site.yml", False) is not None
    assert why_not_run("make demo   # comment", False) is not None


@pytest.mark.slow
def test_every_readme_command_runs_as_written(tmp_path: Path) -> None:
    if not (REPO / ".venv" / "bin" / "edgepair").exists():
        pytest.skip("no .venv: run `make test` (it creates it) first")
    if shutil.which("etcd") is None or not VTEST.exists():
        pytest.skip("etcd and Debian's vtest.avi are needed (make test installs them)")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    copy = tmp_path / "repo"
    for rel in filter(None, tracked.decode().split("\0")):
        src = REPO / rel
        if src.is_file():
            (copy / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, copy / rel)
    (copy / ".venv").symlink_to(REPO / ".venv")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGEPAIR_", "PYTEST"))}
    ran, skipped = [], []
    blocks = readme_blocks((REPO / "README.md").read_text())
    lines = [(i, line) for i, block in enumerate(blocks) for line in block]
    pair_up, in_ansible, block_of = False, False, -1
    try:
        for i, line in lines:
            if i != block_of:  # a `cd` lasts until the end of its block
                block_of, in_ansible = i, False
            in_ansible = in_ansible or line.startswith("cd deploy/ansible")
            why = why_not_run(line, in_ansible)
            if why is not None:
                skipped.append((line, why))
                continue
            proc = subprocess.run(
                ["bash", "-c", line], cwd=copy, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                timeout=BOUND_S,
            )  # fmt: skip
            pair_up = (pair_up or " pair up " in line) and " pair down " not in line
            out = proc.stdout + proc.stderr
            assert proc.returncode == 0, f"README command failed ({proc.returncode}): {line}\n{out[-3000:]}"
            assert "Traceback" not in out, f"README command printed a traceback: {line}\n{out[-3000:]}"
            ran.append(line)
        demo = subprocess.run(
            [".venv/bin/edgepair", "pair", "demo", "--config", "cluster/examples/pair.yaml", "--seconds", "30"],
            cwd=copy, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=BOUND_S,
        )  # fmt: skip
        assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
        assert "the two copies agree" in demo.stdout, demo.stdout[-2000:]
    finally:
        if pair_up:
            subprocess.run(
                [".venv/bin/edgepair", "pair", "down", "--config", "cluster/examples/pair.yaml"],
                cwd=copy, env=env, capture_output=True, timeout=BOUND_S,
            )  # fmt: skip
    print(f"ran {len(ran)} README commands; not run here: {len(skipped)}")
    for line, why in skipped:
        print(f"  {line[:80]}: {why}")
    assert len(ran) >= 15, ran

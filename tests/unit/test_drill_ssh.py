"""``cluster.drill_ssh.SshHosts`` (split out of ``RemoteStore``, issue 16) against a stand-in ``ssh`` on PATH: its
stdout comes back, SSH's own failure (exit 255) becomes the sentence with the fix, a command's failure names the
host and its exit code, a command past its deadline says so, and a local power command's failure says what it was."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.drill_ssh import DrillTargetError, Host, SshHosts, run_local

FAKE_SSH = """#!/bin/sh
for last; do :; done
case "$last" in
  hello) echo "hi from $*" ;;
  hostkey) echo "Host key verification failed." >&2; exit 255 ;;
  fail) echo "no such unit rtsp://admin:hunter2@10.0.0.5/x" >&2; exit 5 ;;
  slow) sleep 5 ;;
  *) exit 0 ;;
esac
"""


@pytest.fixture
def hosts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SshHosts]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(FAKE_SSH)
    (bin_dir / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    h = SshHosts({"ws-a": Host("ws-a", "10.0.0.11", "workstation")})
    yield h
    h.close()
    assert not h.control.exists()


def test_stdout_comes_back_through_the_control_master(hosts: SshHosts) -> None:
    out = hosts.run("ws-a", "hello").decode()
    assert "BatchMode=yes" in out and f"ControlPath={hosts.control}/%C" in out and "10.0.0.11 -- hello" in out


@pytest.mark.parametrize(
    ("command", "timeout", "message"),
    [
        ("hostkey", 5.0, "ws-a (10.0.0.11): SSH host key not in the known_hosts"),
        ("fail", 5.0, "ws-a: `fail` exited 5: no such unit rtsp://10.0.0.5/x"),
        ("slow", 0.5, "ws-a (10.0.0.11): `slow` did not finish in 0 s"),
    ],
)
def test_a_failure_is_one_error_naming_the_host(hosts: SshHosts, command: str, timeout: float, message: str) -> None:
    with pytest.raises(DrillTargetError) as info:
        hosts.run("ws-a", command, timeout=timeout)
    assert message in str(info.value) and "hunter2" not in str(info.value)


def test_a_fault_is_timed_and_every_host_runs_it(hosts: SshHosts) -> None:
    assert 0.0 <= hosts.fault("ws-a", "true") < 5.0
    hosts.on_all(["ws-a"], "true", fault=True)
    with pytest.raises(DrillTargetError, match="exited 5"):
        hosts.on_all(["ws-a"], "fail")


def test_a_local_power_command_that_fails_says_what_it_was() -> None:
    run_local(("true",), "kill-node: power off ws-a", timeout=5)
    with pytest.raises(DrillTargetError, match=r"kill-node: power on ws-a: `false` exited 1"):
        run_local(("false",), "kill-node: power on ws-a", timeout=5)

"""cluster/drill_remote.py, the pure parts: the target file, SSH command lines and their failures, the commands of
each fault, the date folders a drill copies. No host, no SSH, no etcd."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.drill_remote import (
    DrillTargetError,
    Host,
    Ssh,
    cut_command,
    heal_command,
    is_target_file,
    kill_units,
    local_dates,
    parse_spec,
    partition_script,
    ssh_argv,
    ssh_failure,
    tar_command,
)


def _doc(**over: object) -> dict:
    doc = {
        "pki_dir": "/pki/lab-store",
        "hosts": {
            "ws-a": {
                "address": "10.0.0.11",
                "role": "workstation",
                "ssh": {"user": "root", "args": "-o A=1 -o 'B=x y'"},
            },
            "ws-b": {"address": "10.0.0.12", "role": "workstation"},
            "witness1": {"address": "10.0.0.13", "role": "witness", "ssh": {"port": "2222", "key": "/k"}},
        },
    }
    doc.update(over)
    return doc


def test_parse_spec_reads_hosts_ssh_and_power() -> None:
    doc = _doc()
    doc["hosts"]["ws-a"]["power_off"] = "bmc off ws-a"
    doc["hosts"]["ws-a"]["power_on"] = "bmc on 'ws a'"
    spec = parse_spec(doc, "t.json")
    assert spec.workstations == ["ws-a", "ws-b"]
    assert spec.hosts["ws-a"].ssh == Ssh(user="root", port=None, key=None, args=("-o", "A=1", "-o", "B=x y"))
    assert spec.hosts["witness1"].ssh == Ssh(user=None, port=2222, key="/k", args=())
    assert spec.hosts["ws-a"].power_off == ("bmc", "off", "ws-a")
    assert spec.hosts["ws-a"].power_on == ("bmc", "on", "ws a")
    assert spec.hosts["ws-b"].power_off == ()
    assert (spec.config_path, spec.node_unit, spec.etcd_unit) == (
        "/etc/edgepair/store.yaml",
        "edgepair.service",
        "edgepair-etcd.service",
    )
    assert spec.pki_dir == Path("/pki/lab-store")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"hosts": {}}, "drill target t.json: hosts: expected a mapping of host name to {address, role, ssh}"),
        ({"pki_dir": ""}, "drill target t.json: pki_dir: missing: the controller's certificate folder of the store"),
        ({"extra": 1}, "drill target t.json: extra: unknown keys (known: hosts, pki_dir, config_path, units, store)"),
        ({"hosts": {"ws-a": {"role": "workstation"}}}, "drill target t.json: hosts.ws-a: expected {address: "),
        (
            {"hosts": {"ws-a": {"address": "a", "role": "boss"}}},
            "drill target t.json: hosts.ws-a.role: expected workstation or witness, got 'boss'",
        ),
        (
            {"hosts": {"ws-a": {"address": "a", "power_off": "x"}, "ws-b": {"address": "b"}}},
            "drill target t.json: hosts.ws-a: power_off and power_on go together (or neither)",
        ),
        (
            {"hosts": {"ws-a": {"address": "a"}, "w": {"address": "w", "role": "witness"}}},
            "drill target t.json: hosts: a store has exactly two workstations (role: workstation)",
        ),
        (
            {"hosts": {"ws-a": {"address": "a", "ssh": {"port": "x"}}, "ws-b": {"address": "b"}}},
            "drill target t.json: hosts.ws-a.ssh: invalid literal for int() with base 10: 'x'",
        ),
    ],
)
def test_parse_spec_refuses_with_the_key(change: dict, message: str) -> None:
    with pytest.raises(DrillTargetError) as exc:
        parse_spec(_doc(**change), "t.json")
    assert str(exc.value).startswith(message), str(exc.value)


def test_is_target_file(tmp_path: Path) -> None:
    target = tmp_path / "t.yaml"
    target.write_text("pki_dir: /p\nhosts: {ws-a: {address: 10.0.0.1}}\n")
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  children:\n    workstations:\n      hosts:\n        ws-a: {ansible_host: 10.0.0.1}\n")
    assert is_target_file(target) is True
    assert is_target_file(inventory) is False
    assert is_target_file(tmp_path) is False


def test_ssh_argv_puts_our_safety_options_before_the_inventorys() -> None:
    """ssh keeps the first value of an option: an inventory's StrictHostKeyChecking=no cannot turn checking off."""
    h = Host("ws-a", "10.0.0.11", "workstation",
             Ssh(user="ops", port=2222, key="/k", args=("-o", "StrictHostKeyChecking=no")))  # fmt: skip
    argv = ssh_argv(h, "systemctl start edgepair.service", Path("/tmp/d/ssh"))
    assert argv == [
        "ssh",
        "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "ConnectTimeout=5",
        "-o", "ServerAliveInterval=2",
        "-o", "ServerAliveCountMax=3",
        "-o", "LogLevel=ERROR",
        "-o", "ControlMaster=auto",
        "-o", "ControlPath=/tmp/d/ssh/%C",
        "-o", "ControlPersist=300",
        "-p", "2222",
        "-i", "/k",
        "-o", "StrictHostKeyChecking=no",
        "-l", "ops",
        "10.0.0.11",
        "--",
        "systemctl start edgepair.service",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("stderr", "message"),
    [
        (
            "Host key verification failed.\n",
            "ws-a (10.0.0.11): SSH host key not in the known_hosts the inventory names, or different from it (Host key "
            "verification failed.): check the host's key out of band and enroll it (README, 'SSH host keys')",
        ),
        (
            "root@10.0.0.11: Permission denied (publickey).\n",
            "ws-a (10.0.0.11): SSH refused the key for user root (root@10.0.0.11: Permission denied (publickey).): "
            "check ansible_user and the key",
        ),
        (
            "ssh: connect to host 10.0.0.11 port 22: Connection timed out\n",
            "ws-a (10.0.0.11) is unreachable over SSH (ssh: connect to host 10.0.0.11 port 22: Connection timed out): "
            "check its address in the inventory and that it is up",
        ),
        ("kex_exchange_identification: banner\n", "ws-a (10.0.0.11): SSH failed (kex_exchange_identification: banner)"),
        (
            "bad rtsp://admin:S3cret@10.0.0.5/x\n",
            "ws-a (10.0.0.11): SSH failed (bad rtsp://10.0.0.5/x)",
        ),
    ],
)
def test_ssh_failure_names_the_host_and_the_fix(stderr: str, message: str) -> None:
    h = Host("ws-a", "10.0.0.11", "workstation", Ssh(user="root"))
    assert ssh_failure(h, stderr) == message


DEC1 = 1796083200.0  # 2026-12-01 00:00 UTC


@pytest.mark.parametrize(
    ("since", "until", "tz", "dates"),
    [
        (DEC1 + 7200, DEC1 + 7260, "UTC", ["2026-12-01"]),  # 02:00 UTC: the hour before is the same day
        (DEC1 + 1800, DEC1 + 1860, "UTC", ["2026-11-30", "2026-12-01"]),  # 00:30: the hour before is the day before
        (DEC1 + 7200, DEC1 + 7260, "Pacific/Auckland", ["2026-12-01"]),  # 15:00 NZDT
        (DEC1 + 41400, DEC1 + 41460, "Pacific/Auckland", ["2026-12-01", "2026-12-02"]),  # 00:30 NZDT the next day
        (DEC1 + 7200, DEC1 + 2 * 86400, "Europe/London", ["2026-12-01", "2026-12-02", "2026-12-03"]),
    ],
)
def test_local_dates(since: float, until: float, tz: str, dates: list[str]) -> None:
    assert local_dates(since, until, tz) == dates


@pytest.mark.parametrize(
    ("dates", "since", "until", "want"),
    [
        (
            ["2026-12-01", "2026-12-02"],
            1100.0,
            1500.0,
            [
                "events/store=s/date=2026-12-01/camera=c/c.0.hour~ab.parquet",  # compacted: whatever its start
                "events/store=s/date=2026-12-01/camera=c/c.1060000.ws-a.3.parquet",  # within a minute before
                "events/store=s/date=2026-12-01/camera=c/c.1060000.ws-a.3.sig",
                "events/store=s/date=2026-12-01/camera=c/c.1499000.ws-b.4.parquet",
                "store.json",
            ],
        ),
        (["2026-12-05"], 1100.0, 1500.0, ["store.json"]),  # no such folder: an archive of the metadata only
    ],
)
def test_tar_command_picks_the_segments_of_the_span(
    tmp_path: Path, dates: list[str], since: float, until: float, want: list[str]
) -> None:
    """The command's file choice, run here on a folder laid out as a data dir (sh, find, awk and tar only)."""
    import subprocess
    import tarfile

    folder = tmp_path / "data dir" / "events" / "store=s" / "date=2026-12-01" / "camera=c"
    folder.mkdir(parents=True)
    for name in ["c.1000000.ws-a.3.parquet", "c.1000000.ws-a.3.sig", "c.1060000.ws-a.3.parquet",
                 "c.1060000.ws-a.3.sig", "c.1499000.ws-b.4.parquet", "c.1501000.ws-b.4.parquet",
                 "c.0.hour~ab.parquet", "c.5000000.hour~cd.parquet", "notes.txt"]:  # fmt: skip
        (folder / name).write_bytes(b"x")
    (tmp_path / "data dir" / "store.json").write_text("{}")
    out = tmp_path / "out.tar"
    cmd = tar_command(str(tmp_path / "data dir"), "s", dates, since, until)
    with out.open("wb") as f:
        r = subprocess.run(["sh", "-c", cmd], stdout=f, stderr=subprocess.PIPE, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    with tarfile.open(out) as tar:
        assert sorted(tar.getnames()) == want


def test_partition_script_drops_both_directions_before_the_store_firewall() -> None:
    assert partition_script(["10.0.0.12", "10.0.0.13", "fd00::3"]) == (
        "table inet edgepair-drill {\n"
        "    set peers4 { type ipv4_addr; elements = { 10.0.0.12, 10.0.0.13 }; }\n"
        "    set peers6 { type ipv6_addr; elements = { fd00::3 }; }\n"
        "    chain cut_in {\n"
        "        type filter hook input priority -50; policy accept;\n"
        "        ip saddr @peers4 counter drop\n"
        "        ip6 saddr @peers6 counter drop\n"
        "    }\n"
        "    chain cut_out {\n"
        "        type filter hook output priority -50; policy accept;\n"
        "        ip daddr @peers4 counter drop\n"
        "        ip6 daddr @peers6 counter drop\n"
        "    }\n"
        "}\n"
    )


def test_cut_arms_its_dead_mans_switch_first_and_heal_disarms_it() -> None:
    cut = cut_command(["10.0.0.12"], 125.0, "edgepair-drill-heal-1")
    switch = (
        "systemd-run --quiet --unit=edgepair-drill-heal-1 --on-active=125s "
        "/bin/sh -c 'nft delete table inet edgepair-drill'"
    )
    assert cut.startswith(switch + " && printf %s ")
    assert cut.endswith(" | nft -f -")
    assert heal_command("edgepair-drill-heal-1") == (
        "nft delete table inet edgepair-drill; rc=$?; systemctl stop edgepair-drill-heal-1.timer 2>/dev/null; "
        "systemctl reset-failed edgepair-drill-heal-1.service 2>/dev/null; exit $rc"
    )


@pytest.mark.parametrize(
    ("units", "signal", "keep_down", "cmd"),
    [
        (["edgepair.service"], "SIGKILL", False, "systemctl kill --kill-whom=all --signal=SIGKILL edgepair.service"),
        (["edgepair.service"], "SIGSTOP", False, "systemctl kill --kill-whom=all --signal=SIGSTOP edgepair.service"),
        (
            ["edgepair.service", "edgepair-etcd.service"],
            "SIGKILL",
            True,
            "systemctl kill --kill-whom=all --signal=SIGKILL edgepair.service edgepair-etcd.service; "
            "systemctl stop edgepair.service edgepair-etcd.service",
        ),
    ],
)
def test_kill_units(units: list[str], signal: str, keep_down: bool, cmd: str) -> None:
    assert kill_units(units, signal, keep_down) == cmd

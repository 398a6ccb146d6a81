"""deploy/ansible/ on real SSH hosts: lint, syntax and host-key settings (fast), then on the three-host lab
(deploy/lab/lab.py) a store from nothing with mutual TLS and etcd auth on, what it must refuse (a host whose SSH key is
not the enrolled one, clients without a certificate, hosts outside the store, outbound traffic), idempotence,
--check --diff, a rolling upgrade N -> N+1 under a 0.1 s /health prober, rollback, a certificate rotation under the
prober, a failed upgrade that must leave the leader alone, and the camera-password canary over everything all that
wrote. The lab scenarios run in file order and share one lab (and, after this module, the drills of
tests/e2e/test_lab_drills.py)."""

from __future__ import annotations

import json
import os
import secrets
import shlex
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import (
    ANSIBLE_DIR,
    CACHE,
    OUTPUTS,
    PKI,
    SECRETS,
    bad_version,
    base_version,
    changed_tasks,
    new_version,
    playbook,
    recap,
    release_bundle,
    tool,
)
from tests.harness.pair import wait_for

PLAYBOOKS = ["site.yml", "rolling-upgrade.yml", "rollback.yml", "drill.yml", "rotate-certs.yml", "monitoring.yml"]
WORKSTATIONS = ("ws-a", "ws-b")
V_OLD = base_version()
V_NEW = new_version()
V_BAD = bad_version()
LEADERLESS_MAX_S = 6.0  # takeover target with ttl_s 2 (two TTLs and the 1 s health refresh)
CAMERA_GAP_MAX_S = 10.0


def _env() -> dict[str, str]:
    return dict(os.environ, ANSIBLE_CONFIG=str(ANSIBLE_DIR / "ansible.cfg"), ANSIBLE_NOCOLOR="1")


def test_ansible_lint_production_profile() -> None:
    r = subprocess.run(
        [tool("ansible-lint"), "--profile", "production", "--nocolor"],
        cwd=ANSIBLE_DIR,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]


def test_inventories_check_ssh_host_keys() -> None:
    """No inventory meant to be copied turns host-key checking off; ansible.cfg checks them."""
    cfg = (ANSIBLE_DIR / "ansible.cfg").read_text()
    assert "\nhost_key_checking = True\n" in cfg
    found = []
    for path in sorted((ANSIBLE_DIR / "inventories").rglob("*")):
        if path.is_file():
            text = path.read_text(errors="replace")
            if "StrictHostKeyChecking=no" in text or "UserKnownHostsFile=/dev/null" in text:
                found.append(str(path.relative_to(ANSIBLE_DIR)))
    assert found == []
    for inv in ("lab", "example"):
        text = (ANSIBLE_DIR / "inventories" / inv / "hosts.yml").read_text()
        assert "-o StrictHostKeyChecking=yes" in text and "-o UserKnownHostsFile=" in text, inv


@pytest.mark.parametrize("name", PLAYBOOKS)
def test_syntax_check(name: str) -> None:
    r = subprocess.run(
        [tool("ansible-playbook"), "-i", "inventories/lab", "--syntax-check", name],
        cwd=ANSIBLE_DIR,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr


# --- on the lab -------------------------------------------------------------------------------------------------


# The controller's client identity: the admin certificate root of the lab store's CA (site.yml made it).
TLS_ARGS = ["--ca", str(PKI / "ca.crt"), "--cert", str(PKI / "root.crt"), "--key", str(PKI / "root.key")]

# Runs on the controller (in the lab's namespace): GET a URL, with or without a client certificate, from an
# optional source address; prints the JSON answer, or {"error": ...} naming what failed.
FETCH = """
import json, socket, ssl, sys, urllib.error, urllib.request, http.client
url, ca, cert, key, src = sys.argv[1:6]
ctx = None
if url.startswith("https"):
    ctx = ssl.create_default_context(cafile=ca)
    if cert:
        ctx.load_cert_chain(cert, key)
try:
    r = urllib.request.urlopen(url, timeout=3, context=ctx)
    print(r.read().decode())
except urllib.error.HTTPError as e:
    print(e.read().decode())
except Exception as e:
    print(json.dumps({"error": type(e).__name__ + ": " + str(e)}))
"""


def fetch(lab: ModuleType, url: str, *, cert: bool = True) -> dict[str, Any]:
    args = [url, str(PKI / "ca.crt"), str(PKI / "root.crt") if cert else "", str(PKI / "root.key"), ""]
    r = subprocess.run(lab.ctl([sys.executable, "-c", FETCH, *args]), capture_output=True, text=True, timeout=20)
    try:
        return json.loads(r.stdout or "{}")
    except ValueError:
        return {"error": f"not json: {r.stdout[:200]} {r.stderr[-300:]}"}


def health(lab: ModuleType, host: str) -> dict[str, Any]:
    return fetch(lab, f"https://{lab.HOSTS[host]}:9101/health")


def connects(lab: ModuleType, ip: str, port: int, source: str = "") -> str:
    """Open a TCP connection from the controller (from ``source`` if given): 'open', or why not."""
    code = (
        "import socket,sys\n"
        "ip,port,src=sys.argv[1],int(sys.argv[2]),sys.argv[3]\n"
        "try:\n socket.create_connection((ip,port),timeout=2,source_address=(src,0) if src else None).close();"
        " print('open')\n"
        "except Exception as e: print(type(e).__name__)\n"
    )
    r = subprocess.run(lab.ctl([sys.executable, "-c", code, ip, str(port), source]), capture_output=True, text=True)
    return r.stdout.strip()


def etcdctl(lab: ModuleType, endpoint: str, *args: str, cert: str | None = "root") -> subprocess.CompletedProcess[str]:
    """etcdctl on the controller against a lab member; ``cert``: the client certificate's name in PKI, or None."""
    tls = ["--cacert", str(PKI / "ca.crt")] if endpoint.startswith("https") else []
    if cert and tls:
        tls += ["--cert", str(PKI / f"{cert}.crt"), "--key", str(PKI / f"{cert}.key")]
    cmd = ["etcdctl", f"--endpoints={endpoint}", "--dial-timeout=2s", "--command-timeout=3s", *tls, *args]
    env = dict(os.environ, ETCDCTL_API="3")
    return subprocess.run(lab.ctl(cmd), capture_output=True, text=True, timeout=30, env=env)


def main_pid(lab: ModuleType, host: str) -> int:
    return int(lab.ssh(host, "systemctl show --property=MainPID --value edgepair").stdout.strip() or 0)


def leaders(lab: ModuleType) -> list[str]:
    return [h for h in WORKSTATIONS if health(lab, h).get("role") == "leader"]


def wait(pred: Any, timeout: float, what: str) -> Any:
    return wait_for(pred, timeout, what, period=0.5)


class Prober:
    """tests/e2e/prober.py on the controller, stopped by pid."""

    def __init__(self, lab: ModuleType, out: Path) -> None:
        self.out = out
        out.unlink(missing_ok=True)
        urls = [f"https://{lab.HOSTS[h]}:9101/health" for h in WORKSTATIONS]
        script = str(Path(__file__).with_name("prober.py"))
        self.proc = subprocess.Popen(lab.ctl([sys.executable, script, *TLS_ARGS, str(out), *urls]))

    def stop(self) -> list[dict[str, Any]]:
        if self.proc.poll() is None:
            self.proc.terminate()  # ip netns exec execs the prober: this pid is the prober
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return [json.loads(line) for line in self.out.read_text().splitlines() if line.strip()]


def analyse(samples: list[dict[str, Any]], cameras: set[str]) -> dict[str, Any]:
    two_leaders = [s["t"] for s in samples if sum(n.get("role") == "leader" for n in s["nodes"].values()) > 1]
    gap = longest = 0.0
    cam_last = {c: samples[0]["t"] for c in cameras}
    cam_gap = dict.fromkeys(cameras, 0.0)
    start = None
    for s in samples:
        led = any(n.get("role") == "leader" for n in s["nodes"].values())
        if not led and start is None:
            start = s["t"]
        if led and start is not None:
            longest = max(longest, s["t"] - start)
            start = None
        running = {c for n in s["nodes"].values() for c in (n.get("cameras") or [])}
        for c in cameras:
            if c in running:
                cam_gap[c] = max(cam_gap[c], s["t"] - cam_last[c])
                cam_last[c] = s["t"]
    if start is not None:
        gap = samples[-1]["t"] - start
    end = samples[-1]["t"]
    for c in cameras:
        cam_gap[c] = max(cam_gap[c], end - cam_last[c])
    return {
        "samples": len(samples),
        "span_s": round(end - samples[0]["t"], 1),
        "two_leader_samples": len(two_leaders),
        "longest_leaderless_s": round(max(longest, gap), 2),
        "longest_camera_gap_s": {c: round(v, 2) for c, v in cam_gap.items()},
    }


@pytest.mark.slow
def test_site_from_nothing(store: ModuleType) -> None:
    t0 = time.monotonic()
    r = playbook(store, "site.yml", "-e", f"edgepair_version={V_OLD}")
    assert r.returncode == 0, r.stdout[-6000:]
    for h in WORKSTATIONS:
        hh = health(store, h)
        assert hh.get("healthy") is True and hh.get("version") == V_OLD, (h, hh)
    assert len(wait(lambda: leaders(store), 30, "a leader")) == 1
    print(f"site.yml from nothing: {time.monotonic() - t0:.0f} s")


@pytest.mark.slow
def test_site_second_run_changes_nothing(store: ModuleType) -> None:
    r = playbook(store, "site.yml", "-e", f"edgepair_version={V_OLD}")
    assert r.returncode == 0, r.stdout[-6000:]
    counts = recap(r.stdout)
    assert set(counts) == {"ws-a", "ws-b", "witness1"}, r.stdout[-3000:]
    assert all(c["changed"] == 0 and c["failed"] == 0 for c in counts.values()), counts


@pytest.mark.slow
def test_a_host_whose_ssh_key_is_not_enrolled_is_refused(store: ModuleType, tmp_path: Path) -> None:
    """witness1 presents its own host key; a known_hosts that names another key for its address (ws-a's) makes the
    play fail on it with SSH's host key verification message, before anything runs there."""
    kh = (store.known_hosts()).read_text().splitlines()
    key_of = {line.split()[0].split(",")[0]: line.split(None, 1)[1] for line in kh}
    assert len(set(key_of.values())) == 3, "the lab hosts must have keys of their own"
    bad = tmp_path / "known_hosts"
    bad.write_text(f"witness1,{store.HOSTS['witness1']} {key_of['ws-a']}\n")
    args = f"-o StrictHostKeyChecking=yes -o UserKnownHostsFile={bad}"
    cp = tmp_path / "cp"  # a fresh control path: no open master to the host may skip the check
    cp.mkdir()
    r = playbook(store, "site.yml", "-e", f"edgepair_version={V_OLD}", "--limit", "witness1",
                 "-e", f"ansible_ssh_common_args='{args}'", env={"ANSIBLE_SSH_CONTROL_PATH_DIR": str(cp)})  # fmt: skip
    assert r.returncode == 4, r.stdout[-3000:]  # 4: a host unreachable
    assert "Host key verification failed" in r.stdout, r.stdout[-3000:]
    assert recap(r.stdout)["witness1"]["unreachable"] == 1, recap(r.stdout)


@pytest.mark.slow
def test_certificates_and_keys_on_the_hosts(store: ModuleType) -> None:
    """Each host holds only what it needs: keys 0600 owned by the user that reads them; no CA key on any host.
    An etcd member's certificate and key are one file, <host>.pem (etcd re-reads them at every handshake)."""
    want = {
        "ws-a": {
            "/etc/edgepair/pki/ws-a.key": "600 edgepair",
            "/etc/edgepair/pki/root.key": "600 edgepair",
            "/etc/edgepair-etcd/pki/ws-a.pem": "600 etcd",
            "/etc/edgepair-etcd/pki/root.key": "600 root",  # ws-a bootstraps etcd auth
        },
        "ws-b": {
            "/etc/edgepair/pki/ws-b.key": "600 edgepair",
            "/etc/edgepair/pki/root.key": "600 edgepair",
            "/etc/edgepair-etcd/pki/ws-b.pem": "600 etcd",
        },
        "witness1": {"/etc/edgepair-etcd/pki/witness1.pem": "600 etcd"},
    }
    for host, files in want.items():
        out = store.ssh(host, "stat -c '%n %a %U' " + " ".join(files)).stdout.split("\n")
        got = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in out if line.strip()}
        assert got == files, (host, got)
        find = "find /etc/edgepair* -name '*.key' -o -name '*.pem' 2>/dev/null | sort"
        keys = store.ssh(host, find, check=False).stdout.split()
        assert sorted(keys) == sorted(files), (host, keys)  # no ca.key, no other host's key
    assert not store.ssh("witness1", "ls /etc/edgepair 2>/dev/null", check=False).stdout.strip()


@pytest.mark.slow
def test_etcd_refuses_clients_without_a_certificate(store: ModuleType) -> None:
    ip = store.HOSTS["ws-a"]
    plain = etcdctl(store, f"http://{ip}:2379", "get", "--prefix", "/edgepair/")
    assert plain.returncode != 0, plain.stdout
    no_cert = etcdctl(store, f"https://{ip}:2379", "get", "--prefix", "/edgepair/", cert=None)
    assert no_cert.returncode != 0, no_cert.stdout
    # the admin certificate sees the users site.yml made; auth is on
    users = etcdctl(store, f"https://{ip}:2379", "user", "list")
    assert users.returncode == 0 and set(users.stdout.split()) == {"root", "ws-a", "ws-b"}, users.stdout + users.stderr
    # a workstation's certificate reaches its store's prefix only; the witness's certificate reaches nothing
    ok = etcdctl(store, f"https://{ip}:2379", "get", "--prefix", "/edgepair/lab-store/", "--keys-only", cert="ws-a")
    assert ok.returncode == 0, ok.stderr
    assert "/edgepair/lab-store/leader" in ok.stdout, ok.stdout
    outside = etcdctl(store, f"https://{ip}:2379", "put", "/edgepair/other-store/x", "1", cert="ws-a")
    assert outside.returncode != 0 and "permission denied" in outside.stderr, outside.stdout + outside.stderr
    witness = etcdctl(store, f"https://{ip}:2379", "put", "/edgepair/lab-store/pause", "1", cert="witness1")
    assert witness.returncode != 0, witness.stdout


@pytest.mark.slow
def test_health_refuses_clients_without_a_certificate(store: ModuleType) -> None:
    url = f"https://{store.HOSTS['ws-a']}:9101/health"
    assert fetch(store, url).get("healthy") is True
    no_cert = fetch(store, url, cert=False)
    assert "error" in no_cert and "healthy" not in no_cert, no_cert
    plain = fetch(store, f"http://{store.HOSTS['ws-a']}:9101/health")
    assert "error" in plain and "healthy" not in plain, plain
    metrics = subprocess.run(
        store.ctl(["curl", "-sS", "--max-time", "3", f"https://{store.HOSTS['ws-a']}:9101/metrics",
                   "--cacert", str(PKI / "ca.crt")]),
        capture_output=True, text=True,
    )  # fmt: skip
    assert metrics.returncode != 0 and "edgepair" not in metrics.stdout, metrics.stdout[:300]


@pytest.mark.slow
def test_firewall_keeps_out_other_hosts_and_keeps_data_in(store: ModuleType) -> None:
    ws_a, ws_b = store.HOSTS["ws-a"], store.HOSTS["ws-b"]
    # inbound: the controller is an admin source (etcd client port, /health); another machine on the LAN is not;
    # Arrow Flight answers the other workstation only
    assert connects(store, ws_a, 2379) == "open"
    assert connects(store, ws_a, 9101) == "open"
    for port in (2379, 2380, 8815, 9101):
        assert connects(store, ws_a, port, source=store.INTRUDER_IP) != "open", port
    assert connects(store, ws_a, 8815) != "open"
    assert connects(store, ws_a, 2380) != "open"
    assert connects(store, ws_a, 22, source=store.INTRUDER_IP) == "open"  # SSH stays reachable
    # 127.0.0.1 reaches no store port (nothing of the store listens there; local clients dial the host's address)
    code = (
        "import socket,sys\n"
        "for ip,port in [a.split(':') for a in sys.argv[1:]]:\n"
        " try: socket.create_connection((ip,int(port)),timeout=2).close(); print(ip,port,'open')\n"
        " except Exception as e: print(ip,port,type(e).__name__)\n"
    )
    targets = [f"127.0.0.1:{p}" for p in (2379, 9101, 8815)] + [f"{ws_b}:8815", f"{ws_b}:9101"]
    targets += [f"{store.CONTROLLER_IP}:18099", f"{store.INTRUDER_IP}:18099"]
    listener = subprocess.Popen(
        store.ctl([sys.executable, "-c", "import socket,time\ns=socket.create_server(('0.0.0.0',18099))\n"
                   "while True: c,_=s.accept(); c.close()"]),
    )  # fmt: skip
    try:
        time.sleep(0.5)
        out = store.ssh("ws-a", f"python3 -c {shlex.quote(code)} {' '.join(targets)}").stdout
    finally:
        listener.terminate()
        listener.wait(timeout=5)
    got = {f"{ln.split()[0]}:{ln.split()[1]}": ln.split()[2] for ln in out.splitlines() if ln.strip()}
    for p in (2379, 9101, 8815):
        assert got[f"127.0.0.1:{p}"] != "open", got
    assert got[f"{ws_b}:8815"] == "open" and got[f"{ws_b}:9101"] == "open", got  # the pair talks
    # outbound: an allowed destination (store_base_egress_allowed) answers; any other address is refused
    assert got[f"{store.CONTROLLER_IP}:18099"] == "open", got
    assert got[f"{store.INTRUDER_IP}:18099"] != "open", got
    refused = store.ssh("ws-a", "nft list chain inet edgepair output").stdout
    assert "outbound refused" in refused, refused


@pytest.mark.slow
def test_units_are_sandboxed_and_ray_runs(store: ModuleType) -> None:
    props = "-p ProtectSystem -p NoNewPrivileges -p PrivateTmp -p ProtectHome -p ReadWritePaths"
    for host, unit in (("ws-a", "edgepair"), ("ws-a", "edgepair-etcd"), ("witness1", "edgepair-etcd")):
        out = dict(
            line.split("=", 1) for line in store.ssh(host, f"systemctl show {props} {unit}").stdout.splitlines() if line
        )
        assert out["ProtectSystem"] == "strict" and out["NoNewPrivileges"] == "yes", (host, unit, out)
        assert out["PrivateTmp"] == "yes" and out["ProtectHome"] in ("yes", "true"), (host, unit, out)
    # Ray under the sandbox: every camera runs on one of the pair (the actors live in Ray)
    running = {c for h in WORKSTATIONS for c in (health(store, h).get("cameras") or [])}
    assert running == {"cam-1", "cam-2"}, running


@pytest.mark.slow
def test_missing_nftables_fails_the_play(store: ModuleType) -> None:
    r = playbook(store, "site.yml", "-e", f"edgepair_version={V_OLD}", "-e", "store_base_nft=/usr/sbin/nft-missing",
                 "--limit", "witness1")  # fmt: skip
    assert r.returncode != 0
    assert "/usr/sbin/nft-missing not found: the store firewall needs nftables" in r.stdout, r.stdout[-3000:]


# lab_extra (CI's time): CI's check-mode run is the canary's below, which must report exactly the tasks a change of
# the store config and of the passwords would change, no more.
@pytest.mark.slow
@pytest.mark.lab_extra
def test_check_diff_changes_nothing(store: ModuleType) -> None:
    r = playbook(store, "site.yml", "-e", f"edgepair_version={V_OLD}", "--check", "--diff")
    assert r.returncode == 0, r.stdout[-6000:]
    assert all(c["changed"] == 0 for c in recap(r.stdout).values()), recap(r.stdout)


@pytest.mark.slow
def test_rolling_upgrade_under_probe(store: ModuleType) -> None:
    release_bundle(V_NEW)
    cameras = {"cam-1", "cam-2"}
    leader_before = wait(lambda: leaders(store), 30, "a leader")[0]
    prober = Prober(store, CACHE / "logs" / "probe-upgrade.jsonl")
    t0 = time.monotonic()
    try:
        r = playbook(store, "rolling-upgrade.yml", "-e", f"edgepair_version={V_NEW}")
        took = time.monotonic() - t0
        time.sleep(3)
    finally:
        samples = prober.stop()
    assert r.returncode == 0, r.stdout[-6000:]
    stats = analyse(samples, cameras)
    print(f"rolling upgrade {V_OLD} -> {V_NEW} in {took:.0f} s (leader before: {leader_before}): {stats}")
    assert stats["samples"] > 10 * took * 0.5, stats  # the prober kept up with its 0.1 s period
    # Both /health answers said "leader" in one 0.1 s round: split brain, or a node reporting a stale role.
    assert stats["two_leader_samples"] == 0, f"two nodes reported role=leader in the same round: {stats}"
    assert stats["longest_leaderless_s"] < LEADERLESS_MAX_S, stats
    assert all(g < CAMERA_GAP_MAX_S for g in stats["longest_camera_gap_s"].values()), stats
    for h in WORKSTATIONS:
        assert health(store, h).get("version") == V_NEW
        prev = store.ssh(h, "readlink /opt/edgepair/previous").stdout.strip()
        assert prev.endswith(f"/{V_OLD}"), (h, prev)
    assert leaders(store) and leaders(store)[0] != leader_before, "leadership was handed to the upgraded standby"


@pytest.mark.slow
def test_rollback(store: ModuleType) -> None:
    t0 = time.monotonic()
    r = playbook(store, "rollback.yml")
    assert r.returncode == 0, r.stdout[-6000:]
    for h in WORKSTATIONS:
        assert health(store, h).get("version") == V_OLD
    assert len(leaders(store)) == 1
    print(f"rollback.yml: {time.monotonic() - t0:.0f} s")


# lab_extra (CI's time: about 3 minutes): `make test-all` runs it; its roles' tasks run in site.yml in CI.
@pytest.mark.slow
@pytest.mark.lab_extra
def test_rotate_certs_under_probe(store: ModuleType) -> None:
    def fingerprints() -> dict[str, str]:
        return {
            h: store.ssh(h, f"sha256sum /etc/edgepair-etcd/pki/{h}.pem").stdout.split()[0]
            for h in (*WORKSTATIONS, "witness1")
        }

    before = fingerprints()
    prober = Prober(store, CACHE / "logs" / "probe-rotate.jsonl")
    t0 = time.monotonic()
    try:
        r = playbook(store, "rotate-certs.yml")
        took = time.monotonic() - t0
        time.sleep(3)
    finally:
        samples = prober.stop()
    assert r.returncode == 0, r.stdout[-6000:]
    stats = analyse(samples, {"cam-1", "cam-2"})
    print(f"rotate-certs.yml in {took:.0f} s: {stats}")
    after = fingerprints()
    assert all(after[h] != before[h] for h in before), (before, after)
    for h in WORKSTATIONS:
        node_crt = store.ssh(h, f"cat /etc/edgepair/pki/{h}.crt").stdout.strip()
        assert node_crt and node_crt in store.ssh(h, f"cat /etc/edgepair-etcd/pki/{h}.pem").stdout, h
        assert health(store, h).get("healthy") is True
    assert stats["two_leader_samples"] == 0, stats
    assert stats["longest_leaderless_s"] < LEADERLESS_MAX_S, stats
    assert all(g < CAMERA_GAP_MAX_S for g in stats["longest_camera_gap_s"].values()), stats
    assert len(leaders(store)) == 1


@pytest.mark.slow
def test_failed_upgrade_leaves_the_leader_alone(store: ModuleType) -> None:
    release_bundle(V_BAD, unhealthy=True)
    leader = wait(lambda: leaders(store), 30, "a leader")[0]
    standby = next(h for h in WORKSTATIONS if h != leader)
    pid_before = main_pid(store, leader)
    t0 = time.monotonic()
    r = playbook(store, "rolling-upgrade.yml", "-e", f"edgepair_version={V_BAD}", "-e", "edgepair_health_timeout_s=30")
    took = time.monotonic() - t0
    print(f"failed upgrade stopped after {took:.0f} s")
    assert r.returncode != 0
    assert f"ROLLOUT STOPPED: {standby} did not become healthy on release {V_BAD}" in r.stdout, r.stdout[-6000:]
    assert main_pid(store, leader) == pid_before, "the leader's node was restarted"
    assert store.ssh(leader, "readlink /opt/edgepair/current").stdout.strip().endswith(f"/{V_OLD}")
    lh = health(store, leader)
    assert lh.get("role") == "leader" and lh.get("version") == V_OLD, lh
    # the standby was pointed back at the release it ran
    assert store.ssh(standby, "readlink /opt/edgepair/current").stdout.strip().endswith(f"/{V_OLD}")
    wait(lambda: health(store, standby).get("healthy"), 60, f"{standby} healthy again on {V_OLD}")


@pytest.mark.slow
def test_camera_passwords_only_in_the_credentials_file(store: ModuleType, lab_passwords: dict[str, str],
                                                       tmp_path: Path) -> None:  # fmt: skip
    """The canary of issue 13 over the lab's rollout and failed rollout: cam-1's password came in
    edgepair_camera_credentials, cam-2's written into its stream URL (conftest.write_secrets). After everything
    above, and a --check --diff run that would change the store config and both passwords, the passwords (old and
    new, raw and %-encoded) are in the workstations' credentials file and nowhere else: not in any file the hosts
    wrote, their tmpfs or journal, what ansible-playbook printed (the ROLLOUT STOPPED message and the diff included),
    the rendered store.yaml, nor the controller's logs."""
    from tests.e2e.test_canary import lab_canary_hits, lab_credentials_files

    assert lab_credentials_files(store, lab_passwords) == {"ws-a": "600 edgepair cam-1,cam-2",
                                                           "ws-b": "600 edgepair cam-1,cam-2"}  # fmt: skip
    for h in WORKSTATIONS:
        cfg = store.ssh(h, "cat /etc/edgepair/store.yaml").stdout
        assert "credentials_file: /etc/edgepair/cameras.yaml" in cfg and "source: rtsp://10.200.0.1:8554/cam-2" in cfg
    # a change of both passwords and of cam-1's fps, in check mode with --diff: the store config's diff shows, the
    # credentials file changes without one
    new = {"cam-1": f"Canary1b-{secrets.token_hex(6)}", "cam-2": f"Canary2b-{secrets.token_hex(6)}"}
    doc = yaml.safe_load(SECRETS.read_text())
    doc["edgepair_camera_credentials"]["cam-1"]["password"] = new["cam-1"]
    for cam in doc["edgepair_cameras"]:
        if cam["id"] == "cam-1":
            cam["fps"] = 3
        else:
            cam["source"] = cam["source"].replace(lab_passwords["cam-2"], new["cam-2"])
    changed = tmp_path / "changed.yml"
    fd = os.open(changed, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(doc, f, sort_keys=False)
    try:
        r = playbook(store, "site.yml", "-e", f"edgepair_version={V_OLD}", "--limit", "ws-a", "--check", "--diff",
                     "-e", f"@{changed}")  # fmt: skip
    finally:
        changed.unlink()
    assert r.returncode == 0, r.stdout[-4000:]
    # Check mode reports exactly what the change would change: the store config and the credentials file, and the
    # node's restart they call for; nothing else on ws-a (the host's certificates, units, firewall, etcd unchanged).
    assert changed_tasks(r.stdout) == {
        "ws-a": [
            "edgepair : Write the camera credentials file (0600, the service user's)",
            "edgepair : Write the store config (validated by the release it will run)",
            "edgepair : Restart edgepair",
        ]
    }, r.stdout[-6000:]
    assert recap(r.stdout)["ws-a"]["changed"] == 3, recap(r.stdout)
    diff = r.stdout[r.stdout.index("--- before: /etc/edgepair/store.yaml") :]  # the store config's diff was shown
    assert "\n+  fps: 3\n" in diff and "\n-  fps: 2\n" in diff, diff[:3000]
    assert "TASK [edgepair : Write the camera credentials file (0600, the service user's)]" in r.stdout
    every = {**lab_passwords, **{f"{c} (new)": p for c, p in new.items()}}
    controller = [CACHE / "logs", PKI, ANSIBLE_DIR / "drill-reports"]
    hits = lab_canary_hits(store, every, outputs=OUTPUTS, controller=controller)
    assert hits == []

#!/usr/bin/env python3
"""A store on this machine for testing the Ansible roles on real SSH hosts: ``lab.py up | down | status | run``.

Hosts: ws-a, ws-b (the workstation pair) and witness1 (the third etcd member), each

* a network namespace ``ep-<host>`` with a veth to a bridge in the controller's namespace ``ep-ctl``
  (10.200.0.0/24: controller .1, ws-a .11, ws-b .12, witness1 .13; no address outside these namespaces). The bridge
  also holds .99, ``INTRUDER_IP``: another machine on the store's LAN, which the store firewall must keep out (a
  test binds a socket to it to play the attacker);
* a copy-on-write overlay of this machine's root (upper layer on a tmpfs, so nothing is written to the real root),
  prepared with its own hostname, /etc/hosts, ``nameserver 127.0.0.1`` (fact gathering does not wait on the
  machine's unreachable resolver), the lab's SSH key, and every unit the machine's root enables masked except sshd;
* ``systemd-nspawn --boot`` in a private mount namespace (``unshare --mount --fork``, a tmpfs over /run/systemd),
  so systemd is PID 1 and ``systemctl`` works.

Ansible runs in ``ep-ctl`` (``lab.py run -- ansible-playbook ...``). Every process is recorded by pid in
``<lab dir>/state.json`` and ``down`` stops them by pid (nspawn, not ``unshare``, which swallows SIGTERM), closes the
SSH ControlPersist masters, and deletes the namespaces. ``down`` is safe to run at any time, also after a crash.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

LAB_DIR = Path(os.environ.get("EDGEPAIR_LAB_DIR", "/var/tmp/edgepair-lab"))
CTL_NS = "ep-ctl"
SUBNET = "10.200.0"
CONTROLLER_IP = f"{SUBNET}.1"
INTRUDER_IP = f"{SUBNET}.99"
HOSTS = {"ws-a": f"{SUBNET}.11", "ws-b": f"{SUBNET}.12", "witness1": f"{SUBNET}.13"}
KEEP_UNITS = {"ssh.service"}
BOOT_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0

NSPAWN_SCRIPT = r"""
set -eu
mount --make-rprivate /
mkdir -p "$ROOT"
mount -t tmpfs -o size=12g,mode=0755 "lab-$HOST" "$ROOT"
mkdir -p "$ROOT/upper" "$ROOT/work" "$ROOT/merged"
mount -t overlay overlay -o "lowerdir=/,upperdir=$ROOT/upper,workdir=$ROOT/work" "$ROOT/merged"
M="$ROOT/merged"
echo "$HOST" > "$M/etc/hostname"
rm -f "$M/etc/resolv.conf"; echo "nameserver 127.0.0.1" > "$M/etc/resolv.conf"
cp "$LAB/hosts" "$M/etc/hosts"
for link in "$M"/etc/systemd/system/*.wants/*; do
  unit="$(basename "$link")"
  case " $KEEP " in *" $unit "*) continue ;; esac
  ln -sfn /dev/null "$M/etc/systemd/system/$unit"
done
ln -sfn /dev/null "$M/etc/systemd/system/etcd.service"
mkdir -p "$M/root/.ssh"; chmod 700 "$M/root/.ssh"
cp "$LAB/ssh/id_ed25519.pub" "$M/root/.ssh/authorized_keys"; chmod 600 "$M/root/.ssh/authorized_keys"
rm -rf "$M/opt/edgepair" "$M/etc/edgepair" "$M/var/lib/edgepair" "$M/var/lib/edgepair-etcd"
mkdir -p /run/systemd; mount -t tmpfs tmpfs /run/systemd
exec systemd-nspawn --quiet --boot --directory="$M" --machine="$HOST" --hostname="$HOST" \
  --network-namespace-path="/run/netns/ep-$HOST" --register=no --keep-unit --console=passive \
  --resolv-conf=off --timezone=off --link-journal=no --capability=CAP_NET_ADMIN
"""


def sh(cmd: Sequence[str], check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), check=check, timeout=timeout, capture_output=True, text=True)


def ctl(cmd: Sequence[str]) -> list[str]:
    """The argv that runs ``cmd`` on the controller (in the lab's controller namespace)."""
    return ["ip", "netns", "exec", CTL_NS, *cmd]


def ansible_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for ansible-playbook against the lab: its own SSH control path dir, closed by ``down``."""
    env = dict(base if base is not None else os.environ)
    env["ANSIBLE_SSH_CONTROL_PATH_DIR"] = str(LAB_DIR / "cp")
    env["ANSIBLE_PRIVATE_KEY_FILE"] = str(LAB_DIR / "ssh" / "id_ed25519")
    env["ANSIBLE_HOST_KEY_CHECKING"] = "False"
    return env


def _state() -> dict:
    try:
        return json.loads((LAB_DIR / "state.json").read_text())
    except (OSError, ValueError):
        return {}


def _save(state: dict) -> None:
    LAB_DIR.mkdir(parents=True, exist_ok=True)
    tmp = LAB_DIR / "state.json.tmp"
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(LAB_DIR / "state.json")


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_gone(pids: Sequence[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(_alive(p) for p in pids):
            return True
        time.sleep(0.1)
    return not any(_alive(p) for p in pids)


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _network_up() -> None:
    sh(["ip", "netns", "add", CTL_NS])
    sh(ctl(["ip", "link", "set", "lo", "up"]))
    sh(ctl(["ip", "link", "add", "br0", "type", "bridge"]))
    sh(ctl(["ip", "addr", "add", f"{CONTROLLER_IP}/24", "dev", "br0"]))
    sh(ctl(["ip", "addr", "add", f"{INTRUDER_IP}/24", "dev", "br0"]))
    sh(ctl(["ip", "link", "set", "br0", "up"]))
    for host, ip in HOSTS.items():
        ns = f"ep-{host}"
        sh(["ip", "netns", "add", ns])
        sh(["ip", "link", "add", f"v-{host}", "netns", CTL_NS, "type", "veth", "peer", "name", "eth0", "netns", ns])
        sh(ctl(["ip", "link", "set", f"v-{host}", "master", "br0"]))
        sh(ctl(["ip", "link", "set", f"v-{host}", "up"]))
        sh(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"])
        sh(["ip", "netns", "exec", ns, "ip", "addr", "add", f"{ip}/24", "dev", "eth0"])
        sh(["ip", "netns", "exec", ns, "ip", "link", "set", "eth0", "up"])


def _ssh_argv(ip: str, command: str) -> list[str]:
    key = LAB_DIR / "ssh" / "id_ed25519"
    opts = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=2", "-o", "StrictHostKeyChecking=no"]
    opts += ["-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-i", str(key)]
    return ctl(["ssh", *opts, f"root@{ip}", command])


def ssh(host: str, command: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a shell command on a lab host (a fresh connection: no control master to close)."""
    return sh(_ssh_argv(HOSTS[host], command), check=check, timeout=timeout)


def up() -> dict:
    if _state().get("hosts"):
        raise SystemExit(f"lab already up (state in {LAB_DIR}/state.json): run `lab.py down` first")
    down(quiet=True)
    for d in ("ssh", "cp", "logs"):
        (LAB_DIR / d).mkdir(parents=True, exist_ok=True)
    key = LAB_DIR / "ssh" / "id_ed25519"
    if not key.exists():
        sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgepair-lab", "-f", str(key)])
    hosts_text = "127.0.0.1 localhost\n" + f"{CONTROLLER_IP} controller\n"
    hosts_text += "".join(f"{ip} {h}\n" for h, ip in HOSTS.items())
    (LAB_DIR / "hosts").write_text(hosts_text)
    state: dict = {"hosts": {}, "started": time.time()}
    _save(state)
    t0 = time.monotonic()
    try:
        _network_up()
        for host in HOSTS:
            env = dict(os.environ, HOST=host, LAB=str(LAB_DIR), ROOT=f"{LAB_DIR}/roots/{host}")
            env["KEEP"] = " ".join(sorted(KEEP_UNITS))
            log = open(LAB_DIR / "logs" / f"{host}.console", "ab")
            proc = subprocess.Popen(
                ["unshare", "--mount", "--fork", "--", "sh", "-c", NSPAWN_SCRIPT],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            log.close()
            state["hosts"][host] = {"unshare": proc.pid, "ip": HOSTS[host]}
            _save(state)
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        for host, ip in HOSTS.items():
            while True:
                r = sh(_ssh_argv(ip, "systemctl is-system-running --wait >/dev/null 2>&1; echo ok"), check=False)
                if r.returncode == 0 and "ok" in r.stdout:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"lab host {host} ({ip}) not reachable over SSH after {BOOT_TIMEOUT_S:.0f} s")
                time.sleep(0.3)
        for info in state["hosts"].values():
            kids = _children(info["unshare"])
            info["nspawn"] = kids[0] if kids else None
        state["boot_s"] = round(time.monotonic() - t0, 1)
        _save(state)
    except BaseException:
        down(quiet=True)
        raise
    return state


def down(quiet: bool = False) -> None:
    state = _state()
    cp = LAB_DIR / "cp"
    if cp.is_dir():
        for sock in cp.iterdir():
            sh(ctl(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "lab"]), check=False, timeout=10)
            sock.unlink(missing_ok=True)
    for host, info in state.get("hosts", {}).items():
        upid = info.get("unshare")
        if not upid or not _alive(upid):
            continue
        nspawn = _children(upid) or ([info["nspawn"]] if info.get("nspawn") else [])
        for p in nspawn:
            _kill(p, signal.SIGTERM)  # nspawn powers the container off (SIGRTMIN+3 to its init)
        if not _wait_gone([upid], STOP_TIMEOUT_S):
            for p in nspawn:
                for init in _children(p):
                    _kill(init, signal.SIGKILL)  # the container's PID 1: the whole PID namespace goes with it
                _kill(p, signal.SIGKILL)
            _kill(upid, signal.SIGKILL)
            if not _wait_gone([upid], 5) and not quiet:
                print(f"warning: {host}: unshare pid {upid} still alive", file=sys.stderr)
    for host in HOSTS:
        sh(["ip", "netns", "delete", f"ep-{host}"], check=False)
    sh(["ip", "netns", "delete", CTL_NS], check=False)
    (LAB_DIR / "state.json").unlink(missing_ok=True)
    if not quiet:
        print("lab down")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="lab.py", description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=["up", "down", "status", "run", "ssh"])
    p.add_argument("rest", nargs=argparse.REMAINDER, help="run: a controller command; ssh: HOST COMMAND")
    args = p.parse_args(argv)
    if args.action == "up":
        st = up()
        print(f"lab up in {st['boot_s']} s: " + ", ".join(f"{h} {i['ip']}" for h, i in st["hosts"].items()))
        print(f"controller commands: {sys.argv[0]} run -- ansible-playbook -i deploy/ansible/inventories/lab ...")
        return 0
    if args.action == "down":
        down()
        return 0
    if args.action == "status":
        print(json.dumps(_state(), indent=2))
        return 0
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    if args.action == "ssh":
        host, command = rest[0], " ".join(rest[1:])
        return subprocess.call(_ssh_argv(HOSTS[host], command))
    if not rest:
        p.error("run needs a command")
    return subprocess.call(ctl(rest), env=ansible_env())


if __name__ == "__main__":
    sys.exit(main())

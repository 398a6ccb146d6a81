#!/usr/bin/env python3
"""A store on this machine for testing the Ansible roles on real SSH hosts: ``lab.py up | down | status | run``.

Hosts: ws-a, ws-b (the workstation pair) and witness1 (the third etcd member), each

* a network namespace ``ep-<host>`` with a veth to a bridge in the controller's namespace ``ep-ctl``
  (10.200.0.0/24: controller .1, ws-a .11, ws-b .12, witness1 .13; no address outside these namespaces). The bridge
  also holds .99, ``INTRUDER_IP``: another machine on the store's LAN, which the store firewall must keep out (a
  test binds a socket to it to play the attacker);
* a copy-on-write overlay of this machine's root (upper layer on a tmpfs, so nothing is written to the real root),
  prepared with its own hostname, /etc/hosts, ``nameserver 127.0.0.1`` (fact gathering does not wait on the
  machine's unreachable resolver), the lab's SSH key, an SSH host key of its own, and every unit the machine's root
  enables masked except sshd;
* ``systemd-nspawn --boot`` in a private mount namespace (``unshare --mount --fork``, a tmpfs over /run/systemd),
  so systemd is PID 1 and ``systemctl`` works. A shell keeps that mount namespace (and so the host's disk) while the
  container is off: ``power-off`` is a whole machine dying at once (its link cut, then its PID 1 SIGKILLed: every
  process of the host, its etcd member included, gone in one go), ``power-on`` boots it again on the same disk.

SSH host keys are checked: ``up`` makes an ed25519 host key per host and writes ``<lab dir>/known_hosts`` with them;
the lab inventory points ``UserKnownHostsFile`` there with ``StrictHostKeyChecking=yes``, as a real store's inventory
points at the known_hosts its operator verified.

The store's cameras are RTSP cameras on the controller, reachable from every host: ``cluster/camsim.py`` (GStreamer)
serving vtest.avi as ``rtsp://10.200.0.1:8554/cam-1`` and ``cam-2``.

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
REPO = Path(__file__).resolve().parents[2]
CAMSIM = REPO / "cluster" / "camsim.py"
CAMERA_PORT = 8554
CAMERA_FILE = "/usr/share/doc/opencv-doc/examples/data/vtest.avi"
CAMERAS = ("cam-1", "cam-2")

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
rm -f "$M"/etc/ssh/ssh_host_*
cp "$LAB/hostkeys/$HOST" "$M/etc/ssh/ssh_host_ed25519_key"; chmod 600 "$M/etc/ssh/ssh_host_ed25519_key"
cp "$LAB/hostkeys/$HOST.pub" "$M/etc/ssh/ssh_host_ed25519_key.pub"
mkdir -p "$M/etc/ssh/sshd_config.d"
echo "HostKey /etc/ssh/ssh_host_ed25519_key" > "$M/etc/ssh/sshd_config.d/00-edgepair-lab.conf"
# A cgroup of its own per host (in every hierarchy systemd uses): nspawn makes the container's tree under the
# cgroup it runs in, and three containers in one tree would see each other's units (systemctl kill fails on them).
trees="/sys/fs/cgroup/systemd /sys/fs/cgroup/unified"
[ -e /sys/fs/cgroup/cgroup.controllers ] && trees=/sys/fs/cgroup
for t in $trees; do
  [ -d "$t" ] || continue
  mkdir -p "$t/$CGROUP" && echo $$ > "$t/$CGROUP/cgroup.procs"
done
mkdir -p /run/systemd
set +e
# One boot per turn. Powered off (the container gone), the shell keeps this mount namespace, so the host's disk
# (the overlay) survives until `lab.py power-on` asks for the next boot ($LAB/run/$HOST.on) or `down` ends it.
while :; do
  rm -f "$LAB/run/$HOST.on"
  mount -t tmpfs tmpfs /run/systemd
  systemd-nspawn --quiet --boot --directory="$M" --machine="$HOST" --hostname="$HOST" \
    --network-namespace-path="/run/netns/ep-$HOST" --register=no --keep-unit --console=passive \
    --resolv-conf=off --timezone=off --link-journal=no --capability=CAP_NET_ADMIN
  umount -l /run/systemd
  echo "lab: $HOST powered off"
  while [ ! -e "$LAB/run/$HOST.on" ]; do
    [ -e "$LAB/run/$HOST.down" ] && exit 0
    sleep 0.1
  done
done
"""


def sh(
    cmd: Sequence[str], check: bool = True, timeout: float = 30, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), check=check, timeout=timeout, capture_output=True, text=True, input=input)


def ctl(cmd: Sequence[str]) -> list[str]:
    """The argv that runs ``cmd`` on the controller (in the lab's controller namespace)."""
    return ["ip", "netns", "exec", CTL_NS, *cmd]


def ansible_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for ansible-playbook against the lab: its own SSH control path dir, closed by ``down``."""
    env = dict(base if base is not None else os.environ)
    env["ANSIBLE_SSH_CONTROL_PATH_DIR"] = str(LAB_DIR / "cp")
    env["ANSIBLE_PRIVATE_KEY_FILE"] = str(LAB_DIR / "ssh" / "id_ed25519")
    env["EDGEPAIR_LAB_DIR"] = str(LAB_DIR)  # the lab inventory's UserKnownHostsFile is <lab dir>/known_hosts
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


def known_hosts() -> Path:
    """The lab's known_hosts: each host's own ed25519 key, written by ``up``."""
    return LAB_DIR / "known_hosts"


def _ssh_argv(ip: str, command: str) -> list[str]:
    key = LAB_DIR / "ssh" / "id_ed25519"
    opts = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=2", "-o", "StrictHostKeyChecking=yes"]
    opts += ["-o", f"UserKnownHostsFile={known_hosts()}", "-o", "LogLevel=ERROR", "-i", str(key)]
    return ctl(["ssh", *opts, f"root@{ip}", command])


def _host_keys() -> None:
    """A fresh ed25519 host key per host, and the known_hosts that names them (by name and address)."""
    keys = LAB_DIR / "hostkeys"
    keys.mkdir(parents=True, exist_ok=True)
    lines = []
    for host, ip in HOSTS.items():
        for f in (keys / host, keys / f"{host}.pub"):
            f.unlink(missing_ok=True)
        sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"edgepair-lab-{host}", "-f", str(keys / host)])
        kind, blob = (keys / f"{host}.pub").read_text().split()[:2]
        lines.append(f"{host},{ip} {kind} {blob}\n")
    tmp = known_hosts().with_suffix(".tmp")
    tmp.write_text("".join(lines))
    tmp.replace(known_hosts())


def camera_url(name: str) -> str:
    """The RTSP URL of one of the lab's cameras (served on the controller's address)."""
    return f"rtsp://{CONTROLLER_IP}:{CAMERA_PORT}/{name}"


def _cameras_up(state: dict) -> None:
    """camsim in the controller's namespace on CONTROLLER_IP, one stream per camera; waits for its READY line."""
    out, err = LAB_DIR / "logs" / "camsim.out", LAB_DIR / "logs" / "camsim.log"
    out.unlink(missing_ok=True)
    args = ["/usr/bin/python3", str(CAMSIM), "--host", CONTROLLER_IP, "--port", str(CAMERA_PORT), "--kbps", "800"]
    for cam in CAMERAS:
        args += ["--stream", f"{cam}={CAMERA_FILE}"]
    with open(out, "wb") as o, open(err, "ab") as e:
        proc = subprocess.Popen(ctl(args), stdin=subprocess.DEVNULL, stdout=o, stderr=e, start_new_session=True)
    state["camsim"] = proc.pid  # ip netns exec execs camsim: this pid is camsim's
    _save(state)
    deadline = time.monotonic() + 60
    while not out.read_text(errors="replace").startswith("READY "):
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = " | ".join(err.read_text(errors="replace").strip().splitlines()[-3:])
            raise RuntimeError(f"lab cameras (camsim) did not start: {tail or 'no output'} (log: {err})")
        time.sleep(0.2)


def _cgroup(host: str) -> str:
    return f"edgepair-lab-{host}"


def _remove_cgroups(host: str) -> None:
    """The host's cgroups, deepest first (each is empty once its container is gone)."""
    tops = [Path("/sys/fs/cgroup")] if Path("/sys/fs/cgroup/cgroup.controllers").exists() else [
        Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup/unified")]  # fmt: skip
    for top in tops:
        root = top / _cgroup(host)
        if not root.is_dir():
            continue
        for d in [*sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)), root]:
            try:
                d.rmdir()
            except OSError:
                pass


def _nspawn_pid(host: str) -> int | None:
    """The running systemd-nspawn of ``host`` (a child of the shell that keeps its disk), or None when it is off."""
    upid = _state().get("hosts", {}).get(host, {}).get("unshare")
    for shell in _children(upid) if upid else []:
        for p in _children(shell):
            if _alive(p) and Path(f"/proc/{p}/comm").read_text().strip() == "systemd-nspawn":
                return p
    return None


def power_off(host: str) -> float:
    """The whole machine dies at once: its link goes down (nothing it sends leaves, no FIN or RST reaches the
    others), then its PID 1 is SIGKILLed, which takes every process of its PID namespace with it (the node agent,
    its Ray, its etcd member, sshd). Returns the time of the kill (UTC epoch s)."""
    nspawn = _nspawn_pid(host)
    if nspawn is None:
        raise RuntimeError(f"lab host {host} is not running")
    sh(["ip", "-n", CTL_NS, "link", "set", f"v-{host}", "down"])
    t = time.time()
    for init in _children(nspawn):
        _kill(init, signal.SIGKILL)
    if not _wait_gone([nspawn], STOP_TIMEOUT_S):
        raise RuntimeError(
            f"lab host {host}: systemd-nspawn (pid {nspawn}) still running {STOP_TIMEOUT_S:.0f} s "
            "after its PID 1 was killed"
        )
    return t


def power_on(host: str, wait: bool = True) -> None:
    """Boot ``host`` again on its own disk and bring its link up; with ``wait``, until its SSH answers."""
    if _nspawn_pid(host) is None:
        (LAB_DIR / "run").mkdir(parents=True, exist_ok=True)
        (LAB_DIR / "run" / f"{host}.on").touch()
        deadline = time.monotonic() + 10
        while _nspawn_pid(host) is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"lab host {host} did not start booting within 10 s")
            time.sleep(0.1)
    sh(["ip", "-n", CTL_NS, "link", "set", f"v-{host}", "up"])
    if wait:
        _wait_ssh(host, time.monotonic() + BOOT_TIMEOUT_S)


def _wait_ssh(host: str, deadline: float) -> None:
    while True:
        r = sh(_ssh_argv(HOSTS[host], "systemctl is-system-running --wait >/dev/null 2>&1; echo ok"), check=False)
        if r.returncode == 0 and "ok" in r.stdout:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"lab host {host} ({HOSTS[host]}) not reachable over SSH after {BOOT_TIMEOUT_S:.0f} s")
        time.sleep(0.3)


def ssh(
    host: str, command: str, timeout: float = 30, check: bool = True, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a shell command on a lab host (a fresh connection: no control master to close); ``input``: its stdin."""
    return sh(_ssh_argv(HOSTS[host], command), check=check, timeout=timeout, input=input)


def disk_grep(host: str, patterns: Sequence[str]) -> list[str]:
    """Every file ``host`` wrote to its disk (the upper layer of its overlay) that holds one of ``patterns``
    (fixed strings, given on grep's stdin, never on a command line): paths as the host sees them."""
    upid = _state().get("hosts", {}).get(host, {}).get("unshare")
    shells = _children(upid) if upid else []
    if not shells:
        raise RuntimeError(f"lab host {host} is not up")
    upper = f"{LAB_DIR}/roots/{host}/upper"
    cmd = [
        "nsenter",
        f"--target={shells[0]}",
        "--mount",
        "--",
        "grep",
        "-rlaF",
        "-D",
        "skip",
        "-f",
        "/dev/stdin",
        upper,
    ]
    r = sh(cmd, check=False, timeout=300, input="\n".join(patterns) + "\n")
    if r.returncode not in (0, 1):
        raise RuntimeError(f"grep of {host}'s disk failed: {r.stderr.strip()[-300:]}")
    return sorted(line[len(upper) :] for line in r.stdout.splitlines() if line.startswith(upper))


def up() -> dict:
    state = _state()
    pids = [h.get("unshare") for h in state.get("hosts", {}).values()] + [state.get("camsim")]
    if any(p and _alive(p) for p in pids):
        raise SystemExit(f"lab already up (state in {LAB_DIR}/state.json): run `lab.py down` first")
    if state.get("hosts"):  # a lab whose processes are all gone (the machine restarted, a run was killed)
        print(f"lab: state in {LAB_DIR}/state.json is stale (none of its processes runs): cleaning it up", flush=True)
    down(quiet=True)
    for d in ("ssh", "cp", "logs", "run"):
        (LAB_DIR / d).mkdir(parents=True, exist_ok=True)
    for marker in (LAB_DIR / "run").iterdir():
        marker.unlink()
    key = LAB_DIR / "ssh" / "id_ed25519"
    if not key.exists():
        sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgepair-lab", "-f", str(key)])
    _host_keys()
    hosts_text = "127.0.0.1 localhost\n" + f"{CONTROLLER_IP} controller\n"
    hosts_text += "".join(f"{ip} {h}\n" for h, ip in HOSTS.items())
    (LAB_DIR / "hosts").write_text(hosts_text)
    state: dict = {"hosts": {}, "started": time.time()}
    _save(state)
    t0 = time.monotonic()
    try:
        _network_up()
        for host in HOSTS:
            env = dict(os.environ, HOST=host, LAB=str(LAB_DIR), ROOT=f"{LAB_DIR}/roots/{host}", CGROUP=_cgroup(host))
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
        _cameras_up(state)
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        for host in HOSTS:
            _wait_ssh(host, deadline)
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
    cam = state.get("camsim")
    if cam and _alive(cam):
        _kill(cam, signal.SIGTERM)
        if not _wait_gone([cam], 10):
            _kill(cam, signal.SIGKILL)
    (LAB_DIR / "run").mkdir(parents=True, exist_ok=True)
    for host in HOSTS:
        (LAB_DIR / "run" / f"{host}.down").touch()  # a powered-off host's shell ends instead of waiting
    for host, info in state.get("hosts", {}).items():
        upid = info.get("unshare")
        if not upid or not _alive(upid):
            continue
        nspawn = _nspawn_pid(host)
        if nspawn:
            _kill(nspawn, signal.SIGTERM)  # nspawn powers the container off (SIGRTMIN+3 to its init)
        if not _wait_gone([upid], STOP_TIMEOUT_S):
            nspawn = _nspawn_pid(host)
            for init in _children(nspawn) if nspawn else []:
                _kill(init, signal.SIGKILL)  # the container's PID 1: the whole PID namespace goes with it
            for shell in _children(upid):
                for p in _children(shell):
                    _kill(p, signal.SIGKILL)
                _kill(shell, signal.SIGKILL)
            _kill(upid, signal.SIGKILL)
            if not _wait_gone([upid], 5) and not quiet:
                print(f"warning: {host}: unshare pid {upid} still alive", file=sys.stderr)
    for host in HOSTS:
        _remove_cgroups(host)
        sh(["ip", "netns", "delete", f"ep-{host}"], check=False)
    sh(["ip", "netns", "delete", CTL_NS], check=False)
    for marker in (LAB_DIR / "run").iterdir():
        marker.unlink()
    (LAB_DIR / "state.json").unlink(missing_ok=True)
    if not quiet:
        print("lab down")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="lab.py", description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=["up", "down", "status", "run", "ssh", "power-off", "power-on"])
    p.add_argument(
        "rest", nargs=argparse.REMAINDER, help="run: a controller command; ssh: HOST COMMAND; power-off/-on: HOST"
    )
    args = p.parse_args(argv)
    if args.action == "up":
        st = up()
        print(f"lab up in {st['boot_s']} s: " + ", ".join(f"{h} {i['ip']}" for h, i in st["hosts"].items()))
        print(f"cameras: {', '.join(camera_url(c) for c in CAMERAS)}")
        print(f"controller commands: {sys.argv[0]} run -- ansible-playbook -i deploy/ansible/inventories/lab ...")
        return 0
    if args.action == "down":
        down()
        return 0
    if args.action == "status":
        print(json.dumps(_state(), indent=2))
        return 0
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    if args.action in ("power-off", "power-on"):
        if len(rest) != 1 or rest[0] not in HOSTS:
            p.error(f"{args.action} needs one host: {', '.join(HOSTS)}")
        try:
            if args.action == "power-off":
                print(f"{rest[0]} powered off at {power_off(rest[0]):.3f}")
            else:
                power_on(rest[0])
                print(f"{rest[0]} booted")
        except RuntimeError as exc:
            print(f"lab.py: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.action == "ssh":
        host, command = rest[0], " ".join(rest[1:])
        return subprocess.call(_ssh_argv(HOSTS[host], command))
    if not rest:
        p.error("run needs a command")
    return subprocess.call(ctl(rest), env=ansible_env())


if __name__ == "__main__":
    sys.exit(main())

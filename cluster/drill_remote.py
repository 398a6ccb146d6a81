"""A deployed store as a drill target: its hosts over SSH, its ``/health`` over mutual TLS, faults as commands.

:class:`RemoteStore` implements :class:`cluster.drill_target.DrillTarget` for a store installed by
``deploy/ansible``. It is built from a *target file* (JSON or YAML, what ``drill.yml`` writes from the inventory):

.. code-block:: yaml

    pki_dir: /path/to/pki/<store>          # the controller's store PKI: ca.crt, root.crt, root.key (admin)
    config_path: /etc/edgepair/store.yaml  # the store config on the workstations
    units: {node: edgepair.service, etcd: edgepair-etcd.service}
    hosts:
      ws-a:                                # the inventory name (= the node's name in the store config)
        address: 10.0.0.11
        role: workstation                  # or witness (the third etcd member)
        ssh: {user: root, port: 22, key: ~/.ssh/id_ed25519, args: "-o UserKnownHostsFile=..."}
        power_off: "ipmitool ... chassis power off"   # optional, run on this machine (kill-node)
        power_on: "ipmitool ... chassis power on"

or from an Ansible inventory, which ``drill.yml`` turns into that file first (:func:`render_inventory`).

SSH (:mod:`cluster.drill_ssh`): the same user, key and known_hosts as Ansible, with ``BatchMode=yes`` and
``StrictHostKeyChecking=yes`` put first (ssh keeps the first value of an option, so no inventory can turn host-key
checking off here), bounded timeouts, and one control master per host in a private folder, so that a fault is one
round trip away.

Faults (the victim is the leading workstation unless said otherwise):

- ``kill-node``: the whole workstation at once. With ``power_off``/``power_on`` (a BMC; in the lab, the nspawn machine
  killed with its link cut) the machine dies and boots again; otherwise ``systemctl kill --signal=SIGKILL`` of the
  node and etcd units at once, kept down (``systemctl stop`` cancels systemd's restart) until the restore starts them;
- ``kill-leader``: ``systemctl kill --signal=SIGKILL`` of the node unit (the agent and its Ray); systemd restarts it
  (``Restart=on-failure``), as it would in the field;
- ``freeze-node``: SIGSTOP to every process of the node unit's cgroup, SIGCONT after ``hold_s``;
- ``partition``: an nftables table on the victim (priority before the store firewall) dropping every packet to and
  from the other store hosts, both directions; the controller (SSH, ``/health``) is not cut, so the drill observes
  and heals. A dead man's switch (a systemd timer on the victim) deletes the table if the controller never heals it;
- ``kill-etcd-leader`` and ``lose-quorum``: ``systemctl kill --signal=SIGKILL`` of the etcd unit of the raft leader
  (found with etcd's Status) or of the two members other than the leader's, started again after ``hold_s``;
- ``kill-actor``: SIGKILL of the camera actor's pid (``/health``'s camera status) on its workstation;
- ``switchover``: :func:`failover.admin.switchover` with the admin identity.

Data: :meth:`RemoteStore.data_dirs` copies the date folders of the span of each workstation's data dir (``tar`` over
SSH) into a private 0700 folder, removed by :meth:`RemoteStore.close`. Every command and error shown is redacted.
"""

from __future__ import annotations

import io
import ipaddress
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from cluster.drill_ssh import (
    BOOT_WAIT_S,
    SSH_OPTIONS,
    DrillTargetError,
    Host,
    Ssh,
    SshHosts,
    host_ip,
    run_local,
    ssh_argv,
    ssh_failure,
)
from cluster.drill_target import GRAY_SCENARIOS, SCENARIOS, Restore, seq
from cluster.errors import ConfigError, EdgepairError
from cluster.redact import redact

log = logging.getLogger(__name__)

__all__ = [
    "BOOT_WAIT_S",
    "SSH_OPTIONS",
    "DrillTargetError",
    "Host",
    "RemoteStore",
    "Ssh",
    "StoreSpec",
    "cut_command",
    "heal_command",
    "is_target_file",
    "kill_units",
    "local_dates",
    "parse_spec",
    "partition_script",
    "render_inventory",
    "ssh_argv",
    "ssh_failure",
    "tar_command",
]

CUT_TABLE = "edgepair-drill"
DEAD_MAN_S = 120.0  # a cut outlives its hold by this much at most, if the controller never comes back to heal it


@dataclass(frozen=True)
class StoreSpec:
    hosts: dict[str, Host]
    pki_dir: Path
    source: str
    config_path: str = "/etc/edgepair/store.yaml"
    node_unit: str = "edgepair.service"
    etcd_unit: str = "edgepair-etcd.service"

    @property
    def workstations(self) -> list[str]:
        return [h for h, v in self.hosts.items() if v.role == "workstation"]


def parse_spec(doc: Any, source: str) -> StoreSpec:
    """A :class:`StoreSpec` from a target file's mapping; one :class:`DrillTargetError` naming the key otherwise."""

    def bad(where: str, what: str) -> DrillTargetError:
        return DrillTargetError(f"drill target {source}: {where}: {what}")

    if not isinstance(doc, dict) or not isinstance(doc.get("hosts"), dict) or not doc["hosts"]:
        raise bad("hosts", "expected a mapping of host name to {address, role, ssh}")
    unknown = set(doc) - {"hosts", "pki_dir", "config_path", "units", "store"}
    if unknown:
        raise bad(", ".join(sorted(unknown)), "unknown keys (known: hosts, pki_dir, config_path, units, store)")
    if not doc.get("pki_dir"):
        raise bad("pki_dir", "missing: the controller's certificate folder of the store (ca.crt, root.crt, root.key)")
    hosts: dict[str, Host] = {}
    for name, h in doc["hosts"].items():
        where = f"hosts.{name}"
        if not isinstance(h, dict) or not h.get("address"):
            raise bad(where, "expected {address: <IP or name>, role: workstation|witness, ssh: {...}}")
        role = h.get("role", "workstation")
        if role not in ("workstation", "witness"):
            raise bad(f"{where}.role", f"expected workstation or witness, got {role!r}")
        s = h.get("ssh") or {}
        if not isinstance(s, dict):
            raise bad(f"{where}.ssh", "expected a mapping {user, port, key, args}")
        args = s.get("args") or ""
        try:
            port = int(s["port"]) if s.get("port") not in (None, "") else None
            argv = tuple(shlex.split(args) if isinstance(args, str) else map(str, args))
        except (TypeError, ValueError) as exc:
            raise bad(f"{where}.ssh", str(exc)) from None
        ssh = Ssh(user=s.get("user") or None, port=port, key=s.get("key") or None, args=argv)
        power = {k: tuple(shlex.split(h.get(k) or "")) for k in ("power_off", "power_on")}
        if bool(power["power_off"]) != bool(power["power_on"]):
            raise bad(where, "power_off and power_on go together (or neither)")
        hosts[str(name)] = Host(str(name), str(h["address"]), role, ssh, power["power_off"], power["power_on"])
    if len([h for h in hosts.values() if h.role == "workstation"]) != 2:
        raise bad("hosts", "a store has exactly two workstations (role: workstation)")
    units = doc.get("units") or {}
    return StoreSpec(
        hosts=hosts,
        pki_dir=Path(os.path.expanduser(str(doc["pki_dir"]))),
        source=source,
        config_path=str(doc.get("config_path") or "/etc/edgepair/store.yaml"),
        node_unit=str(units.get("node") or "edgepair.service"),
        etcd_unit=str(units.get("etcd") or "edgepair-etcd.service"),
    )


def is_target_file(path: Path) -> bool:
    """True for a target file (a mapping whose hosts have addresses), False for anything else (an inventory)."""
    if not path.is_file():
        return False
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return False
    hosts = doc.get("hosts") if isinstance(doc, dict) else None
    return isinstance(hosts, dict) and all(isinstance(v, dict) and "address" in v for v in hosts.values())


def local_dates(since: float, until: float, tz: str) -> list[str]:
    """The store's local dates (``YYYY-MM-DD``) of the segments that may overlap [since, until): an hour-compacted
    file starts up to an hour before ``since``."""
    zone = ZoneInfo(tz)
    first = datetime.fromtimestamp(since - 3600, UTC).astimezone(zone).date()
    last = datetime.fromtimestamp(until, UTC).astimezone(zone).date()
    return [str(first + timedelta(days=k)) for k in range((last - first).days + 1)]


def tar_command(data_dir: str, store: str, dates: list[str], since: float, until: float) -> str:
    """A shell command that writes a tar of the segments (and their signatures) of the date folders ``dates`` that
    may overlap [since, until): a segment's name holds its window start in ms (``<camera>.<start ms>.<...>``); a
    1 s segment is taken from a minute before ``since``, a compacted one (``~`` in its name) whatever its start.
    Plus the top-level metadata files. Files that compaction removes meanwhile are left out, not an error."""
    folders = " ".join(shlex.quote(f"events/store={store}/date={d}") for d in dates)
    lo, hi = int((since - 60) * 1000), int(until * 1000) + 1
    pick = f'{{ split($NF, p, "[.]"); s = p[2] + 0; if (s < {hi} && (s >= {lo} || $NF ~ /~/)) print }}'
    return (
        f"cd -- {shlex.quote(data_dir)} || exit 3; "
        f'{{ for d in {folders}; do [ -d "$d" ] && '
        "find \"$d\" -type f \\( -name '*.parquet' -o -name '*.sig' \\); done "
        f"| awk -F/ {shlex.quote(pick)}; "
        'for f in store.json kpi_definitions.jsonl; do [ -f "$f" ] && echo "$f"; done; } '
        "| tar -cf - --ignore-failed-read --warning=no-file-changed --warning=no-file-removed --files-from=-; "
        "rc=$?; [ $rc -le 1 ]"
    )


def partition_script(peers: list[str]) -> str:
    """An nftables table that drops every packet to and from ``peers`` (IP addresses), before any other rule."""
    v4 = sorted(p for p in peers if ipaddress.ip_address(p).version == 4)
    v6 = sorted(p for p in peers if ipaddress.ip_address(p).version == 6)
    lines = [f"table inet {CUT_TABLE} {{"]
    if v4:
        lines.append(f"    set peers4 {{ type ipv4_addr; elements = {{ {', '.join(v4)} }}; }}")
    if v6:
        lines.append(f"    set peers6 {{ type ipv6_addr; elements = {{ {', '.join(v6)} }}; }}")
    for chain, hook, direction in (("cut_in", "input", "saddr"), ("cut_out", "output", "daddr")):
        lines.append(f"    chain {chain} {{")
        lines.append(f"        type filter hook {hook} priority -50; policy accept;")
        if v4:
            lines.append(f"        ip {direction} @peers4 counter drop")
        if v6:
            lines.append(f"        ip6 {direction} @peers6 counter drop")
        lines.append("    }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def cut_command(peers: list[str], dead_man_s: float, unit: str) -> str:
    """Arm the dead man's switch, then load the cut (so a cut never exists without its switch)."""
    heal = f"nft delete table inet {CUT_TABLE}"
    script = partition_script(peers)
    return (
        f"systemd-run --quiet --unit={shlex.quote(unit)} --on-active={int(dead_man_s)}s "
        f"/bin/sh -c {shlex.quote(heal)} && "
        f"printf %s {shlex.quote(script)} | nft -f -"
    )


def heal_command(unit: str) -> str:
    return (
        f"nft delete table inet {CUT_TABLE}; rc=$?; "
        f"systemctl stop {shlex.quote(unit)}.timer 2>/dev/null; systemctl reset-failed {shlex.quote(unit)}.service "
        "2>/dev/null; exit $rc"
    )


def kill_units(units: list[str], signal: str = "SIGKILL", keep_down: bool = False) -> str:
    """``systemctl kill`` of every process of ``units`` at once; ``keep_down``: then cancel systemd's restart."""
    names = " ".join(shlex.quote(u) for u in units)
    cmd = f"systemctl kill --kill-whom=all --signal={signal} {names}"
    return f"{cmd}; systemctl stop {names}" if keep_down else cmd


class RemoteStore:
    """A store deployed by ``deploy/ansible``, observed and broken from this machine (see the module docstring)."""

    def __init__(self, spec: StoreSpec, *, workdir: Path | None = None) -> None:
        """``workdir``: the private folder to use (removed by :meth:`close`), else a new one."""
        self.spec = spec
        self.tmp = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="edgepair-drill-"))
        os.chmod(self.tmp, 0o700)
        self.ssh = SshHosts(spec.hosts)
        self._ctx: Any = None
        self._identity: Any = None
        try:
            self._config = self._read_config()
        except BaseException:
            self.close()
            raise
        cfg = self._config
        self.store = str(cfg["store"]["id"])
        self.timezone = str(cfg["store"].get("timezone") or "UTC")
        self.nodes = [str(n["name"]) for n in cfg["cluster"]["nodes"]]
        self.name = f"store {self.store} ({spec.source})"
        missing = [n for n in self.nodes if n not in spec.hosts]
        if missing:
            self.close()
            raise DrillTargetError(
                f"{spec.source}: the store config names nodes {', '.join(missing)} that the inventory does not list "
                f"(inventory: {', '.join(spec.hosts)}): the node names are the inventory names"
            )
        self._node_addr = {str(n["name"]): (str(n["host"]), int(n.get("metrics_port") or 9101))
                           for n in cfg["cluster"]["nodes"]}  # fmt: skip

    # --- construction --------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, store: str | os.PathLike[str], *, pki_dir: str | None = None) -> RemoteStore:
        """From a target file, or from an inventory (rendered by drill.yml into a target file first)."""
        path = Path(store)
        if not path.exists():
            raise DrillTargetError(f"--store {store}: no such inventory or drill target file")
        if is_target_file(path):
            doc = yaml.safe_load(path.read_text())
            if pki_dir:
                doc["pki_dir"] = pki_dir
            return cls(parse_spec(doc, str(path)))
        tmp = Path(tempfile.mkdtemp(prefix="edgepair-drill-"))
        try:
            target = render_inventory(path, tmp / "target.json", pki_dir=pki_dir)
            doc = json.loads(target.read_text())
            return cls(parse_spec(doc, str(path)), workdir=tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def __enter__(self) -> RemoteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the SSH control masters and remove the private folder (the copies of the store's data)."""
        self.ssh.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # --- SSH (cluster.drill_ssh) --------------------------------------------------------------------------------
    def run(self, host: str, command: str, *, timeout: float = 30.0, input: bytes | None = None) -> bytes:
        """``command`` on ``host`` over SSH; its stdout. Raises :class:`DrillTargetError` naming the host."""
        return self.ssh.run(host, command, timeout=timeout, input=input)

    # --- DrillTarget ---------------------------------------------------------------------------------------------
    def _read_config(self) -> dict[str, Any]:
        errors = []
        for ws in self.spec.workstations:
            try:
                text = self.run(ws, f"cat -- {shlex.quote(self.spec.config_path)}")
            except DrillTargetError as exc:
                errors.append(str(exc))
                continue
            cfg = yaml.safe_load(text)
            if not isinstance(cfg, dict) or "cluster" not in cfg or "store" not in cfg:
                raise DrillTargetError(f"{ws}:{self.spec.config_path} is not a store config")
            return cfg
        raise DrillTargetError("cannot read the store config from any workstation: " + "; ".join(errors))

    def node_config(self) -> dict[str, Any]:
        return dict(self._config)

    def config_path(self) -> Path | None:
        """None: a deployed store's cameras are streams (or files on the workstations, not here), and its model is
        on the workstations: their frames cannot be replayed on this machine."""
        return None

    def identity(self) -> Any:
        if self._identity is None:
            from cluster.pki import Identity

            self._identity = Identity.load(self.spec.pki_dir, "root")
        return self._identity

    def health(self, node: str, timeout: float = 1.0) -> dict[str, Any] | None:
        from cluster.pair import health

        host, port = self._node_addr[node]
        sec = self._config.get("security") or {}
        if not sec.get("tls", True):
            return health(f"http://{host}:{port}/health", timeout)
        if sec.get("metrics", "tls") != "tls":
            raise DrillTargetError(
                "the store serves /health on 127.0.0.1 only (security.metrics: loopback): a drill from the controller "
                "needs edgepair_metrics: tls"
            )
        if self._ctx is None:
            self._ctx = self.identity().client_ssl_context()
        return health(f"https://{host}:{port}/health", timeout, ssl_context=self._ctx)

    def data_dirs(self, since: float, until: float) -> dict[str, Path]:
        data_dir = str((self._config.get("storage") or {}).get("data_dir") or "/var/lib/edgepair/data")
        cmd = tar_command(data_dir, self.store, local_dates(since, until, self.timezone), since, until)
        out: dict[str, Path] = {}
        for node in self.nodes:
            t = time.monotonic()
            raw = self.run(node, cmd, timeout=300)
            fresh = Path(tempfile.mkdtemp(prefix=f"{node}-", dir=self.tmp))
            with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
                tar.extractall(fresh, filter="data")
            dest = self.tmp / f"data-{node}"
            if dest.exists():
                old = dest.with_name(f"{dest.name}.old")
                dest.rename(old)
                shutil.rmtree(old, ignore_errors=True)
            fresh.rename(dest)
            out[node] = dest
            log.info("drill: copied %.1f MB of %s's data in %.1f s", len(raw) / 1e6, node, time.monotonic() - t)
        return out

    def prepare(self) -> None:
        """Open a control master to every host (so a fault is one round trip away) and check each answers."""
        self.ssh.on_all(list(self.spec.hosts), "true")

    def inject(self, scenario: str, *, leader: str, place: dict[str, str], hold_s: float) -> tuple[str, Restore]:
        sp = self.spec
        other = next(n for n in self.nodes if n != leader)
        if scenario == "kill-node":
            h = sp.hosts[leader]
            if h.power_off:
                t = time.monotonic()
                run_local(h.power_off, f"kill-node: power off {leader}", timeout=60)
                took = time.monotonic() - t
                log.info("drill: %s powered off %.2f s after the drill asked", leader, took)
                self.ssh.close_master(leader)
                return f"{leader} (machine powered off, in {took:.2f} s)", seq(
                    lambda: run_local(h.power_on, f"kill-node: power on {leader}", timeout=BOOT_WAIT_S),
                    lambda: self.ssh.wait_up(leader),
                )
            took = self.ssh.fault(leader, kill_units([sp.node_unit, sp.etcd_unit], keep_down=True))
            return f"{leader} (edgepair and its etcd member, in {took:.2f} s)", seq(
                lambda: self.run(leader, f"systemctl start {sp.etcd_unit} {sp.node_unit}", timeout=120)
            )
        if scenario == "kill-leader":
            took = self.ssh.fault(leader, kill_units([sp.node_unit]))
            start = f"systemctl start {sp.node_unit}"
            return f"{leader} (in {took:.2f} s)", seq(lambda: self.run(leader, start, timeout=120))
        if scenario == "freeze-node":
            took = self.ssh.fault(leader, kill_units([sp.node_unit], "SIGSTOP"))
            return f"{leader} (in {took:.2f} s)", seq(
                lambda: time.sleep(hold_s), lambda: self.run(leader, kill_units([sp.node_unit], "SIGCONT"))
            )
        if scenario == "partition":
            peers = [host_ip(h) for n, h in sp.hosts.items() if n != leader]
            unit = f"edgepair-drill-heal-{int(time.time())}"
            took = self.ssh.fault(leader, cut_command(peers, hold_s + DEAD_MAN_S, unit))
            return f"{leader} (cut from {', '.join(n for n in sp.hosts if n != leader)}, in {took:.2f} s)", seq(
                lambda: time.sleep(hold_s), lambda: self.run(leader, heal_command(unit))
            )
        if scenario in ("kill-etcd-leader", "lose-quorum"):
            members = (
                [self.etcd_leader()] if scenario == "kill-etcd-leader" else [n for n in sp.hosts if n != leader][:2]
            )
            self.ssh.on_all(members, kill_units([sp.etcd_unit], keep_down=True), fault=True)
            return ",".join(members), seq(
                lambda: time.sleep(hold_s), lambda: self.ssh.on_all(members, f"systemctl start {sp.etcd_unit}", 120)
            )
        if scenario == "kill-actor":
            cam = sorted(place)[0]
            node = place[cam]
            pid = ((self.health(node, timeout=3.0) or {}).get("camera_status") or {}).get(cam, {}).get("pid")
            if not pid:
                raise DrillTargetError(f"kill-actor: {node}'s /health gives no pid for {cam}'s actor")
            self.ssh.fault(node, f"kill -KILL {int(pid)}")
            return f"{node}/{cam} (pid {pid})", lambda: None
        if scenario == "switchover":
            from failover import admin

            endpoints = list(self._config["cluster"]["etcd_endpoints"])
            admin.switchover(endpoints, self.store, to=other, identity=self.identity())
            return leader, lambda: None
        if scenario in GRAY_SCENARIOS:
            raise DrillTargetError(
                f"{scenario} runs against a local pair only (`edgepair drill {scenario} --run-dir RUN_DIR`): its fault"
                " needs test hooks, tmpfs data dirs or cgroups that a deployed store does not have"
            )
        raise EdgepairError(f"unknown drill scenario {scenario!r}: choose one of {', '.join(SCENARIOS)}")

    # --- helpers -------------------------------------------------------------------------------------------------
    def etcd_leader(self, bound_s: float = 5.0) -> str:
        """The inventory name of the etcd member that is raft leader (etcd's Status, over mutual TLS)."""
        from failover.raft import member_status

        by_addr = {host_ip(h): n for n, h in self.spec.hosts.items()}
        deadline = time.monotonic() + bound_s
        while True:
            ids: dict[int, str] = {}
            leader = 0
            for ep in self._config["cluster"]["etcd_endpoints"]:
                st = member_status(ep, identity=self.identity())
                if st is not None:
                    ids[st.member_id] = ep
                    leader = leader or st.leader_id
            if leader in ids:
                addr = ids[leader].split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
                if addr in by_addr:
                    return by_addr[addr]
                raise DrillTargetError(f"etcd's raft leader {ids[leader]} is none of the inventory's hosts")
            if time.monotonic() > deadline:
                raise DrillTargetError(f"no etcd member names a raft leader within {bound_s:.0f} s")
            time.sleep(0.1)


def render_inventory(inventory: Path, out: Path, *, pki_dir: str | None = None) -> Path:
    """Turn an Ansible inventory into a target file with ``drill.yml -e drill_target_file=OUT`` (Ansible renders
    the hosts' variables; nothing connects to a host). drill.yml is looked up at ``<inventory>/../../drill.yml``
    (``deploy/ansible/inventories/<store>``) or named by ``EDGEPAIR_DRILL_PLAYBOOK``."""
    inv = inventory.resolve()
    base = inv if inv.is_dir() else inv.parent
    playbook = Path(os.environ.get("EDGEPAIR_DRILL_PLAYBOOK") or base.parent.parent / "drill.yml")
    if not playbook.is_file():
        raise ConfigError(
            f"--store {inventory}: not a drill target file, and no drill.yml at {playbook} to render it as an "
            "inventory: run the drill through drill.yml, or set EDGEPAIR_DRILL_PLAYBOOK"
        )
    exe = Path(sys.executable).parent / "ansible-playbook"
    argv = [str(exe) if exe.exists() else "ansible-playbook", "-i", str(inv), str(playbook)]
    argv += ["-e", f"drill_target_file={out}"]
    if pki_dir:
        argv += ["-e", f"edgepair_pki_src={pki_dir}"]
    env = dict(os.environ)
    cfg = playbook.parent / "ansible.cfg"
    if cfg.is_file():
        env.setdefault("ANSIBLE_CONFIG", str(cfg))
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=playbook.parent, env=env, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"--store {inventory}: cannot run ansible-playbook to read the inventory: {exc}") from None
    if r.returncode != 0 or not out.is_file():
        tail = redact(" | ".join((r.stdout + r.stderr).strip().splitlines()[-4:]))
        raise ConfigError(f"--store {inventory}: ansible-playbook could not read the inventory: {tail}")
    return out

"""What a local etcd cluster (:mod:`failover.etcd_cluster`) keeps beside its data dirs: ``members.json``, each
member's client and peer ports and the mode (TLS or plain text) its data was made in.

- A cluster built again on the same folder with the same member names, every data dir present, keeps its ports:
  its members' data (and so the fencing tokens, which only grow) is kept, and etcd's stored membership names those
  peer URLs. Anything else (no file, a file not understood, other names, a data dir missing) keeps nothing.
- The older file held the ports only (no ``members`` key, no mode): read as plain text.
- Data made in one mode is never started in the other (its stored peer URLs name the other scheme): ``DCSError``
  with the fix.
"""

from __future__ import annotations

import json
from pathlib import Path

from cluster.errors import DCSError

PORTS_FILE = "members.json"


def read_kept(base_dir: Path, names: tuple[str, ...]) -> tuple[dict[str, tuple[int, int]], bool | None]:
    """The kept (client, peer) ports of each member and the mode of its data (True: TLS); ``({}, None)``: none."""
    try:
        data = json.loads((base_dir / PORTS_FILE).read_text())
        ports = data["members"] if "members" in data else data  # the older file held the ports only
        known = {n: (int(c), int(p)) for n, (c, p) in ports.items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}, None
    if set(known) != set(names) or not all((base_dir / f"{n}.etcd").exists() for n in names):
        return {}, None
    return known, bool(data.get("tls", False))


def save_kept(base_dir: Path, ports: dict[str, list[int]], tls: bool) -> None:
    (base_dir / PORTS_FILE).write_text(json.dumps({"members": ports, "tls": tls}))


def check_mode(base_dir: Path, stored_tls: bool | None, secure: bool) -> None:
    """Refuse to start data dirs made in the other mode (their stored peer URLs name the other scheme)."""
    if stored_tls is None or stored_tls == secure:
        return
    made, now = ("TLS", "plain text") if stored_tls else ("plain text", "TLS")
    raise DCSError(
        f"the etcd data under {base_dir} was made with {made} peers and cannot be started with {now}:"
        f" start it as it was made, or move {base_dir} away for a new cluster (fencing tokens then restart"
        " from 1: clear the nodes' data dirs too)"
    )

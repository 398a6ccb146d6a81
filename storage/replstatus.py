"""Replication's health towards the peer: what a node's Replicator counts (:class:`PeerStatus`), the status file it
keeps (``catalog/replication.json``, written atomically at every round and at stop), and ``edgepair replication
status``, which reads that file and formats it for a terminal."""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster.errors import StorageError
from storage.catalog import CATALOG_DIR
from storage.segments import write_atomic

log = logging.getLogger("storage.replication")  # the lines the replicator wrote keep its name

STATUS_NAME = "replication.json"


@dataclass
class PeerStatus:
    """Replication health towards the peer, as :meth:`storage.replication.Replicator.status` reports it."""

    peer: str
    connected: bool = False
    lag_s: float = 0.0
    lag_segments: int = 0
    pushed: int = 0
    pulled: int = 0
    refused: int = 0
    corrupt: int = 0
    last_error: str | None = None
    last_sync: float | None = None
    errors: int = 0
    """Failed replication rounds (the peer unreachable, a malformed answer, a bug): each logged, then a back-off."""
    push_lags: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))

    def doc(self, corrupt_found: int = 0) -> dict[str, Any]:
        """The peer's part of the status file (``corrupt_found``: corrupt local files the catalog quarantined)."""
        return {
            "connected": self.connected,
            "lag_s": round(self.lag_s, 3),
            "lag_segments": self.lag_segments,
            "pushed": self.pushed,
            "pulled": self.pulled,
            "refused": self.refused,
            "corrupt": self.corrupt + corrupt_found,
            "last_error": self.last_error,
            "last_sync": self.last_sync,
            "errors": self.errors,
        }


def write_replication_status(data_dir: Path, status: dict[str, Any], node: str) -> None:
    """Write the status file atomically; a failure is logged (debug), never raised."""
    try:
        write_atomic(Path(data_dir) / CATALOG_DIR / STATUS_NAME, json.dumps(status).encode())
    except StorageError as exc:
        log.debug("node %s: cannot write replication status: %s", node, exc)


def replication_status(data_dir: Path) -> dict[str, Any]:
    """The last status a node's :class:`Replicator` wrote (for ``edgepair replication status``)."""
    path = Path(data_dir) / CATALOG_DIR / STATUS_NAME
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError as exc:
        raise StorageError(f"no replication status at {path}: is the node running with this data folder?") from exc
    except (OSError, ValueError) as exc:
        raise StorageError(f"cannot read replication status {path}: {exc}") from exc


def format_replication_status(status: dict[str, Any], now: float | None = None) -> str:
    """A few lines for a terminal: one per peer with lag, counters and the last error."""
    now = time.time() if now is None else now
    age = now - float(status.get("at", now))
    lines = [f"node {status['node']} (store {status['store_id']}): {status['segments']} files, status {age:.0f}s old"]
    for peer, p in status["peers"].items():
        state = "connected" if p["connected"] else "DISCONNECTED"
        lines.append(
            f"  peer {peer}: {state}, lag {p['lag_s']:.1f}s / {p['lag_segments']} segments,"
            f" pushed {p['pushed']}, pulled {p['pulled']}, refused {p['refused']}, corrupt {p['corrupt']}"
        )
        if p.get("last_error"):
            lines.append(f"    last error: {p['last_error']}")
    return "\n".join(lines)

"""``edgepair replication status``: the status file a node's Replicator keeps, read and formatted for a terminal."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from cluster.errors import StorageError
from storage.catalog import CATALOG_DIR
from storage.replication import STATUS_NAME


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

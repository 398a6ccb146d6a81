"""Retention: keep a configured number of local days of segments, on both nodes, and never replicate older ones back.

Rules:

- The cutoff is local midnight ``days`` days before today in the store's time zone: a file whose window ends before
  the cutoff is deleted (segments, compacted files alike). ``days <= 0`` keeps everything.
- Each node enforces it on its own files (:func:`enforce_retention`, run periodically by the node agent).
- Replication refuses a file whose window ends before the cutoff (:func:`expired`), so anti-entropy never copies a
  file that the other node already deleted back, and no tombstone is needed.
- A file is deleted with its signature. Given a ``verifier``, only files whose signatures verify are deleted: one
  whose signature fails is quarantined by the scan (never deleted); an unsigned one is kept and logged (``edgepair
  verify`` lists it), so that a file nobody can vouch for is never the reason data disappeared.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from storage.catalog import Catalog
from storage.segments import load_timezone, prune_empty_dirs
from storage.signing import remove_with_sig

if TYPE_CHECKING:
    from cluster.pki import Verifier

log = logging.getLogger(__name__)


def retention_cutoff(days: int, timezone: str, now: float | None = None) -> float:
    """UTC epoch of local midnight ``days`` days before the local date of ``now``; 0.0 when ``days <= 0``."""
    if days <= 0:
        return 0.0
    now = time.time() if now is None else now
    local = datetime.fromtimestamp(now, load_timezone(timezone))
    midnight = (local - timedelta(days=days)).replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight.timestamp()


def expired(window_end: float, days: int, timezone: str, now: float | None = None) -> bool:
    """True when a file covering up to ``window_end`` is past retention."""
    return days > 0 and window_end < retention_cutoff(days, timezone, now)


def enforce_retention(
    data_dir: Path,
    *,
    days: int,
    timezone: str,
    node: str,
    now: float | None = None,
    verifier: Verifier | None = None,
) -> list[str]:
    """Delete this node's files past retention; return their ids. Files that cannot be removed are logged."""
    if days <= 0:
        return []
    cutoff = retention_cutoff(days, timezone, now)
    removed: list[str] = []
    kept: list[str] = []
    state = Catalog(data_dir, node=node, verifier=verifier).scan()
    for sid, entry in sorted(state.entries.items()):
        if entry.window_end >= cutoff:
            continue
        if verifier is not None and sid not in state.signed:
            kept.append(sid)
            continue
        try:
            remove_with_sig(Path(data_dir) / entry.relpath)
        except OSError as exc:
            log.warning("node %s: camera %s: cannot delete expired %s: %s", node, entry.camera_id, sid, exc)
            continue
        removed.append(sid)
    if removed:
        prune_empty_dirs(data_dir, [state.entries[sid].relpath for sid in removed])
        log.info("node %s: retention (%d days) deleted %d files older than %s", node, days, len(removed), cutoff)
    if kept:
        log.warning(
            "node %s: retention kept %d expired files that have no good signature (first: %s); see edgepair verify",
            node,
            len(kept),
            kept[0],
        )
    return removed

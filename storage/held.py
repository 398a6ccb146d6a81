"""The files a replicating node holds (:mod:`storage.replication`): the catalog state, the refusal index over it, and
rescans that never lose a file written or received while they read the disk.

- ``state`` is the last scan (:class:`storage.catalog.CatalogState`) plus every file held since: written locally
  (:meth:`storage.replication.Replicator.notify`), received from the peer, or whose signature was adopted.
- ``index`` (:class:`storage.catalog.RefusalIndex`) answers "superseded?" and "a newer token?" in time independent
  of the files held, and is rebuilt with the state at each rescan.
- A rescan reads the disk outside the lock; a file held meanwhile may be missing from its listing, and the state it
  replaces held it: it is merged back if it is still on disk (and its signature with it), so its push finds its
  entry and the peer's pull sees it (the local kill-etcd-leader drill of 2026-12-02 caught one window replicated
  15 s late). One lock (the replicator's, reentrant) guards the state, shared with the push queue and refusals.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from storage.catalog import Catalog, CatalogEntry, CatalogState, RefusalIndex, compute_superseded


class HeldFiles:
    """What this node holds, as replication sees it: ``rescan``, ``hold``, and reads under the shared lock."""

    def __init__(self, data_dir: Path, catalog: Catalog, lock: threading.RLock, *, verified: bool) -> None:
        self.data_dir = Path(data_dir)
        self.catalog = catalog
        self.lock = lock
        self.verified = verified  # signatures are checked (the catalog cache records them as verified)
        self._scan_lock = threading.Lock()
        self.state = CatalogState()
        self.index = RefusalIndex()
        # Files held (written or received) while a rescan reads the disk, which it may have listed before they
        # existed: the rescan keeps them (see ``rescan``). None when no rescan runs.
        self._held_in_scan: dict[str, tuple[CatalogEntry, bool]] | None = None

    def rescan(self, *, verify: bool = False) -> CatalogState:
        """Re-read the catalog from the files (quarantining corrupt, impossible or badly signed ones)."""
        with self._scan_lock:
            with self.lock:
                self._held_in_scan = {}
            try:
                state = self.catalog.scan(verify=verify)
                index = RefusalIndex(state.entries.values())
            except BaseException:
                with self.lock:
                    self._held_in_scan = None
                raise
            with self.lock:
                # A file written or received during the scan may be missing from its listing (or its signature,
                # adopted meanwhile): the state the scan replaces held it, and dropping it would skip its push (the
                # queue finds no entry) and leave it out of the catalog the peer pulls from until the next rescan.
                # Collected, merged and swapped under one hold of the lock: no hold falls in between.
                held, self._held_in_scan = self._held_in_scan or {}, None
                merged = False
                for sid, (entry, signed) in held.items():
                    listed = state.entries.get(sid)
                    if listed is None and (self.data_dir / entry.relpath).exists():
                        state.entries[sid] = entry
                        index.add(entry)
                        merged = True
                        listed = entry
                    if signed and listed is not None and listed.sha256 == entry.sha256:
                        state.signed.add(sid)
                if merged:
                    state.superseded = compute_superseded(state.entries)
                self.state = state
                self.index = index
        return state

    def hold(self, entry: CatalogEntry, *, signed: bool) -> None:
        """Add a file just written or received to the state, the refusal index and the catalog cache."""
        with self.lock:
            if self._held_in_scan is not None:
                self._held_in_scan[entry.segment_id] = (entry, signed)
            self.state.entries[entry.segment_id] = entry
            if signed:
                self.state.signed.add(entry.segment_id)
            self.index.add(entry)
            self.catalog.remember(entry, sig_verified=signed and self.verified)

    def get(self, segment_id: str) -> CatalogEntry | None:
        with self.lock:
            return self.state.entries.get(segment_id)

    def lookup(self, segment_id: str) -> tuple[CatalogEntry | None, bool]:
        """The entry held under this id (or None) and whether its signature is held."""
        with self.lock:
            return self.state.entries.get(segment_id), segment_id in self.state.signed

    def count(self) -> int:
        with self.lock:
            return len(self.state.entries)

    def live_catalog(self) -> dict[str, str]:
        with self.lock:
            return {e.segment_id: e.sha256 for e in self.state.live()}

    def live_catalog_v2(self) -> dict[str, list[Any]]:
        with self.lock:
            signed = self.state.signed
            return {e.segment_id: [e.sha256, int(e.segment_id in signed)] for e in self.state.live()}

    def lacking(self, remote: dict[str, tuple[str, bool]]) -> dict[str, float]:
        """The live files missing from the peer's catalog ``remote``, with the end of their window."""
        with self.lock:
            return {e.segment_id: e.window_end for e in self.state.live() if e.segment_id not in remote}

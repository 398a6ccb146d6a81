"""Replication of segment files between the two workstations over Apache Arrow Flight.

Each node serves its files and pulls/pushes with its one peer. Rules:

- Wire: :mod:`storage.replserver`. Who may call: :mod:`storage.flightauth` (with an identity: mutual TLS on
  ``grpc+tls://`` and a signed header of a node of the store on every call; without: plain ``grpc://``, the
  explicit opt-out). Replication is idempotent by id and checksum: receiving a file already held with the same
  sha256 is a no-op (its signature is taken if this side has none).
- Push: every file written locally (:meth:`Replicator.notify`) is pushed at once, with its signature, in a burst
  with the others queued meanwhile (:mod:`storage.replclient`, which also holds the loop). A push that fails is not
  retried by the pusher: the peer pulls what it lacks (anti-entropy), so nothing is lost and queues stay bounded.
- Anti-entropy (pull): at start, after every reconnection and every ``anti_entropy_s``, a node compares the catalogs
  and fetches the files it lacks in batches, with their signatures (one by one from a peer without batch tickets),
  and the signatures it lacks of files it holds; resumable: each file lands whole or not at all.
- Durable when: a file is acknowledged to the pusher (and catalogued) only once it and its folder are fsync-ed. Its
  signature is written just before it and not fsync-ed on its own (:mod:`storage.signing`): after a crash it may be
  empty or torn, and is then treated as missing: the receiver fetches it again from the peer (whose catalog lists the
  file as signed), and a producer signs its own files again at start.
- The pair (``nodes``): given the store's workstations, only they may call (:mod:`storage.flightauth`), sign or
  produce a received file (``foreign_node``, for good: signer, ``edgepair.node`` and every run's node), only the
  pair's compactor (first name in sorted order) signs compacted files (``compactor``), and the peer must prove it is
  the other workstation (``whoami``) before this node pulls from or pushes to it.
- Receiving trusts nothing (:mod:`storage.admission`): id, size, checksum, schema, store, bounds, token, signature;
  then a file is written once (signature first, then the file, never over a local file) where
  :func:`storage.layout.segment_path` puts it. A refusal that a legitimate file can meet for a while
  (:data:`storage.refusals.RETRYABLE`: a transfer problem, ``token_future`` against this node's view of etcd,
  ``unsigned`` or ``signer_unknown``) is fetched again; any other is remembered and not fetched again.
- Refusal: every one is logged with its reason and counted by reason (:meth:`Replicator.refusal_counts`, for
  ``/metrics``); the node keeps serving. The bytes are kept in ``data_dir/refused/`` for audit when the file is
  well formed but unwanted: a file past retention; a segment superseded by a local compacted file; a conflicting copy
  of a file held; a compacted file that does not account for what it would supersede (runs, row counts, and the rows
  themselves, every column, compared with the local files it would supersede: ``compacted_content``); a *stale*
  segment: token T for window start w of camera c is stale when the receiver holds a segment of c with token T' > T
  whose window starts at or before w (a newer leadership had begun by w). Segments of an older token for earlier
  windows are accepted.

The parts: :class:`Replicator` (this module) joins them and holds the lifecycle; :mod:`storage.held` what this node
holds (state, refusal index, rescans), :mod:`storage.pushqueue` what the peer lacks (queue, lag),
:mod:`storage.intake` receiving, :mod:`storage.refusals` the refusal policy, :mod:`storage.replstatus` the status;
:mod:`storage.replclient` the push and pull loop, :mod:`storage.replserver` the Flight service.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.flight as flight

from cluster.errors import StorageError
from storage import replmeta
from storage.bounds import Refused
from storage.catalog import Catalog, CatalogEntry, CatalogState, entry_from_file
from storage.flightauth import with_scheme
from storage.held import HeldFiles
from storage.intake import Intake
from storage.layout import REFUSED_DIR, sig_path
from storage.pushqueue import PushQueue
from storage.refusals import RefusalLog
from storage.replclient import BATCH_FILES, PeerClient
from storage.replserver import FlightService
from storage.replstatus import STATUS_NAME, PeerStatus, write_replication_status
from storage.signing import read_sig, sign_own_unsigned

if TYPE_CHECKING:
    from cluster.pki import Identity

log = logging.getLogger(__name__)

__all__ = ["BATCH_FILES", "REFUSED_DIR", "STATUS_NAME", "PeerStatus", "Refused", "Replicator"]

_Server = FlightService  # the name tests patch


class Replicator:
    """Serves this node's files over Flight and keeps its peer's copy in step. ``start``/``stop``/``status``.

    ``identity`` (this node's :class:`cluster.pki.Identity`): mutual TLS, signed calls, signed files required;
    None is the plain-text opt-out. ``max_token``: etcd's current revision (None: unknown, not checked). ``nodes``:
    the store's configured workstations (``cluster.nodes`` names, this node's among them): only they may call this
    node's Flight service, sign or produce a file it takes, and only the first of them in sorted order (the pair's
    compactor) may sign a compacted file; the peer must prove it is the other one of them (:mod:`storage.flightauth`
    ``whoami``). None: any node certificate of the store CA counts (tests; a node always passes its pair).
    """

    def __init__(
        self,
        data_dir: Path,
        store_id: str,
        node: str,
        peer_url: str,
        *,
        port: int,
        host: str = "127.0.0.1",
        retention_days: int = 0,
        anti_entropy_s: float = 10.0,
        call_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
        identity: Identity | None = None,
        max_token: Callable[[], int | None] | None = None,
        nodes: Collection[str] | None = None,
    ) -> None:
        if identity is not None and (identity.store_id != store_id or identity.name != node):
            raise StorageError(
                f"identity {identity.name} of store {identity.store_id} cannot replicate as node {node} of {store_id}"
            )
        if nodes is not None and node not in nodes:
            raise StorageError(f"node {node} is not one of the store's workstations {sorted(nodes)}")
        self.nodes: frozenset[str] | None = frozenset(nodes) if nodes is not None else None
        others = sorted(self.nodes - {node}) if self.nodes is not None else []
        self.peer_node: str | None = others[0] if len(others) == 1 else None
        self.data_dir = Path(data_dir)
        self.store_id = store_id
        self.node = node
        self.identity = identity
        self.verifier = identity.verifier() if identity is not None else None
        self.signer = identity.signer() if identity is not None else None
        self.max_token = max_token
        self.peer_url = with_scheme(peer_url, identity is not None)
        self.location = with_scheme(f"{host}:{port}", identity is not None)
        self.retention_days = retention_days
        self.anti_entropy_s = anti_entropy_s
        self.clock = clock
        self.client = PeerClient(self, call_timeout_s)
        self._catalog = Catalog(self.data_dir, node=node, verifier=self.verifier, nodes=self.nodes)
        self._lock = threading.RLock()  # one lock for the held files, the push queue and the refusals
        self._held = HeldFiles(self.data_dir, self._catalog, self._lock, verified=self.verifier is not None)
        self._push = PushQueue()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.loop_restarts: dict[str, int] = {}  # rounds of the replication loop that raised and were retried
        self._server: FlightService | None = None
        self._threads: list[threading.Thread] = []
        self.peer = PeerStatus(peer=self.peer_url)
        self._refusals = RefusalLog(node, self.peer, self._lock)
        self._intake = Intake(self._held, self._refusals, store_id, node, nodes=self.nodes, verifier=self.verifier,
                              max_token=max_token, retention_days=retention_days, clock=clock)  # fmt: skip
        if identity is None:
            log.warning("node %s: replication in PLAIN TEXT, unauthenticated (security.tls is false)", node)

    @property
    def refusals(self) -> Counter[str]:
        """Refusals since start, by reason (the live counter)."""
        return self._refusals.counts

    @property
    def _refused_seen(self) -> dict[str, str]:
        """Files refused for good: id -> sha256 (the live memory)."""
        return self._refusals.seen

    # ---- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Scan the catalog (signing this node's unsigned files), serve Flight and start the replication loop."""
        state = self.rescan()
        if self.signer is not None and sign_own_unsigned(
            self.data_dir, state.entries.values(), self.signer, self.node, state.signed
        ):
            self.rescan()
        self._server = FlightService(self, self.location)
        serve = threading.Thread(target=self._server.serve, name=f"flight-{self.node}", daemon=True)
        loop = threading.Thread(target=self.client.run, name=f"repl-{self.node}", daemon=True)
        self._threads = [serve, loop]
        for t in self._threads:
            t.start()
        log.info("node %s: replication serving %s, peer %s", self.node, self.location, self.peer_url)

    def stop(self) -> None:
        """Stop the loop and the Flight server (bounded waits)."""
        self.stopping.set()
        self.wake.set()
        if self._server is not None:
            self._server.shutdown()
        for t in self._threads:
            t.join(timeout=10)
        self.write_status()

    def rescan(self, *, verify: bool = False) -> CatalogState:
        """Re-read the catalog from the files (quarantining corrupt, impossible or badly signed ones)."""
        return self._held.rescan(verify=verify)

    # ---- refusals --------------------------------------------------------------------------------------------

    def count_refusal(self, reason: str, message: str, source: str = "call") -> None:
        """Log and count one refusal (also called by the Flight service for calls it refuses)."""
        self._refusals.count(reason, message, source)

    def refusal_counts(self) -> dict[str, int]:
        """Refusals since start, by reason (for ``/metrics``: ``edgepair_replication_refused_total{reason}``)."""
        return self._refusals.by_reason()

    # ---- local side ------------------------------------------------------------------------------------------

    def notify(self, segment_id: str, path: Path, sha256: str, written_at: float | None = None) -> None:
        """A file was just written locally under its final name: catalog it and push it to the peer."""
        entry = entry_from_file(Path(path), self.data_dir, sha256)
        with self._lock:
            self._held.hold(entry, signed=sig_path(Path(path)).exists())
            self._push.add(segment_id, self.clock() if written_at is None else written_at, entry.window_end)
        self.wake.set()

    def queued(self, n: int) -> list[tuple[str, float, CatalogEntry | None]]:
        """The first ``n`` files queued for the peer: (id, written at, its entry or None if no longer held)."""
        with self._lock:
            return [(sid, at, self._held.get(sid)) for sid, at in self._push.head(n)]

    def unqueue(self, n: int) -> None:
        """The first ``n`` queued files were pushed (or are no longer held)."""
        with self._lock:
            self._push.pop(n)

    def drop_queue(self) -> None:
        with self._lock:
            self._push.clear()

    def set_peer_missing(self, remote: dict[str, tuple[str, bool]]) -> dict[str, str]:
        """Record which live files the peer lacks (its catalog ``remote``); returns the files refused for good."""
        with self._lock:
            self._push.set_missing(self._held.lacking(remote))
            return self._refusals.remembered()

    def live_catalog(self) -> dict[str, str]:
        return self._held.live_catalog()

    def live_catalog_v2(self) -> dict[str, list[Any]]:
        return self._held.live_catalog_v2()

    def dataset_meta(self) -> dict[str, Any]:
        return replmeta.dataset_meta(self.data_dir)

    def read_file(self, segment_id: str) -> bytes:
        entry = self._held.get(segment_id)
        if entry is None:
            raise flight.FlightServerError(f"node {self.node} has no segment {segment_id[:120]}")
        data = (self.data_dir / entry.relpath).read_bytes()
        if hashlib.sha256(data).hexdigest() != entry.sha256:
            self.rescan()
            raise flight.FlightServerError(f"node {self.node}: segment {segment_id} failed its checksum")
        return data

    def read_sig(self, segment_id: str) -> bytes | None:
        entry = self._held.get(segment_id)
        if entry is None:
            return None
        try:
            return read_sig(self.data_dir / entry.relpath)
        except StorageError:
            return None

    # ---- receiving (storage.intake) --------------------------------------------------------------------------

    def receive(self, segment_id: str, sha256: str, data: bytes, *, source: str, sig: bytes | None = None) -> bool:
        """Check and store one file from the peer; True if written, False if already held. Rules: module doc.

        Raises :class:`Refused` (a StorageError) with its reason, after logging and counting it.
        """
        return self._intake.receive(segment_id, sha256, data, source=source, sig=sig)

    def adopt_sig(self, segment_id: str, sig: bytes) -> bool:
        """Store the peer's signature of a file held unsigned here; True if it was good and is now held."""
        return self._intake.adopt_sig(segment_id, sig)

    # ---- status ----------------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Replication health: per peer, lag in seconds and segments, counters, refusals by reason, last error."""
        now = self.clock()
        with self._lock:
            lag_segments, lag_s = self._push.lag(now)
            n_local = self._held.count()
            refusals = self._refusals.by_reason()
        p = self.peer
        p.lag_segments, p.lag_s = lag_segments, lag_s
        return {
            "node": self.node,
            "store_id": self.store_id,
            "segments": n_local,
            "at": now,
            "tls": self.identity is not None,
            "refusals": refusals,
            "peers": {p.peer: p.doc(self._catalog.corrupt_found)},
        }

    def write_status(self) -> None:
        write_replication_status(self.data_dir, self.status(), self.node)

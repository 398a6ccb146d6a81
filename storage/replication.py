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
  (:data:`storage.replclient.RETRYABLE`: a transfer problem, ``token_future`` against this node's view of etcd,
  ``unsigned`` or ``signer_unknown``) is fetched again; any other is remembered and not fetched again.
- Refusal: every one is logged with its reason and counted by reason (:meth:`Replicator.refusal_counts`, for
  ``/metrics``); the node keeps serving. The bytes are kept in ``data_dir/refused/`` for audit when the file is
  well formed but unwanted: a file past retention; a segment superseded by a local compacted file; a conflicting copy
  of a file held; a compacted file that does not account for what it would supersede (runs, row counts, and the rows
  themselves, every column, compared with the local files it would supersede: ``compacted_content``); a *stale*
  segment: token T for window start w of camera c is stale when the receiver holds a segment of c with token T' > T
  whose window starts at or before w (a newer leadership had begun by w). Segments of an older token for earlier
  windows are accepted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq

from cluster.errors import EdgepairError, StorageError
from storage import replmeta
from storage.admission import (
    check_compacted_accounting,
    check_compacted_content,
    check_compactor,
    check_id,
    check_token,
    inspect_bytes,
    row_counts_of,
    supersedes,
)
from storage.bounds import Refused
from storage.catalog import (
    CATALOG_DIR,
    Catalog,
    CatalogEntry,
    CatalogState,
    RefusalIndex,
    compute_superseded,
    entry_from_file,
)
from storage.flightauth import with_scheme
from storage.layout import REFUSED_DIR, segment_path, sig_path
from storage.replclient import BATCH_FILES, RETRYABLE, PeerClient
from storage.replserver import FlightService
from storage.retention import expired
from storage.schema import EVENT_SCHEMA
from storage.segments import load_timezone, sha256_file, write_atomic
from storage.signing import (
    ForeignSigner,
    MissingSignature,
    UnverifiableSignature,
    check_signature,
    outside_pair,
    read_sig,
    sign_own_unsigned,
    write_signed,
)

if TYPE_CHECKING:
    from cluster.pki import Identity

log = logging.getLogger(__name__)

__all__ = ["BATCH_FILES", "REFUSED_DIR", "STATUS_NAME", "PeerStatus", "Refused", "Replicator"]

STATUS_NAME = "replication.json"
_Server = FlightService  # the name tests patch
_CORRUPT = frozenset({"checksum", "unreadable", "store"})
_READ_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="repl-read")


@dataclass
class PeerStatus:
    """Replication health towards the peer, as :meth:`Replicator.status` reports it."""

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
        self._lock = threading.RLock()
        self._scan_lock = threading.Lock()
        self._state = CatalogState()
        # Files held (written or received) while a rescan reads the disk, which it may have listed before they
        # existed: the rescan keeps them (see ``rescan``). None when no rescan runs.
        self._held_in_scan: dict[str, tuple[CatalogEntry, bool]] | None = None
        self._index = RefusalIndex()
        self._queue: deque[tuple[str, float]] = deque()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.loop_restarts: dict[str, int] = {}  # rounds of the replication loop that raised and were retried
        self._server: FlightService | None = None
        self._threads: list[threading.Thread] = []
        self._peer_missing: dict[str, float] = {}
        self._refused_seen: dict[str, str] = {}  # id -> sha256 refused for good: not fetched again
        self.refusals: Counter[str] = Counter()
        self.peer = PeerStatus(peer=self.peer_url)
        if identity is None:
            log.warning("node %s: replication in PLAIN TEXT, unauthenticated (security.tls is false)", node)

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
        with self._scan_lock:
            with self._lock:
                self._held_in_scan = {}
            try:
                state = self._catalog.scan(verify=verify)
                index = RefusalIndex(state.entries.values())
            except BaseException:
                with self._lock:
                    self._held_in_scan = None
                raise
            with self._lock:
                # A file written or received during the scan may be missing from its listing (or its signature,
                # adopted meanwhile): the state the scan replaces held it, and dropping it would skip its push (the
                # queue finds no entry) and leave it out of the catalog the peer pulls from until the next rescan.
                # Collected, merged and swapped under one hold of the lock: no _hold falls in between.
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
                self._state = state
                self._index = index
        return state

    def _hold(self, entry: CatalogEntry, *, signed: bool) -> None:
        """Add a file just written or received to the state, the refusal index and the catalog cache (lock held)."""
        if self._held_in_scan is not None:
            self._held_in_scan[entry.segment_id] = (entry, signed)
        self._state.entries[entry.segment_id] = entry
        if signed:
            self._state.signed.add(entry.segment_id)
        self._index.add(entry)
        self._catalog.remember(entry, sig_verified=signed and self.verifier is not None)

    # ---- refusals --------------------------------------------------------------------------------------------

    def count_refusal(self, reason: str, message: str, source: str = "call") -> None:
        """Log and count one refusal (also called by the Flight service for calls it refuses)."""
        with self._lock:
            self.refusals[reason] += 1
        if reason in _CORRUPT:
            self.peer.corrupt += 1
        elif reason not in ("auth", "bad_request", "ticket", "bad_id"):
            self.peer.refused += 1
        log.warning("node %s: refused (%s) from %s: %s", self.node, reason, source, message)

    def refusal_counts(self) -> dict[str, int]:
        """Refusals since start, by reason (for ``/metrics``: ``edgepair_replication_refused_total{reason}``)."""
        with self._lock:
            return dict(self.refusals)

    # ---- local side ------------------------------------------------------------------------------------------

    def notify(self, segment_id: str, path: Path, sha256: str, written_at: float | None = None) -> None:
        """A file was just written locally under its final name: catalog it and push it to the peer."""
        entry = entry_from_file(Path(path), self.data_dir, sha256)
        with self._lock:
            self._hold(entry, signed=sig_path(Path(path)).exists())
            self._queue.append((segment_id, self.clock() if written_at is None else written_at))
            self._peer_missing.setdefault(segment_id, entry.window_end)
        self.wake.set()

    def queued(self, n: int) -> list[tuple[str, float, CatalogEntry | None]]:
        """The first ``n`` files queued for the peer: (id, written at, its entry or None if no longer held)."""
        with self._lock:
            head = [self._queue[i] for i in range(min(n, len(self._queue)))]
            return [(sid, at, self._state.entries.get(sid)) for sid, at in head]

    def unqueue(self, n: int) -> None:
        """The first ``n`` queued files were pushed (or are no longer held)."""
        with self._lock:
            for _ in range(min(n, len(self._queue))):
                sid, _at = self._queue.popleft()
                self._peer_missing.pop(sid, None)

    def drop_queue(self) -> None:
        with self._lock:
            self._queue.clear()

    def set_peer_missing(self, remote: dict[str, tuple[str, bool]]) -> dict[str, str]:
        """Record which live files the peer lacks (its catalog ``remote``); returns the files refused for good."""
        with self._lock:
            self._peer_missing = {e.segment_id: e.window_end for e in self._state.live() if e.segment_id not in remote}
            return dict(self._refused_seen)

    def live_catalog(self) -> dict[str, str]:
        with self._lock:
            return {e.segment_id: e.sha256 for e in self._state.live()}

    def live_catalog_v2(self) -> dict[str, list[Any]]:
        with self._lock:
            signed = self._state.signed
            return {e.segment_id: [e.sha256, int(e.segment_id in signed)] for e in self._state.live()}

    def dataset_meta(self) -> dict[str, Any]:
        return replmeta.dataset_meta(self.data_dir)

    def read_file(self, segment_id: str) -> bytes:
        with self._lock:
            entry = self._state.entries.get(segment_id)
        if entry is None:
            raise flight.FlightServerError(f"node {self.node} has no segment {segment_id[:120]}")
        data = (self.data_dir / entry.relpath).read_bytes()
        if hashlib.sha256(data).hexdigest() != entry.sha256:
            self.rescan()
            raise flight.FlightServerError(f"node {self.node}: segment {segment_id} failed its checksum")
        return data

    def read_sig(self, segment_id: str) -> bytes | None:
        with self._lock:
            entry = self._state.entries.get(segment_id)
        if entry is None:
            return None
        try:
            return read_sig(self.data_dir / entry.relpath)
        except StorageError:
            return None

    # ---- receiving -------------------------------------------------------------------------------------------

    def receive(self, segment_id: str, sha256: str, data: bytes, *, source: str, sig: bytes | None = None) -> bool:
        """Check and store one file from the peer; True if written, False if already held. Rules: module doc.

        Raises :class:`Refused` (a StorageError) with its reason, after logging and counting it.
        """
        try:
            return self._receive(segment_id, sha256, data, source, sig)
        except Refused as exc:
            self.count_refusal(exc.reason, str(exc), source)
            if exc.keep:
                self._keep_refused(segment_id, sha256, data, sig)
            if exc.reason not in RETRYABLE:
                with self._lock:
                    if len(self._refused_seen) > 100_000:
                        self._refused_seen.clear()
                    self._refused_seen[segment_id] = sha256
            raise

    def _receive(self, segment_id: str, sha256: str, data: bytes, source: str, sig: bytes | None) -> bool:
        check_id(segment_id)
        with self._lock:
            held = self._state.entries.get(segment_id)
            held_signed = segment_id in self._state.signed
        if held is not None and held.sha256 == sha256:
            if sig and not held_signed:
                self._adopt(held, sig)
            return False
        entry = inspect_bytes(data, segment_id, sha256, self.store_id)
        check_token(entry, self.max_token() if self.max_token is not None else None)
        outside = outside_pair([entry.node, *(r.node for r in entry.runs)], self.nodes)
        if outside:
            raise Refused("foreign_node", f"{segment_id}: produced by {', '.join(outside)}, not a workstation of the"
                          f" pair ({', '.join(sorted(self.nodes or ()))})")  # fmt: skip
        if self.verifier is not None:
            try:
                self._check_sig(sig, segment_id, sha256, entry)
            except MissingSignature as exc:
                raise Refused("unsigned", str(exc)) from None
            except UnverifiableSignature as exc:
                raise Refused("signer_unknown", str(exc)) from None
            except ForeignSigner as exc:
                raise Refused("foreign_node", str(exc)) from None
            except StorageError as exc:
                raise Refused("signature", str(exc)) from None
        if held is not None:
            raise Refused("overwrite", f"{segment_id} is held with another sha256 {held.sha256[:12]}", keep=True)
        try:
            tz = load_timezone(entry.timezone)
            path = segment_path(self.data_dir, self.store_id, entry.camera_id, entry.window_start, tz, segment_id)
        except EdgepairError as exc:
            raise Refused("path", f"{segment_id}: {exc}") from None
        entry = dataclasses.replace(entry, relpath=str(path.relative_to(self.data_dir)))
        if path.exists():
            return self._already_there(entry, path)
        self._check_rules(entry, data)
        try:
            write_signed(path, data, sha256, segment_id, sig=sig)
        except FileExistsError:  # the same file pushed and pulled at once: the other copy won
            return self._already_there(entry, path)
        with self._lock:
            self._hold(entry, signed=sig is not None)
        log.debug("node %s: camera %s: stored %s from %s", self.node, entry.camera_id, segment_id, source)
        return True

    def _check_sig(self, sig: bytes | None, segment_id: str, sha256: str, entry: CatalogEntry) -> str:
        assert self.verifier is not None
        runs = [r.node for r in entry.runs]
        return check_signature(self.verifier, sig, segment_id, sha256, entry.node, allowed=self.nodes, producers=runs)

    def _already_there(self, entry: CatalogEntry, path: Path) -> bool:
        """A file of this name is on disk but not (yet) in the state: the same bytes are a no-op, others refused."""
        try:
            same = sha256_file(path) == entry.sha256
        except OSError:
            same = False
        if not same:
            raise Refused("overwrite", f"{entry.segment_id}: {path} exists with other bytes: not replaced", keep=True)
        with self._lock:
            self._hold(entry, signed=self._sig_good(entry))
        return False

    def _sig_good(self, entry: CatalogEntry) -> bool:
        """True if the signature beside a held file is good (without a verifier: well formed)."""
        try:
            doc = read_sig(self.data_dir / entry.relpath)
            if self.verifier is not None:
                self._check_sig(doc, entry.segment_id, entry.sha256, entry)
        except StorageError:
            return False
        return doc is not None

    def _check_rules(self, e: CatalogEntry, data: bytes) -> None:
        if expired(e.window_end, self.retention_days, e.timezone, self.clock()):
            raise Refused("expired", f"{e.segment_id}: past retention ({self.retention_days} days)", keep=True)
        # The index answers in time independent of the files held (a full scan per file made catch-up quadratic).
        with self._lock:
            if self._index.superseded(e):
                raise Refused("superseded", f"{e.segment_id}: superseded by a local compacted file", keep=True)
            newer = None if e.compacted else self._index.newer_token(e)
            targets = supersedes(e, self._state.entries.values()) if e.compacted else []
        if newer is not None:
            msg = f"{e.segment_id}: stale token {e.token}: token {newer[0]} already wrote from {newer[1]}"
            raise Refused("stale", msg, keep=True)
        check_compactor(e, self.nodes)
        if not targets:
            return
        local = self._read_local(targets)
        check_compacted_accounting(e, data, targets, lambda t: row_counts_of(local[t.segment_id]))
        check_compacted_content(e, data, list(local.values()))

    def _read_local(self, targets: list[CatalogEntry]) -> dict[str, pa.Table]:
        """The rows of the local files a received compacted file would supersede (read in parallel)."""
        try:
            tables = list(_READ_POOL.map(self._read_one, targets))
        except (OSError, pa.ArrowException) as exc:  # a local file gone or unreadable: decide at the next pull
            raise Refused("unreadable", f"local files to compare with cannot be read: {exc}") from None
        return {t.segment_id: table for t, table in zip(targets, tables, strict=True)}

    def _read_one(self, e: CatalogEntry) -> pa.Table:
        return pq.read_table(self.data_dir / e.relpath, schema=EVENT_SCHEMA)

    def adopt_sig(self, segment_id: str, sig: bytes) -> bool:
        """Store the peer's signature of a file held unsigned here; True if it was good and is now held."""
        with self._lock:
            held = self._state.entries.get(segment_id)
            if held is None or segment_id in self._state.signed:
                return False
        return self._adopt(held, sig)

    def _adopt(self, held: CatalogEntry, sig: bytes) -> bool:
        """Store the peer's signature of a file held unsigned here (the peer signed its own after an upgrade, or this
        node's copy of the signature was torn by a crash)."""
        if self.verifier is None:
            return False
        try:
            self._check_sig(sig, held.segment_id, held.sha256, held)
        except (MissingSignature, UnverifiableSignature) as exc:
            log.warning("node %s: signature of %s from the peer not taken: %s", self.node, held.segment_id, exc)
            return False
        except ForeignSigner as exc:
            self.count_refusal("foreign_node", str(exc), "peer")
            return False
        except StorageError as exc:
            self.count_refusal("signature", str(exc), "peer")
            return False
        write_atomic(sig_path(self.data_dir / held.relpath), sig)
        with self._lock:
            self._hold(held, signed=True)
        return True

    def _keep_refused(self, segment_id: str, sha256: str, data: bytes, sig: bytes | None) -> None:
        target = self.data_dir / REFUSED_DIR / f"{segment_id}.{sha256[:12]}.parquet"
        try:
            if sig:
                write_atomic(sig_path(target), sig)
            write_atomic(target, data)
        except StorageError as exc:
            log.error("node %s: cannot keep refused %s: %s", self.node, segment_id, exc)

    # ---- status ----------------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Replication health: per peer, lag in seconds and segments, counters, refusals by reason, last error."""
        now = self.clock()
        with self._lock:
            missing = list(self._peer_missing.values())
            n_local = len(self._state.entries)
            refusals = dict(self.refusals)
        p = self.peer
        p.lag_segments = len(missing)
        p.lag_s = max(0.0, now - min(missing)) if missing else 0.0
        return {
            "node": self.node,
            "store_id": self.store_id,
            "segments": n_local,
            "at": now,
            "tls": self.identity is not None,
            "refusals": refusals,
            "peers": {
                p.peer: {
                    "connected": p.connected,
                    "lag_s": round(p.lag_s, 3),
                    "lag_segments": p.lag_segments,
                    "pushed": p.pushed,
                    "pulled": p.pulled,
                    "refused": p.refused,
                    "corrupt": p.corrupt + self._catalog.corrupt_found,
                    "last_error": p.last_error,
                    "last_sync": p.last_sync,
                    "errors": p.errors,
                }
            },
        }

    def write_status(self) -> None:
        try:
            write_atomic(self.data_dir / CATALOG_DIR / STATUS_NAME, json.dumps(self.status()).encode())
        except StorageError as exc:
            log.debug("node %s: cannot write replication status: %s", self.node, exc)

"""Replication of segment files between the two workstations over Apache Arrow Flight.

Each node serves its files and pulls/pushes with its one peer. Rules:

- Wire: ``do_action("catalog")`` returns the live catalog as JSON ``{id: sha256}``; ``do_get(Ticket(id))`` streams
  the file's bytes as a one-column (``chunk: binary``) table; ``do_get(Ticket("batch:" + JSON list of ids))`` streams
  ``(segment_id, data)`` rows for the first of them up to 32 MiB (null data: no longer served); ``do_put`` with
  descriptor path ``[id, sha256]`` sends one file. Replication is idempotent by id and checksum: receiving a file
  already held with the same sha256 is a no-op.
- Push: every file written locally (:meth:`Replicator.notify`) is pushed at once. A push that fails is not retried
  by the pusher: the peer pulls what it lacks (anti-entropy), so nothing is lost and queues stay bounded.
- Anti-entropy (pull): at start, after every reconnection and every ``anti_entropy_s``, a node compares the catalogs
  and fetches the files it lacks in batches (one by one from a peer without batch tickets, as during a rolling
  upgrade); resumable: each file lands whole or not at all.
- Receiving: the bytes must match the announced sha256, be readable Parquet with edgepair metadata whose id and
  store match (checked in memory); the file is then written once, with temp + fsync + rename + folder fsync. A
  corrupt or truncated transfer is refused, logged, counted and fetched again at the next anti-entropy.
- Refusal (logged, counted, bytes kept in ``data_dir/refused/`` for audit, never silently dropped): a file past
  retention; a segment superseded by a local compacted file; a *stale* segment: token T for window start w of camera
  c is stale when the receiver holds a segment of c with token T' > T whose window starts at or before w (a newer
  leadership had begun by w). Segments of an older token for earlier windows are accepted: they are the old leader's
  legitimate work, replicated late.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq

from cluster.errors import StorageError
from storage.catalog import (
    CATALOG_DIR,
    Catalog,
    CatalogEntry,
    CatalogState,
    RefusalIndex,
    entry_from_bytes,
    entry_from_file,
)
from storage.retention import expired
from storage.segments import EVENTS_DIR, load_timezone, local_date, write_atomic

log = logging.getLogger(__name__)

CHUNK = 1 << 20
STATUS_NAME = "replication.json"
REFUSED_DIR = "refused"
_CHUNK_SCHEMA = pa.schema([pa.field("chunk", pa.binary())])
# Anti-entropy fetches missing files in batches (one round trip for many small segments); a peer of an older version
# that does not know batch tickets is served one file at a time.
BATCH_PREFIX = b"batch:"
BATCH_FILES = 128
BATCH_BYTES = 32 << 20
_BATCH_SCHEMA = pa.schema([pa.field("segment_id", pa.string()), pa.field("data", pa.large_binary())])


class Refused(StorageError):
    """A received file that the rules refuse (stale, superseded, expired); not retried."""


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
    push_lags: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))


class _Server(flight.FlightServerBase):  # type: ignore[misc]
    def __init__(self, repl: Replicator, location: str) -> None:
        super().__init__(location)
        self.repl = repl

    def do_action(self, context: Any, action: flight.Action) -> Iterator[flight.Result]:
        if action.type == "catalog":
            yield flight.Result(json.dumps(self.repl.live_catalog()).encode())
        elif action.type == "meta":
            yield flight.Result(json.dumps(self.repl.dataset_meta()).encode())
        else:
            raise flight.FlightServerError(f"unknown action {action.type!r}")

    def do_get(self, context: Any, ticket: flight.Ticket) -> flight.RecordBatchStream:
        if ticket.ticket.startswith(BATCH_PREFIX):
            ids = json.loads(ticket.ticket[len(BATCH_PREFIX) :])
            rows: dict[str, list[Any]] = {"segment_id": [], "data": []}
            size = 0
            for sid in ids:  # the first files up to BATCH_BYTES (at least one): the client asks again for the rest
                if rows["data"] and size >= BATCH_BYTES:
                    break
                try:
                    data: bytes | None = self.repl.read_file(sid)
                except flight.FlightServerError:  # gone (compacted, expired) or failing its checksum: a null
                    data = None
                rows["segment_id"].append(sid)
                rows["data"].append(data)
                size += len(data or b"")
            return flight.RecordBatchStream(pa.table(rows, schema=_BATCH_SCHEMA))
        sid = ticket.ticket.decode()
        data = self.repl.read_file(sid)
        chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)] or [b""]
        return flight.RecordBatchStream(pa.table({"chunk": pa.array(chunks, pa.binary())}))

    def do_put(self, context: Any, descriptor: flight.FlightDescriptor, reader: Any, writer: Any) -> None:
        sid, sha = (p.decode() for p in descriptor.path)
        data = b"".join(c.as_py() for c in reader.read_all().column("chunk"))
        try:
            self.repl.receive(sid, sha, data, source="push")
        except Refused as exc:
            raise flight.FlightServerError(f"refused: {exc}") from exc
        except StorageError as exc:
            raise flight.FlightServerError(f"rejected: {exc}") from exc


class Replicator:
    """Serves this node's files over Flight and keeps its peer's copy in step. ``start``/``stop``/``status``."""

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
    ) -> None:
        self.data_dir = Path(data_dir)
        self.store_id = store_id
        self.node = node
        self.peer_url = peer_url
        self.location = f"grpc://{host}:{port}"
        self.retention_days = retention_days
        self.anti_entropy_s = anti_entropy_s
        self.clock = clock
        self._opts = flight.FlightCallOptions(timeout=call_timeout_s)
        self._batches = True  # until the peer shows it is of a version without batch tickets
        self._catalog = Catalog(self.data_dir, node=node)
        self._lock = threading.RLock()
        self._state = CatalogState()
        self._index = RefusalIndex()
        self._queue: deque[tuple[str, float]] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._server: _Server | None = None
        self._threads: list[threading.Thread] = []
        self._peer_missing: dict[str, float] = {}
        self.peer = PeerStatus(peer=peer_url)

    # ---- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Scan the catalog, serve Flight on ``host:port`` and start the replication loop (thread)."""
        self.rescan()
        self._server = _Server(self, self.location)
        serve = threading.Thread(target=self._server.serve, name=f"flight-{self.node}", daemon=True)
        loop = threading.Thread(target=self._loop, name=f"repl-{self.node}", daemon=True)
        self._threads = [serve, loop]
        for t in self._threads:
            t.start()
        log.info("node %s: replication serving %s, peer %s", self.node, self.location, self.peer_url)

    def stop(self) -> None:
        """Stop the loop and the Flight server (bounded waits)."""
        self._stop.set()
        self._wake.set()
        if self._server is not None:
            self._server.shutdown()
        for t in self._threads:
            t.join(timeout=10)
        self._write_status()

    def rescan(self, *, verify: bool = False) -> CatalogState:
        """Re-read the catalog from the files (quarantining corrupt ones)."""
        state = self._catalog.scan(verify=verify)
        index = RefusalIndex(state.entries.values())
        with self._lock:
            self._state = state
            self._index = index
        return state

    def _hold(self, entry: CatalogEntry) -> None:
        """Add a file just written or received to the state, the refusal index and the catalog cache (lock held)."""
        self._state.entries[entry.segment_id] = entry
        self._index.add(entry)
        self._catalog.remember(entry)

    # ---- local side ------------------------------------------------------------------------------------------

    def notify(self, segment_id: str, path: Path, sha256: str, written_at: float | None = None) -> None:
        """A file was just written locally under its final name: catalog it and push it to the peer."""
        entry = entry_from_file(Path(path), self.data_dir, sha256)
        with self._lock:
            self._hold(entry)
            self._queue.append((segment_id, self.clock() if written_at is None else written_at))
            self._peer_missing.setdefault(segment_id, entry.window_end)
        self._wake.set()

    def live_catalog(self) -> dict[str, str]:
        with self._lock:
            return {e.segment_id: e.sha256 for e in self._state.live()}

    def dataset_meta(self) -> dict[str, Any]:
        """The dataset's own files besides segments: ``store.json`` and the KPI definitions history."""
        from storage.analytics import DEFINITIONS_FILE, STORE_FILE, load_definitions

        store = self.data_dir / STORE_FILE
        return {
            "store": json.loads(store.read_text(encoding="utf-8")) if store.exists() else None,
            "definitions": [r.to_json() for r in load_definitions(self.data_dir)]
            if (self.data_dir / DEFINITIONS_FILE).exists()
            else [],
        }

    def _sync_meta(self, client: flight.FlightClient) -> None:
        """Take the peer's store.json if this side has none, and merge its KPI definitions history (converges)."""
        from storage.analytics import STORE_FILE, merge_definitions
        from storage.kpis import DefinitionRecord

        try:
            results = list(client.do_action(flight.Action("meta", b""), options=self._opts))
        except flight.FlightServerError as exc:  # a peer of an older version: segments only
            log.debug("node %s: peer serves no dataset meta: %s", self.node, exc)
            return
        try:
            meta = json.loads(results[0].body.to_pybytes())
            store = meta.get("store")
            if store and not (self.data_dir / STORE_FILE).exists():
                if store.get("store_id") != self.store_id:
                    raise StorageError(f"the peer's store.json is of store {store.get('store_id')!r}")
                write_atomic(self.data_dir / STORE_FILE, (json.dumps(store, indent=1) + "\n").encode())
            records = [DefinitionRecord.from_json(d) for d in meta.get("definitions") or []]
            if records:
                merge_definitions(self.data_dir, records)
        except (StorageError, ValueError, KeyError, TypeError, AttributeError) as exc:  # segments still replicate
            self.peer.last_error = f"dataset meta from the peer not taken: {exc}"
            log.error("node %s: %s", self.node, self.peer.last_error)

    def read_file(self, segment_id: str) -> bytes:
        with self._lock:
            entry = self._state.entries.get(segment_id)
        if entry is None:
            raise flight.FlightServerError(f"node {self.node} has no segment {segment_id}")
        data = (self.data_dir / entry.relpath).read_bytes()
        if hashlib.sha256(data).hexdigest() != entry.sha256:
            self.rescan()
            raise flight.FlightServerError(f"node {self.node}: segment {segment_id} failed its checksum")
        return data

    def receive(self, segment_id: str, sha256: str, data: bytes, *, source: str) -> bool:
        """Verify and store one file from the peer; True if written, False if already held. Rules: module doc."""
        with self._lock:
            held = self._state.entries.get(segment_id)
        if held is not None and held.sha256 == sha256:
            return False
        if hashlib.sha256(data).hexdigest() != sha256:
            self.peer.corrupt += 1
            raise StorageError(f"segment {segment_id} from {source}: sha256 mismatch ({len(data)} bytes)")
        # Verified in memory, then written once (temp + fsync + rename + folder fsync) where it belongs.
        try:
            pq.read_table(pa.BufferReader(data))
            entry = entry_from_bytes(data, segment_id, sha256)
        except (pa.ArrowException, OSError, StorageError) as exc:
            self.peer.corrupt += 1
            raise StorageError(f"segment {segment_id} from {source} is not a readable segment: {exc}") from exc
        if entry.store_id != self.store_id:
            self.peer.corrupt += 1
            raise StorageError(f"segment {segment_id} belongs to store {entry.store_id}, not {self.store_id}")
        if held is not None:
            raise StorageError(f"segment {segment_id} held with another sha256 {held.sha256[:12]}; verify both copies")
        reason = self._refusal(entry)
        if reason:
            self.peer.refused += 1
            write_atomic(self.data_dir / REFUSED_DIR / f"{segment_id}.parquet", data)
            log.warning(
                "node %s: camera %s: refused %s from %s: %s", self.node, entry.camera_id, segment_id, source, reason
            )
            raise Refused(f"segment {segment_id}: {reason}")
        tz = load_timezone(entry.timezone)
        final = (
            self.data_dir
            / EVENTS_DIR
            / f"store={self.store_id}"
            / f"date={local_date(entry.window_start, tz)}"
            / f"camera={entry.camera_id}"
            / f"{segment_id}.parquet"
        )
        write_atomic(final, data)
        entry = dataclasses.replace(entry, relpath=str(final.relative_to(self.data_dir)))
        with self._lock:
            self._hold(entry)
        log.debug("node %s: camera %s: stored %s from %s", self.node, entry.camera_id, segment_id, source)
        return True

    def _refusal(self, e: CatalogEntry) -> str | None:
        if expired(e.window_end, self.retention_days, e.timezone, self.clock()):
            return f"past retention ({self.retention_days} days)"
        # The index answers in time independent of the files held (a full scan per file made catch-up quadratic).
        with self._lock:
            if self._index.superseded(e):
                return "superseded by a local compacted file"
            newer = None if e.compacted else self._index.newer_token(e)
        if newer is not None:
            return f"stale token {e.token}: token {newer[0]} already wrote from {newer[1]}"
        return None

    # ---- loop ------------------------------------------------------------------------------------------------

    def _loop(self) -> None:
        client: flight.FlightClient | None = None
        next_sync = 0.0
        backoff = 0.1
        while not self._stop.is_set():
            try:
                if client is None:
                    client = flight.FlightClient(self.peer_url)
                if time.monotonic() >= next_sync:
                    self._anti_entropy(client)
                    next_sync = time.monotonic() + self.anti_entropy_s
                self._push_queue(client)
                self.peer.connected = True
                backoff = 0.1
            except (flight.FlightError, OSError, pa.ArrowException) as exc:
                if self.peer.connected or self.peer.last_error != str(exc):
                    log.warning("node %s: peer %s unreachable or failing: %s", self.node, self.peer_url, exc)
                self.peer.connected = False
                self.peer.last_error = f"{type(exc).__name__}: {exc}"
                next_sync = 0.0  # anti-entropy again once reconnected
                with self._lock:
                    self._queue.clear()  # the peer pulls what it lacks
                if client is not None:
                    client.close()
                client = None
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 2.0)
            self._write_status()
            self._wake.wait(min(0.5, max(0.0, next_sync - time.monotonic())))
            self._wake.clear()
        if client is not None:
            client.close()

    def _push_queue(self, client: flight.FlightClient) -> None:
        for _ in range(10_000):
            with self._lock:
                if not self._queue:
                    return
                sid, written_at = self._queue[0]
                entry = self._state.entries.get(sid)
            if entry is not None:
                data = (self.data_dir / entry.relpath).read_bytes()
                desc = flight.FlightDescriptor.for_path(sid, entry.sha256)
                try:
                    writer, _ = client.do_put(desc, _CHUNK_SCHEMA, options=self._opts)
                    writer.write_table(pa.table({"chunk": pa.array([data], pa.binary())}, schema=_CHUNK_SCHEMA))
                    writer.close()
                    self.peer.pushed += 1
                    self.peer.push_lags.append(self.clock() - written_at)
                except flight.FlightServerError as exc:
                    if "refused" not in str(exc):
                        raise
                    log.warning("node %s: peer refused %s: %s", self.node, sid, exc)
            with self._lock:
                self._queue.popleft()
                self._peer_missing.pop(sid, None)

    def _anti_entropy(self, client: flight.FlightClient) -> None:
        results = list(client.do_action(flight.Action("catalog", b""), options=self._opts))
        remote: dict[str, str] = json.loads(results[0].body.to_pybytes())
        self._sync_meta(client)
        state = self.rescan()
        local = {e.segment_id: e for e in state.live()}
        with self._lock:
            self._peer_missing = {sid: e.window_end for sid, e in local.items() if sid not in remote}
        wanted = []
        for sid in sorted(remote):
            held = state.entries.get(sid)
            if held is not None and held.sha256 == remote[sid]:
                continue
            if held is not None:
                # same id, other bytes: verify ours; a corrupt copy is quarantined and fetched below
                state = self.rescan(verify=True)
                if sid in state.entries:
                    continue
            wanted.append(sid)
        pulled = 0
        for sid, data in self._fetch(client, wanted):
            try:
                if self.receive(sid, remote[sid], data, source="pull"):
                    pulled += 1
            except Refused:
                continue
            except StorageError as exc:
                self.peer.last_error = str(exc)
                log.error("node %s: %s; will fetch again", self.node, exc)
        self.peer.pulled += pulled
        self.peer.last_sync = self.clock()
        if pulled:
            log.info("node %s: anti-entropy pulled %d files from %s", self.node, pulled, self.peer_url)

    def _fetch(self, client: flight.FlightClient, wanted: list[str]) -> Iterator[tuple[str, bytes]]:
        """The bytes of each wanted file, in order: in batches, or one by one from a peer that has no batches."""
        pending = list(wanted)
        while pending and not self._stop.is_set():
            if self._batches:
                ticket = flight.Ticket(BATCH_PREFIX + json.dumps(pending[:BATCH_FILES]).encode())
                try:
                    table = client.do_get(ticket, options=self._opts).read_all()
                except flight.FlightServerError as exc:
                    log.info("node %s: peer serves no batches (%s): fetching one file at a time", self.node, exc)
                    self._batches = False
                    continue
                got = table.column("segment_id").to_pylist()
                if not got:
                    raise flight.FlightServerError("empty batch from the peer")
                for sid, data in zip(got, table.column("data").to_pylist(), strict=True):
                    if data is not None:  # null: the peer no longer serves it; the next anti-entropy decides
                        yield sid, data
                done = set(got)
                pending = [sid for sid in pending if sid not in done]
            else:
                sid = pending.pop(0)
                reader = client.do_get(flight.Ticket(sid.encode()), options=self._opts)
                yield sid, b"".join(c.as_py() for c in reader.read_all().column("chunk"))

    # ---- status ----------------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Replication health: per peer, lag in seconds and segments, counters and the last error."""
        now = self.clock()
        with self._lock:
            missing = list(self._peer_missing.values())
            n_local = len(self._state.entries)
        p = self.peer
        p.lag_segments = len(missing)
        p.lag_s = max(0.0, now - min(missing)) if missing else 0.0
        return {
            "node": self.node,
            "store_id": self.store_id,
            "segments": n_local,
            "at": now,
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
                }
            },
        }

    def _write_status(self) -> None:
        try:
            write_atomic(self.data_dir / CATALOG_DIR / STATUS_NAME, json.dumps(self.status()).encode())
        except StorageError as exc:
            log.debug("node %s: cannot write replication status: %s", self.node, exc)

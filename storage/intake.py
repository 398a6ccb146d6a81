"""Receiving from the peer (:mod:`storage.replication`): check one file (or one signature) the peer sent and store it
once, or refuse it with its reason. Rules: the replication module doc, in this order:

1. :mod:`storage.admission` on the bytes alone: id, size, checksum, schema, store, bounds, token (against this
   node's view of etcd), the pair's producers, the signature (``unsigned``, ``signer_unknown``, ``foreign_node``,
   ``signature``);
2. against what is held: the same bytes are a no-op (the peer's signature is adopted if this side has none); other
   bytes under a held id are an ``overwrite``; then the path (``path``), retention (``expired``), a local compacted
   file (``superseded``), a newer token for the window (``stale``), the compactor, and a compacted file's accounting
   and content against the local files it would supersede;
3. written signature first, then the file, never over a local file; then held (:class:`storage.held.HeldFiles`).

Every refusal is counted and logged (:class:`storage.refusals.RefusalLog`), remembered when final, and its bytes
kept in ``data_dir/refused/`` when the file is well formed but unwanted (``Refused.keep``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from cluster.errors import EdgepairError, StorageError
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
from storage.catalog import CatalogEntry
from storage.held import HeldFiles
from storage.layout import REFUSED_DIR, segment_path, sig_path
from storage.refusals import RefusalLog
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
    write_signed,
)

if TYPE_CHECKING:
    from cluster.pki import Verifier

log = logging.getLogger("storage.replication")  # the lines the replicator wrote keep its name

_READ_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="repl-read")


class Intake:
    """Checks and stores what the peer sends: :meth:`receive` a file, :meth:`adopt_sig` a signature."""

    def __init__(
        self,
        held: HeldFiles,
        refusals: RefusalLog,
        store_id: str,
        node: str,
        *,
        nodes: Collection[str] | None = None,
        verifier: Verifier | None = None,
        max_token: Callable[[], int | None] | None = None,
        retention_days: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.held = held
        self.refusals = refusals
        self.data_dir = held.data_dir
        self.store_id = store_id
        self.node = node
        self.nodes = nodes
        self.verifier = verifier
        self.max_token = max_token
        self.retention_days = retention_days
        self.clock = clock

    def receive(self, segment_id: str, sha256: str, data: bytes, *, source: str, sig: bytes | None = None) -> bool:
        """Check and store one file from the peer; True if written, False if already held. Rules: module doc.

        Raises :class:`Refused` (a StorageError) with its reason, after logging and counting it.
        """
        try:
            return self._receive(segment_id, sha256, data, source, sig)
        except Refused as exc:
            self.refusals.count(exc.reason, str(exc), source)
            if exc.keep:
                self._keep_refused(segment_id, sha256, data, sig)
            self.refusals.remember(segment_id, sha256, exc.reason)
            raise

    def _receive(self, segment_id: str, sha256: str, data: bytes, source: str, sig: bytes | None) -> bool:
        check_id(segment_id)
        held, held_signed = self.held.lookup(segment_id)
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
                self.check_sig(sig, segment_id, sha256, entry)
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
        self.held.hold(entry, signed=sig is not None)
        log.debug("node %s: camera %s: stored %s from %s", self.node, entry.camera_id, segment_id, source)
        return True

    def check_sig(self, sig: bytes | None, segment_id: str, sha256: str, entry: CatalogEntry) -> str:
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
        self.held.hold(entry, signed=self._sig_good(entry))
        return False

    def _sig_good(self, entry: CatalogEntry) -> bool:
        """True if the signature beside a held file is good (without a verifier: well formed)."""
        try:
            doc = read_sig(self.data_dir / entry.relpath)
            if self.verifier is not None:
                self.check_sig(doc, entry.segment_id, entry.sha256, entry)
        except StorageError:
            return False
        return doc is not None

    def _check_rules(self, e: CatalogEntry, data: bytes) -> None:
        if expired(e.window_end, self.retention_days, e.timezone, self.clock()):
            raise Refused("expired", f"{e.segment_id}: past retention ({self.retention_days} days)", keep=True)
        # The index answers in time independent of the files held (a full scan per file made catch-up quadratic).
        with self.held.lock:
            if self.held.index.superseded(e):
                raise Refused("superseded", f"{e.segment_id}: superseded by a local compacted file", keep=True)
            newer = None if e.compacted else self.held.index.newer_token(e)
            targets = supersedes(e, self.held.state.entries.values()) if e.compacted else []
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
        held, signed = self.held.lookup(segment_id)
        if held is None or signed:
            return False
        return self._adopt(held, sig)

    def _adopt(self, held: CatalogEntry, sig: bytes) -> bool:
        """Store the peer's signature of a file held unsigned here (the peer signed its own after an upgrade, or this
        node's copy of the signature was torn by a crash)."""
        if self.verifier is None:
            return False
        try:
            self.check_sig(sig, held.segment_id, held.sha256, held)
        except (MissingSignature, UnverifiableSignature) as exc:
            log.warning("node %s: signature of %s from the peer not taken: %s", self.node, held.segment_id, exc)
            return False
        except ForeignSigner as exc:
            self.refusals.count("foreign_node", str(exc), "peer")
            return False
        except StorageError as exc:
            self.refusals.count("signature", str(exc), "peer")
            return False
        write_atomic(sig_path(self.data_dir / held.relpath), sig)
        self.held.hold(held, signed=True)
        return True

    def _keep_refused(self, segment_id: str, sha256: str, data: bytes, sig: bytes | None) -> None:
        target = self.data_dir / REFUSED_DIR / f"{segment_id}.{sha256[:12]}.parquet"
        try:
            if sig:
                write_atomic(sig_path(target), sig)
            write_atomic(target, data)
        except StorageError as exc:
            log.error("node %s: cannot keep refused %s: %s", self.node, segment_id, exc)

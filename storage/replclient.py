"""The client side of replication (:mod:`storage.replication`): the loop that pushes new files to the peer and pulls
what this node lacks (anti-entropy), over one Flight connection at a time.

- Push: the files queued by :meth:`storage.replication.Replicator.notify` go one ``do_put`` each, in order, as soon
  as they are queued. (Bursts of all the files queued in one call were measured slower: the first file's
  acknowledgement waited for the burst, and with signatures p99 was 1.5x one call per file.) A push that fails is
  not retried by the pusher: the peer pulls what it lacks.
- Anti-entropy: compare catalogs, take the dataset meta, fetch the files lacking in batches of :data:`BATCH_FILES`
  (one by one from a peer without batch tickets), then the signatures lacking of files held unsigned.
- A file the receiver refused for good (:meth:`storage.replication.Replicator.receive`) is not fetched again with
  the same sha256; a retryable refusal (:data:`storage.refusals.RETRYABLE`: a transfer problem, a token above this
  node's view of etcd, a signature missing or not checkable yet) is fetched again at the next anti-entropy.
- The peer must prove it is the peer node (:func:`storage.flightauth.check_proof`) on every new connection, when the
  Replicator knows the pair; a failed proof is refused (``peer_identity``), counted, and the connection dropped.
- The loop never dies: any exception of a round (a Flight error, a malformed answer of the peer, a bug) is logged,
  counted (:attr:`storage.replstatus.PeerStatus.errors`) and followed by a back-off, then a new connection.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.flight as flight

from storage import replmeta
from storage.admission import MAX_TICKET_IDS
from storage.bounds import Refused
from storage.flightauth import WHOAMI, check_proof, client_kwargs, new_nonce
from storage.refusals import RETRYABLE
from storage.replserver import BATCH_PREFIX, CHUNK, CHUNK_SCHEMA
from storage.signing import read_sig

if TYPE_CHECKING:
    from storage.replication import Replicator

log = logging.getLogger(__name__)

__all__ = ["BATCH_FILES", "RETRYABLE", "PeerClient"]

BATCH_FILES = 128


class PeerClient:
    """Keeps the peer's copy in step with this node's: :meth:`run` until the replicator stops."""

    def __init__(self, repl: Replicator, call_timeout_s: float) -> None:
        self.repl = repl
        self.opts = flight.FlightCallOptions(timeout=call_timeout_s)
        self.batches = True  # until the peer shows it is of a version without batch tickets
        self.catalog_v2 = True  # until the peer shows it is of the unsigned release

    def _connect(self) -> flight.FlightClient:
        client = flight.FlightClient(self.repl.peer_url, **client_kwargs(self.repl.identity))
        try:
            self.check_peer(client)
        except BaseException:
            client.close()
            raise
        return client

    def check_peer(self, client: flight.FlightClient) -> None:
        """Refused(``peer_identity``, counted) unless the server proves it is the peer node (module rules)."""
        repl = self.repl
        if repl.identity is None or repl.verifier is None or repl.peer_node is None:
            return
        nonce = new_nonce()
        try:
            results = list(client.do_action(flight.Action(WHOAMI, nonce), options=self.opts))
            if not results:
                raise Refused("peer_identity", "the peer answered whoami with nothing")
            check_proof(repl.verifier, results[0].body.to_pybytes(), nonce, repl.peer_node, repl.nodes, repl.clock())
        except Refused as exc:
            repl.count_refusal(exc.reason, str(exc), "peer")
            raise
        except flight.FlightServerError as exc:
            if "unknown action" not in str(exc):
                raise
            msg = f"the peer does not prove it is {repl.peer_node} (no whoami: upgrade it)"
            repl.count_refusal("peer_identity", msg, "peer")
            raise Refused("peer_identity", msg) from None

    def run(self) -> None:
        repl, peer = self.repl, self.repl.peer
        client: flight.FlightClient | None = None
        next_sync = 0.0
        backoff = 0.1
        while not repl.stopping.is_set():
            try:
                if client is None:
                    client = self._connect()
                if time.monotonic() >= next_sync:
                    self.anti_entropy(client)
                    next_sync = time.monotonic() + repl.anti_entropy_s
                self.push_queue(client)
                peer.connected = True
                backoff = 0.1
            except Exception as exc:  # never dies (module rules): log, count, back off, reconnect
                error = f"{type(exc).__name__}: {str(exc)[:500]}"
                peer.errors += 1
                repl.loop_restarts["replication"] = repl.loop_restarts.get("replication", 0) + 1
                expected = isinstance(exc, flight.FlightError | OSError | pa.ArrowException | Refused)
                if not expected:
                    log.error("node %s: replication round with %s failed: %s", repl.node, repl.peer_url, error,
                              exc_info=exc)  # fmt: skip
                elif peer.connected or peer.last_error != error:  # once per change, not every retry
                    log.warning("node %s: peer %s unreachable or failing: %s", repl.node, repl.peer_url, error)
                peer.connected = False
                peer.last_error = error
                next_sync = 0.0  # anti-entropy again once reconnected
                repl.drop_queue()  # the peer pulls what it lacks
                if client is not None:
                    try:
                        client.close()
                    except Exception as close_exc:  # a broken connection may fail to close too
                        log.debug("node %s: closing the Flight client: %s", repl.node, close_exc)
                client = None
                repl.stopping.wait(backoff)
                backoff = min(backoff * 2, 2.0)
            try:
                repl.write_status()
            except Exception as exc:
                log.error("node %s: cannot write replication status: %s", repl.node, exc)
            repl.wake.wait(min(0.5, max(0.0, next_sync - time.monotonic())))
            repl.wake.clear()
        if client is not None:
            client.close()

    # ---- push ------------------------------------------------------------------------------------------------

    def push_queue(self, client: flight.FlightClient) -> None:
        repl = self.repl
        for _ in range(10_000):
            head = repl.queued(1)
            if not head:
                return
            sid, written_at, entry = head[0]
            if entry is not None:
                path = repl.data_dir / entry.relpath
                if self._push_one(client, sid, entry.sha256, path.read_bytes(), read_sig(path)):
                    repl.peer.pushed += 1
                    repl.peer.push_lags.append(repl.clock() - written_at)
            repl.unqueue(1)

    def _push_one(self, client: flight.FlightClient, sid: str, sha: str, data: bytes, sig: bytes | None) -> bool:
        """One file in one call; True if the peer took it (False: refused, logged)."""
        desc = flight.FlightDescriptor.for_path(sid.encode(), sha.encode(), *([sig] if sig else []))
        try:
            writer, _ = client.do_put(desc, CHUNK_SCHEMA, options=self.opts)
            for i in range(0, len(data), CHUNK):
                chunk = pa.array([data[i : i + CHUNK]], pa.binary())
                writer.write_batch(pa.record_batch([chunk], CHUNK_SCHEMA))
            writer.close()
        except flight.FlightServerError as exc:
            if "refused" not in str(exc):
                raise
            log.warning("node %s: peer refused %s: %s", self.repl.node, sid, exc)
            return False
        return True

    # ---- pull ------------------------------------------------------------------------------------------------

    def remote_catalog(self, client: flight.FlightClient) -> dict[str, tuple[str, bool]]:
        if self.catalog_v2:
            try:
                results = list(client.do_action(flight.Action("catalog.v2", b""), options=self.opts))
                raw = json.loads(results[0].body.to_pybytes())
                return {str(k): (str(v[0]), bool(v[1])) for k, v in raw.items()}
            except flight.FlightServerError as exc:
                if "unknown action" not in str(exc):
                    raise
                log.info("node %s: peer of the unsigned release: plain catalog", self.repl.node)
                self.catalog_v2 = False
        results = list(client.do_action(flight.Action("catalog", b""), options=self.opts))
        return {str(k): (str(v), False) for k, v in json.loads(results[0].body.to_pybytes()).items()}

    def anti_entropy(self, client: flight.FlightClient) -> None:
        repl = self.repl
        remote = self.remote_catalog(client)
        error = replmeta.sync_meta(client, self.opts, repl.data_dir, repl.store_id)
        if error:
            repl.peer.last_error = error
            log.error("node %s: %s", repl.node, error)
        state = repl.rescan()
        refused = repl.set_peer_missing(remote)
        wanted = []
        for sid in sorted(remote):
            sha = remote[sid][0]
            held = state.entries.get(sid)
            if (held is not None and held.sha256 == sha) or refused.get(sid) == sha:
                continue
            if held is not None:
                # same id, other bytes: verify ours; a corrupt copy is quarantined and fetched below
                state = repl.rescan(verify=True)
                if sid in state.entries:
                    continue
            wanted.append(sid)
        pulled = 0
        for sid, data, sig in self.fetch(client, wanted):
            try:
                if repl.receive(sid, remote[sid][0], data, source="pull", sig=sig):
                    pulled += 1
            except Refused as exc:
                if exc.reason in RETRYABLE:
                    repl.peer.last_error = str(exc)
        if repl.verifier is not None:
            have = state.entries
            lacking = [s for s, (sha, signed) in remote.items() if signed and s in have and have[s].sha256 == sha]
            self.fetch_sigs(client, [s for s in lacking if s not in state.signed])
        repl.peer.pulled += pulled
        repl.peer.last_sync = repl.clock()
        if pulled:
            log.info("node %s: anti-entropy pulled %d files from %s", repl.node, pulled, repl.peer_url)

    def fetch_sigs(self, client: flight.FlightClient, ids: list[str]) -> None:
        """Take the peer's signatures of files held here unsigned (the migration of the unsigned release, or a
        signature torn by a crash)."""
        adopted = 0
        for i in range(0, len(ids), MAX_TICKET_IDS):
            body = json.dumps(ids[i : i + MAX_TICKET_IDS]).encode()
            results = list(client.do_action(flight.Action("sigs", body), options=self.opts))
            for sid, doc in json.loads(results[0].body.to_pybytes()).items():
                if isinstance(doc, str) and self.repl.adopt_sig(sid, doc.encode()):
                    adopted += 1
        if adopted:
            log.info("node %s: took %d signatures of files held unsigned from the peer", self.repl.node, adopted)

    def fetch(self, client: flight.FlightClient, wanted: list[str]) -> Iterator[tuple[str, bytes, bytes | None]]:
        """The bytes and signature of each wanted file, in order: in batches, or one by one from an old peer."""
        pending = list(wanted)
        while pending and not self.repl.stopping.is_set():
            if self.batches:
                ticket = flight.Ticket(BATCH_PREFIX + json.dumps(pending[:BATCH_FILES]).encode())
                try:
                    table = client.do_get(ticket, options=self.opts).read_all()
                except flight.FlightServerError as exc:
                    log.info("node %s: peer serves no batches (%s): fetching one file at a time", self.repl.node, exc)
                    self.batches = False
                    continue
                got = table.column("segment_id").to_pylist()
                if not got:
                    raise flight.FlightServerError("empty batch from the peer")
                sigs: list[Any] = table.column("sig").to_pylist() if "sig" in table.column_names else [None] * len(got)
                for sid, data, sig in zip(got, table.column("data").to_pylist(), sigs, strict=True):
                    if data is not None:  # null: the peer no longer serves it; the next anti-entropy decides
                        yield sid, data, sig
                done = set(got)
                pending = [sid for sid in pending if sid not in done]
            else:
                sid = pending.pop(0)
                reader = client.do_get(flight.Ticket(sid.encode()), options=self.opts)
                yield sid, b"".join(c.as_py() for c in reader.read_all().column("chunk")), None

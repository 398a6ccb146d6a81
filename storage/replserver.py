"""The Flight service of one node (the wire of :mod:`storage.replication`): what it serves and how it receives.

- ``do_action("catalog")``: ``{id: sha256}`` of the live files (the format of the unsigned release);
  ``do_action("catalog.v2")``: ``{id: [sha256, signed 0/1]}``; ``do_action("sigs", JSON list of ids)``: ``{id:
  signature document or null}`` (at most :data:`storage.admission.MAX_TICKET_IDS` ids); ``do_action("meta")``: the
  dataset's ``store.json`` and KPI definitions history; ``do_action("whoami", nonce)``: this node's certificate and
  its signature over the caller's nonce (:func:`storage.flightauth.check_peer`: the client checks the server is the
  peer node).
- ``do_get(Ticket(id))``: the file's bytes as ``chunk: binary`` rows; ``do_get(Ticket("batch:" + JSON list))``:
  ``(segment_id, data, sig)`` rows for the first of them up to :data:`BATCH_BYTES` (null data: no longer served).
- ``do_put`` with descriptor path ``[id, sha256]`` or ``[id, sha256, signature document]`` and ``chunk: binary``
  batches: read batch by batch and cut off past :data:`storage.admission.MAX_UPLOAD_BYTES`. At most
  :data:`MAX_UPLOADS` uploads are read at once (the others wait up to :data:`UPLOAD_WAIT_S`, then are refused
  ``busy``, retryable), so uploads hold at most about 2 x MAX_UPLOAD_BYTES x MAX_UPLOADS in memory (1 GiB of
  batches, and the joined copy of each): 2 GiB, plus one gRPC message per upload in flight (a batch is in memory
  before its size is known; the pusher sends 1 MiB batches).

Every refusal raises ``FlightServerError("refused: ...")`` after the Replicator logged and counted it; the server
keeps serving. An unexpected exception of a handler is logged here with its traceback and reaches the client only as
``FlightServerError("internal error (<type>)")``: never a traceback or a server path.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import pyarrow as pa
import pyarrow.flight as flight

from storage.admission import MAX_TICKET_IDS, MAX_UPLOAD_BYTES, check_id, parse_batch_ticket
from storage.bounds import Refused
from storage.flightauth import WHOAMI, NodeProver, server_kwargs
from storage.signing import MAX_SIG_BYTES

if TYPE_CHECKING:
    from storage.replication import Replicator

log = logging.getLogger(__name__)

CHUNK = 1 << 20
MAX_UPLOADS = 4
UPLOAD_WAIT_S = 30.0
CHUNK_SCHEMA = pa.schema([pa.field("chunk", pa.binary())])
BATCH_PREFIX = b"batch:"
BATCH_BYTES = 32 << 20
BATCH_SCHEMA = pa.schema(
    [pa.field("segment_id", pa.string()), pa.field("data", pa.large_binary()), pa.field("sig", pa.binary())]
)


F = TypeVar("F", bound=Callable[..., Any])


def _internal(exc: Exception, node: str, what: str) -> flight.FlightServerError:
    log.error("node %s: %s failed unexpectedly", node, what, exc_info=exc)
    return flight.FlightServerError(f"internal error ({type(exc).__name__})")


def _guarded(method: F) -> F:
    """Refused -> counted refusal; a Flight error as it is; anything else -> logged, a short error to the client."""

    @functools.wraps(method)
    def wrapper(self: FlightService, *args: Any) -> Any:
        try:
            return method(self, *args)
        except Refused as exc:
            raise self._refuse(exc) from None
        except flight.FlightError:
            raise
        except Exception as exc:
            raise _internal(exc, self.repl.node, method.__name__) from None

    return wrapper  # type: ignore[return-value]


class FlightService(flight.FlightServerBase):  # type: ignore[misc]
    def __init__(self, repl: Replicator, location: str) -> None:
        super().__init__(location, **server_kwargs(repl.identity, repl.count_refusal, repl.nodes))
        self.repl = repl
        self.prover = NodeProver(repl.identity) if repl.identity is not None else None
        self.uploads = threading.BoundedSemaphore(MAX_UPLOADS)

    def _refuse(self, exc: Refused) -> flight.FlightServerError:
        self.repl.count_refusal(exc.reason, str(exc))
        return flight.FlightServerError(f"refused: {exc}")

    def do_action(self, context: Any, action: flight.Action) -> Iterator[flight.Result]:
        return iter(self._action(action))  # computed whole here, so that every error passes _guarded

    @_guarded
    def _action(self, action: flight.Action) -> list[flight.Result]:
        if action.type == "catalog":
            return [flight.Result(json.dumps(self.repl.live_catalog()).encode())]
        if action.type == "catalog.v2":
            return [flight.Result(json.dumps(self.repl.live_catalog_v2()).encode())]
        if action.type == "sigs":
            ids = parse_batch_ticket(action.body.to_pybytes())
            docs = {sid: self.repl.read_sig(sid) for sid in ids[:MAX_TICKET_IDS]}
            return [flight.Result(json.dumps({k: v.decode() if v else None for k, v in docs.items()}).encode())]
        if action.type == "meta":
            return [flight.Result(json.dumps(self.repl.dataset_meta()).encode())]
        if action.type == WHOAMI and self.prover is not None:
            return [flight.Result(self.prover.prove(action.body.to_pybytes()))]
        raise flight.FlightServerError(f"unknown action {action.type[:40]!r}")

    @_guarded
    def do_get(self, context: Any, ticket: flight.Ticket) -> flight.RecordBatchStream:
        if ticket.ticket.startswith(BATCH_PREFIX):
            ids = parse_batch_ticket(ticket.ticket[len(BATCH_PREFIX) :])
            rows: dict[str, list[Any]] = {"segment_id": [], "data": [], "sig": []}
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
                rows["sig"].append(self.repl.read_sig(sid) if data is not None else None)
                size += len(data or b"")
            return flight.RecordBatchStream(pa.table(rows, schema=BATCH_SCHEMA))
        sid = ticket.ticket.decode(errors="replace")
        data = self.repl.read_file(sid)
        chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)] or [b""]
        return flight.RecordBatchStream(pa.table({"chunk": pa.array(chunks, pa.binary())}))

    def do_put(self, context: Any, descriptor: flight.FlightDescriptor, reader: Any, writer: Any) -> None:
        try:
            self._put(descriptor, reader)
        except Refused as exc:  # logged and counted by receive
            raise flight.FlightServerError(f"refused: {exc}") from None
        except flight.FlightError:
            raise
        except Exception as exc:
            raise _internal(exc, self.repl.node, "do_put") from None

    def _put(self, descriptor: flight.FlightDescriptor, reader: Any) -> None:
        try:
            sid, sha, sig = self._put_header(descriptor)
            if not self.uploads.acquire(timeout=UPLOAD_WAIT_S):
                raise Refused("busy", f"push of {sid}: {MAX_UPLOADS} uploads already in progress")
        except Refused as exc:
            raise self._refuse(exc) from None
        try:
            try:
                data = self._read_upload(sid, reader)
            except Refused as exc:
                raise self._refuse(exc) from None
        finally:
            self.uploads.release()
        self.repl.receive(sid, sha, data, source="push", sig=sig)

    @staticmethod
    def _put_header(descriptor: flight.FlightDescriptor) -> tuple[str, str, bytes | None]:
        path = descriptor.path or []
        if len(path) not in (2, 3):
            raise Refused("bad_request", f"push descriptor of {len(path)} parts (id, sha256[, signature])")
        sid = check_id(path[0].decode(errors="replace"))
        sha = path[1].decode(errors="replace")
        if len(sha) != 64:
            raise Refused("bad_request", f"push of {sid}: sha256 {sha[:70]!r} is not 64 hex digits")
        sig = path[2] if len(path) == 3 else None
        if sig is not None and len(sig) > MAX_SIG_BYTES:
            raise Refused("bad_request", f"push of {sid}: a signature of {len(sig)} bytes")
        return sid, sha, sig

    @staticmethod
    def _read_upload(sid: str, reader: Any) -> bytes:
        """The pushed bytes, read batch by batch; Refused(``too_large``) as soon as they pass the cap.

        Memory: at most MAX_UPLOAD_BYTES of batches plus the joined copy, and one batch past the cap before it is cut
        off; with :data:`MAX_UPLOADS` at once, about 2 x 256 MiB x 4 = 2 GiB at worst (module doc)."""
        if not reader.schema.remove_metadata().equals(CHUNK_SCHEMA):
            raise Refused("bad_request", f"push of {sid} with schema {reader.schema} (expected chunk: binary)")
        parts: list[bytes] = []
        size = 0
        while True:
            try:
                chunk = reader.read_chunk()
            except StopIteration:
                break
            batch = chunk.data
            if batch is None:
                continue
            size += batch.nbytes
            if size > MAX_UPLOAD_BYTES:
                raise Refused("too_large", f"push of {sid} passed {MAX_UPLOAD_BYTES} bytes: cut off")
            parts.extend(v for v in batch.column(0).to_pylist() if v)
        return b"".join(parts)

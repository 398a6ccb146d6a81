"""The dataset's own files besides segments, replicated with them: ``store.json`` and the KPI definitions history."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pyarrow.flight as flight

from cluster.errors import StorageError
from storage.segments import write_atomic

log = logging.getLogger(__name__)

MAX_META_BYTES = 4 << 20


def dataset_meta(data_dir: Path) -> dict[str, Any]:
    """``store.json`` (or None) and the KPI definitions history, as the ``meta`` action serves them."""
    from storage.analytics import DEFINITIONS_FILE, STORE_FILE, load_definitions

    store = data_dir / STORE_FILE
    return {
        "store": json.loads(store.read_text(encoding="utf-8")) if store.exists() else None,
        "definitions": [r.to_json() for r in load_definitions(data_dir)]
        if (data_dir / DEFINITIONS_FILE).exists()
        else [],
    }


def sync_meta(client: flight.FlightClient, options: Any, data_dir: Path, store_id: str) -> str | None:
    """Take the peer's store.json if this side has none, and merge its KPI definitions history (converges).

    Returns an error to report (segments still replicate), or None.
    """
    from storage.analytics import STORE_FILE, merge_definitions
    from storage.kpis import DefinitionRecord

    try:
        results = list(client.do_action(flight.Action("meta", b""), options=options))
    except flight.FlightServerError as exc:  # a peer of an older version: segments only
        log.debug("peer serves no dataset meta: %s", exc)
        return None
    try:
        body = results[0].body.to_pybytes()
        if len(body) > MAX_META_BYTES:
            raise StorageError(f"{len(body)} bytes of meta (at most {MAX_META_BYTES})")
        meta = json.loads(body)
        store = meta.get("store")
        if store and not (data_dir / STORE_FILE).exists():
            if store.get("store_id") != store_id:
                raise StorageError(f"the peer's store.json is of store {store.get('store_id')!r}")
            write_atomic(data_dir / STORE_FILE, (json.dumps(store, indent=1) + "\n").encode())
        records = [DefinitionRecord.from_json(d) for d in meta.get("definitions") or []]
        if records:
            merge_definitions(data_dir, records)
    except (StorageError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as exc:
        return f"dataset meta from the peer not taken: {exc}"
    return None

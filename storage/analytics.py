"""The analyst's DuckDB database: KPI views over one store's dataset, or over several stores merged for HQ.

Files kept in a store's dataset (beside ``events/``), written by the node when it runs a config
(:func:`ensure_store_file`, :func:`record_definition`), never by the analyst's tools, which only read the data dir:

- ``store.json``: store id, IANA time zone, configured lines (camera, line, kind) and zones (camera, zone,
  min_dwell_s). Written when absent; a different store id or time zone is refused (a dataset has one of each).
- ``kpi_definitions.jsonl``: the history of KPI definitions, one JSON line each (version, effective_from UTC,
  thresholds), appended (by an atomic rewrite) when the config's definition changes. See :mod:`storage.kpis`.
  A definition not recorded yet applies from now in the analyst's session only (:func:`definitions_in_force`).

:func:`open_analytics` writes a DuckDB database file whose views read the Parquet segments by absolute path, so the
plain ``duckdb`` shell can open it while the nodes keep writing (new segments are read by every query; which
producer is credited and superseded files are a snapshot taken when the file is built: run it again to refresh;
if a bad file was left out, the views read the snapshot's file list, see :mod:`storage.views`). That file is the
analyst's own and unrestricted; :func:`connect_store` (the report) is locked like ``edgepair query``
(:mod:`storage.sandbox`).
:func:`merge_stores` copies the credited events and the processed time of several stores into one folder, with the
store as a column and a hive partition, and :func:`open_merged_analytics` gives the same views over it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from cluster.errors import ConfigError, QueryError, StorageError
from storage.kpis import (
    KPI_SCHEMA,
    DefinitionRecord,
    KpiDefinition,
    LineSpec,
    StoreSetup,
    ZoneSpec,
    create_kpi_views,
    definition_periods,
)
from storage.sandbox import lock_down, one_line
from storage.segments import load_timezone, write_atomic
from storage.sqltext import literal as _literal
from storage.views import INTERNAL_SCHEMA, PARQUET_CACHE, create_views

if TYPE_CHECKING:
    from storage.kpimat import BlockTrust

log = logging.getLogger(__name__)

STORE_FILE = "store.json"
DEFINITIONS_FILE = "kpi_definitions.jsonl"
MERGED_DIR = "merged"
STORES_DIR = "stores"
EVENT_COLUMNS = (
    "store_id, camera_id, ts, ts_local, local_date, local_hour, track_id, kind, line_id, zone_id, direction, dwell_s,"
    " node, token, config_version, model_version, segment_id, seq"
)


# --- dataset files -------------------------------------------------------------------------------------------------


def read_store_file(folder: Path) -> StoreSetup:
    """The :class:`StoreSetup` saved in ``folder/store.json`` (KPI thresholds are in the history, not here)."""
    path = Path(folder) / STORE_FILE
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        return StoreSetup(
            store_id=str(d["store_id"]),
            timezone=str(d["timezone"]),
            lines=tuple(LineSpec(str(c), str(i), str(k)) for c, i, k in d.get("lines", [])),
            zones=tuple(ZoneSpec(str(c), str(z), float(m)) for c, z, m in d.get("zones", [])),
        )
    except FileNotFoundError:
        raise StorageError(
            f"{path} not found: the store's node writes it when it first runs on this data dir"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StorageError(
            f"{path} is not a valid store file ({exc}); remove it: the store's node writes it again when it starts"
        ) from exc


def ensure_store_file(data_dir: Path, setup: StoreSetup) -> None:
    """Write ``data_dir/store.json`` if absent or if its lines/zones changed; refuse another store or time zone."""
    load_timezone(setup.timezone)
    path = Path(data_dir) / STORE_FILE
    if path.exists():
        old = read_store_file(data_dir)
        if (old.store_id, old.timezone) != (setup.store_id, setup.timezone):
            raise ConfigError(
                f"{path} belongs to store {old.store_id!r} in {old.timezone}, the config says {setup.store_id!r} in"
                f" {setup.timezone}: a dataset holds one store in one time zone; check --config and the data folder"
            )
        if old.to_json() == setup.to_json():
            return
    write_atomic(path, (json.dumps(setup.to_json(), indent=1) + "\n").encode())
    log.info("store %s: wrote %s", setup.store_id, path)


def load_definitions(folder: Path) -> list[DefinitionRecord]:
    """The definitions history of ``folder`` (oldest first); empty if there is none."""
    path = Path(folder) / DEFINITIONS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc}") from exc
    out: list[DefinitionRecord] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(DefinitionRecord.from_json(json.loads(line)))
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise StorageError(f"{path}:{n}: not a valid KPI definition ({exc}); fix or remove that line") from exc
    return out


def record_definition(
    data_dir: Path, definition: KpiDefinition, *, effective_from: datetime | None = None
) -> list[DefinitionRecord]:
    """Append ``definition`` to the history if it differs from the last one; return the whole history.

    ``effective_from`` (default: now, UTC) must not be before the last record's: history is never rewritten. The
    file is rewritten whole under a temporary name and renamed, so a reader never sees half a line.
    """
    history = load_definitions(data_dir)
    version = definition.version()
    if history and history[-1].version == version:
        return history
    eff = (effective_from or datetime.now(UTC)).astimezone(UTC)
    if history and eff < history[-1].effective_from:
        raise ConfigError(
            f"KPI definition {version} would take effect at {eff.isoformat()}, before the last recorded one"
            f" ({history[-1].version} at {history[-1].effective_from.isoformat()}): history is never rewritten"
        )
    rec = DefinitionRecord(version, eff, definition)
    path = Path(data_dir) / DEFINITIONS_FILE
    lines = [json.dumps(r.to_json(), sort_keys=True) for r in [*history, rec]]
    write_atomic(path, ("\n".join(lines) + "\n").encode())
    log.info("recorded KPI definition %s effective from %s in %s", version, eff.isoformat(), path)
    return [*history, rec]


def merge_definitions(data_dir: Path, records: list[DefinitionRecord]) -> bool:
    """Merge a peer's definitions history into ``data_dir``'s; True if the local file changed.

    The two workstations record a new definition when each of them first runs the new config, seconds apart. The
    merge is the union ordered by effective instant, where a record repeating the version just before it is dropped
    (the later of two recordings of one change): both sides converge to the same history, which takes the change
    from the first workstation that ran it. A definition reverted later (A, B, A) stays three records.
    """
    local = load_definitions(data_dir)
    seen = {(r.version, r.effective_from) for r in local}
    union = sorted(
        [*local, *(r for r in records if (r.version, r.effective_from) not in seen)],
        key=lambda r: (r.effective_from, r.version),
    )
    merged: list[DefinitionRecord] = []
    for r in union:
        if not merged or merged[-1].version != r.version:
            merged.append(r)
    if merged == local:
        return False
    lines = [json.dumps(r.to_json(), sort_keys=True) for r in merged]
    write_atomic(Path(data_dir) / DEFINITIONS_FILE, ("\n".join(lines) + "\n").encode())
    log.info("merged the peer's KPI definitions into %s: %d records", Path(data_dir) / DEFINITIONS_FILE, len(merged))
    return True


# --- base relations ------------------------------------------------------------------------------------------------


def register_table(con: duckdb.DuckDBPyConnection, name: str, table: pa.Table) -> None:
    """Create (or replace) table ``name`` in ``con`` from an Arrow table."""
    con.register("_edgepair_load", table)
    try:
        con.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM _edgepair_load")
    finally:
        con.unregister("_edgepair_load")


def _config_tables(con: duckdb.DuckDBPyConnection, stores: list[tuple[StoreSetup, list[DefinitionRecord]]]) -> None:
    """Create ``stores``, ``lines``, ``zones``, ``kpi_definitions`` and ``kpi_zone_thresholds``."""
    s = pa.string()
    rows: dict[str, list[dict[str, Any]]] = {"stores": [], "lines": [], "zones": [], "defs": [], "thr": []}
    for setup, history in stores:
        if not history:
            raise ConfigError(f"store {setup.store_id}: no KPI definition recorded (kpi_definitions.jsonl is empty)")
        rows["stores"].append({"store_id": setup.store_id, "timezone": setup.timezone})
        rows["lines"] += [
            {"store_id": setup.store_id, "camera_id": ln.camera_id, "line_id": ln.line_id, "kind": ln.kind}
            for ln in setup.lines
        ]
        rows["zones"] += [
            {"store_id": setup.store_id, "camera_id": z.camera_id, "zone_id": z.zone_id, "min_dwell_s": z.min_dwell_s}
            for z in setup.zones
        ]
        for rec, start, end in definition_periods(history, setup.timezone):
            d = rec.definition
            rows["defs"].append(
                {
                    "store_id": setup.store_id,
                    "version": rec.version,
                    "effective_from": rec.effective_from,
                    "valid_from": start,
                    "valid_to": end,
                    "bounce_s": d.bounce_s,
                    "visit_merge_s": d.visit_merge_s,
                    "opening": f"{d.opening_hours[0]}-{d.opening_hours[1]}",
                    "open_s": d.open_s,
                    "close_s": d.close_s,
                    "definition": json.dumps(d.to_json(), sort_keys=True),
                }
            )
            rows["thr"] += [
                {"store_id": setup.store_id, "version": rec.version, "camera_id": c, "zone_id": z, "min_dwell_s": m}
                for c, z, m in d.min_dwell_s
            ]
    schemas = {
        "stores": pa.schema([("store_id", s), ("timezone", s)]),
        "lines": pa.schema([("store_id", s), ("camera_id", s), ("line_id", s), ("kind", s)]),
        "zones": pa.schema([("store_id", s), ("camera_id", s), ("zone_id", s), ("min_dwell_s", pa.float64())]),
        "defs": pa.schema(
            [
                ("store_id", s),
                ("version", s),
                ("effective_from", pa.timestamp("us", tz="UTC")),
                ("valid_from", pa.date32()),
                ("valid_to", pa.date32()),
                ("bounce_s", pa.float64()),
                ("visit_merge_s", pa.float64()),
                ("opening", s),
                ("open_s", pa.int32()),
                ("close_s", pa.int32()),
                ("definition", s),
            ]
        ),
        "thr": pa.schema(
            [("store_id", s), ("version", s), ("camera_id", s), ("zone_id", s), ("min_dwell_s", pa.float64())]
        ),
    }
    names = {"defs": "kpi_definitions", "thr": "kpi_zone_thresholds"}
    for key, schema in schemas.items():
        register_table(con, names.get(key, key), pa.Table.from_pylist(rows[key], schema=schema))


STORAGE_COMPATIBILITY = "v1.0.0"
"""The DuckDB storage format of the analyst's file (``analytics open``, the HQ merge): what every DuckDB 1.x client
reads (the ``duckdb`` CLI on PyPI, DBeaver's driver, notebooks with an older ``duckdb``), not only the 2.x of the
venv; a file in 2.x's own format is refused by them ("database file with version number 69")."""


def _connect(database: str, *, compatible: bool = False) -> duckdb.DuckDBPyConnection:
    try:
        config: dict[str, str | bool | int | float | list[str]] = (
            {"storage_compatibility_version": STORAGE_COMPATIBILITY} if compatible else {}
        )
        con = duckdb.connect(database, config=config)
        con.execute("SET autoinstall_known_extensions = false")
        con.execute("LOAD icu")
        con.execute(PARQUET_CACHE)
    except duckdb.Error as exc:
        raise QueryError(f"cannot open DuckDB database {database}: {exc}") from exc
    return con


def _has_table(con: duckdb.DuckDBPyConnection, schema: str, name: str) -> bool:
    q = "SELECT count(*) FROM duckdb_tables() WHERE schema_name = ? AND table_name = ?"
    row = con.execute(q, [schema, name]).fetchone()
    return bool(row and row[0])


def _check_store_file(data_dir: Path, setup: StoreSetup) -> None:
    """Refuse a dataset of another store or time zone (read only: a missing ``store.json`` is the node's to write)."""
    load_timezone(setup.timezone)
    if not (Path(data_dir) / STORE_FILE).exists():
        return
    old = read_store_file(data_dir)
    if (old.store_id, old.timezone) != (setup.store_id, setup.timezone):
        raise ConfigError(
            f"{Path(data_dir) / STORE_FILE} belongs to store {old.store_id!r} in {old.timezone}, the config says"
            f" {setup.store_id!r} in {setup.timezone}: a dataset holds one store in one time zone; check --config and"
            " the data folder"
        )


def definitions_in_force(data_dir: Path, definition: KpiDefinition) -> list[DefinitionRecord]:
    """The recorded history, plus ``definition`` from now on if it is not the last one recorded, in memory only.

    The node records a new definition when it first runs the config (:func:`record_definition`); the analyst's
    tools never write the data dir, so a definition not recorded yet applies from now in this session only.
    """
    history = load_definitions(data_dir)
    version = definition.version()
    if history and history[-1].version == version:
        return history
    eff = datetime.now(UTC)
    if history:
        eff = max(eff, history[-1].effective_from)
    log.info(
        "KPI definition %s is not recorded in %s yet (the node records it when it runs this config): used from"
        " %s in this session only",
        version,
        Path(data_dir) / DEFINITIONS_FILE,
        eff.isoformat(),
    )
    return [*history, DefinitionRecord(version, eff, definition)]


def build_store_views(
    con: duckdb.DuckDBPyConnection,
    data_dir: Path,
    setup: StoreSetup,
    *,
    history: list[DefinitionRecord] | None = None,
    materialised: bool = True,
    root: str | None = None,
    trust: BlockTrust | None = None,
) -> int:
    """Create every view of one store's dataset on ``con``: :mod:`storage.views`, config tables, KPI views; return
    the number of materialised KPI days the views read (:mod:`storage.kpimat`; 0 with ``materialised=False``: every
    KPI is recomputed from the events, as the bench and the tests compare).

    ``history``: the KPI definitions (default: :func:`definitions_in_force`). ``root``: how the SQL names
    ``data_dir`` (default: its absolute path). ``trust``: what materialised blocks are checked with. Read only:
    nothing is written or moved in ``data_dir`` (the node writes ``store.json``, the definitions history and the
    materialised days).
    """
    from storage.kpimat import attach_materialised

    data_dir = Path(data_dir)
    _check_store_file(data_dir, setup)
    history = history if history is not None else definitions_in_force(data_dir, setup.definition())
    root = root if root is not None else str(data_dir.resolve())
    create_views(con, data_dir, setup.timezone, root=root)
    _config_tables(con, [(setup, history)])
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {KPI_SCHEMA}")
    store = _literal(setup.store_id)
    if _has_table(con, INTERNAL_SCHEMA, "credited"):
        # Credited pieces (exactly once) from the snapshot, plus the windows of segments written since.
        pieces = f"""
            SELECT {store} AS store_id, camera_id, p_start, p_end FROM {INTERNAL_SCHEMA}.credited
            UNION ALL
            SELECT store_id, camera_id, window_start, window_end FROM segment_meta m
            WHERE m.filename NOT IN (SELECT filename FROM {INTERNAL_SCHEMA}.files)
        """
    else:
        pieces = "SELECT store_id, camera_id, window_start AS p_start, window_end AS p_end FROM segment_meta"
    con.execute(f"CREATE OR REPLACE VIEW {KPI_SCHEMA}.cov_pieces AS {pieces}")
    fresh = attach_materialised(con, data_dir, setup, history, trust) if materialised else 0
    if not fresh:
        create_kpi_views(con)
    return fresh


def _build_file(out_db: Path, build: Any) -> Path:
    """Build a database at a temporary name beside ``out_db`` with ``build(con)``, then rename it into place."""
    out_db = Path(out_db).resolve()
    out_db.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_db.with_name(f".{out_db.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    con = _connect(str(tmp), compatible=True)
    try:
        build(con)
        con.execute("CHECKPOINT")
    except duckdb.Error as exc:
        raise QueryError(f"cannot build the analytics database {out_db}: {exc}") from exc
    finally:
        con.close()
        Path(str(tmp) + ".wal").unlink(missing_ok=True)
    os.replace(tmp, out_db)
    return out_db


def outside_data_dir(path: Path, data_dir: Path, what: str) -> Path:
    """``path`` resolved, refused (ConfigError) if it is inside ``data_dir``: analysts' tools never write there."""
    path, root = Path(path).resolve(), Path(data_dir).resolve()
    if path == root or root in path.parents:
        raise ConfigError(
            f"{what} {path} is inside the data dir {root}, which analysts' tools never write: choose a path outside it"
        )
    return path


@contextlib.contextmanager
def _working_dir(folder: Path) -> Iterator[None]:
    """Run the block in ``folder`` (DuckDB resolves the views' relative paths against the working directory)."""
    old = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(old)


def open_analytics(data_dir: Path, setup: StoreSetup, out_db: Path, *, trust: BlockTrust | None = None) -> Path:
    """Write the analyst's DuckDB file ``out_db`` with every view over the store dataset ``data_dir``; return it.

    The views name the data by paths relative to the folder of ``out_db`` (``data/events/...`` when the file sits
    beside the data dir), so that folder can be copied whole, data and file, to another machine: open the file from
    its own folder (``cd`` there; DuckDB resolves relative paths against the working directory).
    The file is built under a temporary name and renamed, so a shell that has the old one open keeps working.
    ``data_dir`` is only read; ``out_db`` must be outside it. The file is the analyst's own: DuckDB does not store
    settings in it, so a ``duckdb`` shell opening it has DuckDB's defaults (it can read any file its user can);
    the sandbox of :mod:`storage.sandbox` is for ``edgepair query`` and the report.
    """
    out_db = outside_data_dir(out_db, data_dir, "the analytics database")
    data_abs = Path(data_dir).resolve()
    root = Path(os.path.relpath(data_abs, out_db.parent)).as_posix()

    def build(con: duckdb.DuckDBPyConnection) -> None:
        with _working_dir(out_db.parent):
            build_store_views(con, data_abs, setup, root=root, trust=trust)

    path = _build_file(out_db, build)
    log.info("store %s: analytics database %s over %s (as %s)", setup.store_id, path, data_abs, root)
    return path


def connect_store(
    data_dir: Path, setup: StoreSetup, *, locked: bool = True, trust: BlockTrust | None = None
) -> duckdb.DuckDBPyConnection:
    """An in-memory connection with every view of :func:`open_analytics` (for reports and tests).

    ``locked`` (the default): once built, the connection may read only the segments under ``data_dir/events`` and
    no setting can change (:func:`storage.sandbox.lock_down`). Nothing is written in ``data_dir``.
    """
    con = _connect(":memory:")
    try:
        build_store_views(con, data_dir, setup, trust=trust)
        if locked:
            lock_down(con, data_dir)
    except duckdb.Error as exc:
        con.close()
        raise QueryError(f"cannot create the analytics views over {data_dir}: {one_line(exc)}") from exc
    except BaseException:
        con.close()
        raise
    return con


RAW_VIEWS = frozenset({"events", "events_audit", "windows", "segment_meta"})
"""Views that :mod:`storage.views` and :func:`connect_store` define alike (no KPI view is built on them)."""


def _reads_raw_views_only(sql: str) -> bool:
    """True when ``sql`` names some of :data:`RAW_VIEWS` and no other view: a query of the events alone. Anything
    else (a KPI view, ``SHOW TABLES``, a name this cannot tell) gets every view."""
    from storage.kpis import KPI_VIEW_NAMES
    from storage.views import VIEW_NAMES

    views = {v.lower() for v in (*VIEW_NAMES, *KPI_VIEW_NAMES)}
    try:
        words = {
            sql[pos:].split(None, 1)[0].strip('"();,').lower()
            for pos, kind in duckdb.tokenize(sql)
            if kind in (duckdb.token_type.identifier, duckdb.token_type.keyword)
        }
    except Exception:
        return False
    if words & {"show", "describe", "summarize"}:
        return False
    named = words & views
    return bool(named) and named <= RAW_VIEWS


def query_store(data_dir: Path, setup: StoreSetup, sql: str, *, trust: BlockTrust | None = None) -> pa.Table:
    """``edgepair query``: run ``sql`` (exactly one read-only statement) on a fresh locked connection with every view
    of :func:`connect_store` (the KPI views of ``edgepair sql`` and ``analytics open``, materialised days included);
    return the result as an Arrow table. Refusals and errors are one-line QueryErrors (:mod:`storage.sandbox`)."""
    from storage.kpis import KPI_VIEW_NAMES
    from storage.sandbox import check_statement, query_error
    from storage.views import VIEW_NAMES

    names = ", ".join(dict.fromkeys([*VIEW_NAMES, *KPI_VIEW_NAMES]))
    help_text = f"views: {names}; run 'SHOW TABLES' to list them, 'DESCRIBE traffic_daily' for columns"
    check_statement(sql, help_text)
    if _reads_raw_views_only(sql):  # the same views either way; building the KPI views would cost a second a year
        from storage.views import open_dataset

        con = open_dataset(data_dir, setup.timezone)
        for view in ("zone_dwell", "visits", "traffic_hourly", "coverage"):  # not the KPI views: no other meaning
            con.execute(f"DROP VIEW IF EXISTS {view}")
    else:
        con = connect_store(data_dir, setup, trust=trust)
    try:
        relation = con.sql(sql)
        return relation.to_arrow_table() if relation is not None else pa.table({})
    except duckdb.Error as exc:
        raise query_error(exc, help_text) from None
    finally:
        con.close()


def snapshot_gone(con: duckdb.DuckDBPyConnection) -> str:
    """A file of the catalog snapshot that ``con``'s views were built on and that no longer exists (compaction or
    retention removed it: the views would then leave its rows out), or "" when every one is still there."""
    try:
        rows = con.execute(f"SELECT filename FROM {INTERNAL_SCHEMA}.files").fetchall()
    except duckdb.Error:
        return ""  # no snapshot (no segment when the views were built)
    for (name,) in rows:
        if not os.path.exists(name):
            return str(name)
    return ""


class StoreSession:
    """A long-lived locked connection over one store's dataset (``edgepair sql``): :meth:`current` gives it, built
    again first when a file of its snapshot is gone. The node compacts and removes the sources
    ``grace_s`` later; a connection built before would silently miss their rows (:mod:`storage.views`). The KPI
    blocks it read are copied into it (:mod:`storage.kpimat`), so replacing them breaks nothing."""

    def __init__(self, data_dir: Path, setup: StoreSetup, trust: BlockTrust | None = None) -> None:
        self.data_dir, self.setup, self.trust = Path(data_dir), setup, trust
        self.con = connect_store(self.data_dir, setup, trust=trust)
        self.rebuilds = 0

    def current(self) -> duckdb.DuckDBPyConnection:
        gone = snapshot_gone(self.con)
        if gone:
            log.info("store %s: %s was compacted or removed since the views were built: building them again",
                     self.setup.store_id, gone)  # fmt: skip
            fresh = connect_store(self.data_dir, self.setup, trust=self.trust)
            self.con.close()
            self.con = fresh
            self.rebuilds += 1
        return self.con

    def close(self) -> None:
        self.con.close()


# --- several stores ------------------------------------------------------------------------------------------------


def merge_stores(sources: list[Path], out: Path) -> list[str]:
    """Combine the datasets of several stores into ``out`` for HQ; return the store ids merged.

    For each source (a store's data folder with ``store.json`` and ``kpi_definitions.jsonl``): its credited events
    (local-time columns computed in that store's zone) go to ``out/merged/events/store=<id>/data.parquet``, its
    processed time to ``out/merged/cov_pieces/store=<id>/data.parquet``, its store file and definitions history to
    ``out/stores/<id>/``. Merging a store again replaces its part; two sources of one store are refused.
    """
    out = Path(out).resolve()
    done: list[str] = []
    for src in sources:
        setup = read_store_file(src)
        if setup.store_id in done:
            raise StorageError(f"store {setup.store_id} is in two sources ({src} and an earlier one): merge it once")
        history = load_definitions(src)
        if not history:
            raise StorageError(f"{src}: no {DEFINITIONS_FILE}: the store's node records it when it first runs there")
        con = _connect(":memory:")
        try:
            create_views(con, Path(src), setup.timezone)
            _config_tables(con, [(setup, history)])
            if _has_table(con, INTERNAL_SCHEMA, "credited"):
                pieces = f"SELECT camera_id, p_start, p_end FROM {INTERNAL_SCHEMA}.credited"
            else:
                pieces = "SELECT camera_id, window_start AS p_start, window_end AS p_end FROM segment_meta"
            parts = {
                "events": f"SELECT {EVENT_COLUMNS} FROM events",
                "cov_pieces": f"SELECT {_literal(setup.store_id)} AS store_id, * FROM ({pieces})",
            }
            for name, select in parts.items():
                target = out / MERGED_DIR / name / f"store={setup.store_id}" / "data.parquet"
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".data.{secrets.token_hex(4)}.tmp")
                con.execute(f"COPY ({select}) TO {_literal(str(tmp))} (FORMAT parquet, COMPRESSION zstd)")
                os.replace(tmp, target)
        except duckdb.Error as exc:
            raise QueryError(f"cannot merge store {setup.store_id} from {src}: {exc}") from exc
        finally:
            con.close()
        folder = out / STORES_DIR / setup.store_id
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / STORE_FILE, (json.dumps(setup.to_json(), indent=1) + "\n").encode())
        write_atomic(folder / DEFINITIONS_FILE, (Path(src) / DEFINITIONS_FILE).read_bytes())
        log.info("merged store %s from %s into %s", setup.store_id, src, out)
        done.append(setup.store_id)
    return done


def build_merged_views(con: duckdb.DuckDBPyConnection, merged_dir: Path) -> None:
    """Create the views of :func:`open_merged_analytics` on ``con``."""
    root = Path(merged_dir).resolve()
    folders = sorted(p for p in (root / STORES_DIR).glob("*") if p.is_dir())
    if not folders:
        raise StorageError(f"{root} holds no merged store ({STORES_DIR}/ is empty): run merge_stores first")
    stores = [(read_store_file(f), load_definitions(f)) for f in folders]
    _config_tables(con, stores)
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {KPI_SCHEMA}")
    for name, target in (("events", "events"), ("cov_pieces", f"{KPI_SCHEMA}.cov_pieces")):
        glob = _literal(str(root / MERGED_DIR / name / "store=*" / "data.parquet"))
        con.execute(
            f"CREATE OR REPLACE VIEW {target} AS SELECT * EXCLUDE (store) FROM read_parquet({glob},"
            " hive_partitioning = true, hive_types = {'store': VARCHAR})"
        )
    create_kpi_views(con)


def open_merged_analytics(merged_dir: Path, out_db: Path) -> Path:
    """Write a DuckDB file with the KPI views over a folder built by :func:`merge_stores`; return it."""
    path = _build_file(out_db, lambda con: build_merged_views(con, merged_dir))
    log.info("analytics database %s over merged stores in %s", path, Path(merged_dir).resolve())
    return path

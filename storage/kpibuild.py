"""The node's side of the materialised KPI days (:mod:`storage.kpimat`): one verb, :func:`refresh_kpis`.

Run by the node's housekeeping after compaction and retention (every minute; cheap when nothing changed: a catalog
snapshot, the fingerprints, no query). For every *closed* local day (D+1 ended ``min_age_s`` ago: what a visit
dated D can reach, ``DAYS_AFTER`` of :mod:`storage.kpisql`) it compares the day's fingerprint with the month's block and
writes a new block of the month when a day is missing or stale: the unchanged days' rows are copied from the old
block, the others computed from the events of those days and their neighbours. The old block is deleted ``grace_s``
after the new one appeared (a reader that chose it keeps working meanwhile). At most ``max_months`` blocks are
written per run, so a first run over a year of data spreads over a few minutes of housekeeping.

Readers never need these files: a missing or stale day is computed from the raw events (:mod:`storage.kpimat`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
import stat
import tempfile
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import duckdb
import pyarrow as pa

from storage.analytics import STORE_FILE, _connect, build_store_views, load_definitions, read_store_file
from storage.kpimat import (
    AFTER,
    BLOCK_FILE,
    BLOCK_SIG,
    DAY,
    MAT_FORMAT,
    MAX_META_BYTES,
    Block,
    _check_block,
    _file_hashes,
    _register,
    all_days,
    best_blocks,
    block_id,
    create_restricted_views,
    day_range,
    day_ranges,
    day_start,
    fingerprints,
    read_blocks,
    read_limited,
    runs,
    snapshot_pieces,
    ts_literal,
)
from storage.kpis import StoreSetup
from storage.kpisql import KPI_VIEW_NAMES
from storage.sandbox import KPI_DIR
from storage.segments import fsync_path as _fsync
from storage.segments import write_atomic
from storage.sqltext import literal as _literal
from storage.views import has_segments

if TYPE_CHECKING:
    from cluster.pki import Signer, Verifier

log = logging.getLogger(__name__)

TMP_PREFIX = ".kpi-tmp-"
_WORK = "_kpi_w"
_TABLES = "_kpi_t"


@dataclass
class MatReport:
    """What one :func:`refresh_kpis` run did."""

    written: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    days_computed: int = 0
    days_copied: int = 0


def _compute(con: duckdb.DuckDBPyConnection, setup: StoreSetup, days: list[date]) -> None:
    """The KPI rows of ``days`` into the tables ``_kpi_t.<view>``."""
    tz = ZoneInfo(setup.timezone)
    _register(con, f"{_WORK}_target", pa.table({"local_date": pa.array(days, pa.date32())}))
    windows: list[tuple[int | None, int | None]] = [
        (day_start(a - DAY, tz), day_start(b + AFTER, tz)) for a, b in runs(days)
    ]
    lo, hi = ts_literal(day_start(days[0], tz)), ts_literal(day_start(days[-1], tz))
    create_restricted_views(
        con,
        _WORK,
        f"local_date IN (SELECT local_date FROM {_WORK}_target)",
        windows,
        f" UNION ALL SELECT {_literal(setup.store_id)}, {lo}, {hi}",
        day_ranges(list(runs(days)), tz),
    )
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {_TABLES}")
    for view in KPI_VIEW_NAMES:  # in dependency order: each later view reads the earlier ones' tables
        con.execute(f"CREATE OR REPLACE TABLE {_TABLES}.{view} AS SELECT * FROM {_WORK}.{view}")
        con.execute(f"CREATE OR REPLACE VIEW {_WORK}.{view} AS SELECT * FROM {_TABLES}.{view}")


def _write_block(
    con: duckdb.DuckDBPyConnection,
    data_dir: Path,
    setup: StoreSetup,
    month: str,
    want: dict[date, str],
    old: Block | None,
    compute: list[date],
    signer: Signer | None = None,
    trust: tuple[Verifier | None, Collection[str] | None] = (None, None),
) -> Path:
    """Write the block of ``month`` with the days of ``want``: ``compute`` from the tables of :func:`_compute`, the
    others from ``old``."""
    root = Path(data_dir) / KPI_DIR
    root.mkdir(parents=True, exist_ok=True)
    # Written beside kpi/, not in it, in a folder only the node's user can enter: what the node hashes and signs
    # below is what it wrote (whoever may write kpi/ cannot swap a file in between).
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=data_dir))

    def day_list(days: list[date]) -> str:
        return ", ".join(f"DATE '{d.isoformat()}'" for d in days)

    try:
        copied = sorted(set(want) - set(compute))
        for view in KPI_VIEW_NAMES:
            parts = [f"SELECT * FROM {_TABLES}.{view} WHERE local_date IN ({day_list(compute)})"] if compute else []
            if copied and old is not None:  # from the bytes read_blocks checked, never the old files again
                con.register("_kpi_old_rows", old.table(view))
                parts.append(f"SELECT * FROM _kpi_old_rows WHERE local_date IN ({day_list(copied)})")
            target = tmp / f"{view}.parquet"
            try:
                con.execute(
                    f"COPY ({' UNION ALL BY NAME '.join(parts)} ORDER BY local_date) TO {_literal(str(target))}"
                    " (FORMAT parquet, COMPRESSION zstd)"
                )
            finally:
                if copied and old is not None:
                    con.unregister("_kpi_old_rows")
            _fsync(target)
        days_json = {d.isoformat(): fp for d, fp in sorted(want.items())}
        meta = {"format": MAT_FORMAT, "store_id": setup.store_id, "timezone": setup.timezone, "month": month}
        raw = (json.dumps({**meta, "days": days_json, "files": _file_hashes(tmp)}, indent=1) + "\n").encode()
        digest = hashlib.sha256(json.dumps(days_json, sort_keys=True).encode()).hexdigest()[:16]
        final = root / f"{month}.{digest}"
        if signer is not None:  # signed under its final name (the signature's id), written before block.json
            write_atomic(tmp / BLOCK_SIG, signer.sign(block_id(final), hashlib.sha256(raw).hexdigest()))
        write_atomic(tmp / BLOCK_FILE, raw)
        os.chmod(tmp, stat.S_IMODE(root.stat().st_mode))  # readable as kpi/ is (mkdtemp made it the node's only)
        if _whole(final, raw, trust, signed=signer is not None):
            shutil.rmtree(tmp)
        elif final.exists():  # the same days, damaged (a file lost or cut): the new copy replaces it
            trash = root / f".old-{secrets.token_hex(6)}"
            os.rename(final, trash)
            os.rename(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(tmp, final)
            _fsync(root)
        return final
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _whole(folder: Path, raw: bytes, trust: tuple[Verifier | None, Collection[str] | None], signed: bool) -> bool:
    """``folder`` already holds the block being written: the same ``block.json`` bytes ``raw`` (so the same days and
    file checksums), every file matching them and, when blocks are ``signed``, a good signature."""
    try:
        if read_limited(folder / BLOCK_FILE, MAX_META_BYTES) != raw:
            return False
        if signed and not (folder / BLOCK_SIG).is_file():
            return False
        _check_block(folder, raw, json.loads(raw), trust[0] if signed else None, trust[1])
        return True
    except (OSError, ValueError):
        return False


def _remove_leftovers(root: Path) -> None:
    """Folders a killed refresh left half-written (``.tmp-*``) or half-replaced (``.old-*``): only the node's
    housekeeping writes ``kpi/``, one refresh at a time, so none is in use when a refresh starts."""
    for folder in [*root.parent.glob(f"{TMP_PREFIX}*"), *(root.glob(".tmp-*") if root.is_dir() else [])]:
        shutil.rmtree(folder, ignore_errors=True)
    for folder in root.glob(".old-*") if root.is_dir() else []:
        shutil.rmtree(folder, ignore_errors=True)


def refresh_kpis(
    data_dir: Path,
    *,
    now: float | None = None,
    min_age_s: float = 3600.0,
    grace_s: float = 600.0,
    max_months: int = 3,
    node: str = "-",
    signer: Signer | None = None,
    verifier: Verifier | None = None,
    nodes: Collection[str] | None = None,
) -> MatReport:
    """Bring the materialised days of ``data_dir`` up to date (module rules); return what was done.

    ``signer``: the node's, which signs every block it writes; ``verifier``, ``nodes``: only blocks signed by a
    workstation of the store are kept or copied from (a forged block is never laundered into a signed one).

    Needs the dataset's ``store.json`` and definitions history (the node records them); without them, or without
    segments, it does nothing.
    """
    data_dir = Path(data_dir)
    now = time.time() if now is None else now
    report = MatReport()
    if not (data_dir / STORE_FILE).exists() or not has_segments(data_dir):
        return report
    setup = read_store_file(data_dir)
    history = load_definitions(data_dir)
    if not history:
        return report
    _remove_leftovers(data_dir / KPI_DIR)
    con = _connect(":memory:")
    try:
        build_store_views(con, data_dir, setup, history=history, materialised=False)
        rng = day_range(con)
        if rng is None:
            return report
        tz = ZoneInfo(setup.timezone)
        closed = [d for d in all_days(rng[0], rng[1]) if day_start(d + AFTER, tz) <= now - min_age_s]
        credited, lost = snapshot_pieces(con)
        fps = fingerprints(closed, setup, history, credited, lost)
        blocks = read_blocks(data_dir, setup, verifier=verifier, nodes=nodes)
        chosen = best_blocks(blocks, fps)
        months: dict[str, list[date]] = {}
        for d in closed:
            months.setdefault(d.strftime("%Y-%m"), []).append(d)
        current: dict[str, Path] = {}
        plan: list[tuple[str, dict[date, str], Block | None, list[date]]] = []
        for month, days in sorted(months.items()):
            want = {d: fps[d] for d in days}
            best = chosen.get(month)
            if best is not None and (best.days == want or len(plan) >= max_months):
                current[month] = best.path
            elif len(plan) < max_months:
                plan.append((month, want, best, [d for d in days if best is None or best.days.get(d) != want[d]]))
        todo = sorted(d for *_, compute in plan for d in compute)
        if todo:
            _compute(con, setup, todo)  # every stale day of this run at once, then split by month
        for month, want, best, compute in plan:
            path = _write_block(con, data_dir, setup, month, want, best, compute, signer, (verifier, nodes))
            current[month] = path
            report.written.append(path.name)
            report.days_computed += len(compute)
            report.days_copied += len(want) - len(compute)
            log.info("node %s: KPI block %s: %d days computed, %d copied", node, path.name, len(compute),
                     len(want) - len(compute))  # fmt: skip
    finally:
        con.close()
    _prune(data_dir, read_blocks(data_dir, setup, verifier=verifier, nodes=nodes), current, grace_s, report)
    return report


def _prune(data_dir: Path, blocks: list[Block], current: dict[str, Path], grace_s: float, report: MatReport) -> None:
    """Delete blocks replaced ``grace_s`` ago, blocks of months no longer in the dataset, and folders that are not
    a block readers accept (damaged, forged, unsigned, of an older format) once ``grace_s`` old."""
    wall = time.time()  # file times are wall-clock
    mtimes = {b.path: b.mtime for b in blocks}
    keep_paths = set(current.values())
    for b in blocks:
        keep = current.get(b.month)
        if keep == b.path:
            continue
        since = mtimes.get(keep, wall) if keep is not None else b.mtime
        if wall - since < grace_s:
            continue
        shutil.rmtree(b.path, ignore_errors=True)
        report.deleted.append(b.path.name)
        log.info("KPI block %s in %s deleted (replaced or out of the dataset)", b.path.name, data_dir)
    root = Path(data_dir) / KPI_DIR
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if folder.name.startswith(".") or folder in mtimes or folder in keep_paths or not folder.is_dir():
            continue
        try:
            if wall - folder.stat().st_mtime < grace_s:
                continue
        except OSError:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        report.deleted.append(folder.name)
        log.info("KPI folder %s in %s deleted (not a block readers accept)", folder.name, data_dir)

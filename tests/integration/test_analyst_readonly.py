"""The analyst's commands on a read-only copy of a data dir: same numbers as on the original, nothing changed.

The real CLI in a subprocess (`query`, `analytics open`, `report`) on a data dir catalogued by its node (so it holds
``catalog/index.json``, ``store.json`` and the KPI history), then on a copy made read-only with ``chmod -R a-w`` and
holding two bad files (a torn segment, a name that is not UTF-8). As root the mode bits do not stop a write, so every
file's bytes, mode and mtime (and every folder's mtime) are compared before and after. Then the analyst's own
DuckDB session opens the ``.duckdb`` file, as the README shows.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from actors.events import Event
from cluster.config import load_config
from storage.analytics import ensure_store_file, record_definition
from storage.catalog import Catalog
from storage.kpis import StoreSetup
from storage.segments import SegmentWriter

REPO = Path(__file__).resolve().parents[2]
TZ = "Europe/London"
CONFIG = """store: {{id: s1, timezone: {tz}}}
cameras:
  - id: cam1
    source: video.mp4
    lines:
      - {{id: door, start: [0.1, 0.5], end: [0.9, 0.5], in_point: [0.5, 0.9]}}
storage: {{data_dir: {data}}}
security: {{tls: false}}
"""
QUERY = (
    "SELECT local_date, local_hour, count(*) AS n, count(DISTINCT track_id) AS tracks FROM events"
    " GROUP BY ALL ORDER BY ALL"
)


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "cluster.cli", *args], capture_output=True, text=True, cwd=cwd, env=env
    )


def snapshot(root: Path) -> dict[bytes, tuple[int, int, bytes]]:
    """Every entry under ``root``: (mode, mtime_ns, bytes for a file)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(os.fsencode(root)):
        for name in [*dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            data = Path(os.fsdecode(path)).read_bytes() if name in filenames else b""
            out[os.path.relpath(path, os.fsencode(root))] = (st.st_mode, st.st_mtime_ns, data)
    st = os.lstat(root)
    out[b"."] = (st.st_mode, st.st_mtime_ns, b"")
    return out


def make_store(root: Path) -> Path:
    """A data dir as a node leaves it: 2 cameras' segments, its catalog index, store.json and KPI history."""
    data = root / "data"
    w = SegmentWriter(data, "s1", TZ, "ws-1")
    t0 = datetime(2026, 7, 1, 9, tzinfo=UTC).timestamp()
    for i in range(6):
        events = [
            Event(t0 + 600 * i + k, "cam1", 10 * i + k, "line_cross", line_id="door", direction="in" if k else "out")
            for k in range(i + 1)
        ]
        w.write("cam1", t0 + 600 * i, t0 + 600 * (i + 1), events, frames=100, token=1, config_version="c",
                model_version="m")  # fmt: skip
    cfg = root / "store.yaml"
    cfg.write_text(CONFIG.format(tz=TZ, data=data))
    setup = StoreSetup.from_config(load_config(cfg))
    ensure_store_file(data, setup)
    record_definition(data, setup.definition(), effective_from=datetime(2026, 1, 1, tzinfo=UTC))
    Catalog(data).scan()  # the node's catalog: writes catalog/index.json
    assert (data / "catalog" / "index.json").is_file()
    return cfg


def run_all(cfg: Path, out: Path) -> dict[str, object]:
    """The numbers of `query`, `analytics open` (read back with the duckdb module) and `report`."""
    q = cli("query", "--config", str(cfg), "--format", "csv", QUERY, cwd=cfg.parent)
    assert q.returncode == 0, q.stderr
    assert "Traceback" not in q.stderr
    a = cli("analytics", "open", "--config", str(cfg), "--out", str(out / "a.duckdb"), cwd=cfg.parent)
    assert a.returncode == 0, a.stderr
    assert "Traceback" not in a.stderr
    here = os.getcwd()
    os.chdir(out)  # the file names the data relative to its own folder: opened from there, as the CLI says
    try:
        con = duckdb.connect(str(out / "a.duckdb"))  # the analyst's own session, read-write as `duckdb FILE`
        daily = con.execute("SELECT local_date, line_id, entries, exits, coverage FROM traffic_daily").fetchall()
        hourly = con.execute(
            "SELECT local_hour, sum(entries) AS entries FROM traffic_hourly GROUP BY ALL ORDER BY ALL"
        ).fetchall()
        con.close()
    finally:
        os.chdir(here)
    r = cli("report", "--store", str(cfg), "--from", "2026-07-01", "--to", "2026-07-01", "--out", str(out / "rep"),
            cwd=cfg.parent)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    report = {p.name: list(csv.reader(p.open())) for p in sorted((out / "rep").glob("*.csv"))}
    return {"query": q.stdout, "daily": daily, "hourly": hourly, "report": report}


@pytest.fixture
def original(tmp_path: Path) -> Path:
    return make_store(tmp_path / "orig")


def test_read_only_copy_gives_the_same_numbers_and_stays_unchanged(original: Path, tmp_path: Path) -> None:
    want = run_all(original, tmp_path / "out-orig")
    assert want["query"].splitlines()[1:] == ["2026-07-01,10,21,21"]
    assert [row[2:4] for row in want["daily"]] == [(15, 6)]  # type: ignore[index]
    copy = tmp_path / "ro"
    shutil.copytree(original.parent, copy, symlinks=True)  # copy2: mtimes kept, so the copied index is valid
    cfg = copy / "store.yaml"
    cfg.write_text(CONFIG.format(tz=TZ, data=copy / "data"))
    data = copy / "data"
    cam = next((data / "events").glob("store=s1/date=*/camera=cam1"))
    (cam / "cam1.1782900000000.ws-1.1.parquet").write_bytes(b"PAR1 torn by a crash")
    with open(os.fsencode(cam) + b"/\xff.parquet", "wb") as f:
        f.write(b"not parquet")
    subprocess.run(["chmod", "-R", "a-w", str(data)], check=True)
    try:
        before = snapshot(data)
        got = run_all(cfg, tmp_path / "out-ro")
        assert snapshot(data) == before
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(data)], check=True)
    assert got == want
    assert not (data / "quarantine").exists()


def test_non_utf8_name_is_one_warning_not_a_traceback(original: Path) -> None:
    cam = next((original.parent / "data" / "events").glob("store=s1/date=*/camera=cam1"))
    with open(os.fsencode(cam) + b"/\xff.parquet", "wb") as f:
        f.write(b"not parquet")
    q = cli("query", "--config", str(original), "SELECT count(*) AS n FROM events", cwd=original.parent)
    assert q.returncode == 0, q.stderr
    assert q.stdout.split()[-3] == "21"
    warnings = [ln for ln in q.stderr.splitlines() if "left out of the views" in ln]
    assert len(warnings) == 1 and "\\xff.parquet" in warnings[0] and "not valid UTF-8" in warnings[0], q.stderr
    assert "Traceback" not in q.stderr


def test_outputs_inside_the_data_dir_are_refused(original: Path) -> None:
    data = original.parent / "data"
    before = snapshot(data)
    for args in (
        ["analytics", "open", "--config", str(original), "--out", str(data / "a.duckdb")],
        ["report", "--store", str(original), "--from", "2026-07-01", "--to", "2026-07-01", "--out", str(data / "r")],
    ):
        r = cli(*args, cwd=original.parent)
        assert r.returncode != 0
        assert r.stderr.splitlines()[-1].startswith("edgepair: error: ") and "inside the data dir" in r.stderr
        assert "Traceback" not in r.stderr
    assert snapshot(data) == before


def test_the_analytics_file_opens_in_a_duckdb_1x_cli_with_the_same_numbers_after_a_copy(
    original: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file of `analytics open` is in DuckDB's 1.x storage format: the `duckdb` CLI of PyPI (1.5.6, the dev
    extra's `.venv/bin/duckdb`, which refuses 2.x files) opens it and every view gives what the venv's 2.x gives,
    also after the folder (data, with the node's materialised KPI days, and the file) was copied elsewhere and the
    original removed: the views name the data relative to the file's folder."""
    import json as jsonlib

    from storage.kpibuild import refresh_kpis

    cli_bin = Path(sys.executable).parent / "duckdb"
    if not cli_bin.exists():
        pytest.skip(f"{cli_bin} missing: the dev extra installs duckdb-cli (pip install -e '.[dev]')")
    version = subprocess.run([str(cli_bin), "-version"], capture_output=True, text=True).stdout
    assert version.startswith("v1."), version
    folder = original.parent
    assert refresh_kpis(folder / "data", now=datetime(2030, 1, 1, tzinfo=UTC).timestamp()).days_computed == 1
    a = cli("analytics", "open", "--config", str(original), "--out", str(folder / "store.duckdb"), cwd=tmp_path)
    assert a.returncode == 0, a.stderr
    assert f"cd {folder} && duckdb -readonly store.duckdb" in a.stdout
    monkeypatch.chdir(folder)
    with duckdb.connect("store.duckdb", read_only=True) as con:
        views = [r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal AND "
                                           "schema_name = 'main' ORDER BY 1").fetchall()]  # fmt: skip
        want = {v: con.execute(f"SELECT count(*) FROM {v}").fetchone()[0] for v in views}  # type: ignore[index]
        daily = con.execute("SELECT local_date::VARCHAR, entries, exits, coverage FROM traffic_daily").fetchall()
        paths = con.execute("SELECT sql FROM duckdb_views() WHERE view_name IN ('segments_raw', 'traffic_daily')")
        assert all(str(folder) not in sql for (sql,) in paths.fetchall())
    assert {"events", "traffic_daily", "traffic_hourly", "zone_dwell", "occupancy", "coverage"} <= set(views)
    assert (want["events"], want["traffic_daily"], daily) == (
        21,
        1,
        [("2026-07-01", 15, 6, 1 / 24)],
    )  # one hour processed
    laptop = tmp_path / "laptop" / "copy"
    shutil.copytree(folder, laptop)
    monkeypatch.chdir(tmp_path)
    shutil.rmtree(folder)
    sql = " UNION ALL ".join(f"SELECT '{v}' AS view, count(*) AS n FROM {v}" for v in views)
    sql += " UNION ALL SELECT 'entries', CAST(sum(entries) AS BIGINT) FROM traffic_daily"
    got = subprocess.run(
        [str(cli_bin), "-readonly", "-json", "store.duckdb", "-c", sql],
        capture_output=True, text=True, cwd=laptop, timeout=120,
    )  # fmt: skip
    assert got.returncode == 0, got.stderr
    assert {r["view"]: r["n"] for r in jsonlib.loads(got.stdout)} == {**want, "entries": 15}

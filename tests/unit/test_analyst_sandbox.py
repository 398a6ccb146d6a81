"""The analyst's SQL sandbox through the real CLI: one read-only statement, each escape refused with one line."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from actors.events import Event
from cluster.cli import main
from cluster.errors import QueryError
from storage.analytics import connect_store
from storage.kpis import LineSpec, StoreSetup
from storage.sandbox import check_statement
from storage.segments import SegmentWriter
from storage.views import open_dataset, run_query, scan_readonly

TZ = "Europe/London"
WHY = "queries may read only the store's views"
T0 = datetime(2026, 7, 1, 9, tzinfo=UTC).timestamp()


def write_data(data: Path, n: int = 3) -> None:
    w = SegmentWriter(data, "s1", TZ, "ws-1")
    for i in range(n):
        ev = [Event(T0 + 60 * i + 1, "cam1", i, "line_cross", line_id="door", direction="in")]
        w.write("cam1", T0 + 60 * i, T0 + 60 * (i + 1), ev, frames=10, token=1, config_version="c", model_version="m")


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A store config (unsigned segments) over a small data dir of 3 windows, one entry each."""
    write_data(tmp_path / "data")
    cfg = tmp_path / "store.yaml"
    cfg.write_text(
        f"store: {{id: s1, timezone: {TZ}}}\n"
        "cameras:\n  - id: cam1\n    source: video.mp4\n"
        f"storage: {{data_dir: {tmp_path / 'data'}}}\n"
        "security: {tls: false}\n"
    )
    return cfg


def query(cfg: Path, sql: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(["query", "--config", str(cfg), "--format", "csv", sql])
    out, err = capsys.readouterr()
    return rc, out, err


def test_query_reads_the_views(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = query(store, "SELECT count(*) AS n, ';' AS semicolon FROM events", capsys)
    assert (rc, out.split()) == (0, ['"n","semicolon"', '3,";"']), err


@pytest.mark.parametrize(
    ("sql", "refused"),
    [
        ("SELECT 1; SELECT 2", "2 statements given, one is run at a time"),
        ("SELECT count(*) FROM events; COPY (SELECT 1) TO '/tmp/x'", "2 statements given"),
        ("", "0 statements given"),
        ("SELECT * FROM read_text('/etc/hostname')", 'Cannot access file "/etc/hostname"'),
        ("SELECT * FROM read_csv('/etc/passwd')", 'Cannot access file "/etc/passwd"'),
        ("SELECT * FROM read_blob('/etc/hostname')", 'Cannot access file "/etc/hostname"'),
        ("SELECT * FROM glob('/etc/*')", 'Cannot access file "/etc/*"'),
        ("COPY (SELECT 1) TO '{tmp}/x.csv'", "COPY statements are not allowed"),
        ("COPY events TO '{data}/events/x.csv'", "COPY statements are not allowed"),
        ("EXPLAIN ANALYZE COPY (SELECT 1) TO '{data}/events/x.csv'", "EXPLAIN of anything but one SELECT"),
        ("SELECT * FROM query('COPY (SELECT 1) TO ''{tmp}/y.csv''')", "Expected a single SELECT statement"),
        ("SET autoinstall_known_extensions = true", "SET statements are not allowed"),
        ("SET enable_external_access = true", "SET statements are not allowed"),
        ("RESET lock_configuration", "RESET statements are not allowed"),
        ("PRAGMA enable_profiling", "PRAGMA statements are not allowed"),
        ("ATTACH '{tmp}/x.db' AS x", "ATTACH statements are not allowed"),
        ("INSTALL httpfs", "INSTALL statements are not allowed"),
        ("LOAD httpfs", "LOAD statements are not allowed"),
        ("CREATE TABLE t AS SELECT 1", "CREATE statements are not allowed"),
        ("EXPORT DATABASE '{tmp}/exp'", "EXPORT statements are not allowed"),
    ],
)
def test_each_escape_is_refused_with_one_line(
    store: Path, capsys: pytest.CaptureFixture[str], sql: str, refused: str
) -> None:
    tmp = store.parent
    before = sorted(p.relative_to(tmp) for p in tmp.rglob("*"))
    rc, out, err = query(store, sql.format(tmp=tmp, data=tmp / "data"), capsys)
    assert rc != 0
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("edgepair: error: query "), err
    assert refused in lines[0]
    assert "Traceback" not in err
    if "Expected a single SELECT" not in refused:
        assert lines[0].startswith("edgepair: error: query refused: ") and WHY in lines[0]
    assert sorted(p.relative_to(tmp) for p in tmp.rglob("*")) == before  # nothing written anywhere


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1",
        "SELECT ';' AS s",
        "SHOW TABLES",
        "DESCRIBE events",
        "SUMMARIZE events",
        "FROM events",
        "WITH t AS (SELECT 1 AS a) SELECT a FROM t",
        "EXPLAIN SELECT count(*) FROM events",
        "explain analyze SELECT count(*) FROM events",
        "SELECT 1; ",
    ],
)
def test_read_only_statements_pass(sql: str) -> None:
    check_statement(sql)


def test_locked_connections(tmp_path: Path) -> None:
    write_data(tmp_path)
    setup = StoreSetup("s1", TZ, (LineSpec("cam1", "door", "entrance"),), ())
    for con in (open_dataset(tmp_path, TZ), connect_store(tmp_path, setup)):
        with con:
            settings = dict(
                con.execute(
                    "SELECT name, value FROM duckdb_settings() WHERE name IN"
                    " ('enable_external_access', 'lock_configuration', 'allowed_directories')"
                ).fetchall()
            )
            assert settings["enable_external_access"] == "false"
            assert settings["lock_configuration"] == "true"
            assert str(tmp_path.resolve() / "events") in settings["allowed_directories"]
            assert con.execute("SELECT count(*) FROM events").fetchall() == [(3,)]
            with pytest.raises(duckdb.Error, match="locked"):
                con.execute("SET enable_external_access = true")
            with pytest.raises(duckdb.PermissionException):
                con.execute(f"SELECT * FROM read_text('{tmp_path}/catalog/index.json')")


def test_errors_are_one_line(tmp_path: Path) -> None:
    write_data(tmp_path)
    with pytest.raises(QueryError) as caught:
        run_query(tmp_path, TZ, "SELEC 1")
    assert "\n" not in str(caught.value) and "syntax error" in str(caught.value)
    with pytest.raises(QueryError) as caught:
        run_query(tmp_path, TZ, "SELECT nope FROM events")
    assert "\n" not in str(caught.value) and "nope" in str(caught.value)


def test_bad_files_are_left_out_with_one_warning_and_nothing_moves(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_data(tmp_path)
    cam = next((tmp_path / "events").glob("store=s1/date=*/camera=cam1"))
    (cam / "cam1.1782896580000.ws-1.1.parquet").write_bytes(b"PAR1 torn")
    os.close(os.open(os.fsencode(cam) + b"/\xff.parquet", os.O_CREAT | os.O_WRONLY, 0o644))
    before = sorted(os.fsencode(p) for p in tmp_path.rglob("*"))
    snap = scan_readonly(tmp_path)
    assert len(snap.state.entries) == 3
    assert sorted(snap.left_out) == sorted(
        [
            str((cam / "cam1.1782896580000.ws-1.1.parquet").relative_to(tmp_path)),
            str(cam.relative_to(tmp_path)) + "/\\xff.parquet",
        ]
    )
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2 and any("not valid UTF-8" in w for w in warnings), warnings
    assert run_query(tmp_path, TZ, "SELECT count(*) AS n FROM events").to_pylist() == [{"n": 3}]
    assert run_query(tmp_path, TZ, "SELECT count(*) AS n FROM segment_meta").to_pylist() == [{"n": 3}]
    assert sorted(os.fsencode(p) for p in tmp_path.rglob("*")) == before  # no quarantine, no index written


def test_a_tmp_link_in_the_working_directory_opens_nothing(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """DuckDB adds its temp directory (``.tmp`` in the working directory, following links) to the allowed
    directories: with ``.tmp -> /`` every file would be readable, the environment's camera passwords included."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / ".tmp").symlink_to("/")
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("EDGEPAIR_CAMERA_CAM1_PASSWORD", "TopSecretPw1")
    for sql in ("SELECT count(*) FROM read_text('/etc/passwd')", "SELECT content FROM read_text('/proc/self/environ')"):
        rc, out, err = query(store, sql, capsys)
        assert (rc, out) == (1, ""), out
        assert "Cannot access file" in err and "TopSecretPw1" not in err, err
    rc, out, err = query(store, "SELECT count(*) AS n FROM events", capsys)
    assert (rc, out.split()) == (0, ['"n"', "3"]), err  # the views still read the segments


def test_a_value_python_cannot_hold_is_one_line(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for fmt in ("csv", "json", "table"):
        rc = main(["query", "--config", str(store), "--format", fmt, "SELECT 'infinity'::DATE AS d"])
        out, err = capsys.readouterr()
        if rc == 0:  # CSV writes it as text: fine, nothing half-printed
            assert out.strip() != "", fmt
            continue
        assert (rc, out) == (1, ""), (fmt, out)
        assert (
            err.startswith("edgepair: error: query failed: a value of the result cannot be shown")
            and len(err.strip().splitlines()) == 1
        ), (fmt, err)
        assert "Traceback" not in err


def test_analytics_merge_takes_its_sources_after_the_out_option(tmp_path: Path) -> None:
    """The README's `analytics merge --out DIR SRC...`: argparse left SRC unmatched ('unrecognized arguments')."""
    from cluster.cli import build_parser, main

    missing = tmp_path / "nowhere"
    rc = main(["-q", "analytics", "merge", "--out", str(tmp_path / "hq"), str(missing)])
    assert rc == 1  # parsed (argparse's refusal is 2): the merge itself says the source is not an export
    assert build_parser().parse_known_args(["analytics", "merge", "--out", "hq", "a", "b"])[1] == ["a", "b"]

"""``edgepair sql`` in a pseudo-terminal, and the analyst commands on a data dir that holds no event.

The shell is the real CLI in a subprocess whose standard input and output are a pty (as an analyst's terminal): it
answers a statement that spans two lines, refuses a write with one line and goes on, lists the views with
``.tables`` and ends with ``.quit``. On an empty data dir, ``query``, ``analytics open``, ``report`` and ``sql`` each
say so in one line (exit 1) instead of printing empty results; for a local pair's config they name the config
that holds the data; on a data dir whose segments hold no event (the node ran, nobody was counted), too.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from actors.events import Event
from storage.catalog import Catalog
from storage.segments import SegmentWriter
from tests.integration.test_analyst_readonly import REPO, TZ, cli, make_store


def _read_until(fd: int, marker: bytes, bound_s: float = 60.0) -> bytes:
    """What the pty printed up to and including ``marker`` (bounded in time; the test fails with what came)."""
    out = b""
    deadline = time.monotonic() + bound_s
    while marker not in out:
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"edgepair sql never printed {marker!r}; it printed: {out.decode(errors='replace')[-2000:]}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the child closed the pty
                break
            if not chunk:
                break
            out += chunk
    return out


def test_sql_shell_answers_refuses_and_quits_in_a_terminal(tmp_path: Path) -> None:
    cfg = make_store(tmp_path)
    parent, child = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cluster.cli", "sql", "--config", str(cfg)],
        stdin=child,
        stdout=child,
        stderr=child,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO), "TERM": "dumb"},
        close_fds=True,
    )
    os.close(child)
    try:
        banner = _read_until(parent, b"edgepair> ")
        assert b"edgepair sql: store s1 (Europe/London), read only" in banner
        os.write(parent, b"SELECT count(*) AS n,\n")
        assert _read_until(parent, b"...> ").endswith(b"...> ")
        os.write(parent, b"  count(DISTINCT track_id) AS tracks FROM events;\n")
        answer = _read_until(parent, b"edgepair> ").decode()
        rows = [line.split() for line in answer.splitlines() if line.strip() and set(line.strip()) != {"-", " "}]
        assert ["21", "21"] in rows, answer
        os.write(parent, f"COPY events TO '{tmp_path / 'x.csv'}';\n".encode())
        refused = _read_until(parent, b"edgepair> ").decode()
        assert "error: query refused" in refused, refused
        assert not (tmp_path / "x.csv").exists()
        os.write(parent, b".tables\n")
        tables = _read_until(parent, b"edgepair> ").decode()
        assert "traffic_daily" in tables and "zone_dwell" in tables, tables
        os.write(parent, b".quit\n")
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        os.close(parent)


def test_sql_shell_reads_statements_from_a_pipe(tmp_path: Path) -> None:
    cfg = make_store(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "sql", "--config", str(cfg)],
        input="SELECT count(*) AS n FROM events;\nSELECT nonsense FROM events;\nSELECT 1 AS one;\n",
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line.strip() for line in proc.stdout.splitlines()]
    assert "21" in lines and "1" in lines, proc.stdout
    assert sum(line.startswith("error: query failed:") for line in lines) == 1, proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


# Every analyst command, as a user types it ({tmp}: the test's folder), for the tests of a store without events.
ANALYST_COMMANDS = [
    ("query", "SELECT count(*) FROM events"),
    ("analytics", "open", "--out", "{tmp}/a.duckdb"),
    ("report", "--from", "2026-07-01", "--to", "2026-07-01", "--out", "{tmp}/rep"),
    ("sql",),
]
ANALYST_IDS = ["query", "analytics-open", "report", "sql"]


@pytest.mark.parametrize("args", ANALYST_COMMANDS, ids=ANALYST_IDS)
def test_analyst_commands_on_a_data_dir_without_events_say_so(tmp_path: Path, args: tuple[str, ...]) -> None:
    cfg = make_store(tmp_path)
    data = tmp_path / "data"
    for seg in data.rglob("*.parquet"):
        seg.unlink()
    flag = "--store" if args[0] == "report" else "--config"
    argv = [a.format(tmp=tmp_path) for a in args]
    p = cli(*argv, flag, str(cfg), cwd=tmp_path)
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert p.stderr.strip().splitlines() == [
        f"edgepair: error: no events recorded in {data} (no segment under it): run the store first (`edgepair run`,"
        " `edgepair pair up`), or point --config at the store's own YAML"
    ]
    # A local pair's config (`pair up`, `make demo`): the data is in each workstation's folder, and the line says where.
    run = data / "pair"
    run.mkdir()
    (run / "pair.stopped.json").write_text(json.dumps({"nodes": {"ws-a": {"config": str(run / "ws-a.yaml")}}}))
    p = cli(*argv, flag, str(cfg), cwd=tmp_path)
    assert p.returncode == 1
    assert p.stderr.strip().splitlines() == [
        f"edgepair: error: no events recorded in {data} (no segment under it): the local pair of {run} (`pair up`,"
        f" `make demo`) keeps each workstation's data in its own folder: use --config {run / 'ws-a.yaml'}"
    ]


@pytest.mark.parametrize("args", ANALYST_COMMANDS, ids=ANALYST_IDS)
def test_analyst_commands_on_segments_without_an_event_say_so(tmp_path: Path, args: tuple[str, ...]) -> None:
    """The node ran (segments of processed time, one indexed by the catalog, one not) but counted nobody."""
    cfg = make_store(tmp_path)
    data = tmp_path / "data"
    w = SegmentWriter(data, "s1", TZ, "ws-1")
    for seg in data.rglob("*.parquet"):
        seg.unlink()
    t0 = datetime(2026, 7, 1, 9, tzinfo=UTC).timestamp()
    w.write("cam1", t0, t0 + 600, [], frames=100, token=1, config_version="c", model_version="m")
    Catalog(data).scan()  # the first one is in the node's index, the second one not
    w.write("cam1", t0 + 600, t0 + 1200, [], frames=100, token=1, config_version="c", model_version="m")
    flag = "--store" if args[0] == "report" else "--config"
    p = cli(*[a.format(tmp=tmp_path) for a in args], flag, str(cfg), cwd=tmp_path)
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert p.stdout == ""
    assert p.stderr.strip().splitlines() == [
        f"edgepair: error: no events recorded in {data} (its segments hold none: the cameras ran, but nobody crossed"
        " a line or left a zone yet): check the cameras' lines and zones in the config, or run the command again later"
    ]
    assert not (tmp_path / "a.duckdb").exists() and not (tmp_path / "rep").exists()
    # One event, in the file the index does not know yet: the commands answer again.
    w.write("cam1", t0 + 1200, t0 + 1800, [Event(t0 + 1300, "cam1", 1, "line_cross", line_id="door", direction="in")],
            frames=100, token=1, config_version="c", model_version="m")  # fmt: skip
    assert cli("query", "SELECT count(*) FROM events", "--config", str(cfg), cwd=tmp_path).returncode == 0


def test_sql_shell_errors_while_running_and_odd_input_are_one_line_each(tmp_path: Path) -> None:
    """An error raised while the query runs (not when it is parsed), a NUL byte, a ';' inside a string or before a
    comment, and a result longer than what is shown: each answered, the shell goes on, nothing is fetched beyond the
    shown rows plus one."""
    cfg = make_store(tmp_path)
    stdin = (
        "SELECT x::INT FROM (VALUES ('a')) t(x);\n"
        "SELECT 1;\x00;\n"
        "SELECT 'a;\nb' AS s;\n"
        "SELECT 2 AS two; -- a comment\n"
        "SELECT * FROM range(1000000);\n"
        "SELECT 3 AS three;\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "sql", "--config", str(cfg)],
        input=stdin.encode(), capture_output=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )  # fmt: skip
    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert "Traceback" not in out + proc.stderr.decode()
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 2, out
    assert errors[0].startswith("error: query failed: Conversion Error"), errors
    assert errors[1] == "error: query refused: the text holds a NUL character; type the statement again", errors
    lines = [line.strip() for line in out.splitlines()]
    assert "a;" in lines and "b" in lines, out  # the string with its ';' and its newline, in one statement
    assert "2" in lines and "3" in lines, out
    assert "(more than 100 rows: narrow the query, or use `edgepair query --format csv`)" in lines, out
    assert "99" in lines and "100" not in lines, out  # rows 0-99 shown

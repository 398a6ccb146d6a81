"""The analyst's SQL sandbox: one read-only statement on a DuckDB connection locked to the store's views.

Rules (measured on DuckDB 2.0.1):

- :func:`lock_down` runs after the views are built, on the connection that will run analyst SQL:
  ``allowed_directories`` is set to the store's ``events/`` and ``kpi/`` folders (the views read the Parquet
  segments and the materialised KPI days by path when they are queried, so those folders must stay readable),
  then ``enable_external_access = false`` (no other file, no
  extension install or load from disk, no ``ATTACH``, no network), then ``lock_configuration = true`` (no ``SET``,
  ``RESET`` or ``PRAGMA`` that changes a setting, so none of this can be switched back on).
- ``allowed_directories`` lets DuckDB *write* there too (``COPY ... TO`` a file under ``events/`` succeeds, and so
  does ``EXPLAIN ANALYZE COPY``), so :func:`check_statement` also refuses, before anything runs, every statement that
  is not one read-only query: exactly one statement (DuckDB's own parser splits them, so a ``;`` inside a string
  is fine), of type SELECT (which covers ``SHOW``, ``DESCRIBE``, ``SUMMARIZE``, ``FROM``, ``VALUES``, ``WITH``) or an
  ``EXPLAIN`` of one. DuckDB's ``query()`` table function accepts only a SELECT, so it cannot smuggle another one in.
- ``temp_directory`` is emptied first: DuckDB adds its temp directory (``.tmp`` in the working directory, following
  a symlink) to ``allowed_directories``, and a ``.tmp -> /`` link in the analyst's folder would open every file.
  Queries run in memory (no spilling).
- Every refusal is a :class:`cluster.errors.QueryError` of one line naming what was refused and why.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import duckdb

from cluster.errors import QueryError
from storage.segments import EVENTS_DIR
from storage.sqltext import literal as _literal

KPI_DIR = "kpi"
"""The node's materialised KPI tables beside ``events/`` (:mod:`storage.kpimat`); readable through the sandbox."""

REFUSED_WHY = "queries may read only the store's views (no other file, setting, extension or database)"
HELP = "run 'SHOW TABLES' to list the views, 'DESCRIBE events' for columns"
_LOCKED_MARKERS = ("disabled by configuration", "configuration has been locked", "disabled through configuration")
_EXPLAIN = re.compile(r"^\s*explain\s+(?:analy[sz]e\s+)?(?:\([^)]*\)\s*)?", re.IGNORECASE)


def one_line(exc: BaseException) -> str:
    """DuckDB's message on one line (the ``LINE 1:`` echo and its caret are left out)."""
    lines = [ln.strip() for ln in str(exc).splitlines()]
    kept = [ln for ln in lines if ln and not ln.startswith(("LINE ", "^"))]
    return " ".join(kept) or type(exc).__name__


def lock_down(con: duckdb.DuckDBPyConnection, data_dir: Path) -> None:
    """Lock ``con`` to reading the segments under ``data_dir/events`` (module rules); irreversible."""
    events = str(Path(data_dir).resolve() / EVENTS_DIR) + os.sep
    kpi = str(Path(data_dir).resolve() / KPI_DIR) + os.sep  # the node's materialised KPI days (storage.kpimat)
    # No temp directory: DuckDB adds its own (``.tmp`` under the working directory, whatever it links to) to the
    # allowed directories, which would open every file behind a ``.tmp -> /`` link. Queries then run in memory.
    con.execute("SET temp_directory = ''")
    con.execute(f"SET allowed_directories = [{_literal(events)}, {_literal(kpi)}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def _first_word(sql: str) -> str:
    m = re.match(r"\s*([A-Za-z_]+)", sql)
    return m.group(1).upper() if m else "this"


def check_statement(sql: str, help_text: str = HELP) -> None:
    """Refuse ``sql`` unless it is exactly one read-only query (module rules); QueryError of one line."""
    if "\x00" in sql:
        raise QueryError("query refused: the text holds a NUL character; type the statement again")
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"query failed: {one_line(exc)} ({help_text})") from None
    if len(statements) != 1:
        raise QueryError(f"query refused: {len(statements)} statements given, one is run at a time; {REFUSED_WHY}")
    st = statements[0]
    if st.type == duckdb.StatementType.SELECT:
        return
    if st.type == duckdb.StatementType.EXPLAIN:
        inner = _EXPLAIN.sub("", st.query, count=1)
        try:
            ok = [s.type for s in duckdb.extract_statements(inner)] == [duckdb.StatementType.SELECT]
        except duckdb.Error:
            ok = False
        if ok:
            return
        raise QueryError(f"query refused: EXPLAIN of anything but one SELECT is not allowed; {REFUSED_WHY}")
    raise QueryError(f"query refused: {_first_word(st.query)} statements are not allowed; {REFUSED_WHY}")


def query_error(exc: duckdb.Error, help_text: str = HELP) -> QueryError:
    """The one-line QueryError for a DuckDB error raised by analyst SQL on a locked connection."""
    msg = one_line(exc)
    if isinstance(exc, duckdb.PermissionException) or any(m in msg for m in _LOCKED_MARKERS):
        return QueryError(f"query refused: {msg}; {REFUSED_WHY}")
    return QueryError(f"query failed: {msg} ({help_text})")

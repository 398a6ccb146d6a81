"""``edgepair sql``: an interactive SQL shell on a store's views, for analysts who have no DuckDB client.

The pip ``duckdb`` package has no command-line shell, and the CLI on PyPI (``duckdb-cli``) may be of another DuckDB
version than the Python one. This shell has every view of ``analytics open`` (the KPI views included) on a locked,
read-only connection, as the report's (:func:`storage.analytics.connect_store`): every statement is checked by
:func:`storage.sandbox.check_statement` (one read-only statement: ``SELECT``, ``WITH``, ``SHOW``, ``DESCRIBE``,
``SUMMARIZE``, ``EXPLAIN``), so nothing can be written, attached or read outside the store's segments. A statement
ends with ``;`` (it may span lines); an error is one line and the shell goes on. Dot commands: ``.tables``,
``.help``, ``.quit`` (or end of input). When standard input is a terminal, lines are edited with ``readline`` (no
history file is written).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import IO, TYPE_CHECKING

from cluster.errors import QueryError

if TYPE_CHECKING:
    import duckdb

SHOWN = 100
"""Rows a result shows (and the most fetched, plus one to tell that there are more)."""

HELP = (
    "end a statement with ';' (it may span lines). Views: SHOW TABLES; columns: DESCRIBE traffic_daily;"
    " dot commands: .tables .help .quit"
)


def run_shell(
    con: duckdb.DuckDBPyConnection | Callable[[], duckdb.DuckDBPyConnection],
    title: str,
    stdin: IO[str] | None = None,
    stdout: IO[str] | None = None,
) -> int:
    """Read statements from ``stdin`` until ``.quit`` or its end; print each result as a table. Returns 0.
    ``con``: the connection, or a function called before each statement that gives it
    (:meth:`storage.analytics.StoreSession.current`: rebuilt when the node compacted files under it)."""
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    interactive = stdin.isatty()
    if interactive:
        import readline  # noqa: F401  (line editing for input(); nothing is saved)

    def say(text: str) -> None:
        print(text, file=stdout, flush=True)

    say(f"edgepair sql: store {title}, read only; {HELP}")
    buffer: list[str] = []
    while True:
        prompt = ("...> " if buffer else "edgepair> ") if interactive else ""
        try:
            line = _read_line(stdin, stdout, prompt, interactive)
        except EOFError:
            if buffer:
                say("error: input ended inside a statement (end it with ';')")
            return 0
        except KeyboardInterrupt:
            buffer.clear()
            say("")
            continue
        text = line.rstrip("\r\n")
        if not buffer and text.strip().startswith("."):
            text = text.strip()
            command = text.split()[0]
            if command in (".quit", ".exit", ".q"):
                return 0
            if command == ".help":
                say(HELP)
            elif command == ".tables":
                text = "SHOW TABLES;"
            else:
                say(f"error: unknown command {command}: {HELP}")
            if command != ".tables":
                continue
        if not text.strip() and not buffer:
            continue
        buffer.append(text)
        sql = "\n".join(buffer)
        end = _statement_end(sql)
        if end is None:
            continue
        buffer.clear()
        _run_one(con, sql, end, say)


def _read_line(stdin: IO[str], stdout: IO[str], prompt: str, interactive: bool) -> str:
    """One line of input (EOFError at its end), after the prompt."""
    if interactive and stdin is sys.stdin:
        return input(prompt)
    if prompt:
        print(prompt, end="", file=stdout, flush=True)
    line = stdin.readline()
    if not line:
        raise EOFError
    return line


def _run_one(
    con: duckdb.DuckDBPyConnection | Callable[[], duckdb.DuckDBPyConnection],
    sql: str,
    end: int,
    say: Callable[[str], None],
) -> None:
    """Check and run one statement (``sql[:end]``, without its ';'); print its table or one line of error."""
    import duckdb
    import pyarrow as pa

    from storage.sandbox import check_statement, query_error
    from storage.views import format_table

    try:
        check_statement(sql)
        try:
            session = con() if callable(con) else con
            relation = session.sql(sql[:end])  # without its ';' and what follows (a comment): wrapped in LIMIT
            # At most one row more than is shown: the rest is never fetched (a query cannot spill to disk here).
            table = relation.limit(SHOWN + 1).to_arrow_table() if relation is not None else None
        except duckdb.Error as exc:
            raise query_error(exc) from None
        if table is not None:
            say(format_table(table.slice(0, SHOWN), max_rows=SHOWN))
            if table.num_rows > SHOWN:
                say(f"(more than {SHOWN} rows: narrow the query, or use `edgepair query --format csv`)")
    except QueryError as exc:
        say(f"error: {exc}")
    except (OverflowError, ValueError, pa.ArrowException) as exc:  # a value Python cannot hold (year 294247)
        say(f"error: a value of the result cannot be shown ({type(exc).__name__}): cast it to VARCHAR")


def _statement_end(sql: str) -> int | None:
    """Where the ``;`` that ends ``sql`` is, when its last token past comments is one outside any string or comment
    (a ``;`` inside a quoted string or after ``--`` ends nothing); None while the statement goes on."""
    import duckdb

    try:
        tokens = duckdb.tokenize(sql)
    except Exception:  # text the tokenizer cannot read: sent as it is, and refused with one line
        return len(sql)
    code = [(pos, kind) for pos, kind in tokens if kind != duckdb.token_type.comment]
    if not code:
        return None
    pos, kind = code[-1]
    if kind == duckdb.token_type.operator and sql[pos:].lstrip().startswith(";"):
        return pos + sql[pos:].index(";")
    return None

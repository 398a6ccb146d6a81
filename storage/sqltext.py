"""SQL text built by the product (views, settings): the one place string literals are quoted."""

from __future__ import annotations


def literal(text: str) -> str:
    """``text`` as a SQL string literal (single quotes doubled)."""
    return "'" + text.replace("'", "''") + "'"

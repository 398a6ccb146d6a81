"""Review r17 (issue 17): HQ receives exports from hundreds of stores; an export's ``export.json`` names the folder
it is merged into. Tiny fake export, no DuckDB."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cluster.errors import EdgepairError
from storage.kpiexport import EXPORT_FILE, EXPORT_FORMAT, EXPORT_TABLES, merge_exports


def fake_export(folder: Path, store_id: str) -> Path:
    folder.mkdir(parents=True)
    meta = {"format": EXPORT_FORMAT, "store_id": store_id, "timezone": "Europe/London", "definitions": []}
    (folder / EXPORT_FILE).write_text(json.dumps(meta))
    for name in EXPORT_TABLES:
        (folder / f"{name}.parquet").write_bytes(b"")
    return folder


@pytest.mark.parametrize("store_id", ["../../escaped", "a/b", "."])
def test_r17_merge_keeps_every_export_under_stores(tmp_path: Path, store_id: str) -> None:
    """``merge_exports`` joins ``out/stores/`` with the store id read from the export (no check): ``../../escaped``
    writes beside the HQ folder, ``a/b`` lands where ``open_hq`` never looks, ``.`` replaces ``stores/`` itself."""
    src = fake_export(tmp_path / "in" / "x", store_id)
    hq = tmp_path / "hq"
    try:
        merge_exports([src], hq)
    except EdgepairError:
        return  # refused with one line: fine
    assert not (tmp_path / "escaped").exists()
    stores = hq / "stores"
    assert stores.is_dir() and not (stores / EXPORT_FILE).exists()
    assert [p.name for p in stores.iterdir() if (p / EXPORT_FILE).is_file()] != []

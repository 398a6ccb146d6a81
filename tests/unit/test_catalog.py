"""The catalog: derived from the files, cached, rebuilt when the cache is lost, corrupt files quarantined."""

from __future__ import annotations

from pathlib import Path

from storage.catalog import Catalog, is_compacted_id
from storage.segments import SegmentWriter
from tests.harness.replnode import DEFAULT_BASE, TZ, window_events


def make(tmp_path: Path, n: int = 5) -> None:
    w = SegmentWriter(tmp_path, "s1", TZ, "ws-a")
    for i in range(n):
        ws = DEFAULT_BASE + i
        w.write("cam-1", ws, ws + 1, window_events("cam-1", DEFAULT_BASE, i, 2, 1), frames=3, token=4,
                config_version="c", model_version="m")  # fmt: skip


def test_scan_lists_every_segment_with_its_identity(tmp_path: Path) -> None:
    make(tmp_path)
    state = Catalog(tmp_path).scan()
    assert len(state.live()) == 5 and state.superseded == {}
    e = state.live()[0]
    assert (e.camera_id, e.node, e.token, e.rows, e.frames, e.window_end - e.window_start) == (
        "cam-1",
        "ws-a",
        4,
        2,
        3,
        1,
    )
    assert len(e.sha256) == 64 and not is_compacted_id(e.segment_id)


def test_cache_is_rebuilt_from_the_files(tmp_path: Path) -> None:
    make(tmp_path)
    first = Catalog(tmp_path).scan().entries
    (tmp_path / "catalog" / "index.json").write_text("{not json")
    assert Catalog(tmp_path).scan().entries == first
    (tmp_path / "catalog" / "index.json").unlink()
    assert Catalog(tmp_path).scan().entries == first


def test_changed_file_is_quarantined(tmp_path: Path) -> None:
    make(tmp_path)
    cat = Catalog(tmp_path)
    victim = tmp_path / sorted(cat.scan().entries.values(), key=lambda e: e.segment_id)[2].relpath
    victim.write_bytes(victim.read_bytes()[:50])
    state = cat.scan()
    assert len(state.entries) == 4 and cat.corrupt_found == 1
    assert len(list((tmp_path / "quarantine").iterdir())) == 1


def test_temp_files_are_ignored(tmp_path: Path) -> None:
    make(tmp_path, 1)
    folder = next((tmp_path / "events").rglob("camera=cam-1"))
    (folder / ".x.parquet.1.ab.tmp").write_bytes(b"half")
    assert len(Catalog(tmp_path).scan().entries) == 1

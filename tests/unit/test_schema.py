"""Segment schema: exact columns, rows from events, segment ids, metadata round trip."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from actors.events import Event
from cluster.errors import StorageError
from storage.schema import (
    EVENT_SCHEMA,
    META_PREFIX,
    SegmentMeta,
    events_to_table,
    make_segment_id,
    read_segment_meta,
    with_segment_meta,
)

COMMON = {
    "store_id": "s1",
    "node": "ws-1",
    "token": 7,
    "config_version": "cfg-3",
    "model_version": "yolo-1",
    "segment_id": "cam1.1000.ws-1.7",
}


def _meta(**changes: object) -> SegmentMeta:
    values: dict[str, object] = {
        "segment_id": "cam1.1719876600123.ws-1.7",
        "store_id": "s1",
        "camera_id": "cam1",
        "window_start": 1719876600.123456,
        "window_end": 1719876660.5,
        "frames": 599,
        "node": "ws-1",
        "token": 7,
        "rows": 0,
        "config_version": "cfg-3",
        "model_version": "yolo-1",
        "timezone": "Europe/London",
    }
    values.update(changes)
    return SegmentMeta(**values)  # type: ignore[arg-type]


def test_schema_columns_and_types_are_exact() -> None:
    assert [(f.name, f.type, f.nullable) for f in EVENT_SCHEMA] == [
        ("store_id", pa.string(), False),
        ("camera_id", pa.string(), False),
        ("ts", pa.timestamp("us", tz="UTC"), False),
        ("track_id", pa.int64(), False),
        ("kind", pa.string(), False),
        ("line_id", pa.string(), True),
        ("zone_id", pa.string(), True),
        ("direction", pa.string(), True),
        ("dwell_s", pa.float64(), True),
        ("node", pa.string(), False),
        ("token", pa.int64(), False),
        ("config_version", pa.string(), False),
        ("model_version", pa.string(), False),
        ("segment_id", pa.string(), False),
        ("seq", pa.int32(), False),
    ]


def test_events_to_table_keeps_values_and_order() -> None:
    events = [
        Event(1000.1, "cam1", 5, "line_cross", line_id="door", direction="in"),
        Event(1001.0, "cam1", 6, "zone_enter", zone_id="till"),
        Event(1002.25, "cam1", 6, "zone_exit", zone_id="till", dwell_s=1.25),
    ]
    table = events_to_table(events, **COMMON)  # type: ignore[arg-type]
    assert table.schema == EVENT_SCHEMA
    rows = table.to_pylist()
    assert [r["seq"] for r in rows] == [0, 1, 2]
    assert [r["kind"] for r in rows] == ["line_cross", "zone_enter", "zone_exit"]
    # 1000.1 s is 1000100000 us exactly (rounded, not truncated to ...099999)
    assert table.column("ts").cast(pa.int64()).to_pylist() == [1000100000, 1001000000, 1002250000]
    assert rows[0]["ts"] == datetime(1970, 1, 1, 0, 16, 40, 100000, tzinfo=UTC)
    assert rows[0] | {"ts": None} == {
        "store_id": "s1",
        "camera_id": "cam1",
        "ts": None,
        "track_id": 5,
        "kind": "line_cross",
        "line_id": "door",
        "zone_id": None,
        "direction": "in",
        "dwell_s": None,
        "node": "ws-1",
        "token": 7,
        "config_version": "cfg-3",
        "model_version": "yolo-1",
        "segment_id": "cam1.1000.ws-1.7",
        "seq": 0,
    }
    assert rows[2]["dwell_s"] == 1.25


def test_zero_events_give_zero_rows_with_the_schema() -> None:
    table = events_to_table([], **COMMON)  # type: ignore[arg-type]
    assert table.num_rows == 0
    assert table.schema == EVENT_SCHEMA


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        ({"token": -1}, ValueError, "token must be >= 0"),
        ({"store_id": ""}, ValueError, "store_id must be a non-empty string"),
        ({"segment_id": None}, ValueError, "segment_id"),
    ],
)
def test_events_to_table_rejects_bad_arguments(changes: dict[str, object], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        events_to_table([], **(COMMON | changes))  # type: ignore[arg-type]


def test_events_to_table_rejects_non_events() -> None:
    with pytest.raises(TypeError, match=r"events\[0\] must be an actors.events.Event, got dict"):
        events_to_table([{"ts": 1.0}], **COMMON)  # type: ignore[arg-type, list-item]


@pytest.mark.parametrize(
    ("camera_id", "window_start", "node", "token", "expected"),
    [
        ("cam1", 1719876600.0, "ws-1", 0, "cam1.1719876600000.ws-1.0"),
        ("door_2", 1719876600.1234, "ws-1.store.lan", 12, "door_2.1719876600123.ws-1-store-lan.12"),
        ("C-3", 0.0, "node a/b", 1, "C-3.0.node-a-b.1"),
    ],
)
def test_make_segment_id(camera_id: str, window_start: float, node: str, token: int, expected: str) -> None:
    assert make_segment_id(camera_id, window_start, node, token) == expected


@pytest.mark.parametrize("camera_id", ["", "cam.1", "cam/1", "../x", "cam 1"])
def test_make_segment_id_rejects_unsafe_camera_ids(camera_id: str) -> None:
    with pytest.raises(ValueError, match=r"camera_id must match \[A-Za-z0-9_-\]\+"):
        make_segment_id(camera_id, 0.0, "ws-1", 0)


def test_meta_kv_round_trip_is_exact() -> None:
    meta = _meta()
    kv = meta.to_kv()
    assert kv[b"edgepair.window_start"] == b"1719876600.123456"
    assert kv[b"edgepair.schema_version"] == b"1"
    assert all(k.startswith(META_PREFIX.encode()) for k in kv)
    assert SegmentMeta.from_kv(kv) == meta


def test_meta_survives_a_parquet_file(tmp_path: Path) -> None:
    meta = _meta(rows=1)
    table = events_to_table([Event(1719876601.0, "cam1", 1, "zone_enter", zone_id="z")], **COMMON)  # type: ignore[arg-type]
    path = tmp_path / "seg.parquet"
    pq.write_table(with_segment_meta(table, meta), path)
    assert read_segment_meta(path) == meta
    assert pq.read_table(path).schema.remove_metadata() == EVENT_SCHEMA


def test_with_segment_meta_checks_the_row_count() -> None:
    with pytest.raises(ValueError, match="meta says 3 rows, table has 0"):
        with_segment_meta(events_to_table([], **COMMON), _meta(rows=3))  # type: ignore[arg-type]


def test_read_segment_meta_of_a_foreign_parquet_file_is_a_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "foreign.parquet"
    pq.write_table(pa.table({"a": [1]}), path)
    with pytest.raises(StorageError, match=r"foreign\.parquet has no valid edgepair segment metadata"):
        read_segment_meta(path)


def test_read_segment_meta_of_a_missing_file_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=r"cannot read segment metadata from .*missing\.parquet"):
        read_segment_meta(tmp_path / "missing.parquet")


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"window_end": 1.0, "window_start": 2.0}, "window_end 1.0 is before window_start 2.0"),
        ({"frames": -1}, "frames must be >= 0"),
        ({"camera_id": "a.b"}, "camera_id must match"),
        ({"timezone": ""}, "timezone must be a non-empty string"),
        ({"window_start": float("nan")}, "window must be finite"),
    ],
)
def test_meta_validation(changes: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _meta(**changes)

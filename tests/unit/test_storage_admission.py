"""The door of replication and the bounds of a possible file: ids, paths, windows, schema, tokens, tickets, the
accounting of a compacted file; and the catalog keeping an impossible local file away from the views."""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

from cluster.errors import StorageError
from storage.admission import (
    MAX_TICKET_IDS,
    check_compacted_accounting,
    check_token,
    inspect_bytes,
    parse_batch_ticket,
    supersedes,
)
from storage.bounds import Refused, check_entry
from storage.catalog import Catalog, CatalogEntry, Run
from storage.layout import parse_file_id, segment_path
from storage.replnode import DEFAULT_BASE, TZ, window_events
from storage.schema import SegmentMeta, events_to_table, with_segment_meta
from storage.segments import SegmentWriter, _to_parquet_bytes, load_timezone
from storage.views import run_query

W = DEFAULT_BASE
MS = round(W * 1000)


@pytest.mark.parametrize(
    ("sid", "ok"),
    [
        (f"cam-1.{MS}.ws-a.5", True),
        (f"cam-1.{MS}.hour~0123456789abcdef", True),
        (f"cam_2.{MS}.ws-1-store-lan.0", True),
        (f"../camera=cam-2/cam-1.{MS}.ws-a.5", False),
        ("../../../../etc.0.x.1", False),
        (f"cam-1.{MS}.ws-a.5/..", False),
        (f"cam-1.{MS}.ws-a", False),
        (f"cam-1.-{MS}.ws-a.5", False),
        (f"cam-1.{MS}.week~00", False),
        (f"cam-1.{MS}.ws-a.5.parquet", False),
        (f"cam 1.{MS}.ws-a.5", False),
        ("", False),
        (f"cam-1.{MS}.ws-a.{10**20}", False),
    ],
)
def test_ids_are_strict(sid: str, ok: bool) -> None:
    if ok:
        assert parse_file_id(sid).text == sid
    else:
        with pytest.raises(StorageError):
            parse_file_id(sid)


def test_a_path_stays_inside_the_data_dir(tmp_path: Path) -> None:
    tz = load_timezone(TZ)
    sid = f"cam-1.{MS}.ws-a.5"
    assert segment_path(tmp_path, "s1", "cam-1", W, tz, sid).is_relative_to(tmp_path / "events/store=s1")
    for store, cam in (("../s1", "cam-1"), ("s1", "cam-2")):
        with pytest.raises(StorageError):
            segment_path(tmp_path, store, cam, W, tz, sid)
    (tmp_path / "events").mkdir()
    (tmp_path / "events" / "store=s1").symlink_to(tmp_path.parent)  # a folder that leads elsewhere
    with pytest.raises(StorageError, match="outside"):
        segment_path(tmp_path, "s1", "cam-1", W, tz, sid)


def seg(start: float = W, end: float | None = None, **kw: object) -> CatalogEntry:
    e = CatalogEntry(f"cam-1.{round(start * 1000)}.ws-a.5", "s1", "cam-1", start, end if end is not None else start + 1,
                     "ws-a", 5, 3, 10, "x" * 64, 1, "", TZ)  # fmt: skip
    return dataclasses.replace(e, **kw)  # type: ignore[arg-type]


def comp(runs: tuple[Run, ...], **kw: object) -> CatalogEntry:
    e = seg(runs[0].start, runs[-1].end, segment_id=f"cam-1.{round(runs[0].start * 1000)}.hour~ab", node="ws-b")
    return dataclasses.replace(e, runs=runs, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        (seg(), None),
        (seg(end=1e12), "window"),
        (seg(end=float("inf")), "window"),
        (seg(end=W), "window"),  # end must be after start
        (seg(W + 0.5, segment_id=f"cam-1.{MS}.ws-a.5"), "bad_id"),
        (seg(end=W + 7 * 3600), "window"),
        (seg(100.0, end=101.0), "window"),  # 1970
        (seg(token=6), "bad_id"),
        (seg(node="ws-b"), "bad_id"),
        (seg(camera_id="cam-2"), "bad_id"),
        (seg(rows=-1), "rows"),
        (seg(frames=10**9), "rows"),
        (comp((Run(W, W + 3600, "ws-a", 5, 36000),)), None),
        (comp((Run(W, W + 86400 * 40, "ws-a", 5, 0),)), "window"),
        (comp((Run(W, W + 60, "ws-a", 5, 0),), window_end=W + 30), "window"),
        (comp((Run(W, W, "ws-a", 5, 0),), window_end=W + 1), "window"),
        (comp((Run(W, W + 60, "ws-a", -1, 0),)), "rows"),
        (dataclasses.replace(comp((Run(W, W + 60, "ws-a", 5, 0),)), runs=()), "window"),
    ],
)
def test_only_possible_files(entry: CatalogEntry, reason: str | None) -> None:
    if reason is None:
        check_entry(entry)
    else:
        with pytest.raises(Refused) as caught:
            check_entry(entry)
        assert caught.value.reason == reason, caught.value


def file_bytes(
    k: int = 3, *, version: str | None = None, track_as_text: bool = False, rows: int | None = None
) -> bytes:
    sid = f"cam-1.{MS}.ws-a.5"
    t = events_to_table(window_events("cam-1", W, 0, k, 1), store_id="s1", node="ws-a", token=5, config_version="c",
                        model_version="m", segment_id=sid)  # fmt: skip
    t = with_segment_meta(t, SegmentMeta(sid, "s1", "cam-1", W, W + 1, 10, "ws-a", 5, k, "c", "m", TZ))
    md = dict(t.schema.metadata)
    if version:
        md[b"edgepair.schema_version"] = version.encode()
    if rows is not None:
        md[b"edgepair.rows"] = str(rows).encode()
    if track_as_text:
        t = t.set_column(3, "track_id", t.column("track_id").cast(pa.string()))
    return _to_parquet_bytes(t.replace_schema_metadata(md))


@pytest.mark.parametrize(
    ("data", "store", "sha", "reason"),
    [
        (file_bytes(), "s1", None, None),
        (file_bytes(), "s2", None, "store"),
        (file_bytes(), "s1", "0" * 64, "checksum"),
        (b"not parquet at all", "s1", None, "unreadable"),
        (file_bytes(version="2"), "s1", None, "schema"),
        (file_bytes(track_as_text=True), "s1", None, "schema"),
        (file_bytes(rows=30), "s1", None, "rows"),
    ],
)
def test_inspect_bytes(data: bytes, store: str, sha: str | None, reason: str | None) -> None:
    sid = f"cam-1.{MS}.ws-a.5"
    sha = sha or hashlib.sha256(data).hexdigest()
    if reason is None:
        assert inspect_bytes(data, sid, sha, store).rows == 3
    else:
        with pytest.raises(Refused) as caught:
            inspect_bytes(data, sid, sha, store)
        assert caught.value.reason == reason, caught.value


def test_event_timestamps_are_bounded_too() -> None:
    sid = f"cam-1.{MS}.ws-a.5"
    t = events_to_table(window_events("cam-1", W, 0, 2, 1), store_id="s1", node="ws-a", token=5, config_version="c",
                        model_version="m", segment_id=sid)  # fmt: skip
    ts = pa.array([0, 253402300800000000 * 2], pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    t = with_segment_meta(t.set_column(2, t.schema.field("ts"), ts),
                          SegmentMeta(sid, "s1", "cam-1", W, W + 1, 10, "ws-a", 5, 2, "c", "m", TZ))  # fmt: skip
    data = _to_parquet_bytes(t)
    with pytest.raises(Refused, match="event timestamps"):
        inspect_bytes(data, sid, hashlib.sha256(data).hexdigest(), "s1")


def test_token_is_never_above_etcds_revision() -> None:
    check_token(seg(token=5), 5)
    check_token(seg(token=5), None)
    with pytest.raises(Refused, match="above etcd's revision 4"):
        check_token(seg(token=5), 4)
    with pytest.raises(Refused):
        check_token(comp((Run(W, W + 60, "ws-a", 10**15, 0),)), 100)


def test_a_compacted_file_must_account_for_what_it_supersedes() -> None:
    held = [seg(W + i, segment_id=f"cam-1.{round((W + i) * 1000)}.ws-a.5") for i in range(5)]
    honest = comp((Run(W, W + 5, "ws-a", 5, 50),))
    assert supersedes(honest, held) == held
    assert supersedes(comp((Run(W, W + 5, "ws-b", 5, 50),)), held) == []

    def table(per_segment: int) -> bytes:
        tables = [events_to_table(window_events("cam-1", W, i, per_segment, 1), store_id="s1", node="ws-a", token=5,
                                  config_version="c", model_version="m", segment_id=e.segment_id)
                  for i, e in enumerate(held)]  # fmt: skip
        return _to_parquet_bytes(pa.concat_tables(tables))

    check_compacted_accounting(honest, table(3), held, lambda e: Counter())
    with pytest.raises(Refused, match="holds 30 events") as caught:
        check_compacted_accounting(honest, table(30), held, lambda e: Counter())
    assert caught.value.reason == "compacted_accounting" and caught.value.keep
    short = comp((Run(W, W + 3, "ws-a", 5, 30),))  # claims windows 0..2 only but the ids of all five
    with pytest.raises(Refused, match="no run of it covers"):
        check_compacted_accounting(short, table(3), held, lambda e: Counter())


@pytest.mark.parametrize(
    ("raw", "ok"),
    [
        (b'["a", "b"]', True),
        (b"{}", False),
        (b"[1]", False),
        (b"not json", False),
        (str([f"x{i}" for i in range(MAX_TICKET_IDS + 1)]).replace("'", '"').encode(), False),
        (b'["' + b"x" * (300 << 10) + b'"]', False),
    ],
)
def test_batch_tickets_are_bounded(raw: bytes, ok: bool) -> None:
    if ok:
        assert parse_batch_ticket(raw) == ["a", "b"]
    else:
        with pytest.raises(Refused):
            parse_batch_ticket(raw)


def test_an_impossible_local_file_is_quarantined_and_queries_keep_working(tmp_path: Path) -> None:
    w = SegmentWriter(tmp_path, "s1", TZ, "ws-a")
    for i in range(3):
        w.write("cam-1", W + i, W + i + 1, window_events("cam-1", W, i, 2, 1), frames=1, token=1,
                config_version="c", model_version="m")  # fmt: skip
    Catalog(tmp_path).scan()  # catalogued before the bad file arrives, as on a running node
    bad = w.write("cam-1", W + 10, 1e12, window_events("cam-1", W, 10, 2, 1), frames=1, token=1,
                  config_version="c", model_version="m")  # fmt: skip
    assert run_query(tmp_path, TZ, "SELECT count(*) FROM traffic_hourly").column(0)[0].as_py() >= 1
    assert run_query(tmp_path, TZ, "SELECT count(*) FROM events").column(0)[0].as_py() == 6
    assert not bad.path.exists() and len(list((tmp_path / "quarantine").iterdir())) == 1

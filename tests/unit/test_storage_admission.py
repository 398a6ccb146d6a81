"""The door of replication and the bounds of a possible file: ids, paths, windows, schema, tokens, tickets, the
accounting of a compacted file; and the catalog keeping an impossible local file away from the views."""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from cluster.errors import StorageError
from storage.admission import (
    MAX_TICKET_IDS,
    check_compacted_accounting,
    check_compacted_content,
    check_compactor,
    check_token,
    inspect_bytes,
    parse_batch_ticket,
    supersedes,
)
from storage.bounds import Refused, check_entry
from storage.catalog import Catalog, CatalogEntry, Run
from storage.layout import parse_file_id, segment_path
from storage.schema import SegmentMeta, events_to_table, with_segment_meta
from storage.segments import SegmentWriter, _to_parquet_bytes, load_timezone
from storage.views import run_query
from tests.harness.replnode import DEFAULT_BASE, TZ, window_events

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
    with pytest.raises(Refused, match="is above 4, the most this node allows"):
        check_token(seg(token=5), 4)
    with pytest.raises(Refused, match=f"token {10**15} is above") as caught:
        check_token(comp((Run(W, W + 60, "ws-a", 10**15, 0),)), 100)
    assert caught.value.reason == "token_future"


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
        (b"[" * 100_000, False),  # nested too deep for the parser: a refusal, not a RecursionError
        (b'[["a"]]', False),
    ],
)
def test_batch_tickets_are_bounded(raw: bytes, ok: bool) -> None:
    if ok:
        assert parse_batch_ticket(raw) == ["a", "b"]
    else:
        with pytest.raises(Refused) as caught:
            parse_batch_ticket(raw)
        assert caught.value.reason == "ticket", caught.value


def test_an_impossible_local_file_is_kept_out_of_queries_and_quarantined_by_the_scan(tmp_path: Path) -> None:
    w = SegmentWriter(tmp_path, "s1", TZ, "ws-a")
    for i in range(3):
        w.write("cam-1", W + i, W + i + 1, window_events("cam-1", W, i, 2, 1), frames=1, token=1,
                config_version="c", model_version="m")  # fmt: skip
    Catalog(tmp_path).scan()  # catalogued before the bad file arrives, as on a running node
    bad = w.write("cam-1", W + 10, 1e12, window_events("cam-1", W, 10, 2, 1), frames=1, token=1,
                  config_version="c", model_version="m")  # fmt: skip
    hourly = run_query(tmp_path, TZ, "SELECT local_hour, ins, outs FROM traffic_hourly ORDER BY ALL").to_pylist()
    assert len(hourly) == 1 and (hourly[0]["ins"], hourly[0]["outs"]) == (3, 3)  # the 3 good windows, 1 in + 1 out
    assert run_query(tmp_path, TZ, "SELECT count(*) FROM events").column(0)[0].as_py() == 6
    Catalog(tmp_path).scan()  # the node's scan (the views only read) moves it away
    assert not bad.path.exists() and len(list((tmp_path / "quarantine").iterdir())) == 1


def _segments(n: int = 4, k: int = 3) -> list[pa.Table]:
    return [events_to_table(window_events("cam-1", W, i, k, 1), store_id="s1", node="ws-a", token=5,
                            config_version="c", model_version="m", segment_id=f"cam-1.{round((W + i) * 1000)}.ws-a.5")
            for i in range(n)]  # fmt: skip


def _flip(t: pa.Table, name: str, fn: Any) -> pa.Table:
    i = t.schema.get_field_index(name)
    return t.set_column(i, t.schema.field(i), fn(t.column(i)).cast(t.schema.field(i).type))


@pytest.mark.parametrize(
    ("forge", "refusal"),
    [
        (lambda t: t, None),
        (lambda t: t.take(pa.array(list(range(t.num_rows))[::-1])), None),  # another row order: the same rows
        (lambda t: _flip(t, "direction", lambda c: pc.if_else(pc.equal(c, "in"), "out", "in")), "column direction"),
        (lambda t: _flip(t, "dwell_s", lambda c: pc.multiply(pc.fill_null(c, 1.0), 10.0)), "column dwell_s"),
        (lambda t: _flip(t, "track_id", lambda c: pc.add(c, 100_000)), "column track_id"),
        (lambda t: _flip(t, "ts", lambda c: pc.add(c.cast(pa.int64()), 1).cast(pa.timestamp("us", tz="UTC"))), "ts"),
        (lambda t: pa.concat_tables([t.slice(1), t.slice(0, 1)]).slice(0, t.num_rows - 1), "rows of their sources"),
    ],
)
def test_a_compacted_file_must_hold_the_rows_it_replaces(forge: Any, refusal: str | None) -> None:
    local = _segments()
    sid_b = f"cam-1.{round((W + 9) * 1000)}.ws-b.6"
    other = events_to_table(window_events("cam-1", W, 9, 2, 3), store_id="s1", node="ws-b", token=6,
                            config_version="c", model_version="m", segment_id=sid_b)  # fmt: skip
    data = _to_parquet_bytes(pa.concat_tables([forge(pa.concat_tables(local)), other]))  # + a source not held here
    c = comp((Run(W, W + 4, "ws-a", 5, 40),))
    if refusal is None:
        check_compacted_content(c, data, local)
        return
    with pytest.raises(Refused, match=refusal) as caught:
        check_compacted_content(c, data, local)
    assert caught.value.reason == "compacted_content" and caught.value.keep


def test_a_source_held_twice_is_compared_once() -> None:
    """A segment and the hour file that absorbed it, both still held: the same rows, counted once."""
    local = _segments()
    hour = pa.concat_tables(local)
    data = _to_parquet_bytes(hour)
    check_compacted_content(comp((Run(W, W + 4, "ws-a", 5, 40),)), data, [local[0], hour, local[2]])


def test_only_the_pairs_compactor_makes_compacted_files() -> None:
    c = comp((Run(W, W + 4, "ws-a", 5, 40),))  # made by ws-b
    check_compactor(c, None)
    check_compactor(dataclasses.replace(c, node="ws-a"), ("ws-b", "ws-a"))
    check_compactor(seg(node="ws-b"), ("ws-a", "ws-b"))  # a segment: any node of the pair
    with pytest.raises(Refused, match="only ws-a compacts") as caught:
        check_compactor(c, ("ws-b", "ws-a"))
    assert caught.value.reason == "compactor"

"""Segment writer: layout, atomic write, immutability, failures that leave nothing visible, temp sweep."""

from __future__ import annotations

import errno
import hashlib
import os
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from actors.events import Event
from cluster.errors import ConfigError, StorageError
from storage.schema import read_segment_meta
from storage.segments import SegmentWriter, sweep_temp_files

# 2024-07-01 23:30:00 UTC is 2024-07-02 00:30 in London (BST, UTC+1).
SUMMER_2330_UTC = 1719876600.0
# 2024-01-15 23:30:00 UTC is 2024-01-15 23:30 in London (GMT).
WINTER_2330_UTC = 1705361400.0

VERSIONS = {"config_version": "cfg-1", "model_version": "yolo-1"}


@pytest.fixture
def writer(tmp_path: Path) -> SegmentWriter:
    return SegmentWriter(tmp_path, "store-7", "Europe/London", "ws-1.lan")


def _events(t0: float, n: int = 2) -> list[Event]:
    return [Event(t0 + i, "cam1", i, "line_cross", line_id="door", direction="in") for i in range(n)]


def _visible(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize(
    ("window_start", "timezone", "date"),
    [
        (SUMMER_2330_UTC, "Europe/London", "2024-07-02"),
        (WINTER_2330_UTC, "Europe/London", "2024-01-15"),
        (SUMMER_2330_UTC, "UTC", "2024-07-01"),
        (SUMMER_2330_UTC, "America/New_York", "2024-07-01"),
    ],
)
def test_layout_uses_the_local_date_of_the_window_start(
    tmp_path: Path, window_start: float, timezone: str, date: str
) -> None:
    info = SegmentWriter(tmp_path, "store-7", timezone, "ws-1.lan").write(
        "cam1", window_start, window_start + 60, [], frames=600, token=3, **VERSIONS
    )
    segment_id = f"cam1.{int(window_start * 1000)}.ws-1-lan.3"
    assert info.segment_id == segment_id
    assert info.path == tmp_path / "events/store=store-7" / f"date={date}" / "camera=cam1" / f"{segment_id}.parquet"
    assert _visible(tmp_path) == [info.path]


def test_write_returns_rows_sha_and_meta_of_the_file(writer: SegmentWriter, tmp_path: Path) -> None:
    info = writer.write(
        "cam1", SUMMER_2330_UTC, SUMMER_2330_UTC + 60, _events(SUMMER_2330_UTC, 3), frames=599, token=3, **VERSIONS
    )
    assert info.rows == 3
    assert not info.existed
    assert info.sha256 == hashlib.sha256(info.path.read_bytes()).hexdigest()
    assert read_segment_meta(info.path) == info.meta
    assert info.meta.rows == 3 and info.meta.frames == 599 and info.meta.token == 3
    assert info.meta.node == "ws-1.lan" and info.meta.timezone == "Europe/London"
    table = pq.read_table(info.path)
    assert table.column("track_id").to_pylist() == [0, 1, 2]
    assert set(table.column("segment_id").to_pylist()) == {info.segment_id}


def test_zero_event_segment_is_written_and_its_meta_readable(writer: SegmentWriter) -> None:
    info = writer.write("cam1", SUMMER_2330_UTC, SUMMER_2330_UTC + 60, [], frames=600, token=0, **VERSIONS)
    assert info.path.is_file()
    assert pq.read_table(info.path).num_rows == 0
    meta = read_segment_meta(info.path)
    assert (meta.rows, meta.frames, meta.window_start, meta.window_end) == (
        0,
        600,
        SUMMER_2330_UTC,
        SUMMER_2330_UTC + 60,
    )


def test_identical_rewrite_is_a_no_op(writer: SegmentWriter, tmp_path: Path) -> None:
    first = writer.write(
        "cam1", SUMMER_2330_UTC, SUMMER_2330_UTC + 60, _events(SUMMER_2330_UTC), frames=10, token=3, **VERSIONS
    )
    old_stat = first.path.stat()
    again = writer.write(
        "cam1", SUMMER_2330_UTC, SUMMER_2330_UTC + 60, _events(SUMMER_2330_UTC), frames=10, token=3, **VERSIONS
    )
    assert again.existed
    assert (again.path, again.sha256, again.rows) == (first.path, first.sha256, first.rows)
    assert first.path.stat().st_ino == old_stat.st_ino
    assert first.path.stat().st_mtime_ns == old_stat.st_mtime_ns
    assert _visible(tmp_path) == [first.path]


def test_conflicting_rewrite_is_refused_and_the_file_kept(writer: SegmentWriter, tmp_path: Path) -> None:
    first = writer.write(
        "cam1", SUMMER_2330_UTC, SUMMER_2330_UTC + 60, _events(SUMMER_2330_UTC, 2), frames=10, token=3, **VERSIONS
    )
    before = first.path.read_bytes()
    with pytest.raises(
        StorageError, match=r"already exists at .*cam1\.1719876600000\.ws-1-lan\.3\.parquet with different"
    ):
        writer.write(
            "cam1", SUMMER_2330_UTC, SUMMER_2330_UTC + 60, _events(SUMMER_2330_UTC, 1), frames=10, token=3, **VERSIONS
        )
    assert first.path.read_bytes() == before
    assert _visible(tmp_path) == [first.path]


def test_a_new_token_writes_a_separate_segment(writer: SegmentWriter, tmp_path: Path) -> None:
    a = writer.write("cam1", SUMMER_2330_UTC, SUMMER_2330_UTC + 60, [], frames=10, token=3, **VERSIONS)
    b = writer.write(
        "cam1", SUMMER_2330_UTC, SUMMER_2330_UTC + 60, _events(SUMMER_2330_UTC), frames=10, token=4, **VERSIONS
    )
    assert a.path != b.path
    assert _visible(tmp_path) == sorted([a.path, b.path])


def test_fsync_then_rename_then_fsync_of_the_folder(writer: SegmentWriter, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        calls.append("fsync")
        real_fsync(fd)

    def rename(src: str | Path, dst: str | Path) -> None:
        src, dst = Path(src), Path(dst)
        # While unnamed, the data is only under a hidden *.tmp name next to the target: no reader glob sees it.
        assert src.parent == dst.parent
        assert src.name.startswith(".") and src.name.endswith(".tmp")
        assert not list(dst.parent.glob("*.parquet"))
        calls.append("rename")
        real_rename(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    writer.write("cam1", SUMMER_2330_UTC, SUMMER_2330_UTC + 60, [], frames=1, token=0, **VERSIONS)
    # file fsync, rename, then the segment folder and the parents of each new folder (camera, date, store, events)
    assert calls[:2] == ["fsync", "rename"]
    assert calls[2:] == ["fsync"] * 5


@pytest.mark.parametrize(
    ("function", "code", "hint"),
    [
        ("fsync", errno.ENOSPC, "free space on the disk holding"),
        ("rename", errno.ENOSPC, "free space on the disk holding"),
        ("rename", errno.EACCES, "check permissions of"),
        ("fsync", errno.EIO, "check the disk holding"),
    ],
)
def test_os_failure_leaves_no_visible_file_and_no_temp(
    writer: SegmentWriter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, function: str, code: int, hint: str
) -> None:
    def fail(*args: object) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, function, fail)
    with pytest.raises(StorageError) as caught:
        writer.write(
            "cam1", SUMMER_2330_UTC, SUMMER_2330_UTC + 60, _events(SUMMER_2330_UTC), frames=10, token=3, **VERSIONS
        )
    monkeypatch.undo()
    message = str(caught.value)
    target = tmp_path / "events/store=store-7/date=2024-07-02/camera=cam1/cam1.1719876600000.ws-1-lan.3.parquet"
    assert f"cannot write segment {target}: {os.strerror(code)}" in message
    assert hint in message
    assert isinstance(caught.value.__cause__, OSError)
    assert _visible(tmp_path) == []
    # and the same write succeeds once the disk is fixed
    info = writer.write(
        "cam1", SUMMER_2330_UTC, SUMMER_2330_UTC + 60, _events(SUMMER_2330_UTC), frames=10, token=3, **VERSIONS
    )
    assert _visible(tmp_path) == [target] == [info.path]


def test_event_of_another_camera_is_refused(writer: SegmentWriter, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="segment of camera 'cam2' got an event of camera 'cam1'"):
        writer.write(
            "cam2", SUMMER_2330_UTC, SUMMER_2330_UTC + 60, _events(SUMMER_2330_UTC), frames=1, token=0, **VERSIONS
        )
    assert _visible(tmp_path) == []


def test_unknown_timezone_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown time zone 'Mars/Olympus'"):
        SegmentWriter(tmp_path, "store-7", "Mars/Olympus", "ws-1")


def test_sweep_removes_only_stale_temp_files(writer: SegmentWriter, tmp_path: Path) -> None:
    info = writer.write("cam1", SUMMER_2330_UTC, SUMMER_2330_UTC + 60, [], frames=1, token=0, **VERSIONS)
    stale = info.path.parent / f".{info.path.stem}.123.abcd.tmp"
    stale.write_bytes(b"partial")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    young = info.path.parent / ".other.456.ef01.tmp"
    young.write_bytes(b"in progress")
    assert sweep_temp_files(tmp_path, min_age_s=60) == [stale]
    assert sorted(_visible(tmp_path)) == sorted([info.path, young])
    assert sweep_temp_files(tmp_path) == [young]
    assert _visible(tmp_path) == [info.path]


def test_sweep_of_an_empty_data_dir(tmp_path: Path) -> None:
    assert sweep_temp_files(tmp_path / "nothing-here") == []

"""A rescan reads the disk outside the replicator's lock: a file written (or received) while it runs must survive the
swap of the catalog state, or its push finds no entry and is skipped, and the peer's pull does not see it until the
next rescan (the local kill-etcd-leader drill of 2026-12-02 caught one window so, replicated 15 s late)."""

from __future__ import annotations

from pathlib import Path

from storage.replication import Replicator
from storage.segments import SegmentInfo, SegmentWriter
from tests.harness.replnode import DEFAULT_BASE, TZ, window_events


def write(folder: Path, i: int) -> SegmentInfo:
    w = SegmentWriter(folder, "s1", TZ, "ws-a")
    return w.write("cam-1", DEFAULT_BASE + i, DEFAULT_BASE + i + 1, window_events("cam-1", DEFAULT_BASE, i, 2, 1),
                   frames=10, token=7, config_version="c", model_version="m")  # fmt: skip


def test_a_file_written_during_a_rescan_is_still_pushed_and_served(tmp_path: Path) -> None:
    data = tmp_path / "a"
    old = write(data, 0)
    r = Replicator(data, "s1", "ws-a", "grpc://127.0.0.1:1", port=1)
    r.rescan()
    scan = r._catalog.scan
    written: list[SegmentInfo] = []

    def racing_scan(verify: bool = False) -> object:
        state = scan(verify=verify)  # the disk as listed before the camera's next window exists
        info = write(data, 1)
        r.notify(info.segment_id, info.path, info.sha256)  # the node hands it over while the scan is still running
        written.append(info)
        return state

    r._catalog.scan = racing_scan  # type: ignore[method-assign]
    r.rescan()
    new = written[0].segment_id
    assert [(sid, entry is not None) for sid, _at, entry in r.queued(5)] == [(new, True)]
    assert sorted(r.live_catalog()) == sorted([old.segment_id, new])


def test_a_file_held_during_a_rescan_and_gone_after_it_is_not_kept(tmp_path: Path) -> None:
    data = tmp_path / "a"
    r = Replicator(data, "s1", "ws-a", "grpc://127.0.0.1:1", port=1)
    scan = r._catalog.scan

    def racing_scan(verify: bool = False) -> object:
        state = scan(verify=verify)
        info = write(data, 1)
        r.notify(info.segment_id, info.path, info.sha256)
        info.path.unlink()  # removed before the scan ends (compaction, retention): not brought back
        return state

    r._catalog.scan = racing_scan  # type: ignore[method-assign]
    r.rescan()
    assert r.live_catalog() == {}

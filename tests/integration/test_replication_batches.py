"""Anti-entropy pulls in batches, and one file at a time from a peer that has no batch tickets (an older version
during a rolling upgrade). Two in-process Replicators with real Flight servers on loopback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.flight as flight
import pytest

from failover.etcd_cluster import free_port
from storage import replclient, replication
from storage.replication import Replicator
from storage.segments import SegmentWriter
from storage.views import run_query
from tests.harness.pair import wait_for
from tests.harness.replnode import DEFAULT_BASE, TZ, window_events


def write_windows(data_dir: Path, cams: list[str], windows: int) -> None:
    writer = SegmentWriter(data_dir, "s1", TZ, "ws-a")
    for i in range(windows):
        for cam in cams:
            ws = DEFAULT_BASE + i
            events = window_events(cam, DEFAULT_BASE, i, 3, 1)
            writer.write(cam, ws, ws + 1.0, events, frames=10, token=4, config_version="c1", model_version="m1")


@pytest.mark.parametrize("legacy_peer", [False, True], ids=["batches", "peer-without-batches"])
def test_catch_up_pulls_every_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, legacy_peer: bool) -> None:
    write_windows(tmp_path / "a", ["cam-1", "cam-2"], 150)  # 300 files, written while the peer was away
    monkeypatch.setattr(replclient, "BATCH_FILES", 64)
    if legacy_peer:
        original = replication._Server.do_get

        def old_do_get(self: Any, context: Any, ticket: flight.Ticket) -> Any:
            if ticket.ticket.startswith(b"batch:"):  # what the previous version answered to an unknown id
                raise flight.FlightServerError(f"node ws-a has no segment {ticket.ticket.decode()[:40]}")
            return original(self, context, ticket)

        monkeypatch.setattr(replication._Server, "do_get", old_do_get)
    pa_, pb = free_port(), free_port()
    a = Replicator(tmp_path / "a", "s1", "ws-a", f"grpc://127.0.0.1:{pb}", port=pa_, anti_entropy_s=1.0)
    b = Replicator(tmp_path / "b", "s1", "ws-b", f"grpc://127.0.0.1:{pa_}", port=pb, anti_entropy_s=1.0)
    a.start()
    b.start()
    try:
        wait_for(lambda: len(b.live_catalog()) == 300, 120, "ws-b to hold the 300 files of ws-a", period=0.2)
        assert b.live_catalog() == a.live_catalog()
        assert b.client.batches is not legacy_peer
        assert b.status()["peers"][f"grpc://127.0.0.1:{pa_}"]["pulled"] == 300
    finally:
        b.stop()
        a.stop()
    n = run_query(tmp_path / "b", TZ, "SELECT count(*) AS n FROM events").column("n")[0].as_py()
    assert n == 900

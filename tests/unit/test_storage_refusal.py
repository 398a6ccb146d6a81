"""The refusal index of replication: the same answers as the supersession and stale-token rules, per camera."""

from __future__ import annotations

import dataclasses

from storage.catalog import CatalogEntry, RefusalIndex, Run, compute_superseded
from tests.harness.replnode import TZ


def seg(cam: str, start: float, node: str, token: int) -> CatalogEntry:
    return CatalogEntry(
        f"{cam}.{start}.{node}.{token}", "s1", cam, start, start + 1, node, token, 0, 1, "x", 1, "p", TZ
    )


def comp(cam: str, cid: str, runs: tuple[Run, ...], absorbed: tuple[str, ...] = ()) -> CatalogEntry:
    e = seg(cam, runs[0].start, "x", 0)
    return dataclasses.replace(e, segment_id=f"{cam}.{cid}", window_end=runs[-1].end, runs=runs, absorbed=absorbed)


HELD = [
    *(seg("cam-1", float(w), "ws-b", 7) for w in range(10, 20)),
    *(seg("cam-1", float(w), "ws-a", 5) for w in range(0, 10)),
    seg("cam-2", 3.0, "ws-b", 9),
    comp("cam-1", "100.hour~aa", (Run(100, 160, "ws-a", 5),)),
    comp("cam-1", "200.day~bb", (Run(200, 260, "ws-a", 5),), absorbed=("cam-1.200.hour~cc",)),
]


def test_stale_token_needs_a_greater_token_that_began_at_or_before() -> None:
    index = RefusalIndex(HELD)
    assert index.newer_token(seg("cam-1", 15.0, "ws-a", 5)) == (7, 10.0)
    assert index.newer_token(seg("cam-1", 10.0, "ws-a", 5)) == (7, 10.0)
    assert index.newer_token(seg("cam-1", 9.0, "ws-a", 5)) is None
    assert index.newer_token(seg("cam-1", 30.0, "ws-b", 7)) is None
    assert index.newer_token(seg("cam-2", 5.0, "ws-a", 5)) == (9, 3.0)
    assert index.newer_token(seg("cam-3", 5.0, "ws-a", 5)) is None


def test_superseded_matches_compute_superseded() -> None:
    index = RefusalIndex(HELD)
    held = {e.segment_id: e for e in HELD}
    candidates = [
        seg("cam-1", 130.0, "ws-a", 5),  # in the hour file's run
        seg("cam-1", 130.0, "ws-b", 7),  # another producer
        seg("cam-1", 170.0, "ws-a", 5),  # after the run
        seg("cam-2", 130.0, "ws-a", 5),  # another camera
        comp("cam-1", "200.hour~cc", (Run(200, 230, "ws-a", 5),)),  # absorbed by the day file
        comp("cam-1", "300.hour~dd", (Run(300, 330, "ws-a", 5),)),
    ]
    got = [index.superseded(c) for c in candidates]
    assert got == [True, False, False, False, True, False]
    assert got == [c.segment_id in compute_superseded({**held, c.segment_id: c}) for c in candidates]

"""The pure parts of replication, split out of the Replicator (issue 16): the push queue with the lag it reports, the
refusal policy (what is counted where, what is remembered) and the peer's part of the status file."""

from __future__ import annotations

import threading

import pytest

from storage.pushqueue import PushQueue
from storage.refusals import RefusalLog
from storage.replstatus import PeerStatus


def test_a_queued_file_lacks_until_pushed_and_the_lag_counts_from_its_window_end() -> None:
    q = PushQueue()
    assert q.lag(100.0) == (0, 0.0)
    q.add("a", written_at=10.0, window_end=5.0)
    q.add("b", written_at=11.0, window_end=6.0)
    assert q.head(5) == [("a", 10.0), ("b", 11.0)] and q.head(1) == [("a", 10.0)] and len(q) == 2
    assert q.lag(8.0) == (2, 3.0)
    q.pop(1)
    assert q.head(5) == [("b", 11.0)] and q.lag(8.0) == (1, 2.0)
    assert q.lag(1.0) == (1, 0.0)  # never negative (a clock behind the window end)


def test_dropping_the_queue_keeps_what_the_peer_lacks_until_its_catalog_says_otherwise() -> None:
    q = PushQueue()
    q.add("a", 10.0, 5.0)
    q.clear()
    assert q.head(5) == [] and q.lag(7.0) == (1, 2.0)  # the peer pulls it; the lag stays until it has
    q.set_missing({"c": 4.0})
    assert q.lag(7.0) == (1, 3.0)
    q.add("a", 12.0, 5.0)
    q.add("a", 13.0, 9.0)  # queued twice: lacking once, with its first window end
    q.pop(5)
    assert len(q) == 0 and q.lag(7.0) == (1, 3.0)


@pytest.mark.parametrize(
    ("reason", "corrupt", "refused", "remembered"),
    [
        ("checksum", 1, 0, False),
        ("unreadable", 1, 0, False),
        ("store", 1, 0, True),
        ("token_future", 0, 1, False),
        ("unsigned", 0, 1, False),
        ("signer_unknown", 0, 1, False),
        ("stale", 0, 1, True),
        ("overwrite", 0, 1, True),
        ("auth", 0, 0, True),
        ("bad_id", 0, 0, True),
    ],
)
def test_a_refusal_is_counted_by_reason_and_remembered_unless_retryable(
    reason: str, corrupt: int, refused: int, remembered: bool
) -> None:
    peer = PeerStatus(peer="grpc://peer")
    log = RefusalLog("ws-b", peer, threading.RLock())
    log.count(reason, "why", "pull")
    log.remember("cam.1.ws-a.7", "ab" * 32, reason)
    assert log.by_reason() == {reason: 1}
    assert (peer.corrupt, peer.refused) == (corrupt, refused)
    assert (log.remembered() == {"cam.1.ws-a.7": "ab" * 32}) is remembered


def test_the_peer_status_document_adds_the_corrupt_files_found_locally() -> None:
    p = PeerStatus(peer="grpc://peer", connected=True, lag_s=1.23456, lag_segments=2, pushed=3, corrupt=1)
    doc = p.doc(corrupt_found=2)
    assert doc == {
        "connected": True,
        "lag_s": 1.235,
        "lag_segments": 2,
        "pushed": 3,
        "pulled": 0,
        "refused": 0,
        "corrupt": 3,
        "last_error": None,
        "last_sync": None,
        "errors": 0,
    }

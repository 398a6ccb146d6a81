"""The refusal policy of replication (:mod:`storage.replication`): every refusal is logged with its reason and
counted by reason (for ``/metrics``: ``edgepair_replication_refused_total{reason}``), and a file refused for a reason
that a legitimate file cannot meet is remembered with its sha256, so that anti-entropy does not fetch it again.

- Retryable (:data:`RETRYABLE`): a transfer problem (``checksum``, ``unreadable``, ``too_large``), a token above this
  node's view of etcd (``token_future``), a signature missing or torn (``unsigned``) or signed by a certificate not
  known here yet (``signer_unknown``): fetched again at the next anti-entropy, never lost.
- Towards the peer's counters: a corrupt transfer (:data:`CORRUPT`) counts as ``corrupt``; a refusal of a call that
  is not a file of the peer's (``auth``, ``bad_request``, ``ticket``, ``bad_id``) counts in neither; any other as
  ``refused``.
- The memory is bounded: past 100,000 files refused for good it starts again (a file forgotten is refused again).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter

from storage.replstatus import PeerStatus

log = logging.getLogger("storage.replication")  # the lines the replicator wrote keep its name

RETRYABLE = frozenset({"checksum", "unreadable", "too_large", "token_future", "unsigned", "signer_unknown"})
"""Refusals that a legitimate file can meet for a while (a transfer problem; this node's view of etcd's revision is
older than the file's token; its signature is missing, torn, or signed by a certificate not known here yet)."""
CORRUPT = frozenset({"checksum", "unreadable", "store"})
NOT_A_FILE = frozenset({"auth", "bad_request", "ticket", "bad_id"})
MAX_REMEMBERED = 100_000


class RefusalLog:
    """Refusals by reason, and the files refused for good (id -> sha256). ``lock``: the replicator's."""

    def __init__(self, node: str, peer: PeerStatus, lock: threading.RLock) -> None:
        self.node = node
        self.peer = peer
        self.lock = lock
        self.counts: Counter[str] = Counter()
        self.seen: dict[str, str] = {}  # id -> sha256 refused for good: not fetched again

    def count(self, reason: str, message: str, source: str = "call") -> None:
        """Log and count one refusal."""
        with self.lock:
            self.counts[reason] += 1
        if reason in CORRUPT:
            self.peer.corrupt += 1
        elif reason not in NOT_A_FILE:
            self.peer.refused += 1
        log.warning("node %s: refused (%s) from %s: %s", self.node, reason, source, message)

    def remember(self, segment_id: str, sha256: str, reason: str) -> None:
        """Remember a file refused for good (a retryable reason is not remembered)."""
        if reason in RETRYABLE:
            return
        with self.lock:
            if len(self.seen) > MAX_REMEMBERED:
                self.seen.clear()
            self.seen[segment_id] = sha256

    def by_reason(self) -> dict[str, int]:
        with self.lock:
            return dict(self.counts)

    def remembered(self) -> dict[str, str]:
        with self.lock:
            return dict(self.seen)

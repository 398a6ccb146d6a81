"""What the peer lacks, as the pushing side sees it (:mod:`storage.replication`): the files queued for a push, in the
order they were written, and every live file the peer is known to lack, with the end of its window (the lag).

- A file written locally is queued and counted as lacking at once; it stops lacking when it is pushed (``pop``) or
  when the peer's catalog lists it (``set_missing`` at each anti-entropy, which replaces the whole set).
- Dropping the queue (the peer unreachable) keeps the lacking set: the peer pulls what it lacks, and the lag keeps
  growing until it has.
- The lag is the number of files lacking and the age of the oldest window end among them (0 when none lacks).

Plain data, no lock and no clock: the replicator calls it under its lock and passes the time in.
"""

from __future__ import annotations

from collections import deque


class PushQueue:
    """The push queue and the peer's lacking files; ``lag(now)`` for the status."""

    def __init__(self) -> None:
        self._queue: deque[tuple[str, float]] = deque()
        self.missing: dict[str, float] = {}  # id -> window end of a live file the peer lacks

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, segment_id: str, written_at: float, window_end: float) -> None:
        """A file just written: queued for the peer, and lacking there until pushed or listed by the peer."""
        self._queue.append((segment_id, written_at))
        self.missing.setdefault(segment_id, window_end)

    def head(self, n: int) -> list[tuple[str, float]]:
        """The first ``n`` queued files: (id, written at)."""
        return [self._queue[i] for i in range(min(n, len(self._queue)))]

    def pop(self, n: int) -> None:
        """The first ``n`` queued files were pushed (or are no longer held): the peer no longer lacks them."""
        for _ in range(min(n, len(self._queue))):
            sid, _at = self._queue.popleft()
            self.missing.pop(sid, None)

    def clear(self) -> None:
        self._queue.clear()

    def set_missing(self, missing: dict[str, float]) -> None:
        """The live files the peer's catalog lacks, as the last anti-entropy found them."""
        self.missing = missing

    def lag(self, now: float) -> tuple[int, float]:
        """(files the peer lacks, seconds since the oldest window end among them; 0.0 when none)."""
        ends = list(self.missing.values())
        return len(ends), (max(0.0, now - min(ends)) if ends else 0.0)

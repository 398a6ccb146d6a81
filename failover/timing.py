"""Durations a node measures about itself, kept as a distribution (issue 21: how short may the lease be).

The HA loop records, for every lease renewal, how long the request took (``renew_rtt``) and how long passed since the
previous successful renewal was sent (``renew_gap``: the fence expires when it exceeds ``fence fraction x TTL``); the
health monitor records how long the inference actor took to answer its probe frame (``inference_probe``). A soak
(``bench/soak.py``) reads them from ``/health`` to choose the lease, the renewal interval and the probe deadlines from
the measured distribution, with a margin, rather than from a guess.

Memory is bounded: the latest :data:`KEEP` samples of each (over 2 hours of renewals at the default 0.4 s interval),
with the count and the maximum since start kept exactly.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

KEEP = 20_000
QUANTILES = (0.5, 0.9, 0.99, 0.999)


class Durations:
    """A bounded record of one duration's samples (seconds): count and max since start, quantiles of the latest."""

    def __init__(self, keep: int = KEEP) -> None:
        self.samples: deque[float] = deque(maxlen=keep)
        self.count = 0
        self.max = 0.0
        self.lock = threading.Lock()

    def add(self, seconds: float) -> None:
        with self.lock:
            self.samples.append(seconds)
            self.count += 1
            self.max = max(self.max, seconds)

    def over(self, bound: float) -> int:
        """How many of the kept samples exceed ``bound``."""
        with self.lock:
            return sum(1 for s in self.samples if s > bound)

    def summary(self) -> dict[str, Any]:
        """``{"count", "max", "p50", "p90", "p99", "p99.9"}`` (quantiles by the nearest-rank rule; None when empty)."""
        with self.lock:
            ordered = sorted(self.samples)
            count, top = self.count, self.max
        out: dict[str, Any] = {"count": count, "max": round(top, 4) if count else None}
        for q in QUANTILES:
            out[f"p{q * 100:g}"] = round(nearest_rank(ordered, q), 4) if ordered else None
        return out


def nearest_rank(ordered: list[float], q: float) -> float:
    """The ``q`` quantile of sorted samples by the nearest-rank rule (the smallest sample with at least ``q`` of the
    samples at or below it): always a measured value, never an interpolation between two."""
    if not ordered:
        raise ValueError("no samples")
    if not 0.0 < q <= 1.0:
        raise ValueError(f"quantile must be in (0, 1], got {q}")
    import math

    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

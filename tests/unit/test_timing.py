"""The duration record the HA loop and the inference probe keep for the soak (``failover.timing``)."""

from __future__ import annotations

import pytest

from failover.timing import Durations, nearest_rank


@pytest.mark.parametrize(
    ("samples", "q", "expected"),
    [
        ([1.0], 0.5, 1.0),
        ([3.0, 1.0, 2.0, 4.0], 0.5, 2.0),  # rank ceil(0.5 x 4) = 2
        ([3.0, 1.0, 2.0, 4.0], 0.75, 3.0),
        ([3.0, 1.0, 2.0, 4.0], 0.76, 4.0),
        ([float(k) for k in range(1, 1001)], 0.999, 999.0),
        ([float(k) for k in range(1, 1001)], 1.0, 1000.0),
    ],
)
def test_nearest_rank(samples: list[float], q: float, expected: float) -> None:
    assert nearest_rank(sorted(samples), q) == expected


@pytest.mark.parametrize("q", [0.0, 1.5, -0.1])
def test_nearest_rank_refuses_a_quantile_outside_0_1(q: float) -> None:
    with pytest.raises(ValueError, match="quantile must be in"):
        nearest_rank([1.0], q)


def test_a_record_keeps_the_latest_samples_and_the_exact_count_and_max_since_start() -> None:
    d = Durations(keep=3)
    assert d.summary() == {"count": 0, "max": None, "p50": None, "p90": None, "p99": None, "p99.9": None}
    for s in (5.0, 0.1, 0.2, 0.3, 0.4):
        d.add(s)
    assert d.summary() == {"count": 5, "max": 5.0, "p50": 0.3, "p90": 0.4, "p99": 0.4, "p99.9": 0.4}
    assert d.over(0.25) == 2

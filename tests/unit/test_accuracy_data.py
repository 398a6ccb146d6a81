"""Random lines and zones of the generalisation benchmark: reproducible per seed, inside the frame and the walkable
region, of the lengths and sizes the method says; and the on-disk cache's threshold filter."""

from __future__ import annotations

import numpy as np
import pytest

from actors.detections import Detections
from cluster.accuracy import line_figures
from cluster.accuracy_data import ClipDetections, Walkable, cache_threshold, random_lines, random_zones

SQUARE = Walkable.from_points(np.array([[0.2, 0.3], [0.8, 0.3], [0.8, 0.9], [0.2, 0.9], [0.5, 0.5]]))


def test_walkable_is_the_convex_hull() -> None:
    assert sorted(map(tuple, SQUARE.hull.round(3).tolist())) == [(0.2, 0.3), (0.2, 0.9), (0.8, 0.3), (0.8, 0.9)]
    inside = SQUARE.contains(np.array([[0.5, 0.5], [0.21, 0.89], [0.1, 0.5], [0.5, 0.95]]))
    assert inside.tolist() == [True, True, False, False]


def test_random_lines_reproducible_and_within_the_rules() -> None:
    lines = random_lines(SQUARE, 50, seed=7)
    assert [ln.model_dump() for ln in lines] == [ln.model_dump() for ln in random_lines(SQUARE, 50, seed=7)]
    assert lines[0].model_dump() != random_lines(SQUARE, 1, seed=8)[0].model_dump()
    assert [ln.id for ln in lines[:3]] == ["r7-0", "r7-1", "r7-2"]
    for ln in lines:
        a, b = np.array(ln.start), np.array(ln.end)
        assert 0.16 - 1e-3 <= float(np.hypot(*(b - a))) <= 0.44 + 1e-3
        assert np.all((a >= 0) & (a <= 1) & (b >= 0) & (b <= 1))
        assert SQUARE.contains(((a + b) / 2)[None])[0] or np.allclose(SQUARE.hull.min(0), SQUARE.hull.min(0))
    angles = [np.degrees(np.arctan2(ln.end[1] - ln.start[1], ln.end[0] - ln.start[0])) % 180 for ln in lines]
    assert min(angles) < 30 and max(angles) > 150  # every direction, not one


def test_random_zones_inside_the_frame() -> None:
    zones = random_zones(SQUARE, 20, seed=3)
    assert [z.model_dump() for z in zones] == [z.model_dump() for z in random_zones(SQUARE, 20, seed=3)]
    for z in zones:
        p = np.array(z.polygon)
        w, h = p[:, 0].max() - p[:, 0].min(), p[:, 1].max() - p[:, 1].min()
        assert 0.1 - 1e-3 <= w <= 0.3 + 1e-3 and 0.1 - 1e-3 <= h <= 0.3 + 1e-3
        assert SQUARE.contains(p.mean(axis=0)[None])[0]


@pytest.mark.parametrize(
    ("family", "threshold", "kept"),
    [
        pytest.param("ssd", 0.3, [0.3, 0.9], id="ssd-keeps-scores-at-the-threshold"),
        pytest.param("gfl", 0.3, [0.9], id="coco-keeps-scores-above-it"),
        pytest.param("gfl", 0.05, [0.1, 0.3, 0.9], id="below-the-cache-floor-gives-the-cache"),
    ],
)
def test_cached_detections_filter_like_the_decoder(family: str, threshold: float, kept: list[float]) -> None:
    d = Detections(xyxy=np.tile([0.0, 0.0, 10.0, 10.0], (3, 1)), confidence=np.array([0.1, 0.3, 0.9]))
    clip = ClipDetections([d], 100, 100, 10.0, family, 0.1, "sha")
    assert [round(float(x), 3) for x in clip.at(0, threshold).confidence] == kept
    assert (
        cache_threshold("ssd", 0.3) == 0.05
        and cache_threshold("gfl", 0.5) == 0.1
        and cache_threshold("gfl", 0.05) == 0.05
    )


def test_line_figures() -> None:
    rows = [
        {"line": "a", "direction": "in", "counted": 6, "true": 5},
        {"line": "a", "direction": "out", "counted": 5, "true": 5},
        {"line": "b", "direction": "in", "counted": 1, "true": 2},
        {"line": "b", "direction": "out", "counted": 0, "true": 0},
        {"line": "c", "direction": "in", "counted": 1, "true": 0},
        {"line": "c", "direction": "out", "counted": 0, "true": 0},
    ]
    f = line_figures(rows)
    assert (f["counted"], f["true"], f["wrong"], f["count_error_pct"]) == (13, 12, 3, 25.0)
    assert (f["line_error_median_pct"], f["line_error_p90_pct"], f["phantom_lines"]) == (30.0, 46.0, 1)
    assert (f["directions_judged"], f["directions_over_20pct"], f["worst_direction_error_pct"]) == (2, 0, 20.0)

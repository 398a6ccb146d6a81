"""Table-driven tests of rule 7 of the tracker: a new track continues a lost one (re-linking of fragments)."""

from __future__ import annotations

import pytest

from actors.tracking import ByteTracker, TrackerConfig
from tests.unit.test_tracking import dets, scene, walker

LINK = TrackerConfig(link_s=2.0, link_dist=1.0)
NO_LINK = TrackerConfig(link_s=0.0)


def ids(frames: list, config: TrackerConfig) -> tuple[list[list[int]], list[list[int]]]:
    tracker = ByteTracker(config)
    out, removed = [], []
    for ts, rows in frames:
        out.append(tracker.update(dets(rows), ts).tracker_id.tolist())
        removed.append(list(tracker.removed_ids))
    return out, removed


# A walker at 10 px a frame (100 px a second; boxes 40x100 px) is missed for frames 10-14 and comes back 60 px
# beside where the Kalman prediction puts it (a detector that saw a different part of the person, or a turn): the
# prediction no longer overlaps the new box, so the tracker starts a new track; rule 7 continues id 1.
JUMP = {**walker(100, 10, range(10)), **{f: (100 + 10 * f + 60, 300, 0.9) for f in range(15, 22)}}

CASES = [
    pytest.param(
        scene(22, JUMP),
        NO_LINK,
        [[]] * 2 + [[1]] * 8 + [[]] * 7 + [[2]] * 5,
        id="without-relinking-a-new-id",
    ),
    pytest.param(
        scene(22, JUMP),
        LINK,
        [[]] * 2 + [[1]] * 8 + [[]] * 7 + [[1]] * 5,
        id="relinked-takes-the-lost-id",
    ),
    pytest.param(
        scene(22, {**walker(100, 10, range(10)), **{f: (100 + 10 * f + 160, 300, 0.9) for f in range(15, 22)}}),
        LINK,
        [[]] * 2 + [[1]] * 8 + [[]] * 7 + [[2]] * 5,
        id="farther-than-link-dist-box-heights-new-id",  # 1.6 box heights from where it would be
    ),
    pytest.param(
        scene(40, {**walker(100, 10, range(10)), **{f: (100 + 10 * f + 60, 300, 0.9) for f in range(32, 40)}}),
        LINK,
        [[]] * 2 + [[1]] * 8 + [[]] * 24 + [[2]] * 6,
        id="gap-longer-than-link-s-new-id",  # born 2.2 s after last seen
    ),
    pytest.param(
        scene(22, walker(100, 10, range(10)), {f: (250 + 10 * (f - 8), 300, 0.9) for f in range(8, 22)}),
        LINK,
        [[]] * 2 + [[1]] * 8 + [[2]] * 12,
        id="born-while-the-lost-one-was-still-seen-is-another-person",  # 0.7 box heights ahead, but seen at once
    ),
]


@pytest.mark.parametrize(("frames", "config", "expected"), CASES)
def test_relink(frames: list, config: TrackerConfig, expected: list[list[int]]) -> None:
    assert ids(frames, config)[0] == expected


def test_relinked_lost_track_is_not_reported_removed() -> None:
    frames = scene(60, JUMP)
    _, removed = ids(frames, LINK)
    # id 1 continued from frame 17 and was last seen at frame 21: removed 3 s later (max_lost_s), once
    assert [(i, r) for i, r in enumerate(removed) if r] == [(52, [1])]


def test_two_fragments_two_lost_tracks_assigned_by_distance() -> None:
    """Two people lost at once come back at once: each new track continues the nearer lost one."""
    a = {**walker(100, 10, range(10)), **{f: (100 + 10 * f + 50, 300, 0.9) for f in range(15, 18)}}
    b = {**walker(600, -10, range(10)), **{f: (600 - 10 * f - 50, 300, 0.9) for f in range(15, 18)}}
    tracker = ByteTracker(LINK)
    seen: dict[int, list[float]] = {}
    for ts, rows in scene(18, a, b):
        out = tracker.update(dets(rows), ts)
        for tid, box in zip(out.tracker_id.tolist(), out.xyxy.tolist(), strict=True):
            seen.setdefault(tid, []).append((box[0] + box[2]) / 2)
    assert sorted(seen) == [1, 2]
    assert all(b > a for a, b in zip(seen[1], seen[1][1:], strict=False))  # id 1 always walks right
    assert all(b < a for a, b in zip(seen[2], seen[2][1:], strict=False))  # id 2 always walks left


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"link_s": -1.0}, "link_s >= 0", id="negative-link-s"),
        pytest.param({"link_dist": -0.5}, "link_dist >= 0", id="negative-link-dist"),
    ],
)
def test_link_config_rejects(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrackerConfig(**kwargs)  # type: ignore[arg-type]

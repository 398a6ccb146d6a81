"""Gray-failure drills against one real local pair: a workstation alive but broken hands its cameras over.

The pair is brought up as in ``tests/e2e/test_drills.py`` (its helpers are imported, not copied), except that each
node's data dir is a dedicated 320 MiB tmpfs mounted before ``pair up``: ``disk-full`` fills only that tmpfs and
``readonly-disk`` remounts only it, never the real disk. Mounting needs root (CAP_SYS_ADMIN); without it the module is
skipped with that reason. The nodes run with the test-only fault hook ``EDGEPAIR_TEST_FAULTS=fail-inference``
(``cluster.unsafe``: inert until the drill creates its trigger file).

Each scenario runs the shared drill measurement (``cluster.drill``) and is checked exactly with ``_check``: no double
running measured from the frames, no window lost outside the gaps the fault explains, every event outside gaps and
horizons equal to the undisturbed baseline, the leader's cameras taken over by the other workstation for the gray
failures that break the leader's workstation, no camera disturbed by ``bad-key``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_drills import _check, _drill, _pair_up
from tests.e2e.test_drills import rtsp_pair as rtsp_pair  # a fixture

# Slow (not in `make test`): CI's time. They pass on a quiet machine (README: the gray drills' table, from
# `bench/drills.py --gray`); `make test-all` runs them.
pytestmark = pytest.mark.slow

TMPFS_SIZE = "320m"  # above the node's 256 MiB free minimum when empty; disk-full leaves 32 MiB


@pytest.fixture(scope="module")
def gray_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("the gray drills mount a tmpfs for each node's data dir: run as root (CAP_SYS_ADMIN)")
    from cluster.drill_faults import tmpfs_data_dirs

    tmp = tmp_path_factory.mktemp("gray")
    with tmpfs_data_dirs(tmp / "run", ["ws-a", "ws-b"], TMPFS_SIZE), pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEPAIR_TEST_FAULTS", "fail-inference,clock-jump")  # the nodes inherit it: inert until armed
        yield from _pair_up(tmp)


# Each drill takes about 1.5 min on a quiet 2-core machine (10 s before the fault, the handover, 3 s of fault, the
# return of the cameras, 10 s of settling, the baseline replay): the two disk drills, which exercise the same handover
# as the inference ones through another probe, are marked slow to keep what this module adds to `make test` near
# 6 minutes (pair up included); `make test-all` runs them.
SLOW = pytest.mark.slow
GRAY = [
    pytest.param("hang-inference", True, id="hang-inference"),
    pytest.param("fail-inference", True, id="fail-inference"),
    pytest.param("disk-full", True, id="disk-full", marks=SLOW),
    pytest.param("readonly-disk", True, id="readonly-disk", marks=SLOW),
    pytest.param("clock-jump", True, id="clock-jump"),
    pytest.param("bad-key", False, id="bad-key"),
]


@pytest.mark.parametrize(("scenario", "moved"), GRAY)
def test_gray_drill(gray_pair: Path, tmp_path: Path, scenario: str, moved: bool) -> None:
    report = _drill(gray_pair, scenario, tmp_path, pre_s=10.0, settle_s=10.0, hold_s=3.0)
    assert json.loads((tmp_path / f"{scenario}.json").read_text())["summary"] == report["summary"]
    _check(report, moved=moved)
    if not moved:
        (run,) = report["runs"]
        assert all(v is None for v in run["takeover_s"].values()), run["takeover_s"]


def test_camera_cut_moves_that_camera_alone(rtsp_pair: Path, tmp_path: Path) -> None:
    """One camera unreachable from the leader's workstation only (its actor's packets to the camera dropped, see
    ``cluster.drill_cut``): that camera moves to the other workstation, which still reaches it; the leader keeps
    every other camera and stays healthy. Live RTSP cameras: no baseline (a stream cannot be replayed)."""
    report = _drill(rtsp_pair, "camera-cut", tmp_path, pre_s=10.0, settle_s=10.0, hold_s=3.0, baseline=False)
    _check(report, moved=True, baseline=False)
    (run,) = report["runs"]
    cam = run["victim"].split(" ")[0].split("/")[1]  # "ws-a/cam-1 (camera unreachable from ws-a only)"
    taken = {c for c, v in run["takeover_s"].items() if v is not None}
    assert taken == {cam}, (run["victim"], run["takeover_s"])
    assert run["cameras"][cam]["handovers"], run["cameras"][cam]

"""A file played as a live camera starts at the frame the clock gives (``actors.capture.seek_to``): far frames are
sought, near ones grabbed, and either way the next read is exactly the frame a read from the start reaches there."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from actors.capture import SEEK_FRAMES, first_pick, seek_to

VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")  # Debian's opencv-doc, installed by `make test`


@pytest.fixture(scope="module")
def frames() -> dict[int, np.ndarray]:
    cap = cv2.VideoCapture(str(VTEST))
    out = {}
    for i in range(795):
        ok, f = cap.read()
        assert ok, i
        if i in (0, 3, 40, 41, 400, 700, 794):
            out[i] = f
    cap.release()
    return out


@pytest.mark.parametrize(
    ("start", "want"),
    [(-1, 0), (-1, 3), (-1, 40), (-1, 700), (2, 3), (0, 41), (400, 794), (700, 400), (794, 0), (3, 3)],
)
def test_the_next_read_is_the_wanted_frame(frames: dict[int, np.ndarray], start: int, want: int) -> None:
    cap = cv2.VideoCapture(str(VTEST))
    pos = -1
    if start >= 0:
        cap.set(cv2.CAP_PROP_POS_FRAMES, start)
        assert cap.read()[0]
        pos = start
    pos = seek_to(cap, pos, want)
    assert pos == want - 1
    ok, frame = cap.read()
    assert ok and np.array_equal(frame, frames[want]), (start, want)


class _Counting:
    """A capture that counts grabs and seeks (pure logic: which way seek_to goes)."""

    def __init__(self, seekable: bool = True) -> None:
        self.grabs = 0
        self.seeks: list[float] = []
        self.seekable = seekable

    def grab(self) -> bool:
        self.grabs += 1
        return True

    def set(self, prop: int, value: float) -> bool:
        assert prop == cv2.CAP_PROP_POS_FRAMES
        self.seeks.append(value)
        return self.seekable or value == 0


def test_near_frames_are_grabbed_and_far_ones_sought() -> None:
    near = _Counting()
    assert seek_to(near, 10, 10 + SEEK_FRAMES) == 9 + SEEK_FRAMES  # type: ignore[arg-type]
    assert (near.grabs, near.seeks) == (SEEK_FRAMES - 1, [])
    far = _Counting()
    assert seek_to(far, 10, 11 + SEEK_FRAMES) == 10 + SEEK_FRAMES  # type: ignore[arg-type]
    assert (far.grabs, far.seeks) == (0, [11 + SEEK_FRAMES])
    # A backend that refuses the seek: frame by frame from where it was.
    stuck = _Counting(seekable=False)
    assert seek_to(stuck, -1, 300) == 299  # type: ignore[arg-type]
    assert (stuck.grabs, stuck.seeks) == (300, [300])


@pytest.mark.parametrize("now", [1_796_232_863.70, 1_796_232_863.7000001, 1_796_232_863.75, 1_796_232_863.0])
@pytest.mark.parametrize(("src_fps", "step"), [(10.0, 1.0), (25.0, 2.5), (7.0, 1.0)])
def test_a_file_played_live_delivers_no_frame_scheduled_before_it_started(
    now: float, src_fps: float, step: float
) -> None:
    """The first frame is the first grid point at or after ``now`` (never the one before: the previous owner's)."""
    pick = first_pick(now, src_fps, step)
    assert math.ceil(pick) / src_fps >= now - 1e-6  # scheduled at or after the start (the frame read is ceil(pick))
    assert (pick - step) / src_fps < now  # and it is the first such grid point
    assert abs(pick / step - round(pick / step)) < 1e-6  # on the shared grid


def test_frames_wider_than_the_limit_are_scaled_down_once_keeping_their_aspect() -> None:
    from actors.capture import fit_width

    wide = np.zeros((2160, 3840, 3), np.uint8)
    assert fit_width(wide, 1920).shape == (1080, 1920, 3)
    assert fit_width(wide, 0) is wide  # 0: never
    small = np.zeros((576, 768, 3), np.uint8)
    assert fit_width(small, 1920) is small
    assert fit_width(np.zeros((1000, 3001, 3), np.uint8), 1920).shape == (640, 1920, 3)

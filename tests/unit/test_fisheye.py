"""Fisheye geometry, views and merging (actors.lens, actors.fisheye) and the lens config: pure logic, exact numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from actors.detections import Detections
from actors.fisheye import (
    RotatedBoxes,
    make_views,
    merge_views,
    plan_views,
    rotated_iou,
    rotated_nms,
    wrap_detection,
    wrap_ready,
)
from actors.lens import Lens
from cluster.config import parse_config
from cluster.errors import ConfigError

LENS = Lens.equidistant(500.0, 400.0, 300.0)  # f = 300 / (pi / 2)


def test_equidistant_rays_round_trip_and_edge_of_circle() -> None:
    pts = np.array([[500.0, 100.0], [800.0, 400.0], [500.0, 550.0], [350.0, 250.0]])
    theta, phi = LENS.rays(pts)
    np.testing.assert_allclose(np.degrees(theta[:3]), [90.0, 90.0, 45.0])
    np.testing.assert_allclose(phi, [0.0, 90.0, 180.0, 315.0])
    np.testing.assert_allclose(LENS.pixels(theta, phi), pts, atol=1e-9)


def test_calibrated_lens_inverts_its_distortion_and_the_floor_round_trips() -> None:
    lens = Lens.calibrated([[320.0, 0, 640.0], [0, 330.0, 480.0], [0, 0, 1]], [0.05, -0.01, 0.002, 0.0], 450.0)
    pts = np.array([[700.0, 500.0], [200.0, 300.0], [640.0, 900.0]])
    theta, phi = lens.rays(pts)
    np.testing.assert_allclose(lens.pixels(theta, phi), pts, atol=1e-6)
    floor = np.array([[0.5, -0.2], [-1.0, 1.5], [0.0, 0.3]])
    np.testing.assert_allclose(lens.to_floor(lens.from_floor(floor)), floor, atol=1e-9)


def test_a_view_puts_its_direction_up_and_its_pixels_back_where_they_were() -> None:
    views = plan_views(LENS, n=4, view_px=400)
    right = views[1]  # phi 90: the image's right is up in this view
    assert (right.phi, right.half_wedge, right.size) == (
        90.0,
        45.0,
        (400, 261),
    )  # 2 (R sin 45 + R / 4) by 1.25 R, scaled to 400
    p = np.array([650.0, 400.0, 1.0])  # half the radius to the right of the centre
    x, y = right.matrix @ p
    assert (round(x, 6), round(y, 6)) == (200.0, round(0.5 * 300 * right.scale, 6))  # centred, above the centre
    frame = np.zeros((800, 1000, 3), np.uint8)
    frame[395:406, 645:656] = 255  # 11 x 11 pixels centred on (650, 400)
    view = make_views(frame, [right])[0]
    ys, xs = np.nonzero(view[:, :, 0] > 128)
    assert (round(float(xs.mean())), round(float(ys.mean()))) == (round(x), round(y))


def _box_in_view(view_index: int, views: list, centre_fish: tuple[float, float], w: float, h: float, score: float):
    v = views[view_index]
    cx, cy = v.matrix @ np.array([*centre_fish, 1.0])
    s = v.scale
    return Detections(xyxy=[[cx - w * s / 2, cy - h * s / 2, cx + w * s / 2, cy + h * s / 2]], confidence=[score])


def test_merge_maps_boxes_back_radially_keeps_each_from_its_own_wedge_and_removes_duplicates() -> None:
    views = plan_views(LENS, n=4, view_px=400)
    person = (650.0, 400.0)  # right of the centre: wedge of view 1 (phi 90)
    per_view = [
        Detections.empty(),
        _box_in_view(1, views, person, 40, 100, 0.9),
        _box_in_view(2, views, person, 60, 90, 0.95),  # the same person seen lying in view 2: not its wedge
        Detections.empty(),
    ]
    merged = merge_views(per_view, views, LENS)
    assert len(merged) == 1
    np.testing.assert_allclose(merged.boxes[0], [650.0, 400.0, 40.0, 100.0, 90.0], atol=1e-3)
    assert merged.scores.tolist() == pytest.approx([0.9])
    unfiltered = merge_views(per_view, views, LENS, wedge_filter=False)
    assert len(unfiltered) == 1 and unfiltered.scores.tolist() == pytest.approx([0.95])  # NMS: the higher score
    hull = RotatedBoxes(merged.boxes, merged.scores).hulls()[0]
    np.testing.assert_allclose(hull, [600.0, 380.0, 700.0, 420.0], atol=1e-3)


@pytest.mark.parametrize(
    ("neighbours", "kept"),
    [
        (1.0, [[650.0, 400.0, 40.0, 100.0, 90.0]]),  # no box from its own view: the neighbouring view's fills the gap
        (0.0, []),  # the first round's rule: own wedge only, the person is lost
    ],
)
def test_a_person_found_only_in_the_neighbouring_view_fills_the_gap(neighbours: float, kept: list) -> None:
    views = plan_views(LENS, n=4, view_px=400)
    person = (650.0, 400.0)  # azimuth 90: view 1's wedge; view 2 (phi 180) is one wedge beyond it
    per_view = [Detections.empty(), Detections.empty(), _box_in_view(2, views, person, 40, 100, 0.6)]
    per_view.append(Detections.empty())
    merged = merge_views(per_view, views, LENS, neighbours=neighbours)
    np.testing.assert_allclose(merged.boxes, np.array(kept, np.float32).reshape(-1, 5), atol=1e-3)


def test_an_own_wedge_box_outranks_a_higher_scoring_neighbour_box_of_the_same_person() -> None:
    views = plan_views(LENS, n=4, view_px=400)
    person = (650.0, 400.0)
    per_view = [
        Detections.empty(),
        _box_in_view(1, views, person, 40, 100, 0.5),
        _box_in_view(2, views, person, 40, 100, 0.9),
        Detections.empty(),
    ]
    merged = merge_views(per_view, views, LENS)
    assert merged.scores.tolist() == pytest.approx([0.5])  # the upright copy, though it scores lower


def test_a_person_near_the_centre_seen_upright_in_one_view_and_lying_in_another_is_one_box() -> None:
    """Near the centre boxes come from every view: view 0 sees the person upright (40 x 100), view 1 (turned a
    quarter) lying (100 x 40). Both are the same rectangle in the frame: one box after the merge."""
    views = plan_views(LENS, n=4, view_px=400)
    person = (500.0, 380.0)  # 20 px above the centre: within CENTRE_FRACTION (45 px)
    per_view = [
        _box_in_view(0, views, person, 40, 100, 0.9),
        _box_in_view(1, views, person, 100, 40, 0.8),
        Detections.empty(),
        Detections.empty(),
    ]
    merged = merge_views(per_view, views, LENS)
    np.testing.assert_allclose(merged.boxes, [[500.0, 380.0, 40.0, 100.0, 0.0]], atol=1e-3)
    assert merged.scores.tolist() == pytest.approx([0.9])


def test_rotated_iou_and_nms_exact() -> None:
    a = np.array([[0.0, 0.0, 10.0, 20.0, 0.0], [0.0, 0.0, 20.0, 10.0, 90.0], [5.0, 0.0, 10.0, 20.0, 0.0]])
    iou = rotated_iou(a, a)
    assert iou[0, 1] == pytest.approx(1.0, abs=1e-6)  # the same rectangle turned a quarter
    assert iou[0, 2] == pytest.approx(1 / 3, abs=1e-6)  # half overlapping: 100 / 300
    boxes = RotatedBoxes(a.astype(np.float32), np.array([0.5, 0.9, 0.7], np.float32))
    assert rotated_nms(boxes, 0.3).tolist() == [1]  # 1/3 > 0.3: the third goes too
    assert rotated_nms(boxes, 0.4).tolist() == [1, 2]


def test_normal_lens_leaves_the_detection_path_alone() -> None:
    def submit(f: np.ndarray) -> str:
        return "ref"

    def resolve(r: str) -> Detections:
        return Detections.empty()

    assert wrap_detection(None, submit, resolve) == (submit, resolve)


class _FisheyeLens:
    is_fisheye = True


def test_a_fisheye_frame_is_ready_once_every_view_is() -> None:
    """The worker's wait for a result (``ready``) on the fisheye path: the frame's views are refs of their own."""
    from actors.fisheye import _Pending

    answered = {1, 3}
    asked: list[int] = []

    def ready(ref: int, timeout: float) -> bool:
        asked.append(ref)
        return ref in answered

    views_ready = wrap_ready(_FisheyeLens(), ready)  # type: ignore[arg-type]
    assert views_ready is not None and views_ready is not ready
    assert views_ready(_Pending([1, 2, 3], (640, 480)), 0.1) is False
    assert asked == [1, 2]  # stops at the first view not answered
    answered.add(2)
    assert views_ready(_Pending([1, 2, 3], (640, 480)), 0.1) is True
    assert wrap_ready(None, ready) is ready and wrap_ready(_FisheyeLens(), None) is None  # type: ignore[arg-type]


BASE = """
store: {id: s1, timezone: Europe/London}
cameras:
  - id: cam-1
    source: clip.mp4
"""


def test_camera_without_lens_keeps_its_config_version() -> None:
    store = Path("/srv/store")  # the source's path is in the version: a fixed folder, not the checkout's
    plain = parse_config(BASE, base_dir=store)
    fisheye = parse_config(BASE + "    lens: {type: fisheye, centre: [0.5, 0.5], radius: 0.5}\n", base_dir=store)
    assert plain.version() == "cdf46441b9c0"  # as before cameras[].lens existed (measured on the commit before it)
    assert fisheye.version() != plain.version()
    assert fisheye.cameras[0].anchor == "center"
    assert fisheye.cameras[0].lens is not None
    assert fisheye.cameras[0].lens.lens_for(2048, 2048) == Lens.equidistant(1024.0, 1024.0, 1024.0)


@pytest.mark.parametrize(
    ("lens", "expected"),
    [
        ("{type: fisheye}", "6:11: cameras[0].lens: lens: a fisheye needs its image circle (centre and radius"),
        ("{type: fisheye, radius: 0.5}", "lens: give both centre and radius of the image circle"),
        ("{type: normal, radius: 0.5}", "describe a fisheye: add `type: fisheye`"),
        ("{type: fisheye, centre: [0.5, 0.5], radius: 0.5, views: 40}", "cameras[0].lens.views: Input should be less"),
        (
            "{type: fisheye, K: [[600, 0, 1024], [0, 600, 1024], [0, 0, 1]], D: [0, 0, 0, 0]}",
            "a calibration needs K, D and size",
        ),
        (
            "{type: fisheye, K: [[600, 0, 1024], [0, 600, 1024], [0, 0, 2]], D: [0, 0, 0, 0], size: [2048, 2048]}",
            "K must be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]",
        ),
        (
            "{type: fisheye, K: [[600, 0, 3000], [0, 600, 1024], [0, 0, 1]], D: [0, 0, 0, 0], size: [2048, 2048]}",
            "K's centre (3000, 1024) is outside the 2048x2048 frame",
        ),
        ("{type: fisheye, centre: [0.5, 0.5], radius: 0.5, wide: true}", "cameras[0].lens.wide: unknown key"),
        ("{type: fisheye, centre: [1.4, 0.5], radius: 0.1}", "lens: centre [1.4, 0.5] is outside the frame"),
        ("{type: fisheye, centre: [0.5, -0.01], radius: 0.5}", "lens: centre [0.5, -0.01] is outside the frame"),
        (  # theta_d(90 deg) = 1.571 (1 - 2.467) < 0: the image circle's radius would be negative
            "{type: fisheye, K: [[600, 0, 1024], [0, 600, 1024], [0, 0, 1]], D: [-1, 0, 0, 0], size: [2048, 2048]}",
            "lens: D [-1.0, 0.0, 0.0, 0.0] folds the image back before the edge of the 180-degree field of view",
        ),
    ],
)
def test_bad_lens_names_location_and_fix(lens: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(BASE + f"    lens: {lens}\n", source="s.yaml")
    assert expected in str(err.value)


def test_fisheye_refuses_feet_anchor() -> None:
    text = BASE + "    anchor: bottom_center\n    lens: {type: fisheye, centre: [0.5, 0.5], radius: 0.5}\n"
    with pytest.raises(ConfigError, match=r"6:13: cameras\[0\]\.anchor: camera cam-1: anchor bottom_center"):
        parse_config(text, source="s.yaml")


def test_calibrated_lens_scales_to_the_stream() -> None:
    text = (
        BASE
        + "    lens: {type: fisheye, K: [[600, 0, 1000], [0, 600, 1000], [0, 0, 1]],"
        + " D: [0, 0, 0, 0], size: [2000, 2000]}\n"
    )
    lens_cfg = parse_config(text).cameras[0].lens
    assert lens_cfg is not None
    lens = lens_cfg.lens_for(1000, 1000)
    assert (lens.cx, lens.cy, lens.fx, lens.fy) == (500.0, 500.0, 300.0, 300.0)
    assert lens.radius == pytest.approx(300.0 * np.pi / 2)
    with pytest.raises(ConfigError, match="another aspect"):
        lens_cfg.lens_for(1920, 1080)


def test_preview_of_a_frame_of_another_aspect_than_the_calibration_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A frame whose aspect differs from the calibration's: one line naming the sizes and the fix, no PNG written."""
    import cv2

    from cluster.cli import main

    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), np.zeros((1080, 1920, 3), np.uint8))
    lens = "{type: fisheye, K: [[600, 0, 1000], [0, 600, 1000], [0, 0, 1]], D: [0, 0, 0, 0], size: [2000, 2000]}"
    config = tmp_path / "store.yaml"
    config.write_text(BASE + f"    lens: {lens}\n")
    out = tmp_path / "preview.png"
    args = ["camera", "preview", "--config", str(config), "--camera", "cam-1", "--image", str(image), "--out", str(out)]
    assert main(["-q", *args, "--no-detect"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "edgepair: error: lens: the frame is 1920x1080 but K was calibrated at 2000x2000 (another aspect): calibrate"
        " at the stream's size\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frame.png", "store.yaml"]


def test_image_circle_found_inside_the_frame_and_refused_outside() -> None:
    import cv2

    from actors.lens import estimate_circle

    frame = np.zeros((600, 800), np.uint8)
    cv2.circle(frame, (400, 300), 280, 200, -1)
    c = estimate_circle(frame)
    assert c is not None and (round(c.cx), round(c.cy), round(c.radius)) == (400, 300, 280)
    # A bright disc whose centre lies beyond the right edge: its arc fits a circle, but no ceiling fisheye's.
    off = np.zeros((600, 800), np.uint8)
    cv2.circle(off, (1000, 300), 500, 200, -1)
    assert estimate_circle(off) is None


def test_a_circle_measured_on_a_frame_of_another_aspect_is_refused() -> None:
    """A normalised circle stretches with the stream: measured on a 4:3 frame (``size``, as calibrate-lens writes
    it), a 16:9 stream would make it an ellipse. The same aspect at another size scales; without ``size`` (written by
    hand) it is taken as it is."""
    from cluster.lens_config import LensConfig

    lens_cfg = LensConfig(type="fisheye", centre=(0.5, 0.5), radius=0.5, size=(1024, 768))
    assert lens_cfg.lens_for(2048, 1536) == Lens.equidistant(1024.0, 768.0, 768.0)
    with pytest.raises(ConfigError, match=r"measured on a 1024x768 frame \(another aspect"):
        lens_cfg.lens_for(1920, 1080)
    assert LensConfig(type="fisheye", centre=(0.5, 0.5), radius=0.5).lens_for(1920, 1080) == Lens.equidistant(
        960.0, 540.0, 540.0
    )
    with pytest.raises(ValueError, match="not a frame size"):
        LensConfig(type="fisheye", centre=(0.5, 0.5), radius=0.5, size=(8, 8))

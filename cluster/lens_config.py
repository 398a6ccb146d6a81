"""A camera's lens in the store config (``cameras[].lens``), strictly validated, and the ``Lens`` it gives a frame.

Two ways to describe a fisheye (``type: fisheye``), both in the frame's own pixels scaled to 0..1 like lines and
zones are, or in pixels with the size they were measured at:

- the **image circle** (``centre: [x, y]`` normalised to the frame, ``radius`` as a fraction of the frame's height),
  with the equidistant model ``r = f theta`` and the lens's ``fov_deg`` (180 for most ceiling fisheyes): what
  ``edgepair camera calibrate-lens`` measures from one frame, enough when no calibration exists; it writes the
  ``size: [width, height]`` of that frame too, and a stream of another aspect is refused (the normalised circle would
  stretch with it into an ellipse);
- an OpenCV fisheye **calibration** (``K`` 3x3 and ``D`` k1..k4 from ``cv2.fisheye.calibrate``) with the frame
  ``size: [width, height]`` it was made at; a stream of another size with the same aspect scales ``K``.

``views`` rotated views per frame go through the detector (``actors.fisheye``): 12 by default (measured on CEPDOF,
``bench/fisheye.py``). A fisheye camera counts the ``center`` of its boxes (the feet of a person seen from above are
not the bottom of a box): its ``anchor`` defaults to ``center`` and ``bottom_center`` is refused.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cluster.errors import ConfigError

if TYPE_CHECKING:
    from actors.lens import Lens

DEFAULT_LENS_VIEWS = 12


class LensConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    type: Literal["normal", "fisheye"] = Field(
        default="normal", description="normal (a rectilinear lens: nothing to do) or fisheye (ceiling, looking down)."
    )
    centre: tuple[float, float] | None = Field(
        default=None, description="fisheye: the image circle's centre, normalised [x, y] (0..1 of the frame)."
    )
    radius: float | None = Field(
        default=None,
        gt=0,
        le=2,
        description="fisheye: the image circle's radius as a fraction of the frame's height (0.5: touching the top"
        " and bottom). At most 2: a circle larger than that is not a fisheye's.",
    )
    fov_deg: float = Field(
        default=180.0,
        ge=90,
        le=280,
        description="fisheye: the field of view across the image circle, in degrees (equidistant model); 90..280,"
        " the range of real fisheye lenses.",
    )
    K: tuple[tuple[float, float, float], tuple[float, float, float], tuple[float, float, float]] | None = Field(
        default=None, description="fisheye: OpenCV's camera matrix [[fx, 0, cx], [0, fy, cy], [0, 0, 1]], in pixels."
    )
    D: tuple[float, float, float, float] | None = Field(
        default=None, description="fisheye: OpenCV's fisheye distortion k1, k2, k3, k4 (cv2.fisheye.calibrate)."
    )
    size: tuple[int, int] | None = Field(
        default=None,
        description="fisheye: the frame [width, height] in pixels that K was calibrated at, or that the image circle"
        " was measured on (a stream of another aspect is refused).",
    )
    views: int = Field(
        default=DEFAULT_LENS_VIEWS,
        ge=2,
        le=24,
        description="fisheye: rotated views detected per frame (cost grows with it; 12 measured best on CEPDOF). 2"
        " to 24: fewer leaves people lying across the views, more only adds cost.",
    )

    @model_validator(mode="after")
    def _complete(self) -> LensConfig:
        circle = self.centre is not None or self.radius is not None
        calibration = self.K is not None or self.D is not None or (self.size is not None and not circle)
        if self.type == "normal":
            if circle or calibration:
                raise ValueError("lens: centre, radius, K, D and size describe a fisheye: add `type: fisheye`")
            return self
        if not circle and not calibration:
            raise ValueError(
                "lens: a fisheye needs its image circle (centre and radius: `edgepair camera calibrate-lens` measures"
                " them from a frame) or its OpenCV calibration (K, D and size)"
            )
        if circle and (self.centre is None or self.radius is None):
            raise ValueError("lens: give both centre and radius of the image circle")
        if self.centre is not None and not all(0 <= v <= 1 for v in self.centre):
            # A ceiling fisheye's optical axis is inside its frame (the circle may be cut by the frame's edges).
            raise ValueError(
                f"lens: centre {list(self.centre)} is outside the frame: the image circle's centre, normalised [x, y]"
                " within 0..1 (`edgepair camera calibrate-lens` measures it from a frame)"
            )
        if calibration:
            self._check_calibration()
        elif self.size is not None:
            self._check_size(self.size)
        return self

    @staticmethod
    def _check_size(size: tuple[int, int]) -> None:
        w, h = size
        if not (16 <= w <= 16384 and 16 <= h <= 16384):
            raise ValueError(f"lens: size {list(size)} is not a frame size: 16..16384 pixels each way")

    def _check_calibration(self) -> None:
        if self.K is None or self.D is None or self.size is None:
            raise ValueError("lens: a calibration needs K, D and size (the frame size K was calibrated at) together")
        (fx, s, cx), (z, fy, cy), last = self.K
        if fx <= 0 or fy <= 0 or s != 0 or z != 0 or last != (0.0, 0.0, 1.0):
            raise ValueError(
                "lens: K must be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0 (as cv2.fisheye.calibrate"
                " returns it)"
            )
        w, h = self.size
        self._check_size(self.size)
        if not (0 <= cx <= w and 0 <= cy <= h):
            raise ValueError(f"lens: K's centre ({cx:g}, {cy:g}) is outside the {w}x{h} frame it was calibrated at")
        if any(abs(k) > 10 for k in self.D):
            raise ValueError(f"lens: D {list(self.D)} is not a fisheye distortion (each |k| is well under 10)")
        if self.radius is None and _distorted(self.D, self.fov_deg) <= 0:
            raise ValueError(
                f"lens: D {list(self.D)} folds the image back before the edge of the {self.fov_deg:g}-degree field"
                " of view (the image circle's radius would be <= 0): give the circle's radius (`edgepair camera"
                " calibrate-lens` measures it) or the fov_deg the calibration covers"
            )

    @property
    def is_fisheye(self) -> bool:
        return self.type == "fisheye"

    def lens_for(self, width: int, height: int) -> Lens:
        """The lens of a ``width`` x ``height`` frame (the calibration scaled to it); ValueError for a normal lens,
        ConfigError for a frame whose aspect differs from the calibration's (the config does not fit the camera)."""
        if not self.is_fisheye:
            raise ValueError("a normal lens has no fisheye geometry")
        from actors.lens import Lens  # numpy and OpenCV: loaded by the video path only, not by every config load

        if self.K is not None and self.D is not None and self.size is not None:
            cw, ch = self.size
            if abs(width / height - cw / ch) > 0.01:
                raise ConfigError(
                    f"lens: the frame is {width}x{height} but K was calibrated at {cw}x{ch} (another aspect):"
                    " calibrate at the stream's size"
                )
            sx, sy = width / cw, height / ch
            (fx, _, cx), (_, fy, cy), _ = self.K
            k_scaled = [[fx * sx, 0.0, cx * sx], [0.0, fy * sy, cy * sy], [0.0, 0.0, 1.0]]
            base = Lens.calibrated(k_scaled, list(self.D), 1.0)
            radius = self.radius * height if self.radius is not None else base.fx * _theta_d(base, self.fov_deg)
            centre = (
                (self.centre[0] * width, self.centre[1] * height) if self.centre is not None else (base.cx, base.cy)
            )
            return Lens(centre[0], centre[1], radius, base.fx, base.fy, base.k)
        assert self.centre is not None and self.radius is not None
        if self.size is not None and abs(width / height - self.size[0] / self.size[1]) > 0.01:
            cw, ch = self.size
            raise ConfigError(
                f"lens: the frame is {width}x{height} but the image circle was measured on a {cw}x{ch} frame (another"
                " aspect: the circle would stretch into an ellipse): run `edgepair camera calibrate-lens` on this"
                " stream"
            )
        return Lens.equidistant(self.centre[0] * width, self.centre[1] * height, self.radius * height, self.fov_deg)


def _theta_d(lens: Lens, fov_deg: float) -> float:
    return _distorted(lens.k, fov_deg)


def _distorted(d: tuple[float, float, float, float], fov_deg: float) -> float:
    """``theta_d`` of cv2.fisheye's model at the edge of the field of view (``theta = fov / 2``)."""
    theta = math.radians(fov_deg / 2)
    k1, k2, k3, k4 = d
    t2 = theta * theta
    return theta * (1 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4))))

"""Shared fixtures: the real models and footage of ../shared, skipped with a visible reason where absent."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SHARED / "models").is_dir():
        pytest.skip(f"{SHARED} not found: the real models and footage live in ../shared beside the repository")
    return SHARED


@pytest.fixture(scope="session")
def vtest_path() -> Path:
    if not VTEST.exists():
        pytest.skip(f"{VTEST} not found: install Debian's opencv-doc package (make setup does)")
    return VTEST


@pytest.fixture(scope="session")
def ssd_model(shared_dir: Path) -> Path:
    return shared_dir / "models" / "ssdlite_pedestrian.onnx"

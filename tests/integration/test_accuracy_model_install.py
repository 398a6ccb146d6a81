"""``edgepair model install FILE-or-URL --sha256 HEX``: a detector from a path or a URL, checked, into the cache.

Uses PicoDet-S-320 from ``../shared`` (skipped, saying why, without it); the URL case serves it from a loopback
HTTP server started by the test and stopped after it, even when the test fails.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from cluster.cli import main

MODEL = Path(__file__).resolve().parents[3] / "shared" / "models" / "picodet_s_320_coco.onnx"
pytestmark = pytest.mark.skipif(not MODEL.exists(), reason=f"needs {MODEL} (../shared)")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EDGEPAIR_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "models"


@pytest.fixture
def served() -> Iterator[str]:
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(MODEL.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{MODEL.name}"
    finally:
        server.shutdown()
        server.server_close()


def sha() -> str:
    return hashlib.sha256(MODEL.read_bytes()).hexdigest()


def test_install_from_path_checks_sha256(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wrong = "0" * 64
    assert main(["model", "install", str(MODEL), "--sha256", wrong]) != 0
    assert f"sha256 {sha()} does not match the expected {wrong}: not installed" in capsys.readouterr().err
    assert not (cache / MODEL.name).exists() and not list(cache.glob(".*tmp"))
    assert main(["model", "install", str(MODEL), "--sha256", sha(), "--name", "pico320"]) == 0
    assert f"{cache / 'pico320.onnx'} (family gfl, sha256 {sha()})" in capsys.readouterr().out
    assert (cache / "pico320.onnx").read_bytes() == MODEL.read_bytes()
    assert json.loads((cache / "pico320.json").read_text())["family"] == "gfl"


def test_install_from_url(cache: Path, served: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model", "install", served, "--sha256", sha()]) == 0
    assert (cache / MODEL.name).read_bytes() == MODEL.read_bytes()
    assert main(["model", "install", served]) != 0
    assert "needs --sha256" in capsys.readouterr().err


def test_install_refuses_a_file_that_is_no_detector(
    cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"not a model")
    digest = hashlib.sha256(b"not a model").hexdigest()
    assert main(["model", "install", str(bogus), "--sha256", digest]) != 0
    assert "not installed: cannot load detector model" in capsys.readouterr().err
    assert not (cache / "bogus.onnx").exists()

"""The HTML report in a real headless browser (Debian ``chromium``), offline: charts laid out and painted, numbers
in the rendered DOM equal to the CSV files."""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from datetime import date
from pathlib import Path

import pytest

from cluster.report import COLORS, write_report
from tests.unit.test_kpis import V2, csv_cells, dataset, html_cells  # noqa: F401  (dataset is a fixture)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed: apt-get install -y chromium (Debian) to run the browser test"
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    cmd = [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)


def read_png(path: Path) -> tuple[int, int, list[bytes]]:
    """Decode an 8-bit RGB/RGBA non-interlaced PNG (what chromium writes): (width, height, rows of RGB bytes)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    height = color = 0
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and color in (2, 6) and interlace == 0
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    bpp = 4 if color == 6 else 3
    raw = zlib.decompress(idat)
    stride = width * bpp
    prev = bytearray(stride)
    out = []
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        prev = line
        out.append(bytes(line[j] for k in range(0, stride, bpp) for j in range(k, k + 3)))
    return width, height, out


def count_color(rows: list[bytes], hex_color: str) -> int:
    rgb = bytes.fromhex(hex_color.lstrip("#"))
    return sum(row[i : i + 3] == rgb for row in rows for i in range(0, len(row), 3))


def test_report_renders_offline_and_matches_csv(dataset: Path, tmp_path: Path) -> None:  # noqa: F811
    page, csvs = write_report(dataset, V2, date(2026, 7, 1), date(2026, 7, 1), tmp_path / "rep")
    url = page.resolve().as_uri()
    dom = chromium(tmp_path, "--dump-dom", url).stdout
    assert dom.count("<svg") == 4 and "<rect" in dom and "<polyline" in dom
    cells = html_cells(dom)
    for p in csvs:
        assert cells[p.name] == csv_cells(p), p.name

    shot = tmp_path / "report.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1000,1800", "--hide-scrollbars", url)
    shutil.copy(shot, Path("/tmp/edgepair-report-screenshot.png"))  # for a human to look at
    width, height, rows = read_png(shot)
    assert (width, height) == (1000, 1800)
    background = bytes.fromhex("ffffff")
    non_bg = sum(row[i : i + 3] != background for row in rows for i in range(0, len(row), 3))
    assert non_bg > 0.02 * width * height, "page looks blank"
    # Each chart painted its own color: bars of traffic, the occupancy line, the dwell bars.
    assert count_color(rows, COLORS["traffic"]) > 200
    assert count_color(rows, COLORS["occupancy"]) > 200
    assert count_color(rows, COLORS["median"]) > 200
    assert count_color(rows, COLORS["coverage"]) > 200

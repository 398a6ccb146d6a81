"""Review of issue 20: a NUL byte in a stream URL (source or substream) was accepted; OpenCV hands FFmpeg a C string
cut at the NUL, so another URL than the one written was opened, without a word."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.config import parse_config
from cluster.errors import ConfigError

STORE = """
store: {id: s1, timezone: Europe/London}
cameras:
  - id: cam-1
    source: SRC
    lines: [{id: door, start: [0.1, 0.5], end: [0.9, 0.5], in_point: [0.5, 0.9]}]
"""


@pytest.mark.parametrize(
    ("source", "extra"),
    [
        ('"rtsp://10.0.0.5/s1\\0x"', ""),
        ("rtsp://10.0.0.5/s1", '    substream: "rtsp://10.0.0.5/s2\\0?password=Nul-Pw-31"\n'),
    ],
)
def test_a_nul_byte_in_a_stream_url_is_refused(source: str, extra: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(STORE.replace("SRC", source) + extra, base_dir=Path("/srv/store"))
    assert "NUL" in str(info.value)
    assert "Nul-Pw-31" not in str(info.value)

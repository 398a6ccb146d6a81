"""Every config value bounded: what validate-config accepts, a node can run. Each refusal names its key and line."""

from __future__ import annotations

import pytest

from cluster.config import parse_config
from cluster.errors import ConfigError

GOOD = """
store:
  id: s1
  timezone: Europe/London
cameras:
  - id: cam-1
    source: rtsp://10.0.0.5:554/s1
    lines:
      - {id: door, start: [0.1, 0.5], end: [0.9, 0.5], in_point: [0.5, 0.9]}
    zones:
      - {id: till, polygon: [[0.1, 0.1], [0.4, 0.1], [0.4, 0.4]]}
"""


def refused(extra: str, old: str = "", new: str = "") -> str:
    text = (GOOD.replace(old, new) if old else GOOD) + extra
    if old:
        assert old in GOOD
    with pytest.raises(ConfigError) as err:
        parse_config(text, source="s.yaml")
    return str(err.value)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        # the values of the issue, each of which broke a node later
        ("storage:\n  retention_days: 1000000\n", "13:19: storage.retention_days: Input should be less than or equal"),
        ("runtime:\n  watchdog_s: .inf\n", "13:15: runtime.watchdog_s: Input should be a finite number"),
        ("runtime:\n  watchdog_s: .nan\n", "runtime.watchdog_s: Input should be a finite number"),
        ("kpi:\n  opening_hours: ['25:99', banana]\n", "13:19: kpi.opening_hours[0]: '25:99' is not a time HH:MM"),
        ("kpi:\n  opening_hours: ['08:00', banana]\n", "kpi.opening_hours[1]: 'banana' is not a time HH:MM"),
        ("kpi:\n  opening_hours: ['24:00', '24:00']\n", "kpi.opening_hours[0]: '24:00' is not a time HH:MM"),
        ("kpi:\n  opening_hours: ['22:00', '08:00']\n", "kpi.opening_hours[1]: opening 22:00 is not before closing"),
        ("kpi:\n  opening_hours: ['08:00', 22:00]\n", 'kpi.opening_hours[1]: write the time quoted, "22:00"'),
        ("cluster:\n  etcd_endpoints: ['ftp://x:1']\n", "cluster.etcd_endpoints[0]: etcd endpoint 'ftp://x:1': scheme"),
        ("cluster:\n  etcd_endpoints: ['h:1', '3']\n", "cluster.etcd_endpoints[1]: etcd endpoint '3' is not host:port"),
        ("cluster:\n  etcd_endpoints: ['h:70000']\n", "with a port 1..65535"),
        ("cluster:\n  etcd_endpoints: ['http://h:2379']\n", "cluster.etcd_endpoints[0]: http://h:2379 is plain text"),
        (
            "security: {tls: false}\ncluster:\n  etcd_endpoints: ['https://h:2379']\n",
            "cluster.etcd_endpoints[0]: https://h:2379 needs TLS",
        ),
        ("tracking:\n  low_thresh: 0.6\n", "13:15: tracking.low_thresh: low_thresh 0.6 is above high_thresh 0.5"),
        ("tracking:\n  new_track_thresh: 0.4\n", "tracking.new_track_thresh: new_track_thresh 0.4 is below high"),
        # the other bounds
        ("runtime:\n  watchdog_s: 301\n", "runtime.watchdog_s: Input should be less than or equal to 300"),
        ("runtime:\n  watchdog_s: 0.01\n", "runtime.watchdog_s: Input should be greater than or equal to 1"),
        ("storage:\n  flush_interval_s: .inf\n", "storage.flush_interval_s: Input should be a finite number"),
        ("kpi:\n  bounce_s: 1e9\n", "kpi.bounce_s: Input should be less than or equal to 3600"),
        ("kpi:\n  visit_merge_s: -1\n", "kpi.visit_merge_s: Input should be greater than or equal to 0"),
        ("cluster:\n  ttl_s: 61\n", "cluster.ttl_s: Input should be less than or equal to 60"),
        ("cluster:\n  nodes: [{name: a, flight_port: 70000}]\n", "cluster.nodes[0].flight_port: Input should be less"),
        ("cluster:\n  nodes: [{name: a, flight_port: 9101}]\n", "nodes[0].metrics_port: node a: flight_port and"),
        ("cluster:\n  nodes: [{name: a, host: 'http://x'}]\n", "cluster.nodes[0].host: 'http://x' is not an IP"),
        ("model:\n  threshold: .nan\n", "model.threshold: Input should be a finite number"),
        ("store_id: x\n", "store_id: unknown key"),
    ],
)
def test_out_of_bounds_is_refused_with_its_location(extra: str, expected: str) -> None:
    msg = refused(extra)
    assert msg.startswith("1 error in the store config:\n  s.yaml:")
    assert expected in msg


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        # a bowtie: its edges cross (symmetric, so its signed area is 0 too: the crossing is what is reported)
        (
            "[[0.1, 0.1], [0.4, 0.1], [0.4, 0.4]]",
            "[[0.1, 0.1], [0.9, 0.9], [0.9, 0.1], [0.1, 0.9]]",
            "11:29: cameras[0].zones[0].polygon: zone till: the polygon is not simple, edge 0 (vertices 0-1) crosses",
        ),
        (
            "[[0.1, 0.1], [0.4, 0.1], [0.4, 0.4]]",
            "[[0.1, 0.1], [0.5, 0.5], [0.6, 0.1], [0.1, 0.6]]",
            "the polygon is not simple, edge 0 (vertices 0-1) crosses edge 2",
        ),
        (
            "[[0.1, 0.1], [0.4, 0.1], [0.4, 0.4]]",
            "[[0.1, 0.1], [0.4, 0.1], [0.4, 0.4], [0.4, 0.1]]",
            "vertex 3 repeats vertex 1",
        ),
        (
            "[[0.1, 0.1], [0.4, 0.1], [0.4, 0.4]]",
            "[[0.1, 0.1], [0.4, 0.1], [0.4, 0.4], [0.4, 0.6], [0.4, 0.5]]",
            "the polygon is not simple, edge 2 (vertices 2-3) crosses edge 4",
        ),
        ("[0.4, 0.4]]", "[.inf, 0.4]]", "zones[0].polygon[2][0]: Input should be a finite number"),
        ("source: rtsp://10.0.0.5:554/s1", "source: ftp://10.0.0.5/x", "cameras[0].source: Value error, URL scheme"),
        ("source: rtsp://10.0.0.5:554/s1", "source: RTSP://10.0.0.5/x", "write the scheme in lower case"),
        ("source: rtsp://10.0.0.5:554/s1", "source: rtsp://10.0.0.5:99999/x", "is not a valid URL"),
        ("source: rtsp://10.0.0.5:554/s1", "source: rtsp:///x", "names no host"),
        ("source: rtsp://10.0.0.5:554/s1", "source: 'rtsp://a:p/w@h/x'", "an '@' after its host"),
        ("source: rtsp://10.0.0.5:554/s1", "source: 'bad_rtsp://h/x'", "neither a URL of a known scheme"),
        ("source: rtsp://10.0.0.5:554/s1", "source: ''", "a video file path must be 1 to 4096"),
        ("timezone: Europe/London", "timezone: Europe", "store.timezone: unknown time zone"),
        ("timezone: Europe/London", "timezone: ../../etc/passwd", "store.timezone: unknown time zone"),
    ],
)
def test_camera_values_are_checked(old: str, new: str, expected: str) -> None:
    msg = refused("", old, new).replace("Value error, ", "")
    assert expected.replace("Value error, ", "") in msg
    assert "p/w" not in msg


def test_lists_and_strings_are_bounded() -> None:
    lines = "".join(
        f"      - {{id: l{i}, start: [0.1, 0.5], end: [0.9, 0.5], in_point: [0.5, 0.9]}}\n" for i in range(33)
    )
    assert "cameras[0].lines: List should have at most 32 items" in refused(
        "", "      - {id: door, start: [0.1, 0.5], end: [0.9, 0.5], in_point: [0.5, 0.9]}\n", lines
    )
    cams = "".join(f"  - {{id: c{i}, source: rtsp://h/{i}}}\n" for i in range(64))
    assert "cameras: List should have at most 64 items" in refused("", "cameras:\n", "cameras:\n" + cams)
    ring = ", ".join(f"[{0.5 + 0.4 * __import__('math').cos(k / 300 * 6.28):.4f}, 0.5]" for k in range(300))
    assert "polygon: List should have at most 256 items" in refused(
        "", "[[0.1, 0.1], [0.4, 0.1], [0.4, 0.4]]", f"[{ring}]"
    )
    assert "store.timezone: String should have at most 64 characters" in refused(
        "", "timezone: Europe/London", "timezone: " + "x" * 65
    )


@pytest.mark.parametrize(
    "extra",
    [
        "kpi:\n  opening_hours: ['00:00', '24:00']\n",
        "kpi:\n  opening_hours: ['08:30', '21:45']\n",
        "cluster:\n  etcd_endpoints: ['https://10.0.0.1:2379', 'h2:2379', '[::1]:2379']\n",
        "security: {tls: false}\ncluster:\n  etcd_endpoints: ['http://10.0.0.1:2379', 'h2:2379', 'h3:2379']\n",
        "tracking: {high_thresh: 0.3, low_thresh: 0.1, new_track_thresh: 0.4}\n",
        "tracking: {high_thresh: 0.5, low_thresh: 0.5, new_track_thresh: 0.5}\n",
        "runtime: {watchdog_s: 1}\nstorage: {retention_days: 3650}\n",
    ],
)
def test_values_at_the_bounds_are_valid(extra: str) -> None:
    parse_config(GOOD + extra)


@pytest.mark.parametrize(
    "source",
    ["rtsps://cam.local/x", "http://[fe80::1]:8080/video", "https://h/mjpeg?x=a@b", "/videos/a@night.mp4", "a.mp4"],
)
def test_sources_that_are_valid(source: str) -> None:
    parse_config(GOOD.replace("rtsp://10.0.0.5:554/s1", source))

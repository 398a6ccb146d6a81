from __future__ import annotations

from pathlib import Path

import pytest

from cluster.config import load_config, parse_config
from cluster.errors import ConfigError

GOOD = """
store:
  id: s1
  timezone: Europe/London
cameras:
  - id: cam-1
    source: clip.mp4
    lines:
      - id: door
        start: [0.1, 0.5]
        end: [0.9, 0.5]
        in_point: [0.5, 0.9]
    zones:
      - id: till
        polygon: [[0.1, 0.1], [0.4, 0.1], [0.4, 0.4]]
"""


def test_good_config_resolves_relative_paths(tmp_path: Path) -> None:
    cfg = parse_config(GOOD, base_dir=tmp_path)
    assert cfg.cameras[0].source == str(tmp_path / "clip.mp4")
    assert cfg.storage.data_dir == tmp_path / "data"
    assert cfg.storage.flush_interval_s == 1.0
    assert len(cfg.version()) == 12


def test_version_changes_with_a_threshold() -> None:
    a = parse_config(GOOD)
    b = parse_config(GOOD.replace("store:", "kpi:\n  bounce_s: 20\nstore:"))
    assert a.version() != b.version()


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("timezone: Europe/London", "timezone: Mars/Olympus", "4:13: store.timezone: unknown time zone 'Mars/Olympus'"),
        ("start: [0.1, 0.5]", "start: [0.1, 1.5]", "9:9: cameras[0].lines[0]: line door: start [0.1, 1.5] is outside"),
        ("in_point: [0.5, 0.9]", "in_point: [0.5, 0.5]", "in_point lies on the line"),
        ("id: cam-1", "id: cam 1", "6:9: cameras[0].id: String should match pattern"),
        ("    source: clip.mp4", "    source: clip.mp4\n    colour: red", "8:13: cameras[0].colour: unknown key"),
        ("[0.4, 0.4]]", "[0.7, 0.1]]", "zone till: the polygon has no area"),
        ("    source: clip.mp4", "    source: rtsp://cam/1\n    loop: true", "loop and playback apply to video files"),
    ],
)
def test_bad_values_name_location_and_fix(old: str, new: str, expected: str) -> None:
    assert old in GOOD
    with pytest.raises(ConfigError) as err:
        parse_config(GOOD.replace(old, new), source="store.yaml")
    assert expected in str(err.value)
    assert str(err.value).startswith("1 error in the store config:\n  store.yaml:")


def test_every_error_is_reported_at_once() -> None:
    text = GOOD.replace("Europe/London", "Nowhere").replace("start: [0.1, 0.5]", "start: [2, 0.5]")
    with pytest.raises(ConfigError) as err:
        parse_config(text, source="s.yaml")
    assert str(err.value).startswith("2 errors in the store config:")


def test_duplicate_camera_ids() -> None:
    text = GOOD + "  - id: cam-1\n    source: b.mp4\n"
    with pytest.raises(ConfigError, match="camera ids must be unique, repeated: cam-1"):
        parse_config(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("store: [\n", "not valid YAML"),
        ("- a\n- b\n", "expected a mapping"),
        ("store:\n  id: s\n  timezone: UTC\n", "cameras: Field required"),
    ],
)
def test_not_a_config(text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        parse_config(text)


def test_missing_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found: pass --config"):
        load_config(tmp_path / "nope.yaml")


def test_demo_config_is_valid() -> None:
    cfg = load_config(Path(__file__).parents[2] / "cluster" / "examples" / "demo.yaml")
    assert [c.id for c in cfg.cameras] == ["cam-1"]


CLUSTER = """
cluster:
  etcd_endpoints: [http://10.0.0.11:2379, http://10.0.0.12:2379, http://10.0.0.13:2379]
  raft_leader: {leader}
  nodes: [{{name: ws-a, host: 10.0.0.11}}, {{name: ws-b, host: 10.0.0.12}}]
security:
  tls: false
"""


def test_raft_leader_is_one_of_the_etcd_members() -> None:
    cfg = parse_config(GOOD + CLUSTER.format(leader="http://10.0.0.13:2379"))
    assert cfg.cluster.raft_leader == "http://10.0.0.13:2379"
    with pytest.raises(ConfigError) as err:
        parse_config(GOOD + CLUSTER.format(leader="http://10.0.0.13:2380"), source="store.yaml")
    assert "cluster.raft_leader: 'http://10.0.0.13:2380' is not one of cluster.etcd_endpoints" in str(err.value)

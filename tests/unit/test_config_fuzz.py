"""Property: any YAML either validates and then builds a node's pure components, or is refused with a ConfigError
that names the key. Never a traceback of another type.

The documents are valid configs with mutations (wrong types, huge, infinite and nan numbers, odd strings, missing
keys, extra keys), plus arbitrary text. Valid ones build what a camera worker and the node build from a config
(``actors.worker.build_analytics``: tracker, line counters, zones; the capture object, not opened; the KPI
definition; the retention cut-off; the etcd targets), with no Ray, no camera and no etcd. Bounded: 300 examples,
derandomized, no deadline.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.capture import Capture
from actors.worker import build_analytics
from cluster.config import Config, parse_config
from cluster.errors import ConfigError
from failover.etcd_tls import parse_endpoint
from storage.kpis import StoreSetup
from storage.retention import retention_cutoff

BASE: dict[str, Any] = {
    "store": {"id": "s1", "timezone": "Europe/London"},
    "node": "ws-a",
    "model": {"family": "auto", "tiles": 1, "threads": 0, "threshold": 0.4},
    "cameras": [
        {
            "id": "cam-1",
            "source": "rtsp://admin:Fuzz-Pw-0001@10.0.0.5:554/s1",
            "fps": 10,
            "lines": [
                {"id": "door", "start": [0.1, 0.5], "end": [0.9, 0.5], "in_point": [0.5, 0.9], "hysteresis": 0.02}
            ],
            "zones": [
                {"id": "till", "polygon": [[0.1, 0.1], [0.4, 0.1], [0.4, 0.4]], "min_dwell_s": 2, "exit_grace_s": 1}
            ],
        },
        {"id": "cam-2", "source": "clip.mp4", "playback": "fast", "loop": True, "anchor": "center"},
    ],
    "tracking": {
        "high_thresh": 0.5,
        "low_thresh": 0.1,
        "new_track_thresh": 0.6,
        "match_iou": 0.1,
        "second_match_iou": 0.5,
        "min_hits": 3,
        "max_lost_s": 3.0,
    },
    "storage": {"data_dir": "data", "flush_interval_s": 1.0, "retention_days": 400},
    "runtime": {"num_cpus": 0, "inference_batch": 4, "inflight": 2, "frame_queue": 2, "watchdog_s": 10.0},
    "kpi": {"bounce_s": 10.0, "visit_merge_s": 5.0, "opening_hours": ["08:00", "22:00"]},
    "cluster": {
        "etcd_endpoints": ["https://10.0.0.11:2379", "10.0.0.12:2379", "https://10.0.0.13:2379"],
        "ttl_s": 2.0,
        "nodes": [{"name": "ws-a", "host": "10.0.0.11"}, {"name": "ws-b", "host": "10.0.0.12"}],
        "raft_leader": "https://10.0.0.13:2379",
    },
    "security": {"tls": True, "cert_dir": "pki", "metrics": "tls"},
}


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


PATHS = _paths(BASE)

ODD_TEXT = st.sampled_from(
    ["", " ", "x" * 5000, "25:99", "banana", "24:00", "00:00", "ftp://x", "3", "rtsp://", "rtsp://a:b@h:0/x",
     "RTSP://H/X", "\x00", "../../etc/passwd", "é∂ƒ", "1e400", ".inf", "-0", "http://[::1]:2379", "h:99999",
     "rtsp://[fe80::1%25eth0]:554/x", "/dev/null", "~", "null", "Europe", "UTC"]
)  # fmt: skip
WEIRD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([0, -1, 1, 2**31, 2**63, 10**400]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.inf, -math.inf, math.nan, 1e308, -0.0, 1e-300]),
    st.text(max_size=40),
    ODD_TEXT,
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=5),
    st.lists(st.lists(st.floats(min_value=-1, max_value=2), min_size=2, max_size=2), max_size=8),
    st.dictionaries(st.text(max_size=8), st.integers(), max_size=3),
)
# plausible values, so that many mutated configs still validate and reach the components
PLAUSIBLE = st.one_of(
    st.floats(min_value=0, max_value=1),
    st.integers(min_value=0, max_value=5000),
    st.sampled_from(["00:00", "08:30", "24:00", "12:00", "rtsp://10.0.0.9/x", "cam-3", "10.0.0.14:2379"]),
    st.lists(st.floats(min_value=0, max_value=1), min_size=2, max_size=2),
)


@st.composite
def documents(draw: st.DrawFn) -> tuple[str, set[str]]:
    """A YAML text and the names of the keys it changed (every string key on each mutated path)."""
    if draw(st.integers(0, 19)) == 0:
        return draw(st.text(max_size=200)), set()  # arbitrary text, often not even YAML
    data = copy.deepcopy(BASE)
    changed: set[str] = set()
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(PATHS))
        parent: Any = data
        try:
            for key in path[:-1]:
                parent = parent[key]
            present = path[-1] in parent if isinstance(parent, dict) else path[-1] < len(parent)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation changed the shape above this path
        if not present:
            continue
        action = draw(st.sampled_from(["weird", "plausible", "delete", "extra"]))
        changed.update(k for k in path if isinstance(k, str))
        if action == "delete":
            del parent[path[-1]]
        elif action == "extra" and isinstance(parent, dict):
            extra = draw(st.sampled_from(["colour", "Source", "id ", "1"]))
            parent[extra] = draw(WEIRD)
            changed.add(extra)
        else:
            parent[path[-1]] = draw(WEIRD if action == "weird" else PLAUSIBLE)
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False), changed


class _Identity:
    """Stands for a host's TLS identity: parse_endpoint only asks whether there is one."""


def build_components(cfg: Config) -> None:
    """What a node builds from its config before any I/O: each constructor checks its own arguments."""
    for cam in cfg.cameras:
        build_analytics(cam, cfg)
        Capture(
            cam.id,
            cam.source,
            is_stream=cam.is_stream,
            fps=cam.fps,
            playback=cam.playback,
            loop=cam.loop,
            queue_size=cfg.runtime.frame_queue,
            watchdog_s=cfg.runtime.watchdog_s,
            credentials=cfg.credential_source(cam.id),
        )
    StoreSetup.from_config(cfg).definition()
    retention_cutoff(cfg.storage.retention_days, cfg.store.timezone, now=1.8e9)
    identity = _Identity() if cfg.security.tls else None
    for endpoint in cfg.cluster.etcd_endpoints:
        parse_endpoint(endpoint, identity)  # type: ignore[arg-type]
    for node in cfg.cluster.nodes:
        cfg.node_config(node.name)


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(documents())
def test_any_yaml_validates_and_builds_or_is_refused_naming_the_key(doc: tuple[str, set[str]]) -> None:
    text, changed = doc
    try:
        cfg = parse_config(text, source="fuzz.yaml", base_dir=Path("/srv/store"))
    except ConfigError as exc:
        msg = str(exc)
        assert msg.strip(), "an empty error"
        assert "Fuzz-Pw-0001" not in msg
        if msg.startswith(("fuzz.yaml: expected a mapping", "fuzz.yaml: not a usable")) or "not valid YAML" in msg:
            return
        assert msg.splitlines()[0].endswith("in the store config:"), msg
        for line in msg.splitlines()[1:]:
            where, _, rest = line.strip().partition(": ")
            assert where.count(":") == 2 and where.startswith("fuzz.yaml:"), line  # fuzz.yaml:LINE:COLUMN
            key, _, why = rest.partition(": ")
            assert key and why, line  # the key's path, then what is wrong with it
            assert not changed or any(name in rest for name in changed), (line, changed)
        return
    assert "Fuzz-Pw-0001" not in cfg.model_dump_json()
    build_components(cfg)

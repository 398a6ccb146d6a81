"""Review r17 (issue 17): right after `make demo`, the README's analyst commands use `--config
cluster/examples/demo.yaml`, whose data dir (``data/demo``) is empty: the issue asks for a hint where the data is.
The one-liner names the pair's config only when given ``pair.yaml``; with ``demo.yaml`` (the README's first code
block) it says "run the store first" although the demo's pair holds data beside it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cluster.cli import _store_with_events
from cluster.config import load_config
from cluster.errors import QueryError

REPO = Path(__file__).resolve().parents[2]


def test_r17_demo_yaml_after_make_demo_names_the_pairs_config(tmp_path: Path) -> None:
    cfg = load_config(REPO / "cluster" / "examples" / "demo.yaml")
    data = tmp_path / "data"
    cfg = cfg.model_copy(update={"storage": cfg.storage.model_copy(update={"data_dir": data / "demo"})})
    run_dir = data / "pair-demo" / "pair"  # what `make demo` (pair demo --config cluster/examples/pair.yaml) leaves
    run_dir.mkdir(parents=True)
    ws_a = run_dir / "ws-a.yaml"
    ws_a.write_text("# the node config\n")
    (run_dir / "pair.stopped.json").write_text(json.dumps({"nodes": {"ws-a": {"config": str(ws_a)}}}))
    with pytest.raises(QueryError) as err:
        _store_with_events(cfg)
    assert str(ws_a) in str(err.value)

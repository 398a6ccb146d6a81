"""``edgepair doctor`` and ``edgepair support-bundle`` against a real running pair (``pair up``: 3 etcd members, two
node agents with their own Ray, mutual TLS), brought up by the drills' fixture and always brought down by pid.

Doctor on a healthy ws-a finds no problem; then one problem at a time, each undone before the next: ws-a's key
readable by every user, ws-a's certificate file replaced by one expiring in 9 days, and last the peer ws-b stopped (its
/health refuses the connection). The support bundle of the healthy pair holds both nodes' /health and /metrics.

Slow (a pair up and down, about 2-3 minutes here): ``make test-all`` runs it; the fast test of the same commands on
a real etcd and PKI is tests/integration/test_remote_ops.py.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_drills import _pair_up

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield from _pair_up(tmp_path_factory.mktemp("remote-ops"))


def findings(run_dir: Path) -> tuple[list[tuple[str, str, str]], list[dict[str, Any]]]:
    from cluster.config import load_config
    from cluster.doctor import diagnose, gather, settings_for

    config = run_dir / "ws-a.yaml"
    cfg = load_config(config)
    all_ = [f.as_dict() for f in diagnose(gather(cfg, "ws-a", str(config), run_dir / "ws-a.log"), settings_for(cfg))]
    return [(f["check"], f["message"], f["fix"]) for f in all_ if not f["ok"]], all_


def test_doctor_on_a_healthy_pair_then_one_problem_at_a_time(pair: Path, tmp_path: Path) -> None:
    from cluster.pair import load_state

    state = load_state(pair)
    bad, all_ = findings(pair)
    assert bad == [], json.dumps(all_, indent=1)
    checks = sorted({f["check"] for f in all_})
    assert checks == ["certificate", "clock", "data-dir", "disk", "etcd", "health", "log", "model", "peer"]

    pki = Path(state["pki"])
    cert, key = pki / "ws-a.crt", pki / "ws-a.key"
    key.chmod(0o644)
    try:
        assert findings(pair)[0] == [
            ("certificate", f"{key} is mode 0644: other users may read the key", f"chmod 0600 {key}")
        ]
    finally:
        key.chmod(0o600)

    from cluster.pki import CertDir

    kept = cert.read_bytes(), key.read_bytes()
    try:
        CertDir(pki).issue("ws-a", "node", ["127.0.0.1", "localhost"], days=9)
        ((check, message, _fix),) = findings(pair)[0]
        assert (check, message.split(" (")[0]) == ("certificate", f"{cert} expires in 9 days")
    finally:
        cert.write_bytes(kept[0])
        key.write_bytes(kept[1])
    assert findings(pair)[0] == []

    out = tmp_path / "bundle.tar.gz"
    from cluster.bundle import gather as bundle_gather
    from cluster.bundle import write_archive
    from cluster.config import load_config

    b = bundle_gather(load_config(pair / "ws-a.yaml"), "ws-a", pair / "ws-a.yaml", [pair / "ws-a.log"], None)
    write_archive(b, out)
    with tarfile.open(out) as tar:
        names = sorted(m.name.split("/", 1)[1] for m in tar.getmembers())
        health = json.loads(tar.extractfile("bundle/health/ws-b.json").read())  # type: ignore[union-attr]
        metrics = tar.extractfile("bundle/metrics/ws-a.prom").read().decode()  # type: ignore[union-attr]
    assert names == [
        "MANIFEST.json",
        "certificates.json",
        "config/effective.json",
        "config/store.yaml",
        "doctor.json",
        "health/ws-a.json",
        "health/ws-b.json",
        "logs/ws-a.log",
        "metrics/ws-a.prom",
        "metrics/ws-b.prom",
        "replication.json",
        "status.json",
        "versions.json",
    ]
    assert health["node"] == "ws-b" and health["healthy"] is True
    assert "\nedgepair_cameras_fenced 0.0\n" in metrics and "\nedgepair_data_dir_free_bytes " in metrics

    # Last (the pair is not whole afterwards): the peer stopped, its Ray processes with it (by pid).
    from cluster.pair import stop_pid

    stop_pid(state["nodes"]["ws-b"]["pid"], 30.0)
    url = state["nodes"]["ws-b"]["health"]
    assert findings(pair)[0] == [
        (
            "peer",
            f"peer ws-b: /health at {url} does not answer: ConnectionRefusedError: [Errno 111] Connection refused",
            f"systemctl status edgepair; edgepair doctor --config {pair / 'ws-a.yaml'} --name ws-b on 127.0.0.1",
        )
    ]

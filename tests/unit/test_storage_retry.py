"""Which refusals are remembered (the file is not fetched again) and which are retried at the next anti-entropy.

A legitimate file must never be lost to a transient view: a token above this node's last view of etcd, a signature
missing or torn, a signer whose CA is not known here yet. Forged, impossible or conflicting files stay refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.bounds import Refused
from storage.replclient import RETRYABLE
from storage.replication import Replicator
from storage.segments import SegmentWriter
from tests.harness.replnode import DEFAULT_BASE, TZ, window_events
from tests.pki_helpers import StorePKI, make_pki


@pytest.fixture
def pki(tmp_path: Path) -> StorePKI:
    return make_pki(tmp_path / "pki")


def segment(folder: Path, i: int = 0, token: int = 7, k: int = 2) -> tuple[str, str, bytes]:
    w = SegmentWriter(folder, "s1", TZ, "ws-a")
    info = w.write("cam-1", DEFAULT_BASE + i, DEFAULT_BASE + i + 1, window_events("cam-1", DEFAULT_BASE, i, k, 1),
                   frames=10, token=token, config_version="c", model_version="m")  # fmt: skip
    return info.segment_id, info.sha256, info.path.read_bytes()


def receiver(tmp_path: Path, pki: StorePKI, view: list[int]) -> Replicator:
    return Replicator(tmp_path / "b", "s1", "ws-b", "grpc://127.0.0.1:1", port=1,
                      identity=pki.identity("ws-b"), max_token=lambda: view[0])  # fmt: skip


def remembered(r: Replicator) -> dict[str, str]:
    return r.set_peer_missing({})


def test_a_token_from_the_future_is_retried_once_etcd_is_read_again(tmp_path: Path, pki: StorePKI) -> None:
    sid, sha, data = segment(tmp_path / "src")
    sig = pki.identity("ws-a").signer().sign(sid, sha)
    view = [5]  # this node's last read of etcd's revision (+ margin) is older than the token 7
    r = receiver(tmp_path, pki, view)
    with pytest.raises(Refused) as exc:
        r.receive(sid, sha, data, source="pull", sig=sig)
    assert exc.value.reason == "token_future" and "token_future" in RETRYABLE
    assert remembered(r) == {} and r.refusal_counts() == {"token_future": 1}
    view[0] = 10
    assert r.receive(sid, sha, data, source="pull", sig=sig)
    assert sid in r.live_catalog()


@pytest.mark.parametrize(
    ("case", "reason", "retried"),
    [
        ("no-signature", "unsigned", True),
        ("torn-signature", "unsigned", True),
        ("unknown-ca", "signer_unknown", True),
        ("checksum", "checksum", True),
        ("signed-by-the-other-node", "signature", False),
        ("signature-of-other-bytes", "signature", False),
        ("traversal-id", "bad_id", False),
        ("other-store", "store", False),
        ("overwrite", "overwrite", False),
    ],
)
def test_which_refusals_are_remembered(tmp_path: Path, pki: StorePKI, case: str, reason: str, retried: bool) -> None:
    sid, sha, data = segment(tmp_path / "src")
    good = pki.identity("ws-a").signer().sign(sid, sha)
    r = receiver(tmp_path, pki, [100])
    sig: bytes | None = good
    if case == "no-signature":
        sig = None
    elif case == "torn-signature":
        sig = good[:100]
    elif case == "unknown-ca":
        sig = make_pki(tmp_path / "new-ca").identity("ws-a").signer().sign(sid, sha)
    elif case == "checksum":
        data = data[:-1] + bytes([data[-1] ^ 1])
    elif case == "signed-by-the-other-node":
        sig = pki.identity("ws-b").signer().sign(sid, sha)
    elif case == "signature-of-other-bytes":
        sig = pki.identity("ws-a").signer().sign(sid, "0" * 64)
    elif case == "traversal-id":
        sid = "../" + sid
    elif case == "other-store":
        w = SegmentWriter(tmp_path / "other", "s2", TZ, "ws-a")
        info = w.write("cam-1", DEFAULT_BASE, DEFAULT_BASE + 1, [], frames=10, token=7, config_version="c",
                       model_version="m")  # fmt: skip
        sid, sha, data = info.segment_id, info.sha256, info.path.read_bytes()
        sig = pki.identity("ws-a").signer().sign(sid, sha)
    elif case == "overwrite":
        assert r.receive(sid, sha, data, source="pull", sig=good)
        _, sha, data = segment(tmp_path / "src2", k=3)  # same id, other bytes (a producer that wrote twice)
        sig = pki.identity("ws-a").signer().sign(sid, sha)
    with pytest.raises(Refused) as exc:
        r.receive(sid, sha, data, source="pull", sig=sig)
    assert exc.value.reason == reason, exc.value
    assert (exc.value.reason in RETRYABLE) is retried
    assert (sid in remembered(r)) is not retried

"""The pair: only the store's configured workstations sign data that counts; nested JSON is refused, never a crash."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cluster.errors import StorageError
from cluster.pki import CertDir
from storage.catalog import Catalog, entry_from_bytes
from storage.compaction import compact
from storage.schema import META_PREFIX
from storage.segments import SegmentWriter, _to_parquet_bytes
from storage.signing import ForeignSigner, MissingSignature, check_signature, well_formed
from storage.verify import verify_data_dir
from storage.views import run_query
from tests.harness.replnode import DEFAULT_BASE, TZ, window_events
from tests.pki_helpers import StorePKI, make_pki

PAIR = ("ws-a", "ws-b")
NOW = DEFAULT_BASE + 3 * 86400


@pytest.fixture
def pki(tmp_path: Path) -> StorePKI:
    p = make_pki(tmp_path / "pki")
    CertDir(p.path).issue("ws-c", "node", ["127.0.0.1"])  # a node certificate of the store CA, not of the pair
    return p


def write(tmp: Path, pki: StorePKI, node: str, windows: range, token: int) -> list[Path]:
    w = SegmentWriter(tmp, "s1", TZ, node, signer=pki.identity(node).signer())
    return [
        w.write("cam-1", DEFAULT_BASE + i, DEFAULT_BASE + i + 1, window_events("cam-1", DEFAULT_BASE, i, 2, 1),
                frames=10, token=token, config_version="c", model_version="m").path
        for i in windows
    ]  # fmt: skip


def test_a_signature_of_a_node_outside_the_pair_is_foreign(tmp_path: Path, pki: StorePKI) -> None:
    path = write(tmp_path, pki, "ws-c", range(1), 1)[0]
    verifier = pki.identity("ws-a").verifier()
    doc, sid, sha = (path.with_suffix(".sig").read_bytes(), path.stem, hashlib.sha256(path.read_bytes()).hexdigest())
    assert check_signature(verifier, doc, sid, sha, "ws-c") == "ws-c"  # no pair given: today's behaviour
    with pytest.raises(ForeignSigner, match="ws-c is not a workstation of this store's pair"):
        check_signature(verifier, doc, sid, sha, "ws-c", allowed=PAIR)
    # a good signature of ws-a on a file with a run of ws-c (a compacted file) is foreign too
    pa_path = write(tmp_path, pki, "ws-a", range(1, 2), 1)[0]
    doc, sid = pa_path.with_suffix(".sig").read_bytes(), pa_path.stem
    sha = hashlib.sha256(pa_path.read_bytes()).hexdigest()
    assert check_signature(verifier, doc, sid, sha, "ws-a", allowed=PAIR) == "ws-a"
    with pytest.raises(ForeignSigner, match="ws-c"):
        check_signature(verifier, doc, sid, sha, "ws-a", allowed=PAIR, producers=["ws-c"])


def test_compaction_never_launders_a_foreign_file(tmp_path: Path, pki: StorePKI) -> None:
    write(tmp_path, pki, "ws-a", range(0, 20), 1)
    write(tmp_path, pki, "ws-c", range(20, 30), 2)
    verifier = pki.identity("ws-a").verifier()
    report = compact(tmp_path, node="ws-a", now=NOW, min_age_s=0, day_min_age_s=10**9, grace_s=0,
                     signer=pki.identity("ws-a").signer(), verifier=verifier, nodes=PAIR)  # fmt: skip
    assert len(report.written) == 1 and len(report.unsigned) == 10
    assert all(".ws-c." in u for u in report.unsigned)
    (hour,) = [p for p in (tmp_path / "events").rglob("*~*.parquet")]
    assert set(pq.read_table(hour).column("node").to_pylist()) == {"ws-a"}
    state = Catalog(tmp_path, verifier=verifier, nodes=PAIR).scan()
    assert {s for s in state.unsigned() if ".ws-c." in s} == {s for s in state.entries if ".ws-c." in s}
    assert len(state.unsigned()) == 10
    assert not list((tmp_path / "quarantine").glob("*")) if (tmp_path / "quarantine").exists() else True
    # without the pair (today), the ws-c files would have been compacted into the ws-a-signed file
    assert len(Catalog(tmp_path, verifier=verifier).scan().unsigned()) == 0


def test_verify_reports_each_signer_and_flags_the_foreign_ones(tmp_path: Path, pki: StorePKI) -> None:
    write(tmp_path, pki, "ws-a", range(0, 3), 1)
    write(tmp_path, pki, "ws-c", range(3, 4), 2)
    verifier = pki.identity("ws-a").verifier()
    loose = verify_data_dir(tmp_path, verifier)
    assert loose.passed and sorted(loose.signers.values()) == ["ws-a", "ws-a", "ws-a", "ws-c"]
    strict = verify_data_dir(tmp_path, verifier, nodes=PAIR)
    assert not strict.passed and strict.ok == 3 and len(strict.foreign) == 1 and ".ws-c." in strict.foreign[0]
    assert "ws-c not a workstation" in strict.problems[strict.foreign[0]]
    assert "signed by ws-a (3), ws-c (1)" in strict.summary()
    assert strict.to_json()["foreign"] == strict.foreign


def test_a_nested_signature_document_is_bad_not_a_crash(tmp_path: Path, pki: StorePKI) -> None:
    verifier = pki.identity("ws-a").verifier()
    doc = b"[" * 8000
    assert not well_formed(doc)
    with pytest.raises(StorageError, match="nested too deep") as caught:
        check_signature(verifier, doc, "x", "0" * 64, "ws-a")
    assert not isinstance(caught.value, MissingSignature)  # refused as a bad signature, not retried as unsigned
    with pytest.raises(MissingSignature):
        check_signature(verifier, b'{"v": 1, "al', "x", "0" * 64, "ws-a")  # a torn document: missing


def test_nested_compaction_metadata_is_refused_at_the_door_and_quarantined_at_scan(tmp_path: Path) -> None:
    path = SegmentWriter(tmp_path, "s1", TZ, "ws-a").write(
        "cam-1", DEFAULT_BASE, DEFAULT_BASE + 1, window_events("cam-1", DEFAULT_BASE, 0, 2, 1), frames=1, token=1,
        config_version="c", model_version="m").path  # fmt: skip
    Catalog(tmp_path).scan()
    table = pq.read_table(path)
    md = {**table.schema.metadata, f"{META_PREFIX}runs".encode(): b"[" * 5000}
    data = _to_parquet_bytes(table.replace_schema_metadata(md))
    with pytest.raises(StorageError, match="nested too deep"):
        entry_from_bytes(data, path.stem, hashlib.sha256(data).hexdigest())
    path.unlink()
    path.write_bytes(data)
    state = Catalog(tmp_path).scan()
    assert state.entries == {} and len(list((tmp_path / "quarantine").iterdir())) == 1
    assert run_query(tmp_path, TZ, "SELECT count(*) FROM events").column(0)[0].as_py() == 0
    # a nested catalog cache is rebuilt from the files
    (tmp_path / "catalog" / "index.json").write_bytes(b"[" * 100_000)
    assert Catalog(tmp_path).scan().entries == {}

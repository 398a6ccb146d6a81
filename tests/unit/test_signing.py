"""Signed files: written signature first with restrictive modes, checked by the catalog, compaction and retention,
migrated from the unsigned release, and proven by ``verify_data_dir`` (read only)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest

from storage import segments
from storage.catalog import Catalog
from storage.compaction import compact
from storage.layout import sig_path
from storage.retention import enforce_retention
from storage.segments import SegmentWriter
from storage.signing import SignerRef, sign_own_unsigned
from storage.verify import verify_data_dir
from storage.views import run_query
from tests.harness.replnode import DEFAULT_BASE, TZ, window_events
from tests.pki_helpers import StorePKI, make_pki


@pytest.fixture
def pki(tmp_path: Path) -> StorePKI:
    return make_pki(tmp_path / "pki")


K = 2
NOW = DEFAULT_BASE + 3 * 86400


def write(w: SegmentWriter, windows: range, token: int = 1, cam: str = "cam-1") -> list[Path]:
    out = []
    for i in windows:
        ws = DEFAULT_BASE + i
        out.append(w.write(cam, ws, ws + 1, window_events(cam, DEFAULT_BASE, i, K, 1), frames=10, token=token,
                           config_version="c", model_version="m").path)  # fmt: skip
    return out


def signed_writer(tmp: Path, pki: StorePKI, node: str = "ws-a") -> SegmentWriter:
    return SegmentWriter(tmp, "s1", TZ, node, signer=pki.identity(node).signer())


def test_signature_is_written_first_and_files_are_not_world_readable(
    tmp_path: Path,
    pki: StorePKI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    named: list[str] = []
    real = os.rename

    def rename(src: str | Path, dst: str | Path) -> None:
        named.append(Path(dst).suffix)
        real(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    (path,) = write(signed_writer(tmp_path / "d", pki), range(1))
    assert named == [".sig", ".parquet"]
    for p in (path, sig_path(path)):
        assert stat.S_IMODE(p.stat().st_mode) & 0o007 == 0
    doc = json.loads(sig_path(path).read_bytes())
    assert (doc["id"], doc["signer"], doc["sha256"]) == (
        path.stem,
        "ws-a",
        hashlib.sha256(path.read_bytes()).hexdigest(),
    )


def test_signer_ref_is_plain_data_and_loads_the_key(pki: StorePKI) -> None:
    ref = SignerRef(str(pki.path), "ws-b")
    assert ref == SignerRef(str(pki.path), "ws-b") and ref.load().identity.name == "ws-b"


def test_unsigned_writer_warns_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    segments._warned_unsigned.discard("ws-z")
    SegmentWriter(tmp_path, "s1", TZ, "ws-z")
    SegmentWriter(tmp_path, "s1", TZ, "ws-z")
    assert sum("UNSIGNED" in r.message for r in caplog.records) == 1


def test_verify_finds_every_altered_or_unsigned_file_and_changes_nothing(tmp_path: Path, pki: StorePKI) -> None:
    paths = write(signed_writer(tmp_path, pki), range(6))
    write(SegmentWriter(tmp_path, "s1", TZ, "ws-b"), range(6, 7))  # the peer's unsigned file
    verifier = pki.identity("ws-a").verifier()
    assert verify_data_dir(tmp_path, verifier).ok == 6
    # altered after signing: the bytes of another signed file under this name
    paths[0].write_bytes(paths[1].read_bytes())
    # a signature of ws-b over ws-a's file
    sig_path(paths[2]).write_bytes(
        pki.identity("ws-b").signer().sign(paths[2].stem, hashlib.sha256(paths[2].read_bytes()).hexdigest())
    )
    # a signature of another file
    sig_path(paths[3]).write_bytes(sig_path(paths[4]).read_bytes())
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    report = verify_data_dir(tmp_path, verifier)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before  # read only
    assert (report.files, report.ok, report.passed) == (7, 3, False)
    assert [Path(r).stem for r in report.checksum_failures] == [paths[0].stem]
    assert sorted(Path(r).stem for r in report.bad_signatures) == sorted([paths[2].stem, paths[3].stem])
    assert len(report.unsigned) == 1 and "FAILED" in report.summary()
    assert "signed by ws-b" in report.problems[str(paths[2].relative_to(tmp_path))]
    assert not verify_data_dir(tmp_path, None).signatures_checked


def test_catalog_with_a_verifier_quarantines_a_bad_signature_with_its_file(tmp_path: Path, pki: StorePKI) -> None:
    paths = write(signed_writer(tmp_path, pki), range(3))
    write(SegmentWriter(tmp_path, "s1", TZ, "ws-b"), range(3, 4))
    sig_path(paths[1]).write_bytes(sig_path(paths[0]).read_bytes())
    cat = Catalog(tmp_path, verifier=pki.identity("ws-a").verifier())
    state = cat.scan()
    assert sorted(state.entries) == sorted(
        [paths[0].stem, paths[2].stem, f"cam-1.{round((DEFAULT_BASE + 3) * 1000)}.ws-b.1"]
    )
    assert state.signed == {paths[0].stem, paths[2].stem} and len(state.unsigned()) == 1
    assert sorted(p.name.rsplit(".", 1)[0] for p in (tmp_path / "quarantine").iterdir()) == sorted(
        [paths[1].name, sig_path(paths[1]).name]
    )
    assert cat.scan().signed == state.signed  # cached: the same answer without verifying again
    assert Catalog(tmp_path, verifier=pki.identity("ws-a").verifier()).scan().signed == state.signed  # from the index


def test_migration_signs_only_this_nodes_unchanged_files(tmp_path: Path, pki: StorePKI) -> None:
    mine = write(SegmentWriter(tmp_path, "s1", TZ, "ws-a"), range(3))
    theirs = write(SegmentWriter(tmp_path, "s1", TZ, "ws-b"), range(3, 5))
    state = Catalog(tmp_path).scan()
    assert sign_own_unsigned(tmp_path, state.entries.values(), pki.identity("ws-a").signer(), "ws-a") == 3
    assert all(sig_path(p).exists() for p in mine) and not any(sig_path(p).exists() for p in theirs)
    assert sign_own_unsigned(tmp_path, state.entries.values(), pki.identity("ws-a").signer(), "ws-a") == 0
    report = verify_data_dir(tmp_path, pki.identity("ws-a").verifier())
    assert (report.ok, len(report.unsigned)) == (3, 2)


def test_compaction_signs_its_files_and_leaves_unsigned_ones_alone(tmp_path: Path, pki: StorePKI) -> None:
    write(signed_writer(tmp_path, pki), range(0, 60))
    write(SegmentWriter(tmp_path, "s1", TZ, "ws-b"), range(60, 70), token=2)  # unsigned
    verifier = pki.identity("ws-a").verifier()
    signer = pki.identity("ws-a").signer()
    n = run_query(tmp_path, TZ, "SELECT count(*) FROM events").column(0)[0].as_py()
    report = compact(tmp_path, node="ws-a", now=NOW, min_age_s=0, day_min_age_s=10**9, grace_s=0,
                     signer=signer, verifier=verifier)  # fmt: skip
    assert len(report.written) == 1 and len(report.unsigned) == 10
    compact(tmp_path, node="ws-a", now=NOW, compactor=False, grace_s=0, verifier=verifier)  # deletes the sources
    files = sorted(p.name for p in (tmp_path / "events").rglob("*") if p.is_file())
    assert len([f for f in files if f.endswith(".parquet")]) == 11  # the hour file and the 10 unsigned segments
    assert len([f for f in files if f.endswith(".sig")]) == 1  # the sources' signatures went with them
    v = verify_data_dir(tmp_path, verifier)
    assert (v.ok, len(v.unsigned), len(v.bad_signatures)) == (1, 10, 0)
    assert run_query(tmp_path, TZ, "SELECT count(*) FROM events").column(0)[0].as_py() == n


def test_retention_deletes_signatures_and_keeps_what_nobody_vouches_for(tmp_path: Path, pki: StorePKI) -> None:
    write(signed_writer(tmp_path, pki), range(3))
    write(SegmentWriter(tmp_path, "s1", TZ, "ws-b"), range(3, 5), token=2)
    verifier = pki.identity("ws-a").verifier()
    removed = enforce_retention(tmp_path, days=1, timezone=TZ, node="ws-a", now=NOW + 30 * 86400, verifier=verifier)
    assert len(removed) == 3
    left = sorted(p.suffix for p in (tmp_path / "events").rglob("*") if p.is_file())
    assert left == [".parquet", ".parquet"]
    assert len(enforce_retention(tmp_path, days=1, timezone=TZ, node="ws-a", now=NOW + 30 * 86400)) == 2

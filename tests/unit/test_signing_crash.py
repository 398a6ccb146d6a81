"""A signature is written before its file and not fsync-ed on its own: after a crash it may be empty or torn. Such a
document is *missing*, never a bad signature: nothing is quarantined, the producer signs again, the audit says
unsigned. Only a well-formed document that fails verification is a bad signature."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from storage.catalog import Catalog
from storage.layout import sig_path
from storage.segments import SegmentWriter
from storage.signing import read_sig, sign_own_unsigned, well_formed
from storage.verify import verify_data_dir
from tests.harness.replnode import DEFAULT_BASE, TZ, window_events
from tests.pki_helpers import StorePKI, make_pki


@pytest.fixture
def pki(tmp_path: Path) -> StorePKI:
    return make_pki(tmp_path / "pki")


def write(w: SegmentWriter, windows: range) -> list[Path]:
    return [
        w.write("cam-1", DEFAULT_BASE + i, DEFAULT_BASE + i + 1, window_events("cam-1", DEFAULT_BASE, i, 2, 1),
                frames=10, token=1, config_version="c", model_version="m").path
        for i in windows
    ]  # fmt: skip


def test_only_the_data_file_and_its_folder_are_fsynced(
    tmp_path: Path, pki: StorePKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    w = SegmentWriter(tmp_path / "d", "s1", TZ, "ws-a", signer=pki.identity("ws-a").signer())
    write(w, range(1))  # creates the folders
    monkeypatch.setattr(os, "fsync", fsync)
    (path,) = write(w, range(1, 2))
    assert [Path(s).name.rsplit(".", 3)[0] for s in synced] == [f".{path.stem}", path.parent.name]
    assert synced[0].endswith(".tmp") and read_sig(path) is not None


def torn_docs(doc: bytes) -> list[bytes]:
    return [b"", b"\0" * len(doc), doc[: len(doc) // 2], b"not json", b"[]", json.dumps({"id": "x"}).encode()]


@pytest.mark.parametrize("case", range(6), ids=["empty", "zeros", "half", "garbage", "list", "fields-missing"])
def test_a_torn_signature_is_missing_not_bad(tmp_path: Path, pki: StorePKI, case: int) -> None:
    signer, verifier = pki.identity("ws-a").signer(), pki.identity("ws-a").verifier()
    paths = write(SegmentWriter(tmp_path, "s1", TZ, "ws-a", signer=signer), range(3))
    doc = sig_path(paths[1]).read_bytes()
    assert well_formed(doc)
    torn = torn_docs(doc)[case]
    sig_path(paths[1]).write_bytes(torn)
    assert not well_formed(torn) and read_sig(paths[1]) is None

    state = Catalog(tmp_path, verifier=verifier).scan()
    assert sorted(state.entries) == sorted(p.stem for p in paths)  # nothing quarantined
    assert state.unsigned() == [paths[1].stem] and not (tmp_path / "quarantine").exists()
    report = verify_data_dir(tmp_path, verifier)
    assert (report.ok, report.unsigned, report.bad_signatures) == (2, [str(paths[1].relative_to(tmp_path))], [])

    # the producer signs it again at start (the catalog's answer: only that one), and the audit passes
    assert sign_own_unsigned(tmp_path, state.entries.values(), signer, "ws-a", state.signed) == 1
    assert verify_data_dir(tmp_path, verifier).passed
    assert Catalog(tmp_path, verifier=verifier).scan().unsigned() == []


def test_the_writer_signs_again_a_torn_signature_of_a_file_it_rewrites(tmp_path: Path, pki: StorePKI) -> None:
    w = SegmentWriter(tmp_path, "s1", TZ, "ws-a", signer=pki.identity("ws-a").signer())
    (path,) = write(w, range(1))
    sig_path(path).write_bytes(b"")
    write(w, range(1))  # the same window again (a restarted actor): the same bytes, signed again
    assert verify_data_dir(tmp_path, pki.identity("ws-a").verifier()).passed


def test_a_well_formed_signature_that_fails_is_still_bad(tmp_path: Path, pki: StorePKI) -> None:
    paths = write(SegmentWriter(tmp_path, "s1", TZ, "ws-a", signer=pki.identity("ws-a").signer()), range(2))
    doc = json.loads(sig_path(paths[0]).read_bytes())
    doc["sig"] = doc["sig"][:-8] + ("A" * 8 if not doc["sig"].endswith("A" * 8) else "B" * 8)
    sig_path(paths[0]).write_bytes(json.dumps(doc).encode())
    verifier = pki.identity("ws-a").verifier()
    assert verify_data_dir(tmp_path, verifier).bad_signatures == [str(paths[0].relative_to(tmp_path))]
    state = Catalog(tmp_path, verifier=verifier).scan()
    assert sorted(state.entries) == [paths[1].stem]  # quarantined with its signature
    assert len(list((tmp_path / "quarantine").iterdir())) == 2


def test_a_signature_from_an_unknown_ca_is_unsigned_here_not_quarantined(tmp_path: Path, pki: StorePKI) -> None:
    """A CA this node does not know yet (a new CA being rolled out) proves nothing either way: kept, unsigned."""
    other = make_pki(tmp_path / "other-pki")
    (path,) = write(SegmentWriter(tmp_path / "d", "s1", TZ, "ws-a", signer=other.identity("ws-a").signer()), range(1))
    state = Catalog(tmp_path / "d", verifier=pki.identity("ws-a").verifier()).scan()
    assert list(state.entries) == [path.stem] and state.unsigned() == [path.stem]
    assert not (tmp_path / "d" / "quarantine").exists()

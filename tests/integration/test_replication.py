"""Two real replicating node processes on loopback, each with its own data folder and Flight server.

Counts are exact, from the deterministic writer of :mod:`tests.harness.replnode` (cameras x windows x events).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from failover.etcd_cluster import free_port
from storage.catalog import Catalog
from storage.verify import verify_data_dir
from storage.views import run_query
from tests.harness.replnode import TZ
from tests.pki_helpers import StorePKI, make_pki

REPO = Path(__file__).resolve().parents[2]
K = 3


class Pair:
    """Two node processes; over mutual TLS with signed files unless ``pki`` is None (the plain-text opt-out)."""

    def __init__(self, tmp: Path, pki: StorePKI | None) -> None:
        self.tmp = tmp
        self.pki = pki
        self.ports = {"ws-a": free_port(), "ws-b": free_port()}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def dir(self, node: str) -> Path:
        return self.tmp / node

    def start(self, node: str, *extra: str) -> subprocess.Popen[bytes]:
        peer = "ws-b" if node == "ws-a" else "ws-a"
        cmd = [sys.executable, "-m", "tests.harness.replnode", "--data-dir", str(self.dir(node)), "--node", node]
        cmd += ["--store", "s1", "--port", str(self.ports[node]), "--peer", f"grpc://127.0.0.1:{self.ports[peer]}"]
        cmd += ["--events-per-segment", str(K), "--anti-entropy-s", "1", *extra]
        if self.pki is not None:
            cmd += ["--cert-dir", str(self.pki.path)]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        log = open(self.tmp / f"{node}.log", "ab")
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.procs[node] = proc
        return proc

    def stop(self, node: str, sig: int = signal.SIGTERM) -> None:
        proc = self.procs.pop(node, None)
        if proc is None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def catalog(self, node: str) -> dict[str, str]:
        return {e.segment_id: e.sha256 for e in Catalog(self.dir(node)).scan().live()}

    def count(self, node: str, sql: str = "SELECT count(*) AS n FROM events") -> int:
        return int(run_query(self.dir(node), TZ, sql).column(0)[0].as_py())

    def verified(self, node: str) -> bool:
        """Every file held is intact and signed by its producer (with TLS); intact only (plain text)."""
        verifier = self.pki.identity(node).verifier() if self.pki else None
        report = verify_data_dir(self.dir(node), verifier)
        return report.passed if self.pki else not (report.checksum_failures or report.bad_signatures)


def wait_for(cond: Callable[[], bool], timeout: float = 45.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    for _ in range(100_000):
        if cond():
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _pair(tmp_path: Path, tls: bool) -> Iterator[Pair]:
    p = Pair(tmp_path, make_pki(tmp_path / "pki") if tls else None)
    try:
        yield p
    finally:
        for node in list(p.procs):
            p.stop(node, signal.SIGKILL)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    """The pair as a store runs it: mutual TLS, signed files."""
    yield from _pair(tmp_path, tls=True)


@pytest.fixture
def plain_pair(tmp_path: Path) -> Iterator[Pair]:
    """The explicit plain-text opt-out (``security.tls: false``)."""
    yield from _pair(tmp_path, tls=False)


def writer_args(cams: str, windows: int, rate: float = 20.0, token: int = 1, first: int = 0) -> list[str]:
    args = ["--write-cameras", cams, "--windows", str(windows), "--rate", str(rate), "--token", str(token)]
    return [*args, "--first-window", str(first)]


def converged(pair: Pair, n_files: int) -> Callable[[], bool]:
    def check() -> bool:
        a, b = pair.catalog("ws-a"), pair.catalog("ws-b")
        return len(a) == n_files and a == b

    return check


def test_sigkilled_writer_leaves_no_partial_file_and_catalogs_converge(pair: Pair) -> None:
    pair.start("ws-b")
    pair.start("ws-a", *writer_args("cam-1,cam-2", 40, rate=20))
    wait_for(lambda: len(pair.catalog("ws-a")) >= 20, what="ws-a to write 10 windows")
    pair.stop("ws-a", signal.SIGKILL)
    for path in (pair.dir("ws-a") / "events").rglob("*.parquet"):
        pq.read_table(path)  # every named file is whole
    pair.start("ws-a", *writer_args("cam-1,cam-2", 40, rate=50))
    wait_for(converged(pair, 80), what="both catalogs to hold the same 80 files")
    assert pair.count("ws-a") == pair.count("ws-b") == 2 * 40 * K
    assert pair.verified("ws-a") and pair.verified("ws-b")


def test_peer_down_then_back_catches_up_by_itself(pair: Pair) -> None:
    pair.start("ws-a", *writer_args("cam-1,cam-2,cam-3", 30, rate=50))
    wait_for(lambda: (pair.dir("ws-a") / "catalog" / "writer_done").exists(), what="ws-a to finish writing")
    assert not pair.dir("ws-b").exists()
    pair.start("ws-b")
    wait_for(converged(pair, 90), what="ws-b to catch up")
    assert pair.count("ws-b") == 3 * 30 * K


def test_plain_text_opt_out_catches_up(plain_pair: Pair) -> None:
    plain_pair.start("ws-a", *writer_args("cam-1,cam-2", 20, rate=50))
    wait_for(lambda: (plain_pair.dir("ws-a") / "catalog" / "writer_done").exists(), what="ws-a to finish writing")
    plain_pair.start("ws-b")
    wait_for(converged(plain_pair, 40), what="ws-b to catch up in plain text")
    assert plain_pair.count("ws-b") == 2 * 20 * K
    assert plain_pair.verified("ws-b") and not list((plain_pair.dir("ws-b") / "events").rglob("*.sig"))


def test_corrupt_file_is_detected_and_repaired_from_the_peer(pair: Pair) -> None:
    pair.start("ws-b")
    pair.start("ws-a", *writer_args("cam-1", 20, rate=50))
    wait_for(converged(pair, 20), what="first convergence")
    pair.stop("ws-b")
    victim = sorted((pair.dir("ws-b") / "events").rglob("*.parquet"))[5]
    good = pair.catalog("ws-a")
    victim.write_bytes(victim.read_bytes()[:100])  # truncated in place
    pair.start("ws-b")
    wait_for(lambda: pair.catalog("ws-b") == good, what="ws-b to repair the truncated file")
    quarantined = sorted(p.name.split(".")[-2] for p in (pair.dir("ws-b") / "quarantine").iterdir())
    assert quarantined == ["parquet", "sig"]  # the file and its signature, moved together
    assert pair.verified("ws-b")
    assert pair.count("ws-b") == 20 * K


def test_split_brain_two_producers_one_window_count_once(pair: Pair) -> None:
    # ws-a holds token 5 for windows 0..19, ws-b token 7 for windows 10..29 of the same camera: 10 windows overlap.
    pair.start("ws-a", *writer_args("cam-1", 20, rate=50, token=5))
    pair.start("ws-b", *writer_args("cam-1", 20, rate=50, token=7, first=10))
    for node in ("ws-a", "ws-b"):
        wait_for(lambda n=node: (pair.dir(n) / "catalog" / "writer_done").exists(), what=f"{node} writes")
    # ws-b refuses ws-a's stale windows 10..19 (token 5 after token 7 began); ws-a accepts ws-b's.
    wait_for(lambda: len(pair.catalog("ws-a")) == 40 and len(pair.catalog("ws-b")) == 30, what="replication")
    for node in ("ws-a", "ws-b"):
        assert pair.count(node) == 30 * K
        assert pair.count(node, "SELECT count(DISTINCT (ts, track_id)) FROM events") == 30 * K
        assert pair.count(node, "SELECT sum(seconds_covered) FROM coverage") == 30
    assert pair.count("ws-a", "SELECT count(*) FROM events_audit WHERE NOT credited") == 10 * K
    assert len(list((pair.dir("ws-b") / "refused").glob("*.parquet"))) == 10
    assert pair.verified("ws-a") and pair.verified("ws-b")

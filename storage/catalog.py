"""The segment catalog: what segment files a node holds, derived from the files themselves, and who is credited.

Rules:

- The files are the truth. The catalog is a scan of ``data_dir/events`` with a cache (``data_dir/catalog/index.json``,
  written atomically) keyed by path, size and mtime, so a restart does not re-hash every file. Deleting the cache is
  always safe: the next scan rebuilds it from the files.
- A file whose size or mtime changed since it was catalogued is re-hashed; if its sha256 differs from the recorded one,
  or its footer cannot be read, it is corrupt: it is moved to ``data_dir/quarantine/`` (never deleted) and leaves the
  catalog, so that anti-entropy fetches it again from the peer.
- Two kinds of files: a *segment* (one camera, one window, one producer: ``<camera>.<ms>.<node>.<token>``) and a
  *compacted* file (``<camera>.<ms>.<level>~<hash>``, many windows and producers, see :mod:`storage.compaction`). A
  compacted file records its coverage as *runs*: contiguous windows of one producer (node, token), frames summed.
- Supersession: a segment is superseded by a compacted file of its camera holding a run of the same producer that
  contains the segment's window start (segment ids are deterministic per camera, window and producer, so that run was
  built from this very segment). A compacted file is superseded by a compacted file that lists it in ``absorbed``.
  Superseded files are invisible to the views and deleted after a grace period.
- A file must be possible (:mod:`storage.bounds`: id, schema, window, counts) or it is quarantined at scan with a
  log line saying why: a segment with an absurd window would otherwise break every query of the views.
- Signatures: ``<id>.sig`` beside a file is its signature (:mod:`storage.signing`). A scan lists which files have
  one (:attr:`CatalogState.signed`); a catalog given a ``verifier`` checks each new or changed signature once
  (cached with the file's entry) and quarantines a file whose signature fails, with its signature, never deletes it.
  A signature document that is empty, torn or not well formed (a crash before its bytes were written back), or whose
  signer's certificate cannot be checked here, leaves the file *unsigned*, not quarantined (:mod:`storage.signing`).
  So does, given the pair (``nodes``), a file signed or produced by a node outside it (e.g. a compacted file with a
  run of a host that is not a workstation of the pair): left alone, listed as unsigned, never compacted or deleted.
- Crediting (exactly once): for each camera and instant, among the live claims covering it, the producer with the
  highest fencing token is credited; on a tie the greater node name wins. The others are kept for audit (``lost``).
"""

from __future__ import annotations

import bisect
import itertools
import json
import logging
import os
import time
from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from cluster.errors import StorageError
from storage.bounds import check_entry, check_schema
from storage.layout import PARQUET_SUFFIX, SIG_SUFFIX, sig_path
from storage.schema import META_PREFIX, SegmentMeta
from storage.segments import EVENTS_DIR, is_temp_file, sha256_file, write_atomic

if TYPE_CHECKING:
    from cluster.pki import Verifier

log = logging.getLogger(__name__)

CATALOG_DIR = "catalog"
QUARANTINE_DIR = "quarantine"
INDEX_NAME = "index.json"
COMPACT_MARK = "~"
_EPS = 1e-6


def is_compacted_id(segment_id: str) -> bool:
    """True for the id of a compacted file (it holds ``~``, which no sanitized node name can)."""
    return COMPACT_MARK in segment_id


@dataclass(frozen=True)
class Run:
    """Contiguous windows ``[start, end)`` (UTC epoch s) of one camera processed by one producer (node, token)."""

    start: float
    end: float
    node: str
    token: int
    frames: int = 0


@dataclass(frozen=True)
class CatalogEntry:
    """One named file: its identity, coverage and checksum."""

    segment_id: str
    store_id: str
    camera_id: str
    window_start: float
    window_end: float
    node: str
    token: int
    rows: int
    frames: int
    sha256: str
    size: int
    relpath: str
    timezone: str
    runs: tuple[Run, ...] = ()
    absorbed: tuple[str, ...] = ()

    @property
    def compacted(self) -> bool:
        return is_compacted_id(self.segment_id)

    def claims(self) -> tuple[Run, ...]:
        """The coverage runs (a segment: its one window)."""
        if self.runs:
            return self.runs
        return (Run(self.window_start, self.window_end, self.node, self.token, self.frames),)

    def to_json(self) -> dict[str, object]:
        d = asdict(self)
        d["runs"] = [list(asdict(r).values()) for r in self.runs]
        d["absorbed"] = list(self.absorbed)
        return d

    @classmethod
    def from_json(cls, d: dict[str, object]) -> CatalogEntry:
        values = dict(d)
        values["runs"] = tuple(Run(*r) for r in values.get("runs", []))  # type: ignore[attr-defined]
        values["absorbed"] = tuple(values.get("absorbed", []))  # type: ignore[arg-type]
        return cls(**values)  # type: ignore[arg-type]


def runs_to_kv(runs: Iterable[Run], absorbed: Iterable[str]) -> dict[bytes, bytes]:
    """The extra key-value metadata of a compacted file."""
    return {
        f"{META_PREFIX}runs".encode(): json.dumps([[r.start, r.end, r.node, r.token, r.frames] for r in runs]).encode(),
        f"{META_PREFIX}absorbed".encode(): json.dumps(sorted(absorbed)).encode(),
    }


def entry_from_file(path: Path, data_dir: Path, sha256: str | None = None, *, strict: bool = False) -> CatalogEntry:
    """Read the footer of ``path`` into a :class:`CatalogEntry` (hashing the file unless ``sha256`` is given).

    ``strict``: also check the schema and that the file is possible (:mod:`storage.bounds`), else raise
    :class:`storage.bounds.Refused` (a StorageError) with the reason.
    """
    try:
        md = pq.read_metadata(path)
        kv = md.metadata or {}
        if strict:
            check_schema(kv, md.schema.to_arrow_schema(), str(path))
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise StorageError(f"cannot read segment footer of {path}: {exc}") from exc
    return _entry(
        kv,
        name=path.stem,
        source=str(path),
        sha256=sha256 or sha256_file(path),
        size=path.stat().st_size,
        relpath=str(path.relative_to(data_dir)),
    )


def entry_from_bytes(data: bytes, segment_id: str, sha256: str, relpath: str = "") -> CatalogEntry:
    """The :class:`CatalogEntry` of a segment file held in memory (a received one, before it is written)."""
    try:
        kv = pq.read_metadata(pa.BufferReader(data)).metadata or {}
    except (OSError, pa.ArrowException) as exc:
        raise StorageError(f"cannot read the segment footer of {segment_id}: {exc}") from exc
    return _entry(kv, name=segment_id, source=segment_id, sha256=sha256, size=len(data), relpath=relpath)


def _entry(kv: dict[bytes, bytes], *, name: str, source: str, sha256: str, size: int, relpath: str) -> CatalogEntry:
    meta = SegmentMeta.from_kv(kv, source=source)
    try:
        runs = tuple(Run(*r) for r in json.loads(kv.get(f"{META_PREFIX}runs".encode(), b"[]")))
        absorbed = tuple(json.loads(kv.get(f"{META_PREFIX}absorbed".encode(), b"[]")))
    except (ValueError, TypeError) as exc:
        raise StorageError(f"{source} has invalid compaction metadata: {exc}") from exc
    except RecursionError:  # thousands of '[': refused, never a crash of the scan or of the door
        raise StorageError(f"{source} has compaction metadata nested too deep to parse") from None
    if name != meta.segment_id:
        raise StorageError(f"{source} is named {name} but its metadata says {meta.segment_id}")
    return CatalogEntry(
        segment_id=meta.segment_id,
        store_id=meta.store_id,
        camera_id=meta.camera_id,
        window_start=meta.window_start,
        window_end=meta.window_end,
        node=meta.node,
        token=meta.token,
        rows=meta.rows,
        frames=meta.frames,
        sha256=sha256,
        size=size,
        relpath=relpath,
        timezone=meta.timezone,
        runs=runs,
        absorbed=absorbed,
    )


@dataclass
class CatalogState:
    """A scan's result: every entry by id, and the ids that are superseded."""

    entries: dict[str, CatalogEntry] = field(default_factory=dict)
    superseded: dict[str, str] = field(default_factory=dict)
    """superseded id -> id of the compacted file that supersedes it."""
    signed: set[str] = field(default_factory=set)
    """ids with a signature beside them (verified good when the catalog has a verifier)."""

    def unsigned(self) -> list[str]:
        """The ids without a (good) signature, sorted."""
        return sorted(set(self.entries) - self.signed)

    def live_ids(self) -> list[str]:
        """The ids of the live entries, sorted."""
        return [k for k in sorted(self.entries) if k not in self.superseded]

    def live(self) -> list[CatalogEntry]:
        """The entries the views read (not superseded), sorted by id."""
        return [e for k, e in sorted(self.entries.items()) if k not in self.superseded]


def compute_superseded(entries: dict[str, CatalogEntry]) -> dict[str, str]:
    """Apply the supersession rules of the module docstring; return superseded id -> superseding id."""
    out: dict[str, str] = {}
    by_camera: dict[str, list[tuple[float, float, CatalogEntry]]] = defaultdict(list)
    for e in entries.values():
        if e.compacted:
            by_camera[e.camera_id].append((e.window_start, e.window_end, e))
            for old in e.absorbed:
                if old in entries:
                    out[old] = e.segment_id
    for lst in by_camera.values():
        lst.sort(key=lambda t: (t[0], t[2].segment_id))
    starts = {cam: [t[0] for t in lst] for cam, lst in by_camera.items()}
    for e in entries.values():
        if e.compacted or e.camera_id not in by_camera:
            continue
        lst = by_camera[e.camera_id]
        hi = bisect.bisect_right(starts[e.camera_id], e.window_start + _EPS)
        for _ws, we, c in reversed(lst[:hi]):
            if c.segment_id in out or we < e.window_start - _EPS:
                continue
            if any(
                r.node == e.node and r.token == e.token and r.start - _EPS <= e.window_start < r.end for r in c.runs
            ):
                out[e.segment_id] = c.segment_id
                break
    return out


class RefusalIndex:
    """What replication checks for every received file, in time independent of the number of files held.

    Per camera: the compacted entries (supersession needs only those of the file's camera) and, per fencing token,
    the earliest window start of a plain segment (for the stale-token rule of :mod:`storage.replication`).
    """

    def __init__(self, entries: Iterable[CatalogEntry] = ()) -> None:
        self._compacted: dict[str, dict[str, CatalogEntry]] = defaultdict(dict)
        self._first: dict[str, dict[int, float]] = defaultdict(dict)
        for e in entries:
            self.add(e)

    def add(self, e: CatalogEntry) -> None:
        if e.compacted:
            self._compacted[e.camera_id][e.segment_id] = e
            return
        first = self._first[e.camera_id]
        first[e.token] = min(first.get(e.token, e.window_start), e.window_start)

    def superseded(self, e: CatalogEntry) -> bool:
        """True if a held compacted file supersedes ``e`` (the rules of :func:`compute_superseded`)."""
        if e.camera_id not in self._compacted:
            return False
        entries = {**self._compacted[e.camera_id], e.segment_id: e}
        return e.segment_id in compute_superseded(entries)

    def newer_token(self, e: CatalogEntry) -> tuple[int, float] | None:
        """A (token, first window start) of a held plain segment with a greater token starting at or before ``e``."""
        for token, start in sorted(self._first.get(e.camera_id, {}).items()):
            if token > e.token and start <= e.window_start:
                return token, start
        return None


@dataclass(frozen=True)
class Piece:
    """A disjoint time piece of one camera credited to (or lost by) one producer."""

    camera_id: str
    start: float
    end: float
    node: str
    token: int


def credit_pieces(entries: Iterable[CatalogEntry]) -> tuple[list[Piece], list[Piece]]:
    """Split every camera's timeline among the claims of ``entries``: (credited pieces, lost pieces).

    At every instant the claim with the greatest (token, node) is credited; every other claim covering that instant
    is lost there. Credited pieces never overlap; adjacent pieces of one producer are merged.
    """
    per_camera: dict[str, list[Run]] = defaultdict(list)
    for e in entries:
        per_camera[e.camera_id].extend(e.claims())
    credited: list[Piece] = []
    lost: list[Piece] = []
    for cam in sorted(per_camera):
        claims = per_camera[cam]
        bounds = sorted({b for r in claims for b in (r.start, r.end)})
        claims.sort(key=lambda r: r.start)
        active: list[Run] = []
        i = 0
        for lo, hi in itertools.pairwise(bounds):
            while i < len(claims) and claims[i].start <= lo:
                active.append(claims[i])
                i += 1
            active = [r for r in active if r.end > lo]
            here = [r for r in active if r.start <= lo and r.end >= hi]
            if not here:
                continue
            producers = sorted({(r.token, r.node) for r in here})
            win_token, win_node = producers[-1]
            _append(credited, Piece(cam, lo, hi, win_node, win_token))
            for token, node in producers[:-1]:
                _append(lost, Piece(cam, lo, hi, node, token))
    return credited, lost


def _append(pieces: list[Piece], p: Piece) -> None:
    """Append ``p``, merging it into the last piece of the same producer when they touch."""
    for k in range(len(pieces) - 1, max(-1, len(pieces) - 4), -1):
        q = pieces[k]
        if q.camera_id == p.camera_id and q.node == p.node and q.token == p.token and abs(q.end - p.start) < _EPS:
            pieces[k] = Piece(q.camera_id, q.start, p.end, q.node, q.token)
            return
    pieces.append(p)


class Catalog:
    """The catalog of one node's data folder. One verb: :meth:`scan`; :meth:`remember` for a file just written."""

    def __init__(
        self, data_dir: Path, *, node: str = "-", verifier: Verifier | None = None, nodes: Collection[str] | None = None
    ) -> None:
        self.data_dir = Path(data_dir)
        self.node = node
        self.verifier = verifier
        self.nodes = frozenset(nodes) if nodes is not None else None
        self._index_path = self.data_dir / CATALOG_DIR / INDEX_NAME
        self._cache: dict[str, tuple[int, int, CatalogEntry]] = {}
        self._sig_ok: dict[str, tuple[int, int]] = {}  # relpath -> (size, mtime_ns) of its verified signature
        self._checked: set[str] = set()  # relpaths whose entry passed storage.bounds in this process
        self._loaded = False
        self._dirty = False
        self.corrupt_found = 0

    def _load(self) -> None:
        self._loaded = True
        try:
            raw = json.loads(self._index_path.read_text())
            for rel, (size, mtime_ns, entry, *sig) in raw.items():
                self._cache[rel] = (size, mtime_ns, CatalogEntry.from_json(entry))
                if sig and sig[0]:
                    self._sig_ok[rel] = (int(sig[0][0]), int(sig[0][1]))
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError, KeyError, RecursionError) as exc:
            log.warning(
                "node %s: catalog index %s unreadable (%s); rebuilding from files", self.node, self._index_path, exc
            )
            self._cache.clear()

    def remember(self, entry: CatalogEntry, *, sig_verified: bool = False) -> None:
        """Cache ``entry`` of a file just written or received (checked), so that the next scan does not hash it
        again; ``sig_verified``: its signature was just verified too."""
        if not self._loaded:
            self._load()
        try:
            st = (self.data_dir / entry.relpath).stat()
        except OSError:
            return
        self._cache[entry.relpath] = (st.st_size, st.st_mtime_ns, entry)
        self._checked.add(entry.relpath)
        if sig_verified:
            try:
                sst = sig_path(self.data_dir / entry.relpath).stat()
                self._sig_ok[entry.relpath] = (sst.st_size, sst.st_mtime_ns)
            except OSError:
                pass
        self._dirty = True

    def _save(self) -> None:
        data = {
            rel: [size, mt, e.to_json(), list(self._sig_ok[rel]) if rel in self._sig_ok else None]
            for rel, (size, mt, e) in sorted(self._cache.items())
        }
        try:
            write_atomic(self._index_path, json.dumps(data, separators=(",", ":")).encode())
        except StorageError as exc:
            log.warning("node %s: cannot save catalog index: %s", self.node, exc)

    def scan(self, *, verify: bool = False) -> CatalogState:
        """Scan the files (re-hashing new or changed ones, every one if ``verify``) and return the state."""
        if not self._loaded:
            self._load()
        root = self.data_dir / EVENTS_DIR
        seen: set[str] = set()
        changed = False
        entries: dict[str, CatalogEntry] = {}
        signed: set[str] = set()
        names = sorted(root.glob("store=*/date=*/camera=*/*")) if root.is_dir() else []
        sigs = {p.with_suffix(PARQUET_SUFFIX) for p in names if p.suffix == SIG_SUFFIX}
        for path in names:
            if path.suffix != PARQUET_SUFFIX or is_temp_file(path):
                continue
            rel = str(path.relative_to(self.data_dir))
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            cached = self._cache.get(rel)
            if cached and cached[0] == st.st_size and cached[1] == st.st_mtime_ns and not verify:
                entry = cached[2]
                if rel not in self._checked:  # catalogued by an earlier process: check it is possible once
                    try:
                        check_entry(entry)
                    except StorageError as exc:
                        self._drop(path, rel, f"impossible file: {exc}")
                        changed = True
                        continue
                    self._checked.add(rel)
            else:
                try:
                    entry = entry_from_file(path, self.data_dir, strict=True)
                    if cached and entry.sha256 != cached[2].sha256 and entry.segment_id == cached[2].segment_id:
                        raise StorageError(f"sha256 changed from {cached[2].sha256[:12]} to {entry.sha256[:12]}")
                    check_entry(entry)
                    if verify:
                        pq.read_table(path)
                except (StorageError, OSError, pa.ArrowException) as exc:
                    self._drop(path, rel, str(exc))
                    changed = True
                    continue
                self._cache[rel] = (st.st_size, st.st_mtime_ns, entry)
                self._checked.add(rel)
                self._sig_ok.pop(rel, None)
                changed = True
            if path in sigs:
                good = self._signature_ok(path, rel, entry)
                if good is None:
                    changed = True
                    continue
                changed = changed or good[1]
                if good[0]:
                    signed.add(entry.segment_id)
            seen.add(rel)
            entries[entry.segment_id] = entry
        for rel in set(self._cache) - seen:
            del self._cache[rel]
            self._sig_ok.pop(rel, None)
            changed = True
        if changed or self._dirty:
            self._dirty = False
            self._save()
        return CatalogState(entries, compute_superseded(entries), signed)

    def _signature_ok(self, path: Path, rel: str, entry: CatalogEntry) -> tuple[bool, bool] | None:
        """(signed, cache changed) for a file with a signature beside it; None if it failed and was quarantined."""
        if self.verifier is None:
            return True, False
        from storage.signing import MissingSignature, UnverifiableSignature, check_signature, outside_pair, read_sig

        outside = outside_pair([entry.node, *(r.node for r in entry.runs)], self.nodes)
        if outside:  # the signer is the producer (checked below, or when the cached stamp was made)
            log.warning("node %s: %s: produced by %s, not of the pair: counted as unsigned", self.node,
                        entry.segment_id, ", ".join(outside))  # fmt: skip
            return False, False
        try:
            sst = sig_path(path).stat()
        except FileNotFoundError:
            return False, False
        stamp = (sst.st_size, sst.st_mtime_ns)
        if self._sig_ok.get(rel) == stamp:
            return True, False
        try:
            check_signature(self.verifier, read_sig(path), entry.segment_id, entry.sha256, entry.node)
        except (MissingSignature, UnverifiableSignature) as exc:  # torn by a crash, or a CA not known yet: unsigned
            log.warning("node %s: %s: counted as unsigned", self.node, exc)
            return False, False
        except StorageError as exc:
            self._drop(path, rel, str(exc))
            return None
        self._sig_ok[rel] = stamp
        return True, True

    def _drop(self, path: Path, rel: str, reason: str) -> None:
        if path.exists():
            self.quarantine(path, reason)
        self._cache.pop(rel, None)
        self._sig_ok.pop(rel, None)
        self._checked.discard(rel)

    def quarantine(self, path: Path, reason: str) -> Path:
        """Move a corrupt, impossible or badly signed file and its signature out of the events folder (kept for
        inspection, never deleted) and count it."""
        stamp = time.time_ns()
        target = self.data_dir / QUARANTINE_DIR / f"{path.name}.{stamp}"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        sig = sig_path(path)
        if sig.exists():
            os.replace(sig, self.data_dir / QUARANTINE_DIR / f"{sig.name}.{stamp}")
        self.corrupt_found += 1
        log.error(
            "node %s: segment %s quarantined to %s: %s; a good copy is fetched again from the peer",
            self.node,
            path,
            target,
            reason,
        )
        return target

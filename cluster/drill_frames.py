"""Double running and lost windows, measured from the frames each producer processed (not from window claims).

The pair's promise is that no camera is ever processed by two workstations at once. Crediting
(:mod:`storage.catalog`) always picks one producer per camera and instant, so counting *credited* duplicates can
never show a violation. This module reads what each producer actually did: every segment's metadata records the
timestamps of the first and last frame processed in its window (:class:`storage.schema.SegmentMeta`). A producer
(node, fencing token) *processed* a camera over the union of ``[first_frame, last_frame + 1/fps)`` of its windows;
two producers ran the camera at once wherever two of those unions overlap. The segments are read from every node's
data dir (what each node wrote itself, replicated or not).

Pure functions over :class:`FrameWindow` lists, plus :func:`read_windows` (footers only) and
:func:`events_between` (the ``ts`` column of a few files).
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cluster.errors import StorageError

Producer = tuple[str, int]  # (node, token)


@dataclass(frozen=True)
class FrameWindow:
    """One segment (or one run of a compacted file) of one camera: who processed which frames when."""

    segment_id: str
    camera_id: str
    start: float
    end: float
    node: str
    token: int
    frames: int
    first_frame: float  # 0.0 when unknown (a compacted run: the run's whole span is assumed)
    last_frame: float
    path: str
    frame_times: tuple[float, ...] = ()  # every frame processed (timestamps); () when unknown

    @property
    def producer(self) -> Producer:
        return (self.node, self.token)

    def processed(self, frame_s: float = 0.0) -> tuple[float, float] | None:
        """The time this window's producer was processing frames, the last one lasting ``frame_s``."""
        if self.frames <= 0:
            return None
        if self.first_frame and self.last_frame:
            return (self.first_frame, self.last_frame + frame_s)
        return (self.start, self.end)


def read_windows(data_dirs: dict[str, Path], store: str, camera: str, since: float, until: float) -> list[FrameWindow]:
    """Every segment of ``camera`` whose window overlaps ``[since, until)``, from every data dir (deduplicated by id).

    Reads only the Parquet footers, in the date folders of the span (the folder date is the store's local date, so
    the UTC dates one day around are read too)."""
    import pyarrow.parquet as pq

    from storage.catalog import Run
    from storage.schema import META_PREFIX, SegmentMeta

    out: dict[str, FrameWindow] = {}
    seen: set[str] = set()
    first = datetime.fromtimestamp(since, UTC).date() - timedelta(days=1)
    last = datetime.fromtimestamp(until, UTC).date() + timedelta(days=1)
    dates = [str(first + timedelta(days=k)) for k in range((last - first).days + 1)]
    for data_dir in data_dirs.values():
        for date in dates:
            folder = Path(data_dir) / "events" / f"store={store}" / f"date={date}" / f"camera={camera}"
            if not folder.is_dir():
                continue
            for path in sorted(folder.glob("*.parquet")):
                try:
                    start = int(path.stem.split(".")[1]) / 1000
                except (IndexError, ValueError):
                    continue
                compacted = "~" in path.stem
                if path.stem in seen or start >= until or (not compacted and start + 3600 < since):
                    continue
                seen.add(path.stem)
                try:
                    kv = pq.read_metadata(path).metadata or {}
                    meta = SegmentMeta.from_kv(kv, source=str(path))
                    runs = [Run(*r) for r in json.loads(kv.get(f"{META_PREFIX}runs".encode(), b"[]"))]
                except (OSError, ValueError, TypeError, StorageError):
                    continue  # not readable as a segment: the catalog quarantines it; nothing to measure here
                for k, r in enumerate(runs):  # a compacted file: its runs, frame times unknown
                    if r.end > since and r.start < until:
                        out[f"{path.stem}#{k}"] = FrameWindow(
                            meta.segment_id, camera, r.start, r.end, r.node, r.token, r.frames, 0.0, 0.0, str(path)
                        )
                if not runs and meta.window_end > since and meta.window_start < until:
                    out[path.stem] = FrameWindow(
                        meta.segment_id, camera, meta.window_start, meta.window_end, meta.node, meta.token,
                        meta.frames, meta.first_frame, meta.last_frame, str(path), tuple(meta.frame_timestamps),
                    )  # fmt: skip
    # A compacted run knows no frame times (its whole span is assumed): where the segments it absorbed are still
    # here, they are the finer record, and the run is left out.
    fine = [w for w in out.values() if w.first_frame]
    kept = [
        w
        for w in out.values()
        if w.first_frame or not any(f.producer == w.producer and f.start < w.end and f.end > w.start for f in fine)
    ]
    return sorted(kept, key=lambda w: (w.start, w.token, w.node))


def _union(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for x, y in sorted(spans):
        if out and x <= out[-1][1] + 1e-9:
            out[-1] = (out[-1][0], max(out[-1][1], y))
        else:
            out.append((x, y))
    return out


ABUT_S = 1e-3
"""Two windows of one producer abut when one starts within this of the other's end (windows are cut on a grid)."""


def processing(windows: list[FrameWindow], frame_s: float = 0.0) -> dict[Producer, list[tuple[float, float]]]:
    """Each producer's processing time: the union of its windows' spans ``[first, last + frame_s]``, bridged
    between windows that abut.

    A producer that wrote two windows back to back held the camera from the last frame of the first to the first
    frame of the second, even when it processed few frames (a loaded node skips frames of a live source): without
    the bridge, a producer processing one frame a second would seem to run a frame's worth in every second. A window
    that was not written (dropped, lost) breaks the bridge: nothing proves the producer ran then."""
    by_producer: dict[Producer, list[FrameWindow]] = {}
    for w in windows:
        if w.processed() is not None:
            by_producer.setdefault(w.producer, []).append(w)
    out: dict[Producer, list[tuple[float, float]]] = {}
    for producer, ws in by_producer.items():
        ws.sort(key=lambda w: w.start)
        spans = [p for w in ws if (p := w.processed(frame_s)) is not None]
        for prev, nxt in itertools.pairwise(ws):
            if abs(nxt.start - prev.end) <= ABUT_S:
                a, b = prev.processed(), nxt.processed()
                assert a is not None and b is not None
                if b[0] > a[1]:
                    spans.append((a[1], b[0]))
        out[producer] = _union(spans)
    return out


@dataclass(frozen=True)
class DoubleRunning:
    """Where two producers processed the same camera at once, and the margins of every handover."""

    seconds: float
    pieces: list[tuple[float, float, list[Producer]]]  # (from, to, the producers running then)
    handovers: list[dict[str, Any]]  # {from, to, at, margin_s}: margin = new first frame - old last frame

    @property
    def min_margin_s(self) -> float | None:
        return min((h["margin_s"] for h in self.handovers), default=None)


def _intersect(xs: list[tuple[float, float]], ys: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out = []
    for a, b in xs:
        for c, d in ys:
            lo, hi = max(a, c), min(b, d)
            if hi - lo > MIN_OVERLAP_S:
                out.append((lo, hi))
    return out


MIN_OVERLAP_S = 1e-3
"""Overlaps shorter than this are float noise, not a frame."""


def double_running(windows: list[FrameWindow], frame_s: float) -> DoubleRunning:
    """The time during which two or more producers processed frames of one camera (windows of one camera).

    Between two nodes each frame lasts ``frame_s`` (one frame of the old owner among the new owner's frames is a
    frame's worth of double running). Within one node (a camera kept under a newer token) the frames of the two
    producers come from one process, strictly one after the other: their spans are compared without that extension,
    so capture-time jitter at a token change is not mistaken for double running."""
    raw = processing(windows)
    wide = processing(windows, frame_s)
    found: list[tuple[float, float, set[Producer]]] = []
    for p, q in itertools.combinations(sorted(raw), 2):
        spans = wide if p[0] != q[0] else raw
        found += [(x, y, {p, q}) for x, y in _intersect(spans[p], spans[q])]
    pieces: list[tuple[float, float, list[Producer]]] = []
    merged: list[tuple[float, float, set[Producer]]] = []
    for x, y, ps in sorted(found, key=lambda f: f[0]):
        if merged and x <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], y), merged[-1][2] | ps)
        else:
            merged.append((x, y, set(ps)))
    pieces = [(x, y, sorted(ps)) for x, y, ps in merged]
    handovers = [
        {
            "from": f"{old[0]}/{old[1]}",
            "to": f"{new[0]}/{new[1]}",
            "at": round(start, 3),
            "margin_s": round(start - old_end, 3),  # negative: the old stint's last frame came after the new first
        }
        for (old, _s, old_end), (new, start, _e) in itertools.pairwise(stints(raw))
    ]
    total = sum(y - x for x, y, _ in pieces)
    return DoubleRunning(round(total, 3), pieces, handovers)


def stints(spans: dict[Producer, list[tuple[float, float]]]) -> list[tuple[Producer, float, float]]:
    """The camera's owners in turn: ``(producer, first frame, last frame)`` of each stint, a run of one producer's
    processing spans not interrupted (in start order) by another producer's. A producer can hold a camera twice (a
    camera moved off a node and back under the same token): two stints, two handovers."""
    out: list[tuple[Producer, float, float]] = []
    for x, y, p in sorted((x, y, p) for p, ss in spans.items() for x, y in ss):
        if out and out[-1][0] == p:
            out[-1] = (p, out[-1][1], max(out[-1][2], y))
        else:
            out.append((p, x, y))
    return out


def rank(p: Producer) -> tuple[int, str]:
    """Crediting order (:func:`storage.catalog.credit_pieces`): the greatest (token, node) wins."""
    return (p[1], p[0])


def events_between(windows: list[FrameWindow], producer: Producer, lo: float, hi: float) -> int:
    """How many events ``producer`` wrote with ``lo <= ts < hi`` (reading the ``ts`` column of its files there)."""
    import pyarrow.parquet as pq

    n = 0
    for path in sorted({w.path for w in windows if w.producer == producer and w.end > lo and w.start < hi}):
        try:
            ts = pq.read_table(path, columns=["ts"]).column("ts").to_pylist()
        except (OSError, ValueError):
            continue
        n += sum(1 for t in ts if lo <= t.timestamp() < hi)
    return n


def loser_events(windows: list[FrameWindow], dr: DoubleRunning) -> int:
    """The events written during double running by every producer but the one crediting keeps there."""
    n = 0
    for x, y, producers in dr.pieces:
        for p in sorted(producers, key=rank)[:-1]:
            n += events_between(windows, p, x, y)
    return n


def gaps(windows: list[tuple[float, float]], lo: float, hi: float) -> list[tuple[float, float]]:
    """The parts of [lo, hi) that no window covers."""
    out, cur = [], lo
    for s, e in sorted(windows):
        if s > cur and cur < hi:
            out.append((cur, min(s, hi)))
        cur = max(cur, e)
    if cur < hi:
        out.append((cur, hi))
    return out


def disturbed(samples: list[tuple[float, str, dict[str, Any]]], nodes: list[str], cam: str) -> list[float]:
    """Sample times at which no answering node showed ``cam`` processing (running, frames, a frame in the last
    second): a node dead, frozen, fenced, cut off, or the camera between two actors."""
    latest: dict[str, tuple[float, dict[str, Any]]] = {}
    out = []
    for t, node, h in sorted(samples, key=lambda s: s[0]):
        latest[node] = (t, h)
        ok = False
        for n in nodes:
            seen = latest.get(n)
            if seen is None or seen[0] < t - 0.6:
                continue
            st = (seen[1].get("camera_status") or {}).get(cam) or {}
            if (
                st.get("state") == "running"
                and st.get("frames", 0) > 0
                and float(st.get("last_frame_at") or 0) >= (seen[0] - 1.5)
            ):
                ok = True
        if not ok:
            out.append(t)
    return out


def fresh_starts(samples: list[tuple[float, str, dict[str, Any]]], cam: str) -> list[float]:
    """The first-frame times of every camera worker ``/health`` showed for ``cam`` (``first_frame_at``): each one a
    tracker that started from nothing."""
    out = set()
    for _t, _node, h in samples:
        st = (h.get("camera_status") or {}).get(cam) or {}
        try:
            first = float(st.get("first_frame_at") or 0.0)
        except (TypeError, ValueError):
            continue
        if first > 0 and math.isfinite(first):
            out.add(first)
    return sorted(out)


def unexplained(
    gap_list: list[tuple[float, float]], disturbances: list[float], watched: tuple[float, float], slack: float = 1.5
) -> list[tuple[float, float]]:
    """The gaps during which every sample showed the camera processing: windows processed and then lost.

    A gap is explained when some sample within ``slack`` seconds of it saw the camera not processing. Gaps outside
    the ``watched`` span (no samples there) are not judged."""
    out = []
    for x, y in gap_list:
        if x < watched[0] + slack or y > watched[1] - slack:
            continue
        if not any(x - slack <= t <= y + slack for t in disturbances):
            out.append((x, y))
    return out


def stalls(
    lost: list[tuple[float, float]],
    samples: list[tuple[float, str, dict[str, Any]]],
    cam: str,
    unwritten: dict[str, int],
    slack: float = 1.5,
    after_s: float = 2.0,
) -> tuple[list[tuple[float, float]], list[dict[str, Any]]]:
    """Split the gaps no sample explains into windows processed and lost, and stalls: seconds in which the worker
    holding the camera processed no frame at all (a loaded machine, a slow inference, a reader behind) though every
    sample showed it running.

    A gap is a stall when every worker seen running ``cam`` within ``slack`` of it (``node/pid``) went on reporting
    at least ``after_s`` after it (its counters read after the gap) and never had a processed frame unwritten
    (``unwritten``, from :func:`frames_unwritten`): every frame it processed is in a file, so nothing was processed
    in the gap. Each stall names its workers and how their capture counters moved over it (frames dropped by
    backpressure, fence pauses, reconnects), so a report shows its cause."""
    keep, stalled = [], []
    holders: dict[str, list[tuple[float, dict[str, Any]]]] = {}  # node/pid -> its readings, in time order
    for t, node, h in sorted(samples, key=lambda s: s[0]):
        st = (h.get("camera_status") or {}).get(cam) or {}
        if st.get("pid") is not None:
            holders.setdefault(f"{node}/{st['pid']}", []).append((t, st))
    for x, y in lost:
        near = {
            k: v
            for k, v in holders.items()
            if any(x - slack <= t <= y + slack and s.get("state") == "running" for t, s in v)
        }
        ok = bool(near) and all(k not in unwritten and v[-1][0] >= y + after_s for k, v in near.items())
        if not ok:
            keep.append((x, y))
            continue
        moved = {}
        for k, v in near.items():
            before = [s for t, s in v if t <= x] or [v[0][1]]
            after = [s for t, s in v if t >= y + after_s] or [v[-1][1]]
            moved[k] = {
                f: int(after[0].get(f, 0) or 0) - int(before[-1].get(f, 0) or 0)
                for f in ("dropped", "fence_pauses", "reconnects")
            }
        stalled.append({"gap": [round(x, 3), round(y, 3)], "workers": moved})
    return keep, stalled


def frame_s(fps: float) -> float:
    return 1.0 / fps if fps > 0 and math.isfinite(fps) else 0.1


def frames_unwritten(samples: list[tuple[float, str, dict[str, Any]]], cam: str) -> dict[str, int]:
    """Frames each camera worker processed and never wrote, from its own counters in ``/health``: per node and
    process, ``frames - frames_written - frames_pending``, the median of its last 5 *distinct* readings (a node
    refreshes ``/health`` about once a second, so consecutive samples repeat one reading; a counter read mid-update
    is off in one reading, a lost window in all of them). A correct worker writes every frame it processed (a fenced
    one closes its window first; a failing disk keeps windows pending); only a worker killed before its flush loses
    its open window, and its last readings were taken before that. Keyed ``node/pid``; only non-zero entries."""
    seen: dict[str, list[tuple[int, int, int]]] = {}
    for _t, node, h in sorted(samples, key=lambda s: s[0]):
        st = (h.get("camera_status") or {}).get(cam) or {}
        if "frames_written" not in st or "frames_pending" not in st:
            continue
        reading = (int(st["frames"]), int(st["frames_written"]), int(st["frames_pending"]))
        readings = seen.setdefault(f"{node}/{st.get('pid', '?')}", [])
        if not readings or readings[-1] != reading:
            readings.append(reading)
    out = {}
    for key, readings in seen.items():
        last = sorted(f - w - p for f, w, p in readings[-5:])
        lost = last[len(last) // 2]
        if lost:
            out[key] = lost
    return out


def windows_ahead(data_dirs: dict[str, Path], store: str, camera: str, since: float, slack_s: float) -> list[str]:
    """Segments of ``camera`` written since ``since`` whose window starts more than ``slack_s`` after the file was
    written (its modification time, from the kernel's clock): stamped by a wall clock ahead of the true time.

    Every date folder of the camera is read (a clock can be off by any amount), but only the names and times of
    files written during the drill; compacted files are left out (their windows are older than their writing)."""
    out: set[str] = set()
    for data_dir in data_dirs.values():
        root = Path(data_dir) / "events" / f"store={store}"
        for path in root.glob(f"date=*/camera={camera}/*.parquet"):
            if "~" in path.stem:
                continue
            try:
                start = int(path.stem.split(".")[1]) / 1000
                written = path.stat().st_mtime
            except (IndexError, ValueError, OSError):
                continue
            if written >= since and start > written + slack_s:
                out.add(path.stem)
    return sorted(out)

"""The drill report: what the health samples say (:func:`detection`, :func:`takeovers`, :func:`boundaries`), why a run
failed (:func:`failures`), median and max over runs (:func:`summarize`) and the terminal table
(:func:`format_report`)."""

from __future__ import annotations

import statistics
from typing import Any

AHEAD_S = 10.0
"""A window that starts this long after its segment file was written was stamped by a clock ahead of the true time
(a file is written after its window ends): a failure."""


def summary_of(h: dict[str, Any]) -> tuple[Any, ...]:
    return (h.get("role"), h.get("leader"), h.get("mode"), tuple(h.get("cameras") or ()))


def detection(samples: list[tuple[float, str, dict[str, Any]]], before: dict[str, Any], t0: float) -> float | None:
    for t, node, h in samples:
        if t > t0 and node in before and summary_of(h) != before[node]:
            return round(t - t0, 2)
    return None


def takeovers(samples: list[tuple[float, str, dict[str, Any]]], t0: float, cams: list[str]) -> dict[str, Any]:
    """Per camera: fault to the first frame of the first actor started after the fault (None: never disturbed).

    ``samples`` end when the fault is repaired: what moves after that (the rebalance once the victim is back) is
    not a takeover.
    """
    out: dict[str, Any] = {}
    for cam in cams:
        firsts = [
            float(st["first_frame_at"])
            for _t, _n, h in samples
            for c, st in (h.get("camera_status") or {}).items()
            if c == cam and float(st.get("first_frame_at") or 0) > t0
        ]
        out[cam] = round(min(firsts) - t0, 2) if firsts else None
    return out


def boundaries(samples: list[tuple[float, str, dict[str, Any]]], cam: str, t0: float) -> list[float]:
    """Every fresh tracker start of ``cam`` after ``t0`` (the span's start: a camera the health monitor moved before
    the fault starts a horizon too)."""
    return sorted(
        {
            float(st["first_frame_at"])
            for _t, _n, h in samples
            for c, st in (h.get("camera_status") or {}).items()
            if c == cam and float(st.get("first_frame_at") or 0) > t0
        }
    )


def failures(r: dict[str, Any], cams: list[str]) -> list[str]:
    """Why the run failed, one line each (empty: it passed)."""
    out = []
    if r["unsafe_break"]:
        out.append(f"a node ran with the test-only break {','.join(r['unsafe_break'])} (EDGEPAIR_UNSAFE_BREAK)")
    if not r["recovered"]:
        out.append("a camera was not processing frames again within 60 s of the fault")
    if r.get("kept_frames"):
        out.append(f"windows a failing disk refused are still held in memory at the end: {r['kept_frames']}")
    if r.get("kept_frames_lost"):
        out.append(f"{r['kept_frames_lost']} frames in windows a failing disk refused were lost with their actor")
    for cam, c in r["cameras"].items():
        if c["double_running_s"] > 0:
            out.append(
                f"{cam}: processed by two producers at once for {c['double_running_s']} s "
                f"({c['double_running_events']} events written by the loser then): {c['double_running'][:3]}"
            )
        if c["frames_unwritten"]:
            out.append(
                f"{cam}: frames processed and never written (lost windows): {c['frames_unwritten']};"
                f" gaps while the camera was processing: {c['unexplained_gaps'][:5]}"
            )
        if c["not_replicated"]:
            out.append(f"{cam}: {len(c['not_replicated'])} windows written but not in the survivor's data")
        if c.get("windows_ahead"):
            out.append(
                f"{cam}: {len(c['windows_ahead'])} windows stamped more than {AHEAD_S:.0f} s after their file was"
                f" written (a clock ahead of the true time): {c['windows_ahead'][:3]}"
            )
        if not c["tokens_monotonic"]:
            out.append(f"{cam}: credited tokens go back in time: {c['tokens']}")
    if r["events_credited_twice"]:
        out.append(f"{r['events_credited_twice']} events credited twice")
    missing = sorted(set(cams) - set(r["running_after"]))
    if missing:
        out.append(f"not running after the drill: {', '.join(missing)}")
    for cam, b in (r.get("baseline") or {}).items():
        if b["verdict"] == "differ":
            out.append(f"{cam}: events outside gaps and horizons differ from the baseline ({b['missing'][:3]} missing, "
                       f"{b['extra'][:3]} extra)")  # fmt: skip
        elif b["verdict"] == "inconclusive":
            out.append(f"{cam}: baseline inconclusive: {b['drill_events_compared']} events compared, "
                       f"at least {b['min_events']} needed (watch longer: --settle)")  # fmt: skip
    return out


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and max of detection, takeover (per camera and overall) and gap; the invariants over all runs."""

    def stats(xs: list[float]) -> dict[str, float | None]:
        return (
            {"median": round(statistics.median(xs), 2), "max": round(max(xs), 2)}
            if xs
            else {"median": None, "max": None}
        )

    take = [v for r in runs for v in r["takeover_s"].values() if v is not None]
    cams = [c for r in runs for c in r["cameras"].values()]
    bases = [b for r in runs for b in (r.get("baseline") or {}).values()]
    margins = [c["handover_margin_s"] for c in cams if c.get("handover_margin_s") is not None]
    return {
        "detection_s": stats([r["detection_s"] for r in runs if r["detection_s"] is not None]),
        "takeover_s": stats(take),
        "gap_s": stats([c["gap_s"] for c in cams]),
        "double_running_s": round(sum(c["double_running_s"] for c in cams), 3),
        "handover_margin_s": {"min": min(margins), "median": round(statistics.median(margins), 3)}
        if margins
        else {"min": None, "median": None},
        "frames_lost": sum(sum(c["frames_unwritten"].values()) for c in cams),
        "windows_not_replicated": sum(len(c["not_replicated"]) for c in cams),
        "events_credited_twice": sum(r["events_credited_twice"] for r in runs),
        "tokens_monotonic": all(r["tokens_monotonic"] for r in runs),
        "baseline_events_compared": min((b["baseline_events_compared"] for b in bases), default=None),
        "baseline_match": bool(bases) and all(b["verdict"] == "match" for b in bases),
        "failures": [f"run {i}: {f}" for i, r in enumerate(runs, 1) for f in r["failures"]],
        "ok": all(r["ok"] for r in runs),
    }


def format_report(report: dict[str, Any]) -> str:
    """The terminal table: one row per run and camera, then the summary."""
    rows = [
        (
            "run",
            "camera",
            "detect s",
            "takeover s",
            "gap s",
            "frames miss",
            "double run s",
            "margin s",
            "lost f/w",
            "events",
            "baseline",
            "tokens",
        )
    ]
    for i, r in enumerate(report["runs"], 1):
        for cam, c in r["cameras"].items():
            b = (r.get("baseline") or {}).get(cam)
            bl = "-" if b is None else f"{b['verdict']} {b['drill_events_compared']}/{b['baseline_events_compared']}"
            margin = c.get("handover_margin_s")
            take = r["takeover_s"].get(cam)
            rows.append(
                (
                    str(i),
                    cam,
                    "-" if r["detection_s"] is None else f"{r['detection_s']:.2f}",
                    "-" if take is None else f"{take:.2f}",
                    f"{c['gap_s']:.1f}",
                    str(c["frames_missing"]),
                    f"{c['double_running_s']:.2f}",
                    "-" if margin is None else f"{margin:.2f}",
                    f"{sum(c['frames_unwritten'].values())}/{len(c['not_replicated'])}",
                    str(c["events"]),
                    bl,
                    ",".join(map(str, c["tokens"])) + ("" if c["tokens_monotonic"] else " !"),
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        f"drill {report['scenario']} x{report['repeat']}: victim {report['runs'][0]['victim']}"
        if report["runs"]
        else ""
    ]
    for j, row in enumerate(rows):
        lines.append(
            "  ".join(v.rjust(w) if i > 1 else v.ljust(w) for i, (v, w) in enumerate(zip(row, widths, strict=True)))
        )
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    s = report["summary"]
    lines.append(
        f"takeover median {s['takeover_s']['median']} s, max {s['takeover_s']['max']} s; "
        f"detection median {s['detection_s']['median']} s; "
        f"gap median {s['gap_s']['median']} s, max {s['gap_s']['max']} s"
    )
    lines.append(
        f"double running: {s['double_running_s']} s (handover margin min {s['handover_margin_s']['min']} s); "
        f"frames processed but never written: {s['frames_lost']}; windows not replicated: "
        f"{s['windows_not_replicated']}; events credited twice: {s['events_credited_twice']}; "
        f"tokens monotonic: {s['tokens_monotonic']}; baseline: "
        + ("match" if s["baseline_match"] else "not shown")
        + f" ({s['baseline_events_compared']} events compared at least); {'PASS' if s['ok'] else 'FAIL'}"
    )
    stalls = [(i, cam, st) for i, r in enumerate(report["runs"], 1) for cam, c in r["cameras"].items()
              for st in c.get("stalls", [])]  # fmt: skip
    lines += [
        f"  stall (run {i}, {cam}): nothing processed in {st['gap'][1] - st['gap'][0]:.1f} s though running; "
        + "; ".join(f"{k}: " + ", ".join(f"{f} +{n}" for f, n in v.items() if n) for k, v in st["workers"].items())
        for i, cam, st in stalls
    ]
    lines += [f"  FAIL: {f}" for f in s["failures"]]
    return "\n".join(lines)

"""The drill report: median and max over runs (:func:`summarize`) and the terminal table (:func:`format_report`)."""

from __future__ import annotations

import statistics
from typing import Any


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

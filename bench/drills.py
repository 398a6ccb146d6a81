"""Failover drill benchmark: kill-node and kill-leader N times each (default 10) on a local pair.

Prints median and max takeover time against the targets (median <= 3 s, max <= 6 s), events credited twice (must be
0) and whether the events outside the reported gaps match the undisturbed baseline (0 lost). Usage:

    PYTHONPATH=. python bench/drills.py [--repeat 10] [--config cluster/examples/pair.yaml] [--no-baseline]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

import yaml

from cluster.drill import run_drill
from cluster.drill_report import format_report
from cluster.pair import pair_down, pair_up


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--config", default="cluster/examples/pair.yaml")
    p.add_argument("--scenarios", default="kill-node,kill-leader")
    p.add_argument("--no-baseline", action="store_true", help="skip the baseline replay (faster)")
    p.add_argument("--pre-s", type=float, default=10.0, help="seconds watched before each fault")
    p.add_argument("--settle-s", type=float, default=10.0, help="seconds the pair runs whole again before measuring")
    p.add_argument("--json", default=None, help="write every report here")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    failed = False
    out = {}
    with tempfile.TemporaryDirectory(prefix="edgepair-bench-drills-") as tmp:
        cfg = yaml.safe_load(Path(args.config).read_text())
        cfg["storage"]["data_dir"] = str(Path(tmp) / "data")
        config = Path(tmp) / "pair.yaml"
        config.write_text(yaml.safe_dump(cfg, sort_keys=False))
        run_dir = Path(tmp) / "run"
        pair_up(config, run_dir, wait_s=180)
        try:
            for scenario in args.scenarios.split(","):
                rep = run_drill(
                    run_dir,
                    scenario,
                    repeat=args.repeat,
                    baseline=not args.no_baseline,
                    pre_s=args.pre_s,
                    settle_s=args.settle_s,
                )
                out[scenario] = rep
                print(format_report(rep))
                s = rep["summary"]
                take = s["takeover_s"]
                on_target = take["median"] is not None and take["median"] <= 3.0 and take["max"] <= 6.0
                print(
                    f"{scenario}: takeover median {take['median']} s (target <= 3), max {take['max']} s (target <= 6)"
                    f" {'ON TARGET' if on_target else 'OFF TARGET'}; credited twice {s['events_credited_twice']};"
                    f" lost outside gaps: {'0' if s['baseline_match'] else 'SOME (see the JSON)'}\n"
                )
                failed = failed or not (on_target and s["ok"])
        finally:
            pair_down(run_dir)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

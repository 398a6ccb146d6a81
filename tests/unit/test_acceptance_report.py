"""The acceptance report's arithmetic (accuracy, Garwood interval, verdict) and calibrate's config rewriting."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.events import LINE_CROSS, Event
from cluster.acceptance import Window, garwood, judge, load_truth, report
from cluster.calibrate import Calibration, Candidate, updated_config_text
from cluster.config import parse_config
from cluster.errors import ConfigError


@pytest.mark.parametrize(
    ("counted", "true", "accuracy", "ci", "passed", "conclusive"),
    [
        pytest.param(40, 40, 1.0, [0.9078, 1.0], True, False, id="perfect-but-few-crossings"),
        pytest.param(200, 200, 1.0, [0.9816, 1.0], True, True, id="perfect-and-enough"),
        pytest.param(38, 40, 0.95, [0.8194, 0.9939], True, False, id="on-target-inconclusive"),
        pytest.param(42, 40, 0.95, [0.8194, 0.9939], True, False, id="over-count-same-as-under"),
        pytest.param(30, 40, 0.75, [0.5402, 0.8801], False, True, id="clearly-below"),
    ],
)
def test_judge(counted: int, true: int, accuracy: float, ci: list[float], passed: bool, conclusive: bool) -> None:
    r = judge(counted, true, 0.95)
    assert (r["accuracy"], r["accuracy_ci95"], r["pass"], r["conclusive"]) == (accuracy, ci, passed, conclusive)


def test_judge_without_true_crossings() -> None:
    assert judge(0, 0)["pass"] is True and judge(0, 0)["accuracy"] is None
    assert judge(3, 0)["pass"] is False and "yet 3 counted" in judge(3, 0)["reason"]


def test_garwood_tabulated_values() -> None:
    # Garwood (1936): k=0 -> [0, 3.689], k=3 -> [0.619, 8.767]
    assert [round(x, 3) for x in garwood(0)] == [0.0, 3.689]
    assert [round(x, 3) for x in garwood(3)] == [0.619, 8.767]


CONFIG = """\
# my store
store: {id: s1, timezone: Europe/London}
model:
  threshold: 0.5   # old
cameras:
  - id: cam-1
    source: /dev/null
    lines:
      - {id: door, start: [0.1, 0.5], end: [0.9, 0.5], in_point: [0.5, 0.9]}
      - {id: back, start: [0.5, 0.1], end: [0.5, 0.9], in_point: [0.9, 0.5]}
tracking:
  min_hits: 3

storage: {data_dir: data}
# end
"""


def test_report_per_line_and_direction() -> None:
    cfg = parse_config(CONFIG, source="t.yaml", base_dir=Path("/tmp"))
    ev = [Event(1.0, "cam-1", 1, LINE_CROSS, line_id="door", direction="in")] * 19
    rep = report(cfg, Window("cam-1", 0.0, 60.0, 600, ev), {"door": {"in": 20, "out": 0}}, 0.95)
    assert [(r["line"], r["direction"], r["counted"], r["true"], r["pass"]) for r in rep["rows"]] == [
        ("door", "in", 19, 20, True),
        ("door", "out", 0, 0, True),
    ]
    assert rep["pass"] is True and rep["conclusive"] is False and rep["window_s"] == 60.0
    with pytest.raises(ConfigError, match=r"name lines \['side'\] that camera cam-1 does not have"):
        report(cfg, Window("cam-1", 0.0, 1.0, 10, []), {"side": {"in": 1, "out": 0}})


def test_load_truth_rejects_bad_counts(tmp_path: Path) -> None:
    p = tmp_path / "t.yaml"
    p.write_text("door: {in: 3, out: -1}\n")
    with pytest.raises(ConfigError, match="line door out: expected a count"):
        load_truth(p)
    p.write_text("door: {in: 3}\n")
    assert load_truth(p) == {"door": {"in": 3, "out": 0}}


def test_calibrate_rewrites_model_and_tracking_keeping_the_rest() -> None:
    cfg = parse_config(CONFIG, source="t.yaml", base_dir=Path("/tmp"))
    fig = {"count_error_pct": 4.2, "lines": 48, "true": 300, "counted": 290}
    cal = Calibration(Candidate(2, 0.3, 0.5, 0.6, 2), Candidate(1, 0.5, 0.5, 0.6, 3), fig, fig, fig, [], 12, "labels")
    text = updated_config_text(CONFIG, cfg, cal)
    assert text.startswith("# my store\nstore:") and text.endswith("storage: {data_dir: data}\n# end\n")
    assert "# old" not in text and "min_hits: 3" not in text
    assert "# calibrate: edgepair calibrate" in text and "held-out count error 4.2 % on 48 lines" in text
    new = parse_config(text, source="t.yaml", base_dir=Path("/tmp"))
    assert (new.model.threshold, new.model.tiles, new.tracking.min_hits) == (0.3, 2, 2)
    assert new.cameras == cfg.cameras
    # a second calibration replaces the first one's comment and sections
    again = updated_config_text(text, new, cal)
    assert again == text

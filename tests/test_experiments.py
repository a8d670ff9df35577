"""Aggregation helpers used by benchmarks and reports."""

from __future__ import annotations

import json
import math
from pathlib import Path

from codistill.experiments import aggregate, format_mean_std, mean_std, read_cells


def test_mean_std_sample_std() -> None:
    mean, std, n = mean_std([0.5, 0.7, 0.9])
    assert n == 3 and math.isclose(mean, 0.7) and math.isclose(std, 0.2)
    assert mean_std([0.4]) == (0.4, 0.0, 1)
    assert mean_std([])[2] == 0 and math.isnan(mean_std([])[0])


def test_aggregate_groups_and_format(tmp_path: Path) -> None:
    cells = [{"method": "kd", "k": 8, "seed": s, "test": {"accuracy": a}} for s, a in enumerate([0.6, 0.7])]
    cells.append({"method": "kd", "k": 16, "seed": 0, "test": {"accuracy": 0.8}})
    for i, c in enumerate(cells):
        (tmp_path / str(i)).mkdir()
        (tmp_path / str(i) / "metrics.json").write_text(json.dumps(c))
    (tmp_path / "unfinished").mkdir()  # no metrics.json: not a finished cell
    read = read_cells(tmp_path)
    assert len(read) == 3
    stats = aggregate(read, ["method", "k"], lambda c: c["test"]["accuracy"])
    assert list(stats) == [("kd", 8), ("kd", 16)]
    assert format_mean_std(stats[("kd", 8)]) == "65.0 ± 7.1"
    assert format_mean_std(stats[("kd", 16)]) == "80.0 ± 0.0"
    assert format_mean_std((float("nan"), float("nan"), 0)) == "-"

"""Grids of runs and their summaries: one result file per cell, aggregated into mean ± std tables."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence


def read_cells(root: str | Path, pattern: str = "**/metrics.json") -> list[dict[str, Any]]:
    """Every completed cell under ``root`` (a ``metrics.json`` exists only once a run has finished)."""
    return [json.loads(p.read_text()) for p in sorted(Path(root).glob(pattern))]


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (0 for one value) and count; NaN mean for no values."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not vals:
        return float("nan"), float("nan"), 0
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0, len(vals)


def aggregate(cells: Iterable[dict[str, Any]], keys: Sequence[str],
              value: Callable[[dict[str, Any]], float]) -> dict[tuple, tuple[float, float, int]]:
    """Group cells by ``keys`` and return mean, std and count of ``value(cell)`` per group."""
    groups: dict[tuple, list[float]] = {}
    for cell in cells:
        groups.setdefault(tuple(cell[k] for k in keys), []).append(value(cell))
    return {group: mean_std(vals) for group, vals in sorted(groups.items())}


def format_mean_std(stats: tuple[float, float, int], scale: float = 100.0, digits: int = 1) -> str:
    mean, std, n = stats
    if n == 0:
        return "-"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"

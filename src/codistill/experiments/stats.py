"""Statistics over cells: mean ± sample std per group, and paired per-seed differences with a t-interval."""

from __future__ import annotations

import math
import statistics
from typing import Any, Callable, Iterable, Sequence


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
    return {group: mean_std(vals) for group, vals in sorted(groups.items(), key=lambda kv: str(kv[0]))}


def format_mean_std(stats: tuple[float, float, int], scale: float = 100.0, digits: int = 1) -> str:
    mean, std, n = stats
    if n == 0:
        return "-"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def paired_difference(a: dict[int, float], b: dict[int, float]) -> dict[str, Any]:
    """Per-seed differences ``a[s] - b[s]`` over the seeds both have: mean, a 95% t-interval, wins."""
    from scipy import stats

    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds]
    mean, std, n = mean_std(diffs)
    half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n) if n > 1 else float("nan")
    return {"n": n, "mean": mean, "ci_low": mean - half, "ci_high": mean + half,
            "wins": sum(d > 0 for d in diffs), "diffs": diffs, "seeds": seeds}


def format_paired(d: dict[str, Any] | None, scale: float = 100.0, digits: int = 1) -> str:
    """A :func:`paired_difference` as ``+mean [low, high] (won/n)``; no interval for one pair, ``-`` for none."""
    if not d or not d.get("n"):
        return "-"
    ci = "" if d["n"] < 2 else f" [{d['ci_low'] * scale:+.{digits}f}, {d['ci_high'] * scale:+.{digits}f}]"
    return f"{d['mean'] * scale:+.{digits}f}{ci} ({d['wins']}/{d['n']})"

"""Grids of runs (datasets × methods × CoD × k × seeds): configuration (:mod:`.grid`), artifacts keyed by
what made them (:mod:`.artifacts`), running them locally or on Ray (:mod:`.runner`), statistics
(:mod:`.stats`) and reports (:mod:`.report`)."""

from codistill.experiments.grid import (
    COD_CHOICES,
    Cell,
    DatasetEntry,
    SweepConfig,
    demo_config,
    method_label,
    plan_cells,
)
from codistill.experiments.report import build_report, read_cells, summarize
from codistill.experiments.runner import run_sweep
from codistill.experiments.stats import aggregate, format_mean_std, mean_std, paired_difference

__all__ = ["COD_CHOICES", "Cell", "DatasetEntry", "SweepConfig", "aggregate", "build_report", "demo_config",
           "format_mean_std", "mean_std", "method_label", "paired_difference", "plan_cells", "read_cells",
           "run_sweep", "summarize"]

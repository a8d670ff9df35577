"""Grids of runs (datasets × methods × CoD × k × seeds): configuration (:mod:`.grid`), artifacts keyed by
what made them (:mod:`.artifacts`), running them locally or on Ray (:mod:`.runner`), statistics
(:mod:`.stats`) and reports (:mod:`.report`)."""

from codistill.experiments.grid import DatasetEntry, SweepConfig, demo_config, plan_cells
from codistill.experiments.report import build_report, read_cells
from codistill.experiments.runner import run_sweep

__all__ = ["DatasetEntry", "SweepConfig", "build_report", "demo_config", "plan_cells", "read_cells", "run_sweep"]

"""Sweeps on Ray: the same cells as the local pool (needs the optional extra: pip install 'codistill[ray]')."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from conftest import synthetic_rows, write_csv

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow  # starting a Ray cluster and its workers takes about a minute on 2 cores


def _rows(path: Path) -> list[dict]:
    with open(path) as fh:
        return [{k: v for k, v in r.items() if k != "train_seconds"} for r in csv.DictReader(fh)]


def test_ray_executor_gives_the_local_pools_cells(tmp_path: Path, tiny_teacher: Path, tiny_student: Path) -> None:
    from codistill.experiments import SweepConfig, build_report, run_sweep

    folder = tmp_path / "toy"
    write_csv(folder / "train.csv", synthetic_rows(40, seed=1))
    write_csv(folder / "test.csv", synthetic_rows(16, seed=3))
    base = dict(datasets=[{"data": str(folder), "teacher": str(tiny_teacher),
                           "options": {"label_names": ["negative", "positive"]}}],
                methods=["kd", "finetune"], cod=["none"], k=[4], seeds=[0, 1],
                student={"model": str(tiny_student), "layers": 1},
                train={"epochs": 1, "min_steps": 3, "batch_size": 4, "max_length": 32, "probe_steps": 0})
    local = SweepConfig(out=str(tmp_path / "local"), workers=2, **base)
    run_sweep(local, progress=False)
    build_report(local.out)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = SweepConfig(out=str(tmp_path / "ray"), executor="ray", **base)
        result = run_sweep(remote, progress=False)
    finally:
        ray.shutdown()
    assert result["ran"] == result["finished"] == 4
    build_report(remote.out)
    assert _rows(Path(remote.out) / "cells.csv") == _rows(Path(local.out) / "cells.csv")

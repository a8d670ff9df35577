"""codistill: few-shot distillation of text classifiers with counterfactual explanations (CoD).

The public surface, importable from the package itself::

    from codistill import RunConfig, distill, load_dataset

    dataset = load_dataset("tweets")
    result = distill(dataset, RunConfig(teacher="runs/teacher", k=16, seed=0), "runs/student")

Names are loaded on first use, so ``import codistill`` (and the command line's ``--help``) does not import
torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it
_PUBLIC = {
    "DataConfig": "codistill.config",
    "DistillConfig": "codistill.config",
    "LossTerm": "codistill.config",
    "RunConfig": "codistill.config",
    "StudentConfig": "codistill.config",
    "TrainConfig": "codistill.config",
    "TEACHER_TRAIN": "codistill.config",
    "load_dataset": "codistill.data",
    "sample_from": "codistill.data",
    "counterfactuals_for_run": "codistill.counterfactuals.generate",
    "distill": "codistill.runs",
    "train_teacher": "codistill.runs",
    "DistillResult": "codistill.runs",
    "SweepConfig": "codistill.experiments",
    "run_sweep": "codistill.experiments",
    "build_report": "codistill.experiments",
    "export_onnx": "codistill.export",
    "load_predictor": "codistill.predict",
    "predict_file": "codistill.predict",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'codistill' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)

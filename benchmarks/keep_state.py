"""Keep a sweep folder's finished work without its weights, so the sweep resumes on another machine.

    python benchmarks/keep_state.py runs/paper_sst2_default benchmarks/state/paper_sst2_default
    # elsewhere, later:
    mkdir -p runs && cp -r benchmarks/state/paper_sst2_default runs/ && codistill sweep CONFIG

Copies everything (sweep.json, each cell's metrics, logs and config, counterfactual files, the teacher's saved
predictions, an endpoint teacher's answer cache) except the teachers the sweep trained (their folders hold the
weights; a teacher is keyed by its recipe, so the sweep trains it again and reuses every finished cell) and any
other model weights (students kept with ``save_models``). The destination is replaced as a whole.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

WEIGHTS = ("*.safetensors", "*.bin", "*.onnx", "*.pt")


def keep_state(src: Path, dest: Path) -> int:
    """Copy ``src`` to ``dest`` without weights; returns the number of files kept."""
    if not (src / "sweep.json").is_file():
        raise SystemExit(f"{src}: not a sweep folder (no sweep.json)")
    teachers = src / "teachers"

    def ignore(folder: str, names: list[str]) -> set[str]:
        here = Path(folder)
        skip = {n for n in names if any(Path(n).match(p) for p in WEIGHTS) or n.startswith(".")}
        if here == teachers:  # the trained teachers' folders; their saved predictions (files) stay
            skip |= {n for n in names if (here / n).is_dir()}
        return skip

    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=ignore)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return sum(1 for p in dest.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src", type=Path, help="the sweep folder (its sweep.json)")
    p.add_argument("dest", type=Path, help="where to keep it (replaced)")
    a = p.parse_args(argv)
    n = keep_state(a.src, a.dest)
    print(f"kept {n} files of {a.src} in {a.dest}", file=sys.stderr)


if __name__ == "__main__":
    main()

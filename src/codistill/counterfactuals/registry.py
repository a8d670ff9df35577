"""The generators by name: a spec ``{"name": "edits" | "llm" | "chain", **options}`` becomes validated
options and a generator. Sweeps, runs and the command line all build generators here."""

from __future__ import annotations

from typing import Any

from codistill.config import build_config
from codistill.counterfactuals.base import CounterfactualGenerator
from codistill.counterfactuals.chain import ChainConfig, ChainGenerator
from codistill.counterfactuals.edits import EditSearchConfig
from codistill.counterfactuals.llm import LLMConfig
from codistill.errors import ConfigError

GENERATORS = {"edits": EditSearchConfig, "llm": LLMConfig, "chain": ChainConfig}


def default_generator() -> dict[str, Any]:
    """The generator a run or sweep uses unless told otherwise: the offline edit search, its defaults."""
    return {"name": "edits"}
# what ``codistill counterfactuals --generator`` accepts: a generator, the LLM then the edit search, or a
# chain spelled out in a config file
COMMAND_GENERATORS = ("edits", "llm", "llm+edits", "chain")


def generator_config(spec: Any, default_cache_dir: str | None = None, where: str = "generator"):
    """The validated options of a generator spec (a chain's members are validated too)."""
    if not isinstance(spec, dict) or spec.get("name") not in GENERATORS:
        name = spec.get("name") if isinstance(spec, dict) else spec
        raise ConfigError(f"{where}.name: must be one of {', '.join(GENERATORS)}, got {name!r}")
    opts = {k: v for k, v in spec.items() if k != "name"}
    if spec["name"] == "llm" and default_cache_dir is not None:
        opts.setdefault("cache_dir", default_cache_dir)
    cfg = build_config(GENERATORS[spec["name"]], opts, where)
    if isinstance(cfg, ChainConfig):
        for i, member in enumerate(cfg.generators):
            generator_config(member, default_cache_dir, where=f"{where}.generators[{i}]")
    return cfg


def make_generator(spec: dict, default_cache_dir: str | None = None, where: str = "generator") -> CounterfactualGenerator:
    """A generator from its spec."""
    cfg = generator_config(spec, default_cache_dir, where)
    if isinstance(cfg, ChainConfig):
        return ChainGenerator([make_generator(member, default_cache_dir, where=f"{where}.generators[{i}]")
                               for i, member in enumerate(cfg.generators)])
    return cfg.build()


def command_spec(name: str, options: dict[str, dict[str, Any]], section: dict[str, Any]) -> dict[str, Any]:
    """The spec ``codistill counterfactuals --generator NAME`` stands for: ``options`` holds the flags given
    per generator (``{"edits": {...}, "llm": {...}}``), ``section`` a config file's ``generator`` options
    (for the named generator; for ``llm+edits``, the LLM's)."""
    if name not in COMMAND_GENERATORS:
        raise ConfigError(f"--generator: must be one of {', '.join(COMMAND_GENERATORS)}, got {name!r}")
    if name == "llm+edits":  # the LLM first, the edit search for the originals it could not flip
        return {"name": "chain", "generators": [{**section, **options["llm"], "name": "llm"},
                                                {**options["edits"], "name": "edits"}]}
    if name == "chain":  # its members come from the config file's generator section
        given = [flag for opts in options.values() for flag in opts]
        if given:
            raise ConfigError(f"--{given[0].replace('_', '-')}: a chain's options go in its config file's "
                              "generator.generators list")
        return {**section, "name": "chain"}
    other = "llm" if name == "edits" else "edits"
    if options[other]:
        raise ConfigError(f"--{next(iter(options[other])).replace('_', '-')} is an option of the other generator, "
                          f"not of --generator {name}")
    return {**section, **options[name], "name": name}

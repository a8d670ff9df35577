"""Generators combined: each one in turn, the later ones only on the originals the earlier ones did not flip
(e.g. a local LLM first for fluent edits, then the edit search for what it could not flip)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from codistill.counterfactuals.base import CFRequest, CFResult, CounterfactualGenerator
from codistill.errors import ConfigError


@dataclass
class ChainConfig:
    """Options of a chain: ``generators``, a list of generator specs (``{"name": "llm", ...}``,
    ``{"name": "edits", ...}``) tried in order. The registry (:mod:`.registry`) validates and builds each."""

    generators: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.generators, list) or len(self.generators) < 2:
            raise ConfigError("generator.generators: a chain needs a list of at least two generator specs")
        for i, spec in enumerate(self.generators):
            if isinstance(spec, dict) and spec.get("name") == "chain":
                raise ConfigError(f"generator.generators[{i}]: a chain cannot hold another chain")


class ChainGenerator(CounterfactualGenerator):
    """Runs ``generators`` in order; an original's attempts are those of every generator that tried it, so
    its counterfactual is the first flip found (the earlier generator's when both could)."""

    def __init__(self, generators: Sequence[CounterfactualGenerator]) -> None:
        self.generators = list(generators)
        self.name = "+".join(g.name for g in self.generators)

    @property
    def fatal(self) -> str | None:
        return next((g.fatal for g in self.generators if getattr(g, "fatal", None)), None)

    def generate(self, requests: Sequence[CFRequest], verifier, label_names: Sequence[str],
                 progress: bool = True) -> list[CFResult]:
        requests = list(requests)
        results = self.generators[0].generate(requests, verifier, label_names, progress=progress)
        for gen in self.generators[1:]:
            todo = [i for i, r in enumerate(results) if not r.flipped]
            if not todo:
                break
            later = gen.generate([requests[i] for i in todo], verifier, label_names, progress=progress)
            for i, res in zip(todo, later):
                results[i].attempts += res.attempts
                for key, value in res.usage.items():
                    results[i].usage[key] = results[i].usage.get(key, 0) + value
                if res.flipped:
                    results[i].generator = res.generator
        return results

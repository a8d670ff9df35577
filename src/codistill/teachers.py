"""The teacher a run distills: a PyTorch classifier (a folder or Hub name) or a chat model behind an
OpenAI-compatible endpoint (``llm:MODEL`` or a spec file, :mod:`codistill.llm_teacher`). This module decides
which a ``--teacher`` value names, loads it, and scores and evaluates texts with it, so runs, counterfactual
generation and the trainer treat both alike. An endpoint teacher gives class probabilities only: methods that
match hidden states, and students copied from the teacher, need a PyTorch teacher.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence, Union

from codistill.config import TrainConfig
from codistill.errors import ConfigError

if TYPE_CHECKING:
    from codistill.config import RunConfig
    from codistill.data import LabeledTexts, TextDataset
    from codistill.llm_teacher import LLMTeacher
    from codistill.models import Classifier

    Teacher = Union[Classifier, LLMTeacher]


def is_endpoint_teacher(spec: str | None) -> bool:
    """Whether a ``--teacher`` value names an endpoint teacher (``llm:MODEL`` or a ``.yaml``/``.json`` spec)."""
    from codistill.llm_teacher import is_llm_teacher_spec

    return spec is not None and is_llm_teacher_spec(str(spec))


def check_llm_options(spec: str | None, options: dict[str, Any] | None) -> None:
    """Endpoint-teacher options (``llm_teacher``) are for an endpoint teacher only, and valid: checked before
    anything loads (no request is sent). The model is named by the teacher value itself."""
    if not options and not is_endpoint_teacher(spec):
        return
    if not is_endpoint_teacher(spec):
        raise ConfigError(f"llm_teacher options apply to an endpoint teacher (--teacher llm:MODEL or a .yaml/.json "
                          f"spec); the teacher '{spec}' is a classifier")
    if "model" in (options or {}):
        raise ConfigError(f"llm_teacher.model: the model is named by the teacher value ('{spec}'), not an option")
    from codistill.llm_teacher import LLMTeacherConfig

    LLMTeacherConfig.from_spec(str(spec), **(options or {}))


def check_endpoint_terms(specs, endpoint: bool, student_init: str = "pretrained") -> None:
    """An endpoint teacher gives class probabilities only: no loss term may read its hidden states or sentence
    embedding, and no student may be copied from it."""
    if endpoint and (student_init == "teacher" or any(s.kind.teacher_layers or s.kind.teacher_pooled for s in specs)):
        raise ConfigError("an endpoint teacher gives class probabilities only: matching its hidden states or "
                          "sentence embedding (lwd, ted, kd_rep) and copying it into the student "
                          "(--student-init teacher) need a PyTorch teacher (use kd with a pretrained student)")


def load_teacher(spec: str, label_names: Sequence[str], *, llm_options: dict[str, Any] | None = None,
                 examples: LabeledTexts | None = None, seed: int = 0) -> Teacher:
    """The teacher ``spec`` names, ready to score: a frozen :class:`~codistill.models.Classifier`, or an
    :class:`~codistill.llm_teacher.LLMTeacher` over ``label_names`` (``llm_options`` override its spec; its
    in-context examples are drawn from ``examples`` with ``seed``)."""
    check_llm_options(spec, llm_options)
    if is_endpoint_teacher(spec):
        from codistill.llm_teacher import LLMTeacher, LLMTeacherConfig

        return LLMTeacher(LLMTeacherConfig.from_spec(str(spec), **(llm_options or {})), label_names, examples, seed)
    from codistill.models import load_classifier

    teacher = load_classifier(str(spec), what="teacher")
    teacher.model.requires_grad_(False)
    return teacher


def is_classifier(teacher: Any) -> bool:
    from codistill.models import Classifier

    return isinstance(teacher, Classifier)


def evaluate_teacher(teacher: Teacher, data: LabeledTexts, num_classes: int,
                     batch_size: int = TrainConfig.eval_batch_size, max_length: int = TrainConfig.max_length,
                     progress: bool = True) -> tuple[dict[str, float], list[int]]:
    """The teacher's metrics on ``data`` and its predictions (for agreement)."""
    from codistill.evaluate import classification_metrics, evaluate_split

    if is_classifier(teacher):
        return evaluate_split(teacher, data, num_classes, batch_size, max_length, progress=progress)
    pred = teacher.predict_proba(list(data.texts), progress=progress).argmax(-1).tolist()
    return classification_metrics(list(data.labels), pred, num_classes), pred


def teacher_verifier(teacher: Teacher, max_length: int = TrainConfig.max_length, pool: Sequence[str] | None = None):
    """The :class:`~codistill.counterfactuals.verify.Verifier` that judges counterfactuals with this teacher.

    A classifier scores everything. An LLM teacher with ``llm_teacher.proxy_rows`` > 0 and a non-empty
    ``pool`` (unlabelled texts, e.g. the training split) labels ``proxy_rows`` texts drawn from the pool, a
    local proxy (:mod:`codistill.counterfactuals.proxy`, on ``proxy_encoder``) is fitted to its answers and
    scores the search's candidates, and the LLM judges only the candidates the proxy says flip it (at most
    ``proxy_tries`` per original); the proxy's ``info`` is kept as ``verifier.proxy_info``. Otherwise the
    LLM scores every text.
    """
    from codistill.counterfactuals.verify import Verifier

    if is_classifier(teacher):
        return Verifier.from_classifier(teacher, max_length=max_length)

    def ask(texts: Sequence[str]):
        return teacher.predict_proba(list(texts))

    cfg = teacher.cfg
    if cfg.proxy_rows == 0 or not pool:
        return Verifier(ask)
    from codistill.counterfactuals.proxy import fit_proxy, proxy_rows_from

    texts = proxy_rows_from(pool, cfg.proxy_rows, 0)
    proxy = fit_proxy(texts, ask(texts), cfg.proxy_encoder, what="llm_teacher.proxy_encoder")
    verifier = Verifier(proxy, judge=ask, judge_tries=cfg.proxy_tries)
    verifier.proxy_info = proxy.info
    return verifier


def describe_teacher(teacher: Teacher) -> dict[str, Any]:
    """What a run records about its teacher: parameters (a classifier) or the endpoint's requests, tokens,
    seconds and estimate (an LLM)."""
    if is_classifier(teacher):
        return {"kind": "classifier", "parameters": teacher.num_parameters()}
    return {"kind": "endpoint", **teacher.stats()}


def in_context_rows(dataset: "TextDataset", run: "RunConfig") -> LabeledTexts | None:
    """The labelled rows an endpoint teacher takes its in-context examples from: the first
    ``llm_teacher.examples`` rows of the seed's nested k-shot sample. Every run of one seed, KD or CoD at any
    k, so asks the same teacher, and the examples are always among the run's own labelled originals (never
    extra labels). ``None`` for a classifier or a zero-shot teacher; a run with fewer originals than examples
    is refused."""
    if not is_endpoint_teacher(run.teacher):
        return None
    from codistill import cod as cod_rules
    from codistill.data import LabeledTexts, sample_from
    from codistill.llm_teacher import LLMTeacherConfig

    wanted = LLMTeacherConfig.from_spec(str(run.teacher), **(run.llm_teacher or {})).examples
    if wanted == 0:
        return None
    originals = cod_rules.originals(run.k, run.cod, dataset.num_classes)
    if wanted > originals:
        raise ConfigError(f"llm_teacher.examples = {wanted} is more than the {originals} labelled originals of this "
                          f"run (k={run.k}{', CoD' if run.cod else ''}): the teacher's in-context examples come from "
                          "them; lower it")
    classes = dataset.num_classes
    sample = sample_from(dataset, -(-wanted // classes) * classes, run.seed)  # nested: a prefix of every larger one
    return LabeledTexts(sample.texts[:wanted], sample.labels[:wanted])


def answers_validation(teacher: str | None, train: TrainConfig) -> bool:
    """Whether a run asks its teacher about the validation split: a classifier always (the student's agreement
    there costs nothing), an endpoint teacher only when training evaluates on validation (``eval_points``),
    since every answer is a request."""
    return not is_endpoint_teacher(teacher) or train.uses_validation

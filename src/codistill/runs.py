"""Runs: distill a student or train a teacher, evaluate it and write a run folder.

Flow of :func:`distill`: check every input -> k-shot sample (+ counterfactual rows) -> student -> trainer
(:func:`codistill.trainer.train_classifier`) -> test metrics -> files written atomically, ``metrics.json``
last. The training itself lives in :mod:`codistill.trainer`, which touches no file.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Sequence

import torch

from codistill import cod as cod_rules
from codistill.config import (
    DEFAULT_FLUENCY_LM,
    DistillConfig,
    LayerMatch,
    RunConfig,
    TrainConfig,
    method_terms,
    teacher_train_config,
    uniform_layer_map,
)
from codistill.counterfactuals.registry import default_generator, generator_config, make_generator
from codistill.counterfactuals.rows import counterfactual_split
from codistill.data import LabeledTexts, TextDataset, sample_from, stratified_subset, texts_fingerprint
from codistill.errors import ConfigError
from codistill.evaluate import evaluate_split, reference_protocol
from codistill.fileio import atomic_write_json, atomic_write_jsonl, atomic_write_text, check_output, source_files
from codistill.models import (
    Classifier,
    check_layer_map,
    check_teacher_labels,
    label_names,
    load_classifier,
    make_student,
    same_tokenizer,
)
from codistill.teachers import (
    answers_validation,
    check_endpoint_terms,
    check_llm_options,
    describe_teacher,
    evaluate_teacher,
    in_context_rows,
    is_classifier,
    is_endpoint_teacher,
    load_teacher,
    teacher_verifier,
)
from codistill.trainer import TrainSummary, seed_everything, train_classifier

# -- checks made before anything trains -----------------------------------------------------------------


def _check_inputs(teacher: Classifier | None, student: Classifier, dataset: TextDataset, dcfg: DistillConfig) -> None:
    """``teacher``: the PyTorch teacher (``None`` for an endpoint teacher, which answers over the dataset's
    own label names, and for ``finetune``); its labels were checked when it loaded."""
    if student.model.config.num_labels != dataset.num_classes:
        raise ConfigError(f"the student has {student.model.config.num_labels} labels but the dataset has {dataset.num_classes}")
    for term in method_terms(dcfg):
        if not term.kind.teacher_layers:
            continue
        if not same_tokenizer(teacher.tokenizer, student.tokenizer):
            raise ConfigError(
                f"method '{dcfg.method}' matches hidden states token by token, so teacher and student need the "
                "same tokenizer; these differ (use kd, or a student from the teacher's family)")
        pairs: Sequence[LayerMatch] = term.layers or uniform_layer_map(student.num_layers, teacher.num_layers,
                                                                       term.include_embeddings)
        check_layer_map(pairs, student.num_layers, teacher.num_layers)


# -- results ----------------------------------------------------------------------------------------------


@dataclass
class DistillResult:
    """The outcome of :func:`distill`, written to ``metrics.json`` by :meth:`to_dict` (training figures
    flattened in)."""

    dataset: str
    method: str
    k: int
    seed: int
    cod: str | None
    n_train: int
    n_originals: int
    n_counterfactuals: int
    counterfactuals_skipped: int
    test: dict[str, float]
    validation: dict[str, float] | None
    teacher_test: dict[str, float] | None
    student_parameters: int
    teacher_parameters: int | None
    wall_seconds: float
    training: TrainSummary
    rounds: dict[str, Any] | None = None
    generated: dict[str, Any] | None = None  # the counterfactual file the run made itself: path and figures
    teacher_validation: dict[str, float] | None = None
    reference: dict[str, Any] | None = None  # the reference protocol's figure (evaluate.reference_protocol)
    teacher_info: dict[str, Any] | None = None  # teachers.describe_teacher: an endpoint's requests and tokens
    counterfactuals_far_from_boundary: int = 0  # dropped by cf.max_target_prob
    counterfactuals_rebalanced: int = 0  # dropped by cf.rebalance
    warnings: list[str] = field(default_factory=list)  # what the user should know about the result (CLI prints them)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "training"}
        out.update({k: v for k, v in asdict(self.training).items() if k != "log"})
        return out


def _environment() -> dict[str, Any]:
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "device": "cuda:" + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
            "threads": torch.get_num_threads()}


def write_run(out: Path, model: Classifier | None, metrics: dict, config: dict, log: list[dict]) -> None:
    """Write the model (``save_pretrained``: the folder loads with ``transformers.pipeline``), the resolved
    run config, the log, and ``metrics.json`` last: its presence means the run is complete."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").unlink(missing_ok=True)
    if model is not None:
        model.model.save_pretrained(out)
        model.tokenizer.save_pretrained(out)
    atomic_write_json(out / "run_config.json", config)
    atomic_write_text(out / "train_log.jsonl", "".join(json.dumps(r) + "\n" for r in log))
    atomic_write_json(out / "metrics.json", metrics)


# -- distill -----------------------------------------------------------------------------------------------


def training_rows(dataset: TextDataset, run: RunConfig):
    """The k-shot sample (k/2 originals for CoD) and the rows the student trains on, with counts of the
    counterfactuals added and skipped (a CoD run's chosen by ``run.cf``)."""
    from codistill.counterfactuals.rows import cod_examples, extra_examples

    sample = sample_from(dataset, cod_rules.originals(run.k, run.cod, dataset.num_classes), run.seed)
    rows = sample.as_split()
    info = {"added": 0, "skipped_not_flipped": 0}
    if run.counterfactuals is not None:
        extra, info = (extra_examples(run.counterfactuals, dataset.label_names) if run.cod is None
                       else cod_examples(run.counterfactuals, sample, dataset.label_names, every=run.cod == "multi",
                                         use=run.cf))
        if run.cod is not None:
            cod_rules.check_usable(info["added"], len(sample.texts), str(run.counterfactuals),
                                   run.allow_empty_counterfactuals, info)
        rows = rows + extra
    return sample, rows, info


def distill(dataset: TextDataset, run: RunConfig, out_dir: str | Path, *,
            teacher_test: tuple[dict, list[int]] | None = None,
            teacher_validation: tuple[dict, list[int]] | None = None, save_model: bool = True,
            progress: bool = True, record: dict[str, Any] | None = None,
            fluency_lm: str | None = DEFAULT_FLUENCY_LM) -> DistillResult:
    """Distill ``run.teacher`` into a student trained on the k-shot sample of ``dataset`` (plus
    counterfactuals), evaluate on the test and validation splits and write the run to ``out_dir``: the student
    (``save_pretrained``), ``metrics.json``, ``run_config.json`` (resolved) and ``train_log.jsonl``.

    Every input is checked before training starts. ``teacher_test`` / ``teacher_validation`` = (metrics,
    predictions) of the teacher on the test / validation split when the caller already has them (a grid
    computes them once); the validation predictions give the agreement of ``train.eval_points``' curve;
    ``save_model=False`` skips writing the student's weights; ``record`` adds entries to both
    ``metrics.json`` and ``run_config.json`` (a grid records the cell's key and recipe). A CoD run without a
    counterfactual file first generates one into ``out_dir/counterfactuals.jsonl`` with ``run.generator``
    (default: the edit search), scored for fluency by ``fluency_lm`` (``None``: not scored).
    """
    check_output(out_dir, inputs=[run.teacher, run.counterfactuals, dataset.source, *source_files(dataset.source)],
                 folder=True)
    # everything that can be checked without a model, before anything loads or trains
    test = dataset.split("test")
    cod_rules.check_run_budget(run.k, run.cod, dataset.num_classes)
    check_llm_options(run.teacher, run.llm_teacher)
    check_endpoint_terms(method_terms(run.distill), is_endpoint_teacher(run.teacher), run.student.init)
    run.cf.check_classes(dataset.num_classes)
    if run.searches:
        generator_config(run.generator or default_generator(), where="run generator")
    if run.train.uses_validation:
        dataset.split("validation")
    # a given counterfactual file is read and checked now, before models load
    checked = training_rows(dataset, run) if run.counterfactuals is not None else None
    scfg, dcfg, tcfg = run.student, run.distill, run.train
    teacher = None
    if run.teacher is not None:
        teacher = load_teacher(str(run.teacher), dataset.label_names, llm_options=run.llm_teacher,
                               examples=in_context_rows(dataset, run), seed=run.seed)
        if is_classifier(teacher):
            check_teacher_labels(label_names(teacher.model.config), dataset)
    generated = None
    if run.cod is not None and run.counterfactuals is None:
        generated = generate_run_counterfactuals(dataset, run, Path(out_dir), fluency_lm, teacher, progress)
        run = replace(run, counterfactuals=generated["path"], generator=run.generator if run.cod == "rounds" else None)
    sample, train_rows, cf_info = checked or training_rows(dataset, run)
    validation = dataset.splits.get("validation")  # what a recipe is chosen on; never the test split
    validation = validation if validation is not None and len(validation) else None

    def teacher_on(rows: LabeledTexts | None, given: tuple[dict, list[int]] | None) -> tuple:
        """(metrics, predictions) of the teacher on ``rows``: ``given`` by the caller, else computed now."""
        if given is not None or teacher is None or rows is None:
            return given or (None, None)
        return evaluate_teacher(teacher, rows, dataset.num_classes, tcfg.eval_batch_size, tcfg.max_length, progress)

    # before training: an endpoint's failure costs no training
    teacher_val_metrics, teacher_val_pred = teacher_on(
        validation if answers_validation(run.teacher, tcfg) else None, teacher_validation)
    teacher_metrics, teacher_pred = teacher_on(test, teacher_test)
    warning = cod_rules.weak_teacher_warning(run.cod, (teacher_val_metrics or teacher_metrics or {}).get("mcc"),
                                             "validation" if teacher_val_metrics else "test")
    classifier = teacher if is_classifier(teacher) else None  # what hidden states and init=teacher read

    def train_student(rows: LabeledTexts) -> tuple[Classifier, dict, TrainSummary]:
        seed_everything(run.seed)
        stu, info = make_student(scfg.model, scfg.layers, scfg.init, dataset.label_names, classifier,
                                 scfg.freeze_embeddings, scfg.pooling)
        _check_inputs(classifier, stu, dataset, dcfg)
        summary = train_classifier(stu, rows, method_terms(dcfg), tcfg, teacher=teacher, validation=validation,
                                   validation_reference=teacher_val_pred, num_classes=dataset.num_classes,
                                   progress=progress)
        return stu, info, summary

    t0 = time.perf_counter()
    stu, student_info, summary = train_student(train_rows)
    rounds = None
    if run.cod == "rounds":  # the first student and the teacher both judge the second round's edits
        extra, rounds = _student_aware_round(stu, teacher, train_rows, dataset.label_names, run.generator,
                                             Path(out_dir), tcfg.max_length, progress)
        rounds["first_steps"] = summary.steps
        train_rows = train_rows + counterfactual_split(extra.texts, extra.labels, run.cf)
        cf_info = {**cf_info, "added": cf_info["added"] + len(extra)}
        stu, student_info, summary = train_student(train_rows)
    test_metrics, _ = evaluate_split(stu, test, dataset.num_classes, tcfg.eval_batch_size, tcfg.max_length,
                                     teacher_pred, progress=progress)
    validation_metrics = evaluate_split(stu, validation, dataset.num_classes, tcfg.eval_batch_size, tcfg.max_length,
                                        teacher_val_pred, progress=progress)[0] if validation is not None else None
    result = DistillResult(
        dataset=dataset.name, method=dcfg.method, k=run.k, seed=run.seed,
        cod=run.cod or ("extra" if cf_info["added"] else None), n_train=len(train_rows),
        n_originals=len(sample.texts), n_counterfactuals=cf_info["added"],
        counterfactuals_skipped=cf_info["skipped_not_flipped"],
        counterfactuals_far_from_boundary=cf_info.get("skipped_far_from_boundary", 0),
        counterfactuals_rebalanced=cf_info.get("skipped_rebalance", 0), test=test_metrics,
        validation=validation_metrics,
        teacher_test=teacher_metrics,
        student_parameters=student_info["parameters"],
        teacher_parameters=classifier.num_parameters() if classifier is not None else None,
        wall_seconds=time.perf_counter() - t0, training=summary, rounds=rounds, generated=generated,
        teacher_validation=teacher_val_metrics,
        reference=reference_protocol(summary.curve, validation_metrics["accuracy"] if validation_metrics else None),
        teacher_info=describe_teacher(teacher) if teacher is not None else None, warnings=[warning] if warning else [])
    config = {
        "dataset": {"name": dataset.name, "source": dataset.source, "label_names": dataset.label_names,
                    "notes": dataset.notes},
        **asdict(run), "student": {**asdict(scfg), **student_info},
        "sample_indices": sample.indices, "environment": _environment(),
    }
    write_run(Path(out_dir), stu if save_model else None, {**result.to_dict(), **(record or {})},
              {**config, **(record or {})}, summary.log)
    return result


def generate_run_counterfactuals(dataset: TextDataset, run: RunConfig, out: Path, fluency_lm: str | None,
                                 teacher, progress: bool = True) -> dict[str, Any]:
    """The counterfactual file a CoD run without one trains on: made by ``run.generator`` (default: the edit
    search) for the originals the run needs, verified by ``teacher`` (loaded by :func:`load_teacher`), written
    to ``out/counterfactuals.jsonl``. Returns its path, generator and headline figures (with an endpoint
    teacher, the requests its verification sent)."""
    from codistill.counterfactuals.generate import counterfactuals_for_run

    path = out / "counterfactuals.jsonl"
    before = describe_teacher(teacher).get("requests")  # None for a classifier
    s = counterfactuals_for_run(dataset, teacher, path, k=run.k, seed=run.seed, cod=run.cod,
                                generator=run.generator, progress=progress, fluency_lm=fluency_lm,
                                allow_empty=run.allow_empty_counterfactuals, max_length=run.train.max_length)
    requests = {} if before is None else {"teacher_requests": describe_teacher(teacher)["requests"] - before}
    return {"path": str(path), "spec": run.generator or default_generator(), **requests,
            **{key: s.get(key) for key in ("generator", "originals", "flipped", "used", "edited_words_mean",
                                           "fluency_ratio_median")}}


def _student_aware_round(student: Classifier, teacher, rows: LabeledTexts, label_names: Sequence[str],
                         generator: dict[str, Any] | None, out: Path, max_length: int,
                         progress: bool) -> tuple[LabeledTexts, dict]:
    """The second round of a ``rounds`` run: edits of the training texts that flip the first student and
    that the teacher labels otherwise (:func:`codistill.counterfactuals.rounds.student_disagreements`),
    as training rows with the teacher's labels; every edit is written to ``out/round2.jsonl``."""
    from codistill.counterfactuals.rounds import student_disagreements
    from codistill.counterfactuals.verify import Verifier

    gen = make_generator(generator or default_generator(), default_cache_dir=str(out.parent / ".llm_cache"),
                         where="run generator")
    student.model.eval()
    edits, info = student_disagreements(rows.texts, Verifier.from_classifier(student, max_length=max_length),
                                        teacher_verifier(teacher, max_length=max_length), gen, label_names,
                                        progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_jsonl(out / "round2.jsonl", edits)
    kept = [r for r in edits if r["use"]]
    return LabeledTexts([r["counterfactual"] for r in kept], [r["teacher_label"] for r in kept]), info


# -- teachers ------------------------------------------------------------------------------------------------


def train_teacher(dataset: TextDataset, model: str, out_dir: str | Path, *, train: TrainConfig | None = None,
                  max_train: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Fine-tune a teacher on the training split (CE), report validation and test accuracy, and save it
    with ``save_pretrained`` so ``transformers.pipeline("text-classification", out_dir)`` loads it; its
    test predictions go to ``test_predictions.json`` for grids to reuse.

    ``max_train`` caps the training rows with a stratified, seeded subset (the report says so).
    """
    check_output(out_dir, inputs=[model, dataset.source, *source_files(dataset.source)], folder=True)
    tcfg = train or teacher_train_config()
    rows = dataset.split("train")
    evaluated = [s for s in ("validation", "test") if s in dataset.splits]
    for split in evaluated + (["validation"] if tcfg.uses_validation else []):
        dataset.split(split)  # an empty or missing split is refused now, not after training
    if max_train is not None and max_train < len(rows):
        rows = stratified_subset(rows, max_train, f"teacher-cap-{tcfg.seed}")
    seed_everything(tcfg.seed)
    clf = load_classifier(model, dataset.label_names, what="teacher model")
    summary = train_classifier(clf, rows, method_terms(DistillConfig(method="finetune")), tcfg,
                               validation=dataset.splits.get("validation"), num_classes=dataset.num_classes,
                               progress=progress)
    metrics: dict[str, Any] = {"dataset": dataset.name, "model": model, "n_train": len(rows),
                               "capped": max_train is not None and len(rows) < len(dataset.split("train")),
                               "parameters": clf.num_parameters()}
    test_predictions = None
    for split in evaluated:
        metrics[split], pred = evaluate_split(clf, dataset.split(split), dataset.num_classes, tcfg.eval_batch_size,
                                              tcfg.max_length, progress=progress)
        if split == "test":
            test = dataset.split("test")
            test_predictions = {"dataset": dataset.name, "test_sha256": texts_fingerprint(test.texts, test.labels),
                                "n": len(pred), "metrics": metrics["test"], "predictions": pred,
                                "parameters": metrics["parameters"]}
    metrics.update({k: v for k, v in asdict(summary).items() if k != "log"})
    config = {"dataset": {"name": dataset.name, "source": dataset.source, "label_names": dataset.label_names},
              "model": model, "train": asdict(tcfg), "max_train": max_train, "environment": _environment()}
    out = Path(out_dir)
    if test_predictions is not None:  # a grid reuses them instead of evaluating the teacher again
        atomic_write_json(out / "test_predictions.json", test_predictions)
    write_run(out, clf, metrics, config, summary.log)
    return metrics

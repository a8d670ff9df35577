"""What CoD's modes mean for the label budget: the one home of the rules every caller applies.

A baseline at budget k trains on the k-shot sample (k labelled originals). CoD at the same budget keeps the
first k/2 of them (samples of one seed are nested) and adds counterfactuals of those k/2, so it needs half
the human labels. :func:`originals` says how many originals a run keeps, :func:`counterfactual_budget` for
which budget its counterfactual file is made, and :func:`check_budget` refuses a k that cannot be halved
evenly over the classes. Imports nothing heavy: the command line's help reads the names from here.
"""

from __future__ import annotations

from codistill.errors import ConfigError

# mode -> what it trains on (the default of ``--cod`` is DEFAULT_MODE)
MODES: dict[str, str] = {
    "replace": "CoD at budget k: k/2 originals + their counterfactuals",
    "multi": "k/2 originals + every counterfactual of each (a file made with per_original > 1)",
    "rounds": "CoD, then edits that flip the first student and that the teacher labels otherwise, and a fresh "
              "student (the same k/2 labels)",
    "augment": "all k originals + counterfactuals of all k (the same k labels, up to twice the texts)",
}
DEFAULT_MODE = "augment"
# the paper's mode: tables name its runs plain ``+cod`` whatever the default is, so results stay comparable
PAPER_MODE = "replace"
# the modes that keep k/2 originals: CoD at the same label budget as the baseline
HALF_MODES = ("replace", "multi", "rounds")
ON_FAILURE = ("skip", "keep-best")  # what to do with an original no candidate flipped; the first is the default


def halves(cod: str | None) -> bool:
    """Whether a run in mode ``cod`` keeps only k/2 originals (``None``: the baseline or hand-added rows)."""
    return cod in HALF_MODES


def check_budget(k: int, num_classes: int) -> None:
    """CoD keeps k/2 originals, balanced over the classes, so k/2 must be a multiple of ``num_classes``."""
    if k % 2 or (k // 2) % num_classes:
        raise ConfigError(f"k={k}: CoD keeps k/2 originals, so k/2 must be divisible by the number of classes "
                          f"({num_classes})")


def originals(k: int, cod: str | None, num_classes: int | None = None) -> int:
    """How many originals of the k-shot sample a run in mode ``cod`` trains on (checked against
    ``num_classes`` when given)."""
    if not halves(cod):
        return k
    if num_classes is not None:
        check_budget(k, num_classes)
    return k // 2


def counterfactual_budget(k: int, cod: str | None) -> int:
    """The budget whose CoD half (:func:`edited_originals`) a run at budget ``k`` needs counterfactuals for:
    ``k`` itself, or ``2k`` for ``augment`` (all k originals are the CoD half of the nested 2k sample)."""
    return 2 * k if cod == "augment" else k


def edited_originals(budget: int, num_classes: int) -> int:
    """How many originals a counterfactual file made for ``budget`` covers: its CoD half, k/2."""
    check_budget(budget, num_classes)
    return budget // 2


def check_run_budget(k: int, cod: str | None, num_classes: int) -> None:
    """A run at budget ``k`` in mode ``cod`` can be sampled: the originals its counterfactual file edits (k/2,
    or all k for ``augment``; :func:`edited_originals` of :func:`counterfactual_budget`) are balanced over the
    classes. Checked before any work, and worded with the user's k and mode."""
    if cod is None:
        return
    try:
        edited_originals(counterfactual_budget(k, cod), num_classes)
    except ConfigError:
        edited, share = ("k/2", "k/2") if halves(cod) else ("all k", "k")
        raise ConfigError(f"k={k}: CoD {cod} edits {edited} originals, balanced over the classes, so {share} must "
                          f"be divisible by the number of classes ({num_classes})") from None


# below this teacher MCC a CoD run is warned: its counterfactuals sit on a weak teacher's boundary. On CoLA (the
# all-mpnet-base-v2 teacher at MCC 0.45) no student learned the task from 64 labels or fewer, with CoD or
# without, and the paper's mode lost to KD by 3-7 points with MiniLM-3 students (benchmarks/README.md).
WEAK_TEACHER_MCC = 0.5


def weak_teacher_warning(cod: str | None, teacher_mcc: float | None, split: str = "test") -> str | None:
    """The warning a CoD run gets when its teacher's MCC on ``split`` is below :data:`WEAK_TEACHER_MCC`
    (``None``: not CoD, no MCC known, or a teacher strong enough)."""
    if cod is None or teacher_mcc is None or teacher_mcc >= WEAK_TEACHER_MCC:
        return None
    return (f"the teacher's MCC on {split} is {teacher_mcc:.2f} (below {WEAK_TEACHER_MCC}): CoD's counterfactuals sit "
            "on a weak teacher's decision boundary; on CoLA (teacher MCC 0.45) no student learned the task from 64 "
            "labels or fewer, with CoD or without, so compare this run with KD")


class NoCounterfactuals(ConfigError):
    """CoD without a single usable counterfactual: it would train on the originals alone."""


# what each count of :func:`codistill.counterfactuals.rows.use_counterfactuals` says removed a counterfactual
_REMOVED_BY = {"skipped_not_flipped": "the teacher was not flipped", "skipped_far_from_boundary":
               "cf.max_target_prob removed (too far from the boundary)", "skipped_rebalance": "cf.rebalance removed"}


def check_usable(used: int, originals: int, where: str, allow_empty: bool, counts: dict[str, int] | None = None) -> None:
    """CoD needs at least one usable counterfactual among its ``originals``, unless ``allow_empty``; ``counts``
    (the skip counts of the rows' reader) say which step removed them, else the teacher is named."""
    if used == 0 and originals and not allow_empty:
        why = "; ".join(f"{what}: {counts[key]}" for key, what in _REMOVED_BY.items() if (counts or {}).get(key))
        raise NoCounterfactuals(f"{where}: none of the {originals} originals has a usable counterfactual "
                                f"({why or 'the teacher was flipped on none'}), so CoD would train on the originals "
                                "alone; see its summary file, or allow it (counterfactuals: --allow-empty; distill "
                                "and sweeps: allow_empty_counterfactuals)")


def check_mode(value: str, where: str = "--cod-mode") -> str:
    if value not in MODES:
        raise ConfigError(f"{where} must be one of {', '.join(MODES)}, got '{value}'")
    return value


def check_on_failure(value: str, where: str = "--on-failure") -> str:
    if value not in ON_FAILURE:
        raise ConfigError(f"{where}: must be {' or '.join(repr(v) for v in ON_FAILURE)}, got {value!r}")
    return value

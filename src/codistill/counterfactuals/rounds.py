"""Student-aware rounds (beyond the paper): boundary points where a trained student still disagrees with
the teacher.

CoD's counterfactuals sit on the *teacher's* boundary and are chosen before any student exists. After a
first student is trained on them, the places it gets wrong are known only by asking it: the edit search
here looks for minimal edits of the training texts that flip the *student*, the teacher labels each edit,
and the edits on which the two disagree (the student moved its boundary where the teacher did not) are the
new training points. No human label is added: the originals are the same k/2.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

from codistill.counterfactuals.base import CFRequest, CounterfactualGenerator, choose_targets
from codistill.counterfactuals.verify import Verifier


def student_disagreements(texts: Sequence[str], student: Verifier, teacher: Verifier,
                          generator: CounterfactualGenerator, label_names: Sequence[str],
                          progress: bool = True) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Edits of ``texts`` that flip ``student``, each labelled by ``teacher``.

    Each text's target is the class the student finds most likely after its own prediction. Every edit
    that flips the student (the generator's first and, with ``per_original`` > 1, its further ones) is
    scored by the teacher once; a row is ``use``-able when the teacher's class differs from the student's
    new class, and then it trains with the teacher's class. Returns the rows (one per edit) and a summary.
    """

    start = time.perf_counter()
    before = student.probs(texts)
    predicted = before.argmax(-1).tolist() if len(texts) else []
    targets = choose_targets(before, predicted) if len(texts) else []
    requests = [CFRequest(i, t, y, tg) for i, (t, y, tg) in enumerate(zip(texts, predicted, targets))]
    results = generator.generate(requests, student, label_names, progress=progress) if requests else []
    edits = []
    for res in results:
        row = res.to_row(label_names)
        if row["flipped"]:
            edits += [(res.request, text) for text in (row["counterfactual"], *row["more_counterfactuals"])]
    teacher_probs = teacher.probs([text for _, text in edits]).tolist() if edits else []
    rows = []
    for (req, text), probs in zip(edits, teacher_probs):
        teacher_label = max(range(len(probs)), key=probs.__getitem__)
        rows.append({"index": req.index, "text": req.text, "student_label": req.label, "counterfactual": text,
                     "student_label_after": req.target, "teacher_label": teacher_label,
                     "teacher_name": label_names[teacher_label], "teacher_probs": [round(p, 6) for p in probs],
                     "use": teacher_label != req.target})
    summary = {"texts": len(texts), "student_flipped": sum(res.flipped for res in results), "edits": len(rows),
               "disagreements": sum(r["use"] for r in rows), "generator": generator.name,
               "student_calls": student.calls, "teacher_calls": teacher.calls,
               "seconds": round(time.perf_counter() - start, 3)}
    return rows, summary

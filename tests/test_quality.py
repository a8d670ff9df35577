"""Counterfactual quality: edit kinds and diversity, the causal LM's perplexity and proposals, fluency and
validity scoring of rows and files, the LM-guided edit search, and the ``quality`` command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from test_counterfactuals import LEXICON, toy_dataset, toy_scorer

from codistill.counterfactuals.base import CFRequest
from codistill.counterfactuals.edits import EditSearchConfig, EditSearchGenerator
from codistill.counterfactuals.generate import generate_counterfactuals
from codistill.counterfactuals.lm import CausalLM
from codistill.counterfactuals.metrics import edit_kind, edit_ops, quality_summary
from codistill.counterfactuals.quality import QualityScorer, score_file
from codistill.counterfactuals.rows import summary_path
from codistill.counterfactuals.verify import Verifier
from codistill.counterfactuals.wordnet import DictLexicon
from codistill.errors import ConfigError

LABELS = ["negative", "positive"]


def test_edit_kinds_and_diversity() -> None:
    assert edit_ops("so happy at #coachella2015 !", "so happy at !") == [("tag_deletion", ("#coachella2015",), ())]
    assert edit_kind("thanks @united http://t.co/x", "thanks") == "tag_deletion"
    assert edit_kind("it is good", "it is not good") == "negation"
    assert edit_kind("it isn't good", "it is good") == "negation"
    assert edit_kind("a great film", "a dull film") == "substitution"
    assert edit_kind("a great film", "a film") == "deletion"
    assert edit_kind("a film", "a bad film") == "insertion"
    assert edit_kind("a great film #wow", "a dull film") == "mixed"
    assert edit_kind("love it :)", "love it :(") == "substitution"   # an emoticon is one token
    rows = [{"text": t, "counterfactual": c, "flipped": True, "target_label": 0, "label": 1, "probs_after": [0.9, 0.1],
             "edited_words": 1, "candidates": []}
            for t, c in [("a great film", "a dull film"), ("a great plot", "a dull plot"), ("it is good", "it is not good"),
                         ("fun #yay", "fun")]]
    rows.append({**rows[0], "flipped": False, "counterfactual": "a film"})  # not flipped: not counted
    s = quality_summary(rows)
    assert s["edit_kinds"] == {"negation": 1, "substitution": 2, "tag_deletion": 1}
    # edits: great->dull twice, +not, -#yay: 3 distinct of 4
    assert s["distinct_edits"] == 3 and s["distinct_edit_share"] == pytest.approx(0.75)
    assert [e["counterfactual"] for e in s["examples"]] == [r["counterfactual"] for r in rows[:4]]
    assert s["fluency_ratio_median"] is None and s["validity"] is None  # not scored


def test_log_perplexity_is_the_mean_token_nll(tiny_lm: Path) -> None:
    lm = CausalLM.load(str(tiny_lm))
    texts = ["the film was great", "great the was film film film"]
    got = lm.log_perplexity(texts)
    for text, value in zip(texts, got):
        ids = [lm.start_id] + lm.tokenizer(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = lm.model(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1)
        nll = -sum(float(logp[t, ids[t + 1]]) for t in range(len(ids) - 1)) / (len(ids) - 1)
        assert value == pytest.approx(nll, rel=1e-5)
    # batched with padding gives what one text alone gives
    assert lm.log_perplexity(texts[1:]) == pytest.approx(got[1:], rel=1e-5)
    ratio = lm.perplexity_ratios([texts[0]], [texts[1]])[0]
    assert ratio == pytest.approx(math.exp(got[1] - got[0]), rel=1e-5)


def test_propose_words_are_whole_words_ranked_by_the_lm(tiny_lm: Path) -> None:
    lm = CausalLM.load(str(tiny_lm))
    vocab = set(lm.word_tokens().values())
    assert {"great", "awful", "film"} <= vocab and all(w.isalpha() for w in vocab)
    words = "the film was great".split()
    plain = lm.propose_words(words, [1, 3], "a:", None, top=5)
    same = lm.propose_words(words, [1, 3], "a:", "a:", top=5)  # 2 lp - lp = lp: the same ranking
    assert plain == same
    for i, found in plain.items():
        assert len(found) == 5 and words[i] not in found and set(found) <= vocab
    # the first proposal at "great" is the word token the LM finds most likely there
    token_at, seq = lm._word_starts("a:", words)
    with torch.no_grad():
        logits = lm.model(input_ids=torch.tensor([seq])).logits[0, token_at[3] - 1]
    ids = sorted(lm.word_tokens(), key=lambda t: -float(logits[t]))
    assert plain[3][0] == next(lm.word_tokens()[t] for t in ids if lm.word_tokens()[t] != "great")


class ScriptedLM:
    """A language model whose proposals and perplexities the test sets."""

    def __init__(self, proposals: dict[str, list[str]], fluent: dict[str, float]) -> None:
        self.proposals, self.fluent, self.calls = proposals, fluent, []

    def propose_words(self, words, positions, prompt, contrast, top, pool=64):
        self.calls.append((prompt, contrast))
        return {i: self.proposals.get(words[i], [])[:top] for i in positions}

    def log_perplexity(self, texts):
        return [self.fluent.get(t, 5.0) for t in texts]

    def perplexity_ratios(self, originals, edited):
        a, b = self.log_perplexity(originals), self.log_perplexity(edited)
        return [math.exp(y - x) for x, y in zip(a, b)]


def test_lm_search_substitutes_nouns_in_context_and_prefers_the_fluent_flip() -> None:
    # "masterpiece" is a noun the antonym list does not know; the LM proposes "mess" and "bore" there
    lm = ScriptedLM({"masterpiece": ["mess", "bore"]}, {"a masterpiece , great": 2.0, "a bore , great": 2.1,
                                                          "a mess , great": 3.5})
    scorer_words = {"masterpiece": 2, "mess": -3, "bore": -3, "great": 0.5}

    def teacher(texts):
        out = []
        for t in texts:
            p = float(torch.sigmoid(torch.tensor(sum(scorer_words.get(w, 0.0) for w in t.split()))))
            out.append([1 - p, p])
        return torch.tensor(out)

    request = CFRequest(0, "a masterpiece , great", 1, 0)
    plain = EditSearchGenerator(EditSearchConfig(max_edits=1, top_positions=4, substitutes=0), DictLexicon({}))
    assert not plain.generate([request], Verifier(teacher), LABELS, progress=False)[0].flipped
    options = EditSearchConfig(max_edits=1, top_positions=4, substitutes=0, lm_prompt="A {label} text:")
    guided = EditSearchGenerator(options, DictLexicon({}), lm)
    result = guided.generate([request], Verifier(teacher), LABELS, progress=False)[0]
    assert result.flipped and result.best.text == "a bore , great"       # both flip; "bore" reads better
    assert "(lm)" in result.best.detail and guided.name == "edits+lm"
    assert lm.calls == [("A negative text:", "A positive text:")]       # target prompt, current label as contrast


def test_emoticons_swap_polarity() -> None:
    def teacher(texts):
        return torch.tensor([[0.9, 0.1] if ":(" in t else [0.1, 0.9] for t in texts])

    gen = EditSearchGenerator(EditSearchConfig(max_edits=1, top_positions=0, substitutes=0), DictLexicon({}))
    result = gen.generate([CFRequest(0, "see you there :)", 1, 0)], Verifier(teacher), LABELS, progress=False)[0]
    assert result.flipped and result.best.text == "see you there :("


def _judge(texts):
    """An independent toy judge: it agrees with the toy teacher except that it ignores 'not'."""
    score = [sum((w in ("great", "good")) - (w in ("awful", "bad")) for w in t.split()) for t in texts]
    return torch.tensor([[0.8, 0.2] if s < 0 else [0.2, 0.8] for s in score])


def test_scorer_adds_fluency_and_validity_and_the_summary_reads_them(tmp_path: Path) -> None:
    ds = toy_dataset()
    lm = ScriptedLM({}, {})
    lm.log_perplexity = lambda texts: [2.0 + math.log(1.2) * ("awful" in t) for t in texts]
    scorer = QualityScorer(lm, Verifier(_judge), "scripted", "toy-judge", LABELS)
    out = tmp_path / "cf.jsonl"
    s = generate_counterfactuals(ds, Verifier(toy_scorer), EditSearchGenerator(EditSearchConfig(), LEXICON), out, k=8,
                                 progress=False, scorer=scorer)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert s["quality"] == {"lm": "scripted", "judge": "toy-judge"}
    for r in rows:
        expected = 1.2 if "awful" in r["counterfactual"] else 1 / 1.2   # great -> awful reads 1.2x worse
        assert r["fluency_ratio"] == pytest.approx(expected, rel=1e-5)
        assert r["judge_label"] == int(torch.tensor(r["judge_probs"]).argmax())
    # great <-> awful swaps: the judge agrees on every flip, and on every original
    assert s["validity"] == 1.0 and s["judge_accuracy_originals"] == 1.0
    ratios = sorted(r["fluency_ratio"] for r in rows)
    assert s["fluency_ratio_median"] == pytest.approx((ratios[1] + ratios[2]) / 2)
    assert s["fluency_share_le_1_5"] == pytest.approx(sum(x <= 1.5 for x in ratios) / 4)


def test_score_file_rescores_only_for_another_recipe(tmp_path: Path) -> None:
    ds = toy_dataset(template="the film was not {} number {}")  # negated: the judge ignores "not"
    out = tmp_path / "cf.jsonl"
    generate_counterfactuals(ds, Verifier(toy_scorer), EditSearchGenerator(EditSearchConfig(), DictLexicon({})), out,
                             k=8, progress=False)
    before = json.loads(summary_path(out).read_text())
    assert before["quality"] is None and before["validity"] is None
    judge = Verifier(_judge)
    s = score_file(out, QualityScorer(None, judge, None, "toy-judge", LABELS))
    # the search removed "not": the judge reads the same sentiment word as before, so it disagrees
    assert s["validity"] == 0.0 and s["flip_rate"] == before["flip_rate"] and s["seed"] == before["seed"]
    assert judge.calls == 2
    again = score_file(out, QualityScorer(None, judge, None, "toy-judge", LABELS))
    assert again == s and judge.calls == 2                                  # same recipe: not scored again
    score_file(out, QualityScorer(None, judge, None, "another-judge", LABELS))
    assert judge.calls == 4
    with pytest.raises(ConfigError, match="the judge must classify the same labels"):
        score_file(out, QualityScorer(None, judge, None, "x", ["neg", "pos"]))


def test_quality_command_scores_a_file(tmp_path: Path, tiny_lm: Path, tiny_teacher: Path, capsys) -> None:
    from codistill.cli import main

    out = tmp_path / "cf.jsonl"
    generate_counterfactuals(toy_dataset(), Verifier(toy_scorer), EditSearchGenerator(EditSearchConfig(), LEXICON), out,
                             k=8, progress=False)
    code = main(["quality", str(out), "--fluency-lm", str(tiny_lm), "--judge", str(tiny_teacher)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    s = json.loads(summary_path(out).read_text())
    assert s["quality"] == {"lm": str(tiny_lm), "judge": str(tiny_teacher)}
    assert s["fluency_ratio_median"] > 0 and 0 <= s["validity"] <= 1
    assert "fluency_ratio_median" in captured.out and "-> the film was awful" in captured.out
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a"}\n')
    assert main(["quality", str(bad), "--fluency-lm", "none", "--judge", str(tiny_teacher)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.jsonl, line 1" in err[0] and "counterfactual" in err[0]
    assert main(["quality", str(out), "--fluency-lm", "none"]) == 2
    assert "nothing to score" in capsys.readouterr().err

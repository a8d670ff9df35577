"""Counterfactual generation: metrics, candidate checks, the edit search on a rule-based teacher, the LLM
client against a real local HTTP server with scripted answers and failures, and the CLI."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import torch
from conftest import LocalServer

from codistill.counterfactuals.base import CFRequest, choose_targets
from codistill.counterfactuals.edits import EditSearchConfig, EditSearchGenerator
from codistill.counterfactuals.generate import generate_counterfactuals
from codistill.counterfactuals.llm import (
    ChatClient,
    LLMConfig,
    LLMFatalError,
    LLMGenerator,
    LLMRequestError,
    build_messages,
    clean_answer,
)
from codistill.counterfactuals.metrics import quality_summary, word_edit_distance
from codistill.counterfactuals.morphology import antonym_forms
from codistill.counterfactuals.rows import summary_path
from codistill.counterfactuals.verify import Verifier, check_candidate
from codistill.counterfactuals.wordnet import DictLexicon, WordNetLexicon, find_wordnet
from codistill.data import LabeledTexts, TextDataset, sample_from
from codistill.errors import ConfigError, DataError

# -- a rule-based toy teacher whose behaviour the tests control ------------------------------------------

POSITIVE = {"great", "good", "lovely", "loved", "superb"}
NEGATIVE = {"awful", "bad", "dull", "hated", "boring"}


def toy_scorer(texts):
    """P(positive) = sigmoid(2 * score): +1 per positive word, -1 per negative word, sign flipped after a
    negation word."""
    out = []
    for text in texts:
        score, negated = 0, False
        for w in text.lower().split():
            if w in ("not", "n't", "never"):
                negated = True
                continue
            v = (w in POSITIVE) - (w in NEGATIVE)
            score += -v if negated else v
        p = float(torch.sigmoid(torch.tensor(2.0 * score)))
        out.append([1 - p, p])
    return torch.tensor(out)


LEXICON = DictLexicon({"great": ["awful"], "good": ["bad"], "love": ["hate"], "lovely": ["ugly"]})


def toy_dataset(n: int = 40, template: str = "the film was {} number {}") -> TextDataset:
    pos = [template.format("great", i) for i in range(n // 2)]
    neg = [template.format("awful", i) for i in range(n // 2)]
    texts = [t for pair in zip(pos, neg) for t in pair]
    labels = [1, 0] * (n // 2)
    split = LabeledTexts(texts, labels)
    return TextDataset("toy", ["negative", "positive"], {"train": split, "test": split})


# -- metrics and checks -----------------------------------------------------------------------------------


def test_word_edit_distance() -> None:
    assert word_edit_distance("the film was great", "the film was awful") == 1
    assert word_edit_distance("the film was great", "the film was not great") == 1
    assert word_edit_distance("the film was great", "film great") == 2
    assert word_edit_distance("It's GREAT!", "it's great !") == 0
    assert word_edit_distance("", "a b") == 2


def test_check_candidate_reasons() -> None:
    orig = "the film was great and the acting was lovely"
    assert check_candidate(orig, "the film was awful and the acting was lovely") is None
    assert check_candidate(orig, "  ") == "empty"
    assert check_candidate(orig, "The film was great and the acting was lovely.") == "unchanged"
    assert check_candidate("we do n't get paid enough", "We don't get paid enough.") == "unchanged"
    assert check_candidate("we do n't get paid enough", "We do get paid enough.") is None
    assert check_candidate(orig, "I'm sorry, but I can't help with that.") == "refusal"
    assert check_candidate(orig, "Here is the edited text with minimal change") == "echo"
    assert check_candidate(orig, orig + " " + "and more words " * 20) == "too_long"
    assert check_candidate(orig, "a dreadful movie with wooden actors throughout it all") == "too_many_edits"
    assert check_candidate(orig, "the film was awful and the acting was ugly", max_changed_share=0.1) == "too_many_edits"


def test_clean_answer() -> None:
    assert clean_answer('"the film was awful"') == "the film was awful"
    assert clean_answer("Here is the edited text: the film was awful") == "the film was awful"
    assert clean_answer("Edited text:\nthe film was awful") == "the film was awful"
    assert clean_answer("```\nthe film  was awful\n```") == "the film was awful"


def test_choose_targets_multiclass() -> None:
    probs = torch.tensor([[0.7, 0.1, 0.2], [0.1, 0.6, 0.3], [0.5, 0.5, 0.0]])
    assert choose_targets(probs, [0, 1, 0]) == [2, 2, 1]


def test_quality_summary_numbers() -> None:
    rows = [
        {"text": "a b c d", "counterfactual": "a x c d", "flipped": True, "target_label": 0, "probs_after": [0.8, 0.2],
         "edited_words": 1, "attempts": 1, "candidates": [{"reason": "flipped"}]},
        {"text": "a b", "counterfactual": "a x c d", "flipped": False, "target_label": 0, "probs_after": [0.4, 0.6],
         "edited_words": 3, "attempts": 2, "candidates": [{"reason": "refusal"}, {"reason": "not_flipped"}]},
        {"text": "q", "counterfactual": None, "flipped": False, "target_label": 1, "probs_after": None,
         "edited_words": None, "attempts": 1, "candidates": [{"reason": "request_failed"}]},
    ]
    s = quality_summary(rows)
    assert s["flip_rate"] == pytest.approx(1 / 3) and s["flipped"] == 1
    assert s["mean_target_prob"] == pytest.approx(0.6)
    assert s["edited_words_mean"] == 2 and s["edited_words_median"] == 2
    assert s["relative_edit_mean"] == pytest.approx((1 / 4 + 3 / 2) / 2)
    assert s["length_ratio_mean"] == pytest.approx((1 + 2) / 2)
    assert s["duplicate_share"] == 0.5 and s["unchanged_share"] == 0
    assert s["candidates_by_reason"] == {"flipped": 1, "not_flipped": 1, "refusal": 1, "request_failed": 1}


# -- the edit search ----------------------------------------------------------------------------------------


def test_antonym_forms_keep_inflection_and_case() -> None:
    assert antonym_forms("loved", LEXICON) == ["hated"]
    assert antonym_forms("Great", LEXICON) == ["Awful"]
    assert antonym_forms("loves", LEXICON) == ["hates"]
    assert antonym_forms("loving", LEXICON) == ["hating"]
    assert antonym_forms("table", LEXICON) == []


def test_edit_search_flips_with_fewest_edits() -> None:
    verifier = Verifier(toy_scorer)
    gen = EditSearchGenerator(EditSearchConfig(max_edits=3), LEXICON)
    requests = [
        CFRequest(0, "the film was great", 1, 0),              # one antonym
        CFRequest(1, "I loved it , great and good", 1, 0),     # score 3: needs two edits
        CFRequest(2, "the plot was not good", 0, 1),           # negated positive
        CFRequest(3, "it is a movie", 0, 1),                   # nothing can make it positive
    ]
    results = gen.generate(requests, verifier, ["negative", "positive"], progress=False)
    assert results[0].best.text == "the film was awful" and results[0].flipped
    assert results[1].flipped and word_edit_distance(requests[1].text, results[1].best.text) == 2
    assert results[2].flipped and word_edit_distance(requests[2].text, results[2].best.text) == 1
    assert not results[3].flipped and results[3].attempts[-1].reason in ("not_flipped", "no_edit_found")
    for r in results[:3]:  # the shared verifier judged the kept candidate
        assert r.best.probs[r.request.target] > 0.5
    assert results[0].probs_before[1] > 0.5


def test_edit_search_never_stacks_negations() -> None:
    gen = EditSearchGenerator(EditSearchConfig(max_edits=2), DictLexicon({}))
    results = gen.generate([CFRequest(0, "it was not good", 0, 1), CFRequest(1, "it was good", 1, 0)],
                           Verifier(toy_scorer), ["negative", "positive"], progress=False)
    assert results[0].best.text in ("it was good", "it good")
    assert "not not" not in results[1].best.text
    assert results[1].best.text == "it was not good"


def test_edit_search_batches_teacher_calls() -> None:
    verifier = Verifier(toy_scorer)
    requests = [CFRequest(i, f"the film was great number {i}", 1, 0) for i in range(20)]
    results = EditSearchGenerator(EditSearchConfig(), LEXICON).generate(requests, verifier, ["negative", "positive"],
                                                                        progress=False)
    assert all(r.flipped for r in results)
    # originals, leave-one-out, one call per depth, one verification call: not one call per original
    assert verifier.calls <= 5


def test_edit_search_substitutes_the_teachers_target_adjectives() -> None:
    # every word is its own "antonym": no antonym edit helps, so the search must substitute or delete
    lexicon = DictLexicon({"superb": ["superb"], "dull": ["dull"], "lovely": ["lovely"]})
    verifier = Verifier(toy_scorer)
    gen = EditSearchGenerator(EditSearchConfig(max_edits=1, top_positions=3, substitutes=1), lexicon)
    assert gen.target_adjectives(verifier, 2)[0] == ["dull"]          # the toy teacher's most negative word
    assert gen.target_adjectives(verifier, 2)[1][0] in ("superb", "lovely")
    request = CFRequest(0, "a superb film", 1, 0)
    best = gen.generate([request], verifier, ["negative", "positive"], progress=False)[0].best
    assert best.text == "a dull film" and "superb->dull" in best.detail   # preferred to deleting "superb"
    off = EditSearchGenerator(EditSearchConfig(max_edits=1, top_positions=3, substitutes=0), lexicon)
    assert off.generate([request], verifier, ["negative", "positive"], progress=False)[0].best.text == "a film"


def test_edit_search_leaves_mentions_hashtags_and_numbers_alone() -> None:
    def substring_scorer(texts):  # counts "great"/"awful" anywhere in a token, e.g. inside "@great"
        out = []
        for text in texts:
            score = sum(("great" in w) - ("awful" in w) for w in text.lower().split())
            p = float(torch.sigmoid(torch.tensor(2.0 * score)))
            out.append([1 - p, p])
        return torch.tensor(out)

    lexicon = DictLexicon({"great": ["awful"], "1990": ["2000"]})
    gen = EditSearchGenerator(EditSearchConfig(max_edits=2, top_positions=0), lexicon)
    results = gen.generate([CFRequest(0, "@great #great", 1, 0), CFRequest(1, "great #great", 1, 0)],
                           Verifier(substring_scorer), ["negative", "positive"], progress=False)
    assert not results[0].flipped                     # "@awful #awful" would flip, but is not an edit we make
    assert results[1].best.text == "awful #great"     # only the plain word is swapped
    assert not results[1].flipped


@pytest.mark.skipif(not any(Path(d).expanduser().joinpath("data.adj").is_file()
                            for d in ("/usr/share/wordnet",)), reason="WordNet files not installed")
def test_wordnet_lexicon_reads_antonyms() -> None:
    lex = WordNetLexicon(find_wordnet())
    assert "bad" in lex.antonyms("good")
    assert "bad" in lex.antonyms("superb")   # satellite -> head's antonym
    assert antonym_forms("hated", lex) == ["loved"]   # the antonym of the lemma, inflected like the word
    assert "hate" in lex.antonyms("love", "v")
    # substitution positions: adjectives, not past participles or words used mostly as nouns or verbs
    assert lex.is_adjective("dull") and lex.is_adjective("thrilling")
    assert not lex.is_adjective("paid") and not lex.is_adjective("raised") and not lex.is_adjective("game")
    common = lex.common_adjectives()
    assert 800 < len(common) < 3000 and "good" in common and "paid" not in common
    assert "scholastic" not in common  # topical, not polar: no antonym


def test_generate_counterfactuals_writes_rows_and_summary(tmp_path: Path) -> None:
    ds = toy_dataset()
    out = tmp_path / "cf.jsonl"
    summary = generate_counterfactuals(ds, Verifier(toy_scorer), EditSearchGenerator(EditSearchConfig(), LEXICON), out,
                                       k=8, seed=0, progress=False)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    cod_half = sample_from(ds, 4, 0)
    assert [r["text"] for r in rows] == cod_half.texts          # the k/2 originals, nested in the k sample
    assert set(cod_half.indices) <= set(sample_from(ds, 8, 0).indices)
    for r in rows:
        assert r["target_label"] == 1 - r["label"] and r["flipped"] and r["use"]
        assert r["edited_words"] == 1 and r["probs_after"][r["target_label"]] > 0.5
        assert r["generator"] == "edits" and r["candidates"]
    assert summary["flip_rate"] == 1.0 and summary["edited_words_median"] == 1
    assert json.loads(summary_path(out).read_text())["originals"] == 4
    with pytest.raises(ConfigError, match="k/2 must be divisible"):
        generate_counterfactuals(ds, Verifier(toy_scorer), EditSearchGenerator(EditSearchConfig(), LEXICON), out, k=6)


def test_on_failure_skip_or_keep_best(tmp_path: Path) -> None:
    ds = toy_dataset(template="{} film number {}")  # no auxiliary: nothing to negate
    # no antonyms, no deletions
    weak = EditSearchGenerator(EditSearchConfig(max_edits=1, top_positions=0), DictLexicon({}))
    from codistill.cod import NoCounterfactuals

    # a file without one usable counterfactual is written, then refused unless allowed
    with pytest.raises(NoCounterfactuals, match="s.jsonl: none of the 4 originals has a usable counterfactual"):
        generate_counterfactuals(ds, Verifier(toy_scorer), weak, tmp_path / "s.jsonl", k=8, progress=False)
    assert len((tmp_path / "s.jsonl").read_text().splitlines()) == 4
    skip = generate_counterfactuals(ds, Verifier(toy_scorer), weak, tmp_path / "s.jsonl", k=8, progress=False,
                                    allow_empty=True)
    keep = generate_counterfactuals(ds, Verifier(toy_scorer), weak, tmp_path / "k.jsonl", k=8, progress=False,
                                    on_failure="keep-best", allow_empty=True)
    assert skip["flip_rate"] == 0.0 and skip["used"] == 0
    assert keep["used"] == 0  # keep-best needs a candidate; with no applicable edit there is none
    # may delete the key word
    strong_del = EditSearchGenerator(EditSearchConfig(max_edits=1, top_positions=1), DictLexicon({}))
    kept = generate_counterfactuals(ds, Verifier(toy_scorer), strong_del, tmp_path / "d.jsonl", k=8, progress=False,
                                    on_failure="keep-best")
    # deleting the sentiment word leaves p = (0.5, 0.5): a tie is not a flip, so nothing flips, and every
    # original keeps its best (closest) candidate
    assert kept["flip_rate"] == 0.0 and kept["used"] == 4
    rows = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert all(r["use"] == r["flipped"] for r in rows)


# -- the LLM client against a real HTTP server on 127.0.0.1 --------------------------------------------------


class ScriptedLLM(LocalServer):
    """An OpenAI-compatible server: for each original (found in the prompt) it plays a script of actions,
    one per request: ("ok", text), ("status", code), ("sleep", seconds, text), ("garbage",)."""

    def __init__(self, scripts: dict[str, list[tuple]], default=("echo",)) -> None:
        self.scripts = {k: list(v) for k, v in scripts.items()}
        self.default = default
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with owner.lock:
                    owner.requests.append(body)
                    owner.headers.append({k.lower(): v for k, v in self.headers.items()})
                    # the original: in the last message that has one (the first is the worked example)
                    original = [m.group(1) for m in (re.search(r"Text: (.*)\n", x["content"]) for x in body["messages"]
                                                     if x["role"] == "user") if m][-1]
                    script = owner.scripts.get(original, [])
                    action = script.pop(0) if script else owner.default
                if action[0] == "status":
                    self.send_response(action[1])
                    self.send_header("retry-after-ms", "5")  # the openai client then waits 5 ms
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if action[0] == "sleep":
                    time.sleep(action[1])
                    action = ("ok", action[2])
                if action[0] == "garbage":
                    payload = b"this is not json"
                else:
                    text = original if action[0] == "echo" else action[1]
                    payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}],
                                          "usage": {"prompt_tokens": 10, "completion_tokens": 3}}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        super().__init__(Handler)


def _cfg(url: str, tmp_path: Path, **kw) -> LLMConfig:
    return LLMConfig(**{"base_url": url, "model": "scripted", "timeout": 2.0, "max_retries": 3,
                        "cache_dir": str(tmp_path / "cache"), "api_key_env": "CODISTILL_TEST_KEY", **kw})


def test_client_retries_429_500_and_timeouts_then_caches(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CODISTILL_TEST_KEY", "sk-secret-123")
    script = {"the film was great": [("sleep", 1.0, "late"), ("status", 429), ("status", 500), ("ok", "the film was awful")]}
    with ScriptedLLM(script) as server:
        client = ChatClient(_cfg(server.url, tmp_path, timeout=0.5))
        messages = build_messages("the film was great", "positive", "negative", ["negative", "positive"])
        text, usage, cached = client.complete(messages)
        assert text == "the film was awful" and not cached and usage["completion_tokens"] == 3
        assert len(server.requests) == 4 and client.stats.retries == 3
        assert server.headers[0]["authorization"] == "Bearer sk-secret-123"
        again = ChatClient(_cfg(server.url, tmp_path))
        assert again.complete(messages) == ("the film was awful", usage, True)
        assert len(server.requests) == 4  # a cached prompt is never requested again
    for f in (tmp_path / "cache").rglob("*.json"):
        assert "sk-secret-123" not in f.read_text()


def test_client_reports_failure_after_retries_and_non_retryable(tmp_path: Path) -> None:
    script = {"a": [("status", 503)] * 10, "b": [("status", 401)] * 3, "c": [("garbage",)] * 10,
              "d": [("status", 404)] * 3}
    with ScriptedLLM(script) as server:
        client = ChatClient(_cfg(server.url, tmp_path, max_retries=2))
        with pytest.raises(LLMRequestError, match="HTTP 503 after 3 tries"):
            client.complete(build_messages("a", "x", "y", ["x", "y"]))
        assert len(server.requests) == 3
        with pytest.raises(LLMFatalError, match=f"{server.url} answered HTTP 401 \\(unauthorized.*not retried"):
            client.complete(build_messages("b", "x", "y", ["x", "y"]))
        assert len(server.requests) == 4  # a 401 is asked once
        with pytest.raises(LLMRequestError, match="malformed response"):
            client.complete(build_messages("c", "x", "y", ["x", "y"]))
        with pytest.raises(LLMFatalError, match="HTTP 404 \\(not found"):
            client.complete(build_messages("d", "x", "y", ["x", "y"]))
        assert client.stats.failures == 4 and not list((tmp_path / "cache").rglob("*.json"))


def test_llm_generator_validates_retries_with_feedback_and_reports_failures(tmp_path: Path) -> None:
    scripts = {
        "the film was great": [("ok", "Here is the edited text: the film was awful")],
        "the plot was good": [("ok", "I'm sorry, I can't help with that."), ("ok", "the plot was bad")],
        "the acting was lovely": [("ok", "the acting was lovely indeed"), ("ok", "the acting was dull")],
        "a great cast": [("ok", "one awful movie")] * 3,
        "good fun": [("status", 500)] * 20,
    }
    with ScriptedLLM(scripts) as server:
        cfg = _cfg(server.url, tmp_path, max_attempts=3, max_retries=1, concurrency=3)
        gen = LLMGenerator(cfg)
        requests = [CFRequest(i, t, 1, 0) for i, t in enumerate(scripts)]
        results = gen.generate(requests, Verifier(toy_scorer), ["negative", "positive"], progress=False)
        by_text = {r.request.text: r for r in results}
        assert by_text["the film was great"].best.text == "the film was awful"   # preamble stripped
        plot = by_text["the plot was good"]
        assert [a.reason for a in plot.attempts] == ["refusal", "flipped"]
        acting = by_text["the acting was lovely"]
        assert [a.reason for a in acting.attempts] == ["not_flipped", "flipped"]
        retry_prompt = [r for r in server.requests if "the acting was lovely" in r["messages"][3]["content"]][1]
        assert "still reads your edit" in retry_prompt["messages"][-1]["content"]
        assert [a.reason for a in by_text["a great cast"].attempts] == ["too_many_edits"] * 3
        failed = by_text["good fun"]
        assert not failed.flipped and [a.reason for a in failed.attempts] == ["request_failed"] * 3
        n_requests = len(server.requests)
        rerun = LLMGenerator(_cfg(server.url, tmp_path, max_attempts=3, max_retries=1, concurrency=3))
        rerun.generate(requests[:4], Verifier(toy_scorer), ["negative", "positive"], progress=False)
        assert len(server.requests) == n_requests and rerun.client.stats.requests == 0


def test_llm_end_to_end_file_has_tokens_and_time(tmp_path: Path) -> None:
    ds = toy_dataset(8)
    answers = {t: [("ok", t.replace("great", "awful") if "great" in t else t.replace("awful", "great"))]
               for t in ds["train"].texts}
    with ScriptedLLM(answers) as server:
        out = tmp_path / "cf.jsonl"
        gen = LLMGenerator(_cfg(server.url, tmp_path))
        summary = generate_counterfactuals(ds, Verifier(toy_scorer), gen, out, k=4, progress=False)
        # the same generator (as a sweep reuses it) for another seed: its file counts only its own requests
        again = generate_counterfactuals(ds, Verifier(toy_scorer), gen, tmp_path / "s1.jsonl", k=4, seed=1,
                                         progress=False)
    assert summary["flip_rate"] == 1.0 and summary["llm"]["requests"] == 2
    assert summary["llm"]["completion_tokens"] == 6 and summary["seconds"] > 0
    new = len(set(sample_from(ds, 2, 1).texts) - set(sample_from(ds, 2, 0).texts))
    assert again["llm"]["requests"] == new and again["llm"]["cache_hits"] == 2 - new
    assert again["llm"]["completion_tokens"] == 3 * new


def test_counters_are_per_prompt_under_concurrency(tmp_path: Path) -> None:
    ds = toy_dataset(8)
    texts = sample_from(ds, 4, 0).texts
    flip = {t: t.replace("great", "awful") if "great" in t else t.replace("awful", "great") for t in texts}
    # every prompt is refused once (429), then answered after 0.3 s: 4 prompts in flight together
    script = {t: [("status", 429), ("sleep", 0.3, flip[t])] for t in texts}
    with ScriptedLLM(script) as server:
        start = time.monotonic()
        summary = generate_counterfactuals(ds, Verifier(toy_scorer), LLMGenerator(_cfg(server.url, tmp_path,
                                                                                       concurrency=4)),
                                           tmp_path / "cf.jsonl", k=8, progress=False)
        wall = time.monotonic() - start
    llm = summary["llm"]
    assert llm["requests"] == len(server.requests) == 8 and llm["retries"] == 4 and llm["failures"] == 0
    assert 0.3 <= llm["seconds"] <= wall  # time with requests in flight, not summed over the 4 threads


def test_a_password_in_the_url_is_sent_but_never_written(tmp_path: Path) -> None:
    from codistill.counterfactuals.generate import CounterfactualsIncomplete
    from codistill.fileio import atomic_write_json

    ds = toy_dataset(8)
    answers = {t: [("ok", t.replace("great", "awful") if "great" in t else t.replace("awful", "great"))]
               for t in ds["train"].texts}
    with ScriptedLLM(answers) as server:
        url = server.url.replace("http://", "http://alice:s3cr3t-pw@")
        cfg = _cfg(url, tmp_path)
        summary = generate_counterfactuals(ds, Verifier(toy_scorer), LLMGenerator(cfg), tmp_path / "cf.jsonl", k=4,
                                           progress=False)
        assert server.headers[0]["authorization"].startswith("Basic ")  # the endpoint still gets them
        atomic_write_json(tmp_path / "config.json", {"generator": {"name": "llm", "base_url": url}})
    assert summary["llm"]["base_url"] == server.url
    from codistill.fileio import strip_credentials

    assert strip_credentials("http://user:p@ss@host:8/v1?x=a@b") == "http://host:8/v1?x=a@b"  # the last '@' of the host
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) >= 4 and not [p for p in written if "s3cr3t-pw" in p.read_text(errors="replace")]
    with ScriptedLLM({}, default=("status", 401)) as server:  # and messages name the URL without them
        url = server.url.replace("http://", "http://alice:s3cr3t-pw@")
        with pytest.raises(CounterfactualsIncomplete) as failed:
            generate_counterfactuals(ds, Verifier(toy_scorer), LLMGenerator(_cfg(url, tmp_path / "b")),
                                     tmp_path / "b.jsonl", k=4, progress=False)
    assert "s3cr3t-pw" not in str(failed.value) and server.url in str(failed.value)


def test_llm_then_edits_chain_fills_what_the_llm_could_not_flip(tmp_path: Path, capsys) -> None:
    from codistill.cli import main
    from codistill.counterfactuals.registry import make_generator

    ds = toy_dataset(16)
    sample = sample_from(ds, 4, 0)
    first = sample.texts[0]
    # the LLM flips the first original; for the others it only echoes (rejected before the teacher)
    answers = {first: [("ok", first.replace("great", "awful") if "great" in first else first.replace("awful", "great"))]}
    with ScriptedLLM(answers) as server:
        spec = {"name": "chain", "generators": [
            {"name": "llm", "base_url": server.url, "model": "scripted", "max_attempts": 1, "api_key_env": ""},
            {"name": "edits"}]}
        gen = make_generator(spec, default_cache_dir=str(tmp_path / "cache"))
        gen.generators[1] = EditSearchGenerator(EditSearchConfig(), LEXICON)  # the toy lexicon instead of WordNet
        assert gen.name == "llm+edits"
        summary = generate_counterfactuals(ds, Verifier(toy_scorer), gen, tmp_path / "cf.jsonl", k=8, progress=False)
        rows = [json.loads(line) for line in (tmp_path / "cf.jsonl").read_text().splitlines()]
        assert summary["flip_rate"] == 1.0 and summary["generated_by"] == {"edits": 3, "llm:scripted": 1}
        assert [r["generator"] for r in rows] == ["llm:scripted", "edits", "edits", "edits"]
        assert [c["reason"] for c in rows[1]["candidates"]] == ["unchanged", "flipped"]  # echo, then the search
        assert summary["llm"]["requests"] == 4 and len(server.requests) == 4
    # a chain names generators: it is built from a config file or as --generator llm+edits, not by name alone
    assert main(["counterfactuals", "--data", "tweets", "--teacher", "x", "--out", str(tmp_path / "x.jsonl"),
                 "--generator", "chain"]) == 2
    assert "at least two generator specs" in capsys.readouterr().err


def test_llm_config_errors() -> None:
    with pytest.raises(ConfigError, match="--base-url"):
        LLMConfig(base_url="localhost:8000")
    with pytest.raises(ConfigError, match="max_changed_share"):
        LLMConfig(max_changed_share=0)


# -- the tiny real teacher verifies, through the CLI ------------------------------------------------------


def test_cli_counterfactuals_with_tiny_teacher(tmp_path: Path, tiny_teacher: Path, tiny_lm: Path, csv_folder: Path,
                                               capsys) -> None:
    from codistill.cli import main
    from codistill.counterfactuals.rows import extra_examples as read_extra_examples

    lexicon = tmp_path / "lex.json"
    lexicon.write_text(json.dumps({w: ["awful", "dull"] for w in ["great", "lovely", "superb", "fine"]}))
    out = tmp_path / "cf.jsonl"
    code = main(["counterfactuals", "--data", str(csv_folder), "--teacher", str(tiny_teacher), "--k", "8",
                 "--cod-mode", "replace", "--generator", "edits", "--lexicon", str(lexicon), "--out", str(out), "--on-failure", "keep-best",
                 "--fluency-lm", str(tiny_lm), "--judge", str(tiny_teacher)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "flip_rate" in captured.out and "fluency_ratio_median" in captured.out
    summary = json.loads(summary_path(out).read_text())
    assert summary["quality"] == {"lm": str(tiny_lm), "judge": str(tiny_teacher)}
    assert summary["judge_accuracy_originals"] is not None
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4
    verifier = Verifier.from_classifier(__import__("codistill.models", fromlist=["x"]).load_classifier(str(tiny_teacher)))
    for r in rows:
        if r["counterfactual"]:
            p = verifier.probs([r["counterfactual"]])[0]
            assert r["flipped"] == (int(p.argmax()) == r["target_label"])
            assert p.tolist() == pytest.approx(r["probs_after"], abs=1e-4)
    extra, info = read_extra_examples(out, ["0", "1"])
    assert info["added"] == sum(r["use"] for r in rows)
    # augment at k = 4 edits the same 4 originals: the file a distill run at k = 4 in that mode reads
    code = main(["counterfactuals", "--data", str(csv_folder), "--teacher", str(tiny_teacher), "--k", "4",
                 "--cod-mode", "augment", "--generator", "edits", "--lexicon", str(lexicon), "--out",
                 str(tmp_path / "aug.jsonl"), "--on-failure", "keep-best", "--fluency-lm", "none"])
    assert code == 0, capsys.readouterr().err
    assert "k=4 for --cod-mode augment (4 originals)" in " ".join(capsys.readouterr().out.split())
    assert [json.loads(line)["text"] for line in (tmp_path / "aug.jsonl").read_text().splitlines()] == \
        [r["text"] for r in rows]


def test_edit_search_deletes_at_most_one_word_and_no_function_words() -> None:
    gen = EditSearchGenerator(EditSearchConfig(max_edits=3, top_positions=5), DictLexicon({"under": ["dominant"]}))
    results = gen.generate([CFRequest(0, "great lovely film under the sun", 1, 0)], Verifier(toy_scorer),
                           ["negative", "positive"], progress=False)
    # two deletions would flip it (score 0 -> class 0); one is all a candidate may have
    assert not results[0].flipped
    best = results[0].best.text.split()
    assert len(best) >= 5 and "under" in best and "the" in best and "dominant" not in best


def test_edit_search_fixes_the_article_before_an_edited_word() -> None:
    lex = DictLexicon({"great": ["awful"], "awful": ["great"], "lovely": ["unimaginative"]})
    requests = [
        CFRequest(0, "A great film , an hour long", 1, 0),      # "A great" -> "An awful"; "an hour" untouched
        CFRequest(1, "an awful , lovely film", 0, 1),           # "an awful" -> "a great"
        CFRequest(2, "a lovely film", 1, 0),                    # "a lovely" -> "an unimaginative" (un- + vowel)
    ]
    scorer = lambda texts: toy_scorer([t.replace("unimaginative", "dull") for t in texts])  # noqa: E731
    results = EditSearchGenerator(EditSearchConfig(max_edits=2), lex).generate(requests, Verifier(scorer),
                                                                               ["negative", "positive"], progress=False)
    assert [r.best.text for r in results] == ["An awful film , an hour long", "a great , lovely film",
                                              "an unimaginative film"]
    assert all(r.flipped for r in results)


def test_article_rule_by_sound_and_untouched_articles_stay() -> None:
    from codistill.counterfactuals.edits import _State
    from codistill.counterfactuals.morphology import _article_for

    assert [_article_for("a", w) for w in ("awful", "useful", "hour", "one-note", "unique", "uneven", "dull")] == \
        ["an", "a", "an", "a", "a", "an", "a"]
    assert _article_for("(A", "Honest") == "(An" and _article_for("an", "42") == "an"
    # a deletion after the article counts; an article whose next word was not touched keeps its spelling
    st = _State(("an", "awful", "movie", "and", "a", "hour"), frozenset({1}), ("-awful",), 1, 0, 1)
    assert _State(tuple(s if i != 1 else "" for i, s in enumerate(st.slots)), st.edited, st.ops, 1, 0, 1).text() == \
        "a movie and a hour"


# -- paid calls that fail loudly ----------------------------------------------------------------------------------


def _dead_url() -> str:
    """A 127.0.0.1 port nothing listens on (bound, then closed)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def test_unreachable_endpoint_writes_what_it_has_and_fails(tmp_path: Path) -> None:
    from codistill.counterfactuals.generate import CounterfactualsIncomplete

    ds = toy_dataset(8)
    out = tmp_path / "cf.jsonl"
    cfg = _cfg(_dead_url(), tmp_path, max_retries=0, max_consecutive_failures=3, concurrency=1)
    start = time.monotonic()
    with pytest.raises(CounterfactualsIncomplete, match="4 of 4 originals got no counterfactual.*requests in a row"):
        generate_counterfactuals(ds, Verifier(toy_scorer), LLMGenerator(cfg), out, k=8, progress=False)
    assert time.monotonic() - start < 30
    summary = json.loads(summary_path(out).read_text())
    assert summary["complete"] is False and summary["failed_originals"] == 4 and len(out.read_text().splitlines()) == 4
    assert summary["llm"]["requests"] == 3  # the third failure in a row stopped the run


def test_401_is_asked_once_and_ends_the_run(tmp_path: Path) -> None:
    from codistill.counterfactuals.generate import CounterfactualsIncomplete

    ds = toy_dataset(8)
    with ScriptedLLM({}, default=("status", 401)) as server:
        cfg = _cfg(server.url, tmp_path, concurrency=1)
        with pytest.raises(CounterfactualsIncomplete, match="HTTP 401"):
            generate_counterfactuals(ds, Verifier(toy_scorer), LLMGenerator(cfg), tmp_path / "cf.jsonl", k=8,
                                     progress=False)
        assert len(server.requests) == 1


def test_deadline_bounds_a_black_holed_endpoint(tmp_path: Path) -> None:
    from codistill.counterfactuals.generate import CounterfactualsIncomplete

    ds = toy_dataset(8)
    with ScriptedLLM({}, default=("sleep", 4.0, "late")) as server:
        cfg = _cfg(server.url, tmp_path, timeout=30.0, deadline=1.0, max_retries=0, concurrency=1)
        start = time.monotonic()
        with pytest.raises(CounterfactualsIncomplete):
            generate_counterfactuals(ds, Verifier(toy_scorer), LLMGenerator(cfg), tmp_path / "cf.jsonl", k=8,
                                     progress=False)
        assert time.monotonic() - start < 3.5   # not 4 originals x 3 attempts x 4 s


def test_an_answer_the_cache_cannot_hold_is_kept_and_never_paid_twice(tmp_path: Path, monkeypatch) -> None:
    import errno
    import tempfile

    from codistill.counterfactuals import llm as llm_module
    from codistill.fileio import atomic_write_json

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    cache = tmp_path / "cache"

    def full_disk(path, obj):  # the cache's filesystem is full; others are not
        if cache in Path(path).parents:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return atomic_write_json(path, obj)

    monkeypatch.setattr(llm_module, "atomic_write_json", full_disk)
    messages = build_messages("the film was great", "positive", "negative", ["negative", "positive"])
    with ScriptedLLM({}, default=("ok", "the film was awful")) as server:
        client = ChatClient(_cfg(server.url, tmp_path))
        assert client.complete(messages)[0] == "the film was awful" and client.stats.unsaved == 1
        assert len(list((tmp_path / "tmp").glob("codistill-llm-answers-*/*.json"))) == 1
        again = ChatClient(_cfg(server.url, tmp_path))  # a later run finds the answer where it went
        assert again.complete(messages) == ("the film was awful", {"prompt_tokens": 10, "completion_tokens": 3}, True)
        assert len(server.requests) == 1


def test_two_runs_sharing_a_cache_never_pay_twice(tmp_path: Path) -> None:
    prompts = [f"the film was great number {i}" for i in range(6)]
    with ScriptedLLM({}, default=("sleep", 0.2, "the film was awful")) as server:
        def run():
            client = ChatClient(_cfg(server.url, tmp_path))
            for text in prompts:
                client.complete(build_messages(text, "positive", "negative", ["negative", "positive"]))

        threads = [threading.Thread(target=run) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(server.requests) == len(prompts)


def test_sweep_against_a_dead_endpoint_trains_no_cell(tmp_path: Path, tiny_teacher: Path, csv_folder: Path) -> None:
    from codistill.errors import CodistillError
    from codistill.experiments import SweepConfig, run_sweep

    cfg = SweepConfig(out=str(tmp_path / "sweep"), datasets=[{"data": str(csv_folder), "teacher": str(tiny_teacher)}],
                      methods=["kd"], cod=["none", "replace"], k=[4], seeds=[0],
                      generator={"name": "llm", "base_url": _dead_url(), "model": "x", "max_retries": 0,
                                 "max_consecutive_failures": 1},
                      student={"model": str(tiny_teacher), "layers": 1}, train={"epochs": 1, "min_steps": 1},
                      fluency_lm=None)
    with pytest.raises(CodistillError, match="got no counterfactual"):
        run_sweep(cfg, progress=False)
    assert not list((tmp_path / "sweep").glob("cells/**/metrics.json"))


def test_a_cod_cell_without_counterfactuals_stops_the_sweep_before_training(tmp_path: Path, tiny_teacher: Path,
                                                                           csv_folder: Path) -> None:
    from codistill.cod import NoCounterfactuals
    from codistill.experiments import SweepConfig, read_cells, run_sweep

    with ScriptedLLM({}) as server:  # it only echoes the original: no candidate reaches the teacher
        base = dict(datasets=[{"data": str(csv_folder), "teacher": str(tiny_teacher)}], methods=["kd"],
                    cod=["none", "replace"], k=[4], seeds=[0], fluency_lm=None,
                    generator={"name": "llm", "base_url": server.url, "model": "x", "max_attempts": 1,
                               "api_key_env": "", "cache_dir": str(tmp_path / "cache")},
                    student={"model": str(tiny_teacher), "layers": 1}, train={"epochs": 1, "min_steps": 1,
                                                                              "probe_steps": 0})
        with pytest.raises(NoCounterfactuals, match="sweep cell toy kd[+]cod k=4 seed=0: .*none of the 2 originals"):
            run_sweep(SweepConfig(out=str(tmp_path / "sweep"), **base), progress=False)
        assert not list((tmp_path / "sweep").glob("cells/**/metrics.json"))  # not even the baseline trained
        allowed = SweepConfig(out=str(tmp_path / "sweep"), allow_empty_counterfactuals=True, **base)
        assert run_sweep(allowed, progress=False)["finished"] == 2
    cod = [c for c in read_cells(tmp_path / "sweep" / "cells") if c["cod"] == "replace"]
    assert cod[0]["n_counterfactuals"] == 0 and cod[0]["n_originals"] == 2


def test_edit_search_keeps_several_counterfactuals_at_different_positions(tmp_path: Path) -> None:
    verifier = Verifier(toy_scorer)
    request = CFRequest(0, "great but dull and good", 1, 0)  # two antonym flips at depth 1: great, good
    one = EditSearchGenerator(EditSearchConfig(max_edits=2, top_positions=0), LEXICON).generate(
        [request], verifier, ["negative", "positive"], progress=False)[0]
    two = EditSearchGenerator(EditSearchConfig(max_edits=2, top_positions=0, per_original=2), LEXICON).generate(
        [request], verifier, ["negative", "positive"], progress=False)[0]
    assert one.to_row(["negative", "positive"])["more_counterfactuals"] == []
    row = two.to_row(["negative", "positive"])
    assert row["counterfactual"] == one.best.text                   # the first is the one a single search keeps
    assert sorted([row["counterfactual"]] + row["more_counterfactuals"]) == ["awful but dull and good",
                                                                           "great but dull and bad"]
    # a file of such rows reads back with its extras; a malformed list is one line naming the row
    from codistill.counterfactuals.rows import read_counterfactual_rows

    path = tmp_path / "cf.jsonl"
    path.write_text(json.dumps({**row, "pool_index": 0}) + "\n" + json.dumps({**row, "more_counterfactuals": [""]}) + "\n")
    with pytest.raises(DataError, match=r"cf.jsonl, line 2: 'more_counterfactuals' must be a list of non-empty strings"):
        read_counterfactual_rows(path, ["negative", "positive"])
    path.write_text(json.dumps({**row, "pool_index": 0}) + "\n")
    assert read_counterfactual_rows(path, ["negative", "positive"])[0].more == tuple(row["more_counterfactuals"])


def test_student_aware_round_keeps_the_edits_that_flip_the_student_but_not_the_teacher() -> None:
    from codistill.counterfactuals.rounds import student_disagreements

    def slang_teacher(texts):
        """The toy teacher, except that it reads 'bad' as praise."""
        return toy_scorer([t.replace("bad", "good") for t in texts])

    lexicon = DictLexicon({"great": ["awful"], "good": ["bad"], "awful": ["great"]})
    student, teacher = Verifier(toy_scorer), Verifier(slang_teacher)
    rows, summary = student_disagreements(["great film", "good film", "awful film", "a film"], student, teacher,
                                          EditSearchGenerator(EditSearchConfig(), lexicon), ["negative", "positive"],
                                          progress=False)
    by_edit = {r["counterfactual"]: r for r in rows}
    assert set(by_edit) == {"awful film", "bad film", "great film"}          # "a film" has nothing to edit
    assert [r["student_label"] for r in rows] == [1, 1, 0]                     # the student's own labels
    assert all(r["student_label_after"] == 1 - r["student_label"] for r in rows)  # each edit flipped the student
    # the teacher agrees on "awful film" and "great film"; it still calls "bad film" positive
    assert [r["counterfactual"] for r in rows if r["use"]] == ["bad film"]
    assert by_edit["bad film"]["teacher_label"] == 1 and by_edit["awful film"]["teacher_label"] == 0
    assert summary == {**summary, "texts": 4, "student_flipped": 3, "edits": 3, "disagreements": 1, "teacher_calls": 1}


def test_a_long_text_is_not_searched_and_says_so(tmp_path: Path) -> None:
    import time as clock

    ds = toy_dataset(8)
    long_text = " ".join(["the film was great and the plot lovely"] * 4000)  # 32,000 words, 200 kB
    requests = [CFRequest(0, long_text, 1, 0), CFRequest(1, "the film was great", 1, 0)]
    gen = EditSearchGenerator(EditSearchConfig(), LEXICON)
    start = clock.monotonic()
    results = gen.generate(requests, Verifier(toy_scorer), ds.label_names, progress=False)
    assert clock.monotonic() - start < 10
    assert [a.reason for a in results[0].attempts] == ["too_long"]
    assert "32000 words, more than max_words (256)" in results[0].attempts[0].detail
    assert results[1].flipped  # the short one is searched as before


def test_recorded_target_prob_ignores_malformed_probs_in_summary_and_rows(tmp_path):
    """A hand-edited probs_after that is not a list of one number per class counts as not recorded, in the
    quality summary (which crashed on a short list) and in the reader that filters by it."""
    from codistill.counterfactuals.metrics import recorded_target_prob
    from codistill.counterfactuals.rows import read_counterfactual_rows

    good = {"text": "a fine film", "counterfactual": "a dull film", "target_label": 0, "flipped": True,
            "probs_after": [0.7, 0.3]}
    short = dict(good, probs_after=[0.9])
    strings = dict(good, probs_after=["0.7", "0.3"])
    flags = dict(good, probs_after=[True, False])
    assert recorded_target_prob(good, 0, 2) == pytest.approx(0.7)
    assert recorded_target_prob(short, 0) == pytest.approx(0.9)
    assert recorded_target_prob(short, 0, 2) is None
    assert [recorded_target_prob(r, 0) for r in (strings, flags, dict(good, probs_after=None))] == [None] * 3
    summary = quality_summary([good, dict(short, target_label=1), strings])
    assert summary["mean_target_prob"] == pytest.approx(0.7)
    assert [e["target_prob"] for e in summary["examples"]] == [pytest.approx(0.7), None, None]
    path = tmp_path / "cf.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in (good, short)) + "\n")
    assert [r.target_prob for r in read_counterfactual_rows(path, ["neg", "pos"])] == [pytest.approx(0.7), None]

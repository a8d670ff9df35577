"""The LLM teacher against a scripted OpenAI-compatible server on 127.0.0.1: probabilities from the label
words' log-probabilities, the votes fallback, the cache, in-context examples, budgets, failures, spec files."""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import torch
from conftest import LocalServer

from codistill.counterfactuals.llm import ChatClient, LLMFatalError
from codistill.data import LabeledTexts
from codistill.errors import CodistillError, ConfigError
from codistill.llm_teacher import (
    LLMBudgetExceeded,
    LLMTeacher,
    LLMTeacherConfig,
    LLMTeacherError,
    LLMTeacherWarning,
    draw_examples,
    is_llm_teacher_spec,
    token_label_mass,
    vote_of,
)

LABELS = ["negative", "positive"]


class FakeChat(LocalServer):
    """An OpenAI-compatible chat server. ``answer(text, body)`` gets the text being classified (the last
    user message's ``Text:`` line, or the whole message) and the request body, and returns one of
    ``("logprobs", [(token, probability), ...])`` (most likely first; its first token is the content),
    ``("text", content)`` (no log-probabilities) or ``("status", code)``."""

    def __init__(self, answer) -> None:
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with owner.lock:
                    owner.requests.append(body)
                user = body["messages"][-1]["content"]
                text = user.split("Text: ", 1)[1].split("\n", 1)[0] if "Text: " in user else user
                kind, value = answer(text, body)
                if kind == "status":
                    self.send_response(value)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                choice = {"index": 0, "finish_reason": "length", "logprobs": None,
                          "message": {"role": "assistant", "content": value if kind == "text" else value[0][0]}}
                if kind == "logprobs":
                    top = [{"token": t, "logprob": math.log(p), "bytes": None} for t, p in value]
                    choice["logprobs"] = {"content": [{**top[0], "top_logprobs": top}]}
                payload = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                                      "choices": [choice],
                                      "usage": {"prompt_tokens": 10, "completion_tokens": 1,
                                                "total_tokens": 11}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        super().__init__(Handler)


def _cfg(url: str, tmp_path: Path, **kw) -> LLMTeacherConfig:
    return LLMTeacherConfig(**{"base_url": url, "model": "scripted", "timeout": 2.0, "max_retries": 0,
                               "cache_dir": str(tmp_path / "cache"), "api_key_env": "", "concurrency": 1, **kw})


# what the scripted model puts at the answer position, per text (probabilities, most likely first)
TOP = {
    "a great film": [(" Positive", 0.6), (" Negative", 0.2), ("positive", 0.1), ("The", 0.05), ("\n", 0.02)],
    "a dull film": [("Negative", 0.9), ("Neg", 0.05), ("N", 0.03), ("I", 0.01)],
}


def logprob_answer(text: str, body: dict):
    return "logprobs", TOP[text]


def test_probabilities_are_the_renormalised_label_word_probabilities(tmp_path: Path) -> None:
    with FakeChat(logprob_answer) as server:
        teacher = LLMTeacher(_cfg(server.url, tmp_path, concurrency=2), LABELS)
        probs = teacher.predict_proba(["a great film", "a dull film", "a great film"])
        logits = teacher.logits(["a dull film"])
    assert probs.dtype == torch.float32 and probs.shape == (3, 2)
    # great: negative 0.2, positive 0.6 + 0.1 ("The" and "\n" match no word)
    assert probs[0].tolist() == pytest.approx([0.2 / 0.9, 0.7 / 0.9], abs=1e-6)
    assert torch.equal(probs[0], probs[2])
    # dull: negative 0.9 + 0.05 + 0.03 ("N" starts "negative" only); positive never listed: floor 0.01 / 2
    assert probs[1].tolist() == pytest.approx([0.98 / 0.985, 0.005 / 0.985], abs=1e-6)
    assert torch.allclose(probs.sum(-1), torch.ones(3))
    assert torch.isfinite(logits).all() and torch.allclose(logits.exp(), probs[1:2])
    assert len(server.requests) == 2  # the repeated text is asked once (and the logits call is cached)
    body = server.requests[0]
    assert (body["max_tokens"], body["temperature"], body["logprobs"], body["top_logprobs"]) == (1, 0.0, True, 20)
    assert "negative, positive" in body["messages"][-1]["content"] and body["messages"][0]["role"] == "system"
    stats = teacher.stats()
    assert stats["estimate"] == "logprobs" and stats["requests"] == 2 and stats["cache_hits"] == 1
    # 1 - matched mass, the mean over the texts of each call (the logits call scored "a dull film" again)
    assert stats["texts"] == 3 and stats["unmatched_mass"] == pytest.approx((0.1 + 0.02 + 0.02) / 3, abs=1e-6)
    assert stats["prompt_tokens"] == 20 and stats["completion_tokens"] == 2 and stats["seconds"] > 0


def test_token_matching_ignores_case_space_and_word_start_markers() -> None:
    words = ["negative", "neutral", "pos"]
    mass, unmatched = token_label_mass([("\u0120POS", math.log(0.5)), ("\u2581Neg", math.log(0.2)),
                                        ("ne", math.log(0.2)), ("positive", math.log(0.05))], words)
    # "ne" starts two words: shared; "positive" is not the start of "pos"
    assert mass == pytest.approx([0.3, 0.1, 0.5]) and unmatched == pytest.approx(0.1)
    answers = ["Neutral.", "POSITIVE!", "ne", "I think negative", "**neg**"]
    assert [vote_of(a, words) for a in answers] == [1, 2, None, None, 0]


def test_no_logprobs_falls_back_to_votes_and_says_so_once(tmp_path: Path) -> None:
    samples = ["Positive", "positive.", "Negative", "I think so", "POS"]  # 3 positive, 1 negative, 1 neither

    def answer(text, body):
        return "text", (samples[body["seed"]] if "seed" in body else "Positive")

    with FakeChat(answer) as server:
        teacher = LLMTeacher(_cfg(server.url, tmp_path), LABELS)
        with pytest.warns(LLMTeacherWarning, match="returned no log-probabilities.*5 sampled answers") as caught:
            probs = teacher.predict_proba(["one", "two"])
        assert len([w for w in caught if w.category is LLMTeacherWarning]) == 1
        # the first text's greedy answer showed there are none; then 5 samples per text, the second not probed
        assert len(server.requests) == 1 + 5 + 5
        votes = [r for r in server.requests if "seed" in r]
        assert {r["temperature"] for r in votes} == {1.0} and sorted({r["seed"] for r in votes}) == [0, 1, 2, 3, 4]
    expected = [(1 + 1) / (4 + 2), (3 + 1) / (4 + 2)]  # add-one smoothed over the 4 answers that voted
    assert probs.tolist() == [pytest.approx(expected, abs=1e-6)] * 2
    stats = teacher.stats()
    assert stats["estimate"] == "votes" and stats["unmatched_mass"] == pytest.approx(0.2) and stats["notes"]


def test_no_logprobs_and_no_fallback_is_a_one_line_error_naming_the_endpoint(tmp_path: Path) -> None:
    with FakeChat(lambda text, body: ("text", "Positive")) as server:
        teacher = LLMTeacher(_cfg(server.url, tmp_path, fallback_samples=0), LABELS)
        with pytest.raises(LLMTeacherError) as err:
            teacher.predict_proba(["one", "two", "three"])
        assert len(server.requests) == 1
    message = str(err.value)
    assert server.url in message and "fallback_samples" in message and "3 of 3 texts" in message
    assert "\n" not in message


def test_answers_are_cached_and_never_asked_twice(tmp_path: Path) -> None:
    texts = ["a great film", "a dull film"]
    with FakeChat(logprob_answer) as server:
        first = LLMTeacher(_cfg(server.url, tmp_path), LABELS).predict_proba(texts)
        assert len(server.requests) == 2
        again = LLMTeacher(_cfg(server.url, tmp_path, max_requests=1), LABELS)  # a fresh run, a budget of 1
        second = again.predict_proba(texts)
        assert len(server.requests) == 2 and torch.equal(first, second)
        assert again.stats()["requests"] == 0 and again.stats()["cache_hits"] == 2 and again.stats()["prompts"] == 0
        # the generator's kind of request for the same messages is another cache entry
        client = ChatClient(_cfg(server.url, tmp_path).client_config())
        content, _, cached = client.complete(again.messages("a great film"))
        assert not cached and len(server.requests) == 3 and "logprobs" not in server.requests[-1]
    entries = [json.loads(p.read_text()) for p in (tmp_path / "cache").rglob("*.json")]
    teacher_entries = [e for e in entries if "params" in e]
    assert len(teacher_entries) == 2
    assert sorted(e["logprobs"][0][0][0] for e in teacher_entries) == [" Positive", "Negative"]


def test_in_context_examples_are_class_balanced_and_seeded(tmp_path: Path) -> None:
    rows = LabeledTexts([f"row {i}" for i in range(10)], [0, 0, 0, 0, 0, 0, 1, 1, 1, 1])

    def sent_examples(seed: int) -> list[tuple[str, str]]:
        with FakeChat(lambda text, body: ("logprobs", [("positive", 0.9)])) as server:
            teacher = LLMTeacher(_cfg(server.url, tmp_path / str(seed), examples=4), LABELS, examples=rows, seed=seed)
            teacher.predict_proba(["the text"])
        messages = server.requests[0]["messages"]
        assert messages[0]["role"] == "system"
        assert messages[-1]["content"].startswith("Labels: negative, positive.\nText: the text")
        pairs = list(zip(messages[1:-1:2], messages[2:-1:2]))
        assert [(u["role"], a["role"]) for u, a in pairs] == [("user", "assistant")] * 4
        return [(u["content"].split("Text: ")[1].split("\n")[0], a["content"]) for u, a in pairs]

    shots = sent_examples(seed=1)
    assert sorted(label for _, label in shots) == ["negative", "negative", "positive", "positive"]
    assert all(rows.labels[rows.texts.index(t)] == LABELS.index(label) for t, label in shots)
    assert sent_examples(seed=1) == shots
    assert {t for t, _ in sent_examples(seed=2)} != {t for t, _ in shots}
    for seed in range(5):  # the one positive row is always taken, then the negatives fill up
        drawn = draw_examples([0, 0, 0, 1], 3, 2, seed=seed)
        assert 3 in drawn and len(set(drawn)) == 3
    assert sorted(draw_examples([0, 1], 5, 2, seed=0)) == [0, 1]  # fewer rows than asked: all of them
    with pytest.raises(ConfigError, match="needs labelled rows"):
        LLMTeacher(_cfg("http://127.0.0.1:9/v1", tmp_path, examples=2), LABELS)


def test_budgets_stop_before_the_request_that_would_exceed_them(tmp_path: Path) -> None:
    texts = [f"t{i}" for i in range(5)]
    with FakeChat(lambda text, body: ("logprobs", [("positive", 0.9)])) as server:
        teacher = LLMTeacher(_cfg(server.url, tmp_path / "a", max_requests=3), LABELS)
        with pytest.raises(LLMBudgetExceeded) as err:
            teacher.predict_proba(texts)
        assert len(server.requests) == 3
        assert "max_requests=3 (3 requests sent, 33 tokens used)" in str(err.value)
        assert "2 of 5 texts have no answer" in str(err.value) and "\n" not in str(err.value)
        assert isinstance(err.value, CodistillError)
        # a token budget: 11 tokens per answer (10 prompt + 1); the next one's cost is estimated from its
        # prompt's characters at the tokens per character seen, so the 4th (33 + 11 > 35) is never sent
        teacher = LLMTeacher(_cfg(server.url, tmp_path / "b", max_tokens=35, system_prompt="", prompt="{text}"), LABELS)
        with pytest.raises(LLMBudgetExceeded, match=r"about 11 tokens\) would exceed max_tokens=35 "
                                                    r"\(3 requests sent, 33 tokens used\); 2 of 5 texts"):
            teacher.predict_proba(texts)
        assert len(server.requests) == 6
        # what was answered is cached: a larger budget pays only for the rest
        rest = LLMTeacher(_cfg(server.url, tmp_path / "a", max_requests=2), LABELS)
        assert rest.predict_proba(texts).shape == (5, 2) and len(server.requests) == 8 and rest.stats()["prompts"] == 2


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def test_401_dead_and_black_holed_endpoints_fail_in_one_line(tmp_path: Path) -> None:
    with FakeChat(lambda text, body: ("status", 401)) as server:
        teacher = LLMTeacher(_cfg(server.url, tmp_path, max_retries=2), LABELS)
        with pytest.raises(LLMFatalError) as err:
            teacher.predict_proba(["a", "b", "c"])
        assert len(server.requests) == 1  # never retried, and the other texts are not asked
    assert f"{server.url} answered HTTP 401 (unauthorized" in str(err.value) and "3 of 3 texts" in str(err.value)
    assert "\n" not in str(err.value)

    dead = LLMTeacher(_cfg(_dead_url(), tmp_path, max_consecutive_failures=2), LABELS)
    with pytest.raises(LLMFatalError, match="2 requests in a row failed.*unreachable.*3 of 3 texts have no answer"):
        dead.predict_proba(["a", "b", "c"])

    with socket.socket() as hole:  # accepts connections (the kernel's backlog), never answers
        hole.bind(("127.0.0.1", 0))
        hole.listen(8)
        url = f"http://127.0.0.1:{hole.getsockname()[1]}/v1"
        start = time.monotonic()
        teacher = LLMTeacher(_cfg(url, tmp_path, timeout=0.3, deadline=0.5), LABELS)
        with pytest.raises(LLMFatalError, match="deadline of .* has passed"):
            teacher.predict_proba(["a", "b", "c", "d"])
        assert time.monotonic() - start < 2.0


def test_label_words_and_prompt_from_a_spec_file(tmp_path: Path) -> None:
    spec = tmp_path / "teacher.yaml"
    spec.write_text("model: scripted\nlabel_words: [bad, good]\nfallback_samples: 0\n"
                    "prompt: 'Is this review good or bad? {text} Answer {labels}.'\nsystem_prompt: ''\n"
                    f"cache_dir: {tmp_path / 'cache'}\napi_key_env: ''\n")
    assert is_llm_teacher_spec(str(spec)) and is_llm_teacher_spec("llm:qwen") and not is_llm_teacher_spec("bert-base")

    def answer(text, body):
        return "logprobs", [(" Good", 0.5), ("bad", 0.25), ("BAD", 0.25)] if "fine" in text else [("good", 1.0)]

    with FakeChat(answer) as server:
        cfg = LLMTeacherConfig.from_spec(str(spec), base_url=server.url)
        assert cfg.label_words == ["bad", "good"] and cfg.base_url == server.url
        teacher = LLMTeacher(cfg, LABELS)
        probs = teacher.predict_proba(["a fine film"])
        assert probs.tolist() == [pytest.approx([0.5, 0.5])]
        assert server.requests[0]["messages"] == [
            {"role": "user", "content": "Is this review good or bad? a fine film Answer bad, good."}]
    json_spec = tmp_path / "teacher.json"
    json_spec.write_text(json.dumps({"model": "m", "label_words": ["no", "yes"], "examples": 2}))
    assert LLMTeacherConfig.from_file(json_spec).examples == 2
    quick = LLMTeacherConfig.from_spec("llm:qwen2.5-coder", base_url="http://127.0.0.1:8080/v1", top_logprobs=5)
    assert (quick.model, quick.base_url, quick.top_logprobs) == ("qwen2.5-coder", "http://127.0.0.1:8080/v1", 5)


@pytest.mark.parametrize("raw, message", [
    ({"model": "m", "examples": "two"}, "llm_teacher.examples: expected an integer"),
    ({"model": "m", "label_words": ["Yes", " yes"]}, "differ only in case"),
    ({"model": "m", "prompt": "Classify: {labels}"}, "must contain {text}"),
    ({"model": "m", "max_requests": 0}, "llm_teacher.max_requests must be >= 1"),
    ({"model": "m", "colour": "red"}, "unknown option\\(s\\) colour"),
    ({"model": "m", "proxy_rows": -1}, "llm_teacher.proxy_rows must be >= 0"),
    ({"model": "m", "proxy_tries": 0}, "llm_teacher.proxy_tries must be >= 1"),
    ({"model": "m", "proxy_encoder": " "}, "llm_teacher.proxy_encoder is empty"),
])
def test_spec_errors_are_one_line(tmp_path: Path, raw: dict, message: str) -> None:
    spec = tmp_path / "t.json"
    spec.write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match=message) as err:
        LLMTeacherConfig.from_file(spec)
    assert str(err.value).startswith(f"LLM teacher spec {spec}: ") and "\n" not in str(err.value)


def test_label_words_must_match_the_classes() -> None:
    with pytest.raises(ConfigError, match="has 3 words but the dataset has 2 classes"):
        LLMTeacher(LLMTeacherConfig(label_words=["a", "b", "c"], api_key_env=""), LABELS)
    with pytest.raises(ConfigError, match="needs at least two words"):
        LLMTeacherConfig(label_words=["only"])
    with pytest.raises(ConfigError, match="name the model after 'llm:'"):
        LLMTeacherConfig.from_spec("llm:")


# -- the endpoint teacher in a run: KD on its probabilities, CoD verified by it, the budget ------------------


def sentiment_answer(text: str, body: dict):
    """A scripted sentiment model for the toy data: positive words -> positive, else negative (0.8 / 0.2)."""
    from conftest import POSITIVE_WORDS

    positive = any(w in text.split() for w in POSITIVE_WORDS)
    return "logprobs", ([("positive", 0.8), ("negative", 0.2)] if positive else [("negative", 0.8), ("positive", 0.2)])


def test_distill_with_an_endpoint_teacher_kd_and_cod(tmp_path: Path, tiny_student: Path) -> None:
    from conftest import run_distill, synthetic_rows, write_csv

    from codistill.config import DistillConfig, StudentConfig
    from codistill.data import load_dataset

    folder = tmp_path / "toy"
    write_csv(folder / "train.csv", synthetic_rows(40, seed=1))
    write_csv(folder / "validation.csv", synthetic_rows(6, seed=2))
    write_csv(folder / "test.csv", synthetic_rows(10, seed=3))
    toy = load_dataset(folder, label_names=LABELS)
    lexicon = tmp_path / "lexicon.json"
    lexicon.write_text(json.dumps({"great": ["awful"], "lovely": ["dull"], "superb": ["dreadful"], "fine": ["poor"],
                                   "excellent": ["terrible"], "wonderful": ["boring"], "awful": ["great"],
                                   "boring": ["lovely"], "dreadful": ["superb"], "poor": ["fine"],
                                   "terrible": ["excellent"], "dull": ["wonderful"]}))
    student = StudentConfig(model=str(tiny_student), layers=1)
    with FakeChat(sentiment_answer) as server:
        # the LLM scores every candidate of the edit search (no proxy: that is tested below)
        options = {"base_url": server.url, "api_key_env": "", "cache_dir": str(tmp_path / "cache"), "examples": 2,
                   "max_retries": 0, "timeout": 5.0, "proxy_rows": 0}
        m = run_distill(toy, "llm:scripted", tmp_path / "kd", k=8, student=student, progress=False,
                        llm_teacher=options)
        sent = len(server.requests)
        # every text the teacher saw once: 8 training rows and 10 test (validation only when training evaluates
        # on it: each answer is a request), and the student's validation accuracy is still reported
        assert sent == 8 + 10 and m["teacher_info"]["kind"] == "endpoint"
        assert m["teacher_validation"] is None and m["validation"]["n"] == 6
        assert m["teacher_test"]["accuracy"] == 1.0 and m["teacher_parameters"] is None
        assert m["teacher_info"]["requests"] == sent and m["teacher_info"]["estimate"] == "logprobs"
        examples = [msg["content"] for msg in server.requests[0]["messages"] if msg["role"] == "assistant"]
        assert sorted(examples) == LABELS  # two in-context examples, one per class, from the run's own rows
        # the same run again: every answer comes from the cache
        again = run_distill(toy, "llm:scripted", tmp_path / "kd2", k=8, student=student, progress=False,
                            llm_teacher=options)
        assert len(server.requests) == sent and again["test"] == m["test"] and again["teacher_info"]["requests"] == 0

        cod = run_distill(toy, "llm:scripted", tmp_path / "cod", k=8, cod="replace", student=student,
                          progress=False, llm_teacher=options,
                          generator={"name": "edits", "lexicon": str(lexicon)}, fluency_lm=None)
        assert cod["n_originals"] == 4 and cod["n_counterfactuals"] == 4  # every antonym swap flips this teacher
        assert cod["generated"]["teacher_requests"] > 0
        rows = [json.loads(line) for line in (tmp_path / "cod" / "counterfactuals.jsonl").read_text().splitlines()]
        assert all(r["flipped"] for r in rows)

        with pytest.raises(ConfigError, match="class probabilities only"):
            run_distill(toy, "llm:scripted", tmp_path / "lwd", k=8, student=student, method=DistillConfig(method="lwd"),
                        llm_teacher=options, progress=False)
        # a budget smaller than the uncached texts stops before the request that would exceed it
        fresh = {**options, "cache_dir": str(tmp_path / "cache2"), "max_requests": 5}
        before = len(server.requests)
        with pytest.raises(CodistillError, match="max_requests=5"):
            run_distill(toy, "llm:scripted", tmp_path / "budget", k=8, student=student, llm_teacher=fresh,
                        progress=False)
        assert len(server.requests) - before == 5
    with pytest.raises(ConfigError, match="apply to an endpoint teacher"):
        run_distill(toy, str(tiny_student), tmp_path / "x", k=8, student=student, llm_teacher={"examples": 1})


def test_distill_command_takes_an_endpoint_teacher_with_llm_flags(tmp_path: Path, tiny_student: Path, csv_folder: Path,
                                                                  capsys) -> None:
    from codistill.cli import main

    with FakeChat(sentiment_answer) as server:
        code = main(["distill", "--data", str(csv_folder), "--labels", "negative,positive", "--teacher", "llm:scripted",
                     "--llm-base-url", server.url, "--llm-api-key-env", "", "--llm-cache-dir", str(tmp_path / "c"),
                     "--llm-max-requests", "100", "--student", str(tiny_student), "--student-layers", "1", "--k", "4",
                     "--epochs", "1", "--min-steps", "2", "--probe-steps", "0", "--max-length", "32",
                     "--out", str(tmp_path / "s")])
        err = capsys.readouterr().err
        assert code == 0, err
        assert len(server.requests) == 4 + 20  # k rows and test of csv_folder (no validation curve asked for)
    config = json.loads((tmp_path / "s" / "run_config.json").read_text())
    assert config["teacher"] == "llm:scripted" and config["llm_teacher"]["max_requests"] == 100
    assert config["llm_teacher"]["base_url"] == server.url
    code = main(["distill", "--data", str(csv_folder), "--teacher", "llm:scripted", "--llm-base-url", "ftp://x",
                 "--out", str(tmp_path / "bad")])
    assert code == 2 and "base_url must start with http" in capsys.readouterr().err


def test_a_sweep_with_an_endpoint_teacher(tmp_path: Path, tiny_student: Path, tiny_teacher: Path) -> None:
    """KD and CoD cells with an LLM teacher showing 2 in-context examples: one teacher per seed (its examples are
    the seed's first rows, the same for every k and mode), the test split and the counterfactual files labelled
    once per sweep, the cost in the report, and a second run that sends nothing."""
    from conftest import FAST_TRAIN_OPTIONS, synthetic_rows, write_csv

    from codistill.experiments import SweepConfig, build_report, run_sweep

    folder = tmp_path / "toy"
    write_csv(folder / "train.csv", synthetic_rows(40, seed=1))
    write_csv(folder / "validation.csv", synthetic_rows(6, seed=2))
    write_csv(folder / "test.csv", synthetic_rows(10, seed=3))
    lexicon = tmp_path / "lexicon.json"
    lexicon.write_text(json.dumps({"great": ["awful"], "lovely": ["dull"], "superb": ["dreadful"], "fine": ["poor"],
                                   "excellent": ["terrible"], "wonderful": ["boring"], "awful": ["great"],
                                   "boring": ["lovely"], "dreadful": ["superb"], "poor": ["fine"],
                                   "terrible": ["excellent"], "dull": ["wonderful"]}))
    with FakeChat(sentiment_answer) as server:
        llm = {"base_url": server.url, "api_key_env": "", "examples": 2, "max_retries": 0, "timeout": 5.0,
               "proxy_rows": 12, "proxy_encoder": str(tiny_teacher)}
        config = dict(datasets=[{"data": str(folder), "name": "toy", "teacher": "llm:scripted", "llm_teacher": llm,
                                 "options": {"label_names": LABELS}}],
                      methods=["kd"], cod=["none", "replace"], k=[4, 8], seeds=[0, 1],
                      generator={"name": "edits", "lexicon": str(lexicon)}, fluency_lm=None,
                      student={"model": str(tiny_student), "layers": 1}, train=FAST_TRAIN_OPTIONS)
        cfg = SweepConfig(out=str(tmp_path / "sweep"), **config)
        counts = run_sweep(cfg, progress=False)
        assert counts["finished"] == 8
        sent = len(server.requests)
        assert run_sweep(cfg, progress=False)["ran"] == 0 and len(server.requests) == sent
        summary = build_report(tmp_path / "sweep")
        # a fresh folder: every answer comes from the cache the first sweep filled (its llm_cache is given)
        again = SweepConfig(out=str(tmp_path / "again"), **{**config, "datasets": [
            {**config["datasets"][0], "llm_teacher": {**llm, "cache_dir": str(tmp_path / "sweep" / "llm_cache")}}]})
        assert run_sweep(again, progress=False)["finished"] == 8 and len(server.requests) == sent
    history = json.loads((tmp_path / "sweep" / "sweep.json").read_text())["history"][-1]
    art = history["artifacts"]["toy"]
    assert isinstance(art["teacher_key"], list) and len(art["teacher_key"]) == 2  # one teacher per seed
    ds = summary["datasets"]["toy"]
    assert ds["teacher_accuracy"] == 1.0
    cost = ds["endpoint_cost"]
    assert cost["teacher_texts"]["kd"]["8"] == 8 and cost["teacher_texts"]["kd"]["4"] == 4  # its training rows
    labelled = {e["what"].split(" (")[0]: e for e in ds["endpoint_labelling"]}
    assert labelled["test split"]["requests"] == 10  # a fresh teacher per seed, but the answers are cached
    assert all(e["requests"] is not None for e in ds["endpoint_labelling"])
    cf_cost = [e for e in ds["endpoint_labelling"] if e["what"].startswith("counterfactuals")]
    assert len(cf_cost) == 2 and cf_cost[0]["requests"] > 0
    cells = [json.loads(p.read_text()) for p in (tmp_path / "sweep" / "cells").glob("**/metrics.json")]
    cod_cells = [c for c in cells if c["cod"] == "replace"]
    assert cod_cells and all(c["n_counterfactuals"] >= 1 for c in cod_cells)
    assert {c["teacher_info"]["examples"] for c in cells} == {2}
    report = (tmp_path / "sweep" / "report.md").read_text()
    assert "Endpoint teacher, per student" in report and "labelled once" in report
    csv_header = (tmp_path / "sweep" / "cells.csv").read_text().splitlines()[0]
    assert "teacher_requests" in csv_header
    # in-context examples come from every cell's own labelled originals: 3 examples need k >= 6 under CoD
    three = [{**config["datasets"][0], "llm_teacher": {**llm, "examples": 3}}]
    with pytest.raises(ConfigError, match="more than the 2 labelled originals"):
        run_sweep(SweepConfig(out=str(tmp_path / "small"), **{**config, "datasets": three}), progress=False)
    assert not (tmp_path / "small").exists()  # refused before any work
    with pytest.raises(ConfigError, match="class probabilities only"):
        run_sweep(SweepConfig(out=str(tmp_path / "lwd"), **{**config, "methods": ["lwd"]}), progress=False)
    with pytest.raises(ConfigError, match="datasets\\[\\].llm_teacher"):
        SweepConfig(out="x", datasets=[{"data": "tweets", "teacher": "llm:m", "llm_teacher": {"examples": -1}}])


def test_the_deadline_counts_time_on_requests_not_between_them(tmp_path: Path, csv_folder: Path, capsys) -> None:
    with FakeChat(sentiment_answer) as server:
        teacher = LLMTeacher(_cfg(server.url, tmp_path, deadline=0.5), LABELS)
        time.sleep(0.8)  # training between the teacher's calls spends none of its deadline
        assert teacher.predict_proba(["a great film"]).shape == (1, 2)
    from codistill.cli import main

    code = main(["counterfactuals", "--data", str(csv_folder), "--teacher", "llm:x", "--out", str(tmp_path / "cf.jsonl")])
    assert code == 2 and "verifies counterfactuals inside the run" in capsys.readouterr().err
    from codistill.teachers import check_llm_options

    with pytest.raises(ConfigError, match="llm_teacher.model: the model is named by the teacher value"):
        check_llm_options("llm:x", {"model": "y"})


# -- a local proxy guides the edit search, the LLM judges only the candidates it says flip ------------------

SENTIMENT_LEXICON = {"great": ["awful"], "lovely": ["dull"], "superb": ["dreadful"], "fine": ["poor"],
                     "excellent": ["terrible"], "wonderful": ["boring"]}


def _negative_words(text: str) -> int:
    from conftest import NEGATIVE_WORDS

    return sum(w in NEGATIVE_WORDS for w in text.split())


def test_a_proxy_fitted_to_soft_labels_reproduces_the_rule(tiny_teacher: Path) -> None:
    from conftest import POSITIVE_WORDS, synthetic_rows

    from codistill.counterfactuals.proxy import fit_proxy, proxy_rows_from

    texts = [r["text"] for r in synthetic_rows(12, seed=4)]
    soft = torch.tensor([[0.3, 0.7] if any(w in t.split() for w in POSITIVE_WORDS) else [0.75, 0.25] for t in texts])
    proxy = fit_proxy(texts, soft, str(tiny_teacher))
    probs = proxy(texts)
    assert probs.shape == (12, 2) and torch.allclose(probs.sum(-1), torch.ones(12))
    assert probs.argmax(-1).tolist() == soft.argmax(-1).tolist()
    assert proxy.info == {**proxy.info, "rows": 12, "encoder": str(tiny_teacher), "agreement": 1.0}
    assert proxy([]).shape == (0, 2)
    pool = [f"text {i % 30}" for i in range(60)]  # 30 distinct texts, each twice
    drawn = proxy_rows_from(pool, 10, seed=0)
    assert len(set(drawn)) == 10 and drawn == proxy_rows_from(pool, 10, seed=0) != proxy_rows_from(pool, 10, seed=1)
    assert proxy_rows_from(pool, 100, seed=0) == pool[:30]
    with pytest.raises(ConfigError, match="llm_teacher.proxy_encoder 'no/such/folder' could not be loaded"):
        fit_proxy(texts, soft, "no/such/folder", what="llm_teacher.proxy_encoder")


def test_a_proxy_guided_search_sends_far_fewer_llm_requests(tmp_path: Path, tiny_teacher: Path) -> None:
    from conftest import synthetic_rows, write_csv

    from codistill.counterfactuals.generate import counterfactuals_for_run
    from codistill.data import load_dataset

    folder = tmp_path / "toy"
    write_csv(folder / "train.csv", synthetic_rows(40, seed=1))
    write_csv(folder / "test.csv", synthetic_rows(4, seed=3))
    toy = load_dataset(folder, label_names=LABELS)
    lexicon = tmp_path / "lexicon.json"
    lexicon.write_text(json.dumps(SENTIMENT_LEXICON))
    sent, summaries, rows = {}, {}, {}
    with FakeChat(sentiment_answer) as server:
        for name, options in (("plain", {"proxy_rows": 0}), ("proxy", {"proxy_rows": 16,
                                                                         "proxy_encoder": str(tiny_teacher)})):
            teacher = LLMTeacher(_cfg(server.url, tmp_path / name, concurrency=4, **options), LABELS)
            before = len(server.requests)
            out = tmp_path / name / "cf.jsonl"
            summaries[name] = counterfactuals_for_run(toy, teacher, out, k=8, cod="replace", progress=False,
                                                      generator={"name": "edits", "lexicon": str(lexicon)})
            sent[name] = len(server.requests) - before
            rows[name] = [json.loads(line) for line in out.read_text().splitlines()]
    plain, proxy = summaries["plain"], summaries["proxy"]
    print(f"LLM requests for {len(rows['proxy'])} originals: {sent['plain']} without a proxy, {sent['proxy']} with "
          f"one (16 to fit it), {proxy['judge_texts']} texts judged, {proxy['used']} used (vs {plain['used']})")
    assert sent["proxy"] < sent["plain"] / 3
    assert plain["proxy"] is None and plain["judge_texts"] is None and plain["texts_scored"] >= sent["plain"]
    # every request after the 16 that fit the proxy is a judged text (some judged texts were among the 16)
    assert proxy["proxy"]["rows"] == 16 and sent["proxy"] - 16 <= proxy["judge_texts"] < sent["proxy"]
    assert proxy["judge_texts_per_original"] == proxy["judge_texts"] / len(rows["proxy"])
    assert proxy["used"] >= 1
    for row in rows["proxy"]:  # the teacher's probabilities before, its verdict on every used counterfactual
        assert row["probs_before"] == pytest.approx([0.2, 0.8] if row["label"] else [0.8, 0.2], abs=1e-6)
        assert len([c for c in row["candidates"] if c["probs"] is not None]) <= LLMTeacherConfig.proxy_tries
        if row["use"]:
            verdict = sentiment_answer(row["counterfactual"], {})[1][0][0]
            assert row["flipped"] and verdict == LABELS[row["target_label"]]


def test_the_judge_rejecting_a_proxy_flip_tries_the_next_up_to_judge_tries() -> None:
    from codistill.counterfactuals.base import CFRequest
    from codistill.counterfactuals.edits import EditSearchConfig, EditSearchGenerator
    from codistill.counterfactuals.verify import Verifier
    from codistill.counterfactuals.wordnet import DictLexicon

    def guide(texts):  # one negative word flips the guide
        return torch.tensor([[0.9, 0.1] if _negative_words(t) else [0.1, 0.9] for t in texts])

    def judge_needing(n: int, reject: str | None = None):
        sent: list[str] = []

        def judge(texts):
            sent.extend(texts)
            return torch.tensor([[0.9, 0.1] if _negative_words(t) >= n and t != reject else [0.1, 0.9]
                                 for t in texts])
        return judge, sent

    text = "a great and lovely film with superb acting"

    def search(judge, tries: int, max_edits: int = 3):
        verifier = Verifier(guide, judge=judge, judge_tries=tries)
        gen = EditSearchGenerator(EditSearchConfig(max_edits=max_edits, substitutes=0), DictLexicon(SENTIMENT_LEXICON))
        return gen.generate([CFRequest(0, text, 1, 0)], verifier, LABELS, progress=False)[0], verifier

    # the judge rejects the guide's first choice: the next one is judged, and flips it
    judge, sent = judge_needing(1, reject="an awful and lovely film with superb acting")
    result, verifier = search(judge, tries=3)
    assert result.flipped and result.best.text == "a great and dull film with superb acting"
    assert sent == [text, "an awful and lovely film with superb acting", result.best.text]
    assert verifier.judge_texts == 3 and verifier.judge_calls == 3 and verifier.texts_scored > 3 * 3
    # a judge that needs two negative words rejects every one-edit flip: after judge_tries it gives up
    judge, sent = judge_needing(2)
    result, verifier = search(judge, tries=2)
    assert not result.flipped and len(sent) - 1 == 2 == len(result.attempts)
    assert all(a.probs is not None and not a.flipped for a in result.attempts)
    # with more tries the rejected candidates stay in the beam and a two-edit child flips the judge
    judge, sent = judge_needing(2)
    result, verifier = search(judge, tries=4)
    assert result.flipped and _negative_words(result.best.text) == 2 and len(sent) - 1 <= 4
    assert len(sent) == len(set(sent))  # no text is sent to the judge twice
    # the last resort (the guide's best candidate not yet judged) takes the last try, and only if one is left
    judge, sent = judge_needing(2)
    result, verifier = search(judge, tries=4, max_edits=1)
    assert len(sent) - 1 == 4 == len(result.attempts) == len(set(sent)) - 1
    assert result.attempts[-1].detail.startswith("best within 1 edits") and not result.flipped
    assert len(search(judge_needing(2)[0], tries=3, max_edits=1)[0].attempts) == 3
    # without a judge the guide decides, as before
    plain = Verifier(guide)
    gen = EditSearchGenerator(EditSearchConfig(substitutes=0), DictLexicon(SENTIMENT_LEXICON))
    assert gen.generate([CFRequest(0, text, 1, 0)], plain, LABELS, progress=False)[0].flipped
    calls = plain.calls
    assert torch.equal(plain.judge_probs([text]), guide([text])) and plain.calls == calls + 1
    assert not plain.has_judge and plain.judge_calls == plain.judge_texts == 0

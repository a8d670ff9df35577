"""The real local LLM path, end to end (slow): llama-cpp-python's OpenAI-compatible server (``make llm-venv``)
serving SmolLM2-135M-Instruct's GGUF fetched from PyPI, asked through ``--generator llm``'s client, with
its answers cached so a second run pays nothing."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from test_counterfactuals import toy_dataset, toy_scorer

from codistill.counterfactuals.generate import generate_counterfactuals
from codistill.counterfactuals.llm import LLMConfig, LLMGenerator
from codistill.counterfactuals.verify import Verifier

ROOT = Path(__file__).resolve().parents[1]
LLAMA_PYTHON = Path(os.environ.get("CODISTILL_LLAMA_PYTHON", ROOT / ".venv-llm" / "bin" / "python"))

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not LLAMA_PYTHON.is_file(), reason="llama-cpp-python's server not built (make llm-venv)")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def smollm2_server(tmp_path_factory):
    from codistill.assets import asset_file, fetch

    fetch("smollm2-gguf", say=lambda m: None)
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([str(LLAMA_PYTHON), "-m", "llama_cpp.server", "--model", str(asset_file("smollm2-gguf")),
                                 "--model_alias", "smollm2", "--host", "127.0.0.1", "--port", str(port),
                                 "--n_ctx", "2048", "--n_threads", "2"], stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(120):
            if proc.poll() is not None:
                pytest.fail(f"the server exited ({proc.returncode}): {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(url + "/models", timeout=2) as r:
                    if json.load(r)["data"][0]["id"] == "smollm2":
                        break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail("the server did not answer within 2 minutes")
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_smollm2_behind_llama_cpp_server_end_to_end(smollm2_server, tmp_path: Path) -> None:
    url, proc = smollm2_server
    ds = toy_dataset(16)
    cfg = LLMConfig(base_url=url, model="smollm2", api_key_env="", max_tokens=48, concurrency=1, max_attempts=2,
                    timeout=120, cache_dir=str(tmp_path / "cache"))
    out = tmp_path / "cf.jsonl"
    # the server end to end, not SmolLM2's skill: a 135M model may flip none of the toy scorer's labels
    summary = generate_counterfactuals(ds, Verifier(toy_scorer), LLMGenerator(cfg), out, k=8, progress=False,
                                       allow_empty=True)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert summary["complete"] and summary["failed_originals"] == 0
    assert summary["llm"]["requests"] >= 4 and summary["llm"]["completion_tokens"] > 0
    assert summary["llm"]["failures"] == 0 and proc.poll() is None
    for r in rows:  # every original got real answers, each judged by the validator or the teacher
        assert r["candidates"] and all(c["reason"] != "request_failed" for c in r["candidates"])
        assert any(c["text"] for c in r["candidates"])
    # the same run again: every answer comes from the cache, nothing is asked
    again = generate_counterfactuals(ds, Verifier(toy_scorer), LLMGenerator(cfg), tmp_path / "again.jsonl", k=8,
                                     progress=False, allow_empty=True)
    assert again["llm"]["requests"] == 0 and again["llm"]["cache_hits"] == summary["llm"]["requests"]
    assert [json.loads(line)["counterfactual"] for line in (tmp_path / "again.jsonl").read_text().splitlines()] == \
        [r["counterfactual"] for r in rows]
    print(json.dumps({k: summary[k] for k in ("flip_rate", "edited_words_median", "seconds")}), file=sys.stderr)


def test_smollm2_as_the_teacher_of_a_run_with_cod(smollm2_server, tmp_path: Path, tiny_student: Path) -> None:
    """The real server as an endpoint teacher: probabilities from its label words' log-probabilities, a CoD run
    whose edit search the MiniLM proxy guides and the LLM judges, everything cached for a second run."""
    from conftest import run_distill

    from codistill.config import StudentConfig
    from codistill.teachers import load_teacher

    url, proc = smollm2_server
    ds = toy_dataset(24)
    options = {"base_url": url, "api_key_env": "", "concurrency": 1, "timeout": 120.0, "max_retries": 0,
               "cache_dir": str(tmp_path / "cache"), "proxy_rows": 24}
    teacher = load_teacher("llm:smollm2", ds.label_names, llm_options=options)
    probs = teacher.predict_proba(["a great , wonderful film", "an awful , boring film"])
    stats = teacher.stats()
    assert probs.shape == (2, 2) and abs(float(probs.sum()) - 2.0) < 1e-4
    assert stats["estimate"] == "logprobs" and stats["requests"] == 2 and stats["prompt_tokens"] > 0
    student = StudentConfig(model=str(tiny_student), layers=1)
    m = run_distill(ds, "llm:smollm2", tmp_path / "cod", k=8, cod="replace", student=student, progress=False,
                    llm_teacher=options, fluency_lm=None)
    info = m["teacher_info"]
    assert info["kind"] == "endpoint" and info["estimate"] == "logprobs" and proc.poll() is None
    assert m["generated"]["teacher_requests"] > 0 and m["teacher_test"]["n"] == len(ds.split("test"))
    summary = json.loads((tmp_path / "cod" / "counterfactuals.summary.json").read_text())
    assert summary["proxy"]["rows"] == 24 and summary["judge_texts_per_original"] <= 3
    again = run_distill(ds, "llm:smollm2", tmp_path / "again", k=8, cod="replace", student=student, progress=False,
                        llm_teacher=options, fluency_lm=None)
    assert again["teacher_info"]["requests"] == 0 and again["test"] == m["test"]
    print(json.dumps({"teacher_accuracy": m["teacher_test"]["accuracy"], "flipped": m["generated"]["flipped"],
                      "verification_requests": m["generated"]["teacher_requests"],
                      "judged_per_original": summary["judge_texts_per_original"]}), file=sys.stderr)

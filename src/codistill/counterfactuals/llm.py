"""Counterfactuals from any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, llama.cpp server,
Ollama), with bounded concurrency, retries with backoff, and an on-disk cache written before any answer
is used, so a crash or a rerun never pays twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from codistill.counterfactuals.base import REQUEST_FAILED, Attempt, CFRequest, CFResult, CounterfactualGenerator
from codistill.counterfactuals.verify import check_candidate
from codistill.errors import ConfigError
from codistill.fileio import atomic_write_json

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


@dataclass
class LLMConfig:
    """How to reach the model and how hard to try.

    Attributes:
        base_url: the endpoint's base URL, e.g. ``https://api.openai.com/v1`` or ``http://localhost:8000/v1``;
            requests go to ``{base_url}/chat/completions``.
        model: the model name the endpoint expects.
        api_key_env: name of the environment variable holding the API key (the key itself is never
            stored in any file or log). Unset or empty: no Authorization header (local servers).
        temperature: sampling temperature (0: as deterministic as the endpoint allows).
        max_tokens: cap on the answer's length.
        timeout: seconds per HTTP request.
        max_retries: retries of one request on timeouts, connection errors, 429 and 5xx.
        backoff: first retry delay in seconds; doubles each retry (with jitter, capped at 60 s;
            a ``Retry-After`` header is honoured).
        concurrency: requests in flight at once.
        max_attempts: prompts per original: the first, then retries that tell the model why its last
            answer failed (rejected, or the teacher did not flip).
        max_changed_share: a rewrite that changes more than this share of the original's words is rejected.
        max_length_ratio: an answer longer than this multiple of the original is rejected.
        cache_dir: where answers are cached (one JSON file per prompt).
    """

    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4o"
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = 0.0
    max_tokens: int = 512
    timeout: float = 60.0
    max_retries: int = 5
    backoff: float = 1.0
    concurrency: int = 4
    max_attempts: int = 3
    max_changed_share: float = 0.5
    max_length_ratio: float = 2.0
    cache_dir: str = ".codistill_cache/llm"

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"--base-url must start with http:// or https://, got '{self.base_url}'")
        if self.concurrency < 1 or self.max_attempts < 1 or self.max_retries < 0:
            raise ConfigError("concurrency and max_attempts must be >= 1, max_retries >= 0")
        if not 0 < self.max_changed_share <= 1:
            raise ConfigError(f"max_changed_share must be in (0, 1], got {self.max_changed_share}")


class LLMRequestError(RuntimeError):
    """A request that failed for good (after retries, or with a non-retryable status)."""


@dataclass
class ClientStats:
    requests: int = 0
    cache_hits: int = 0
    retries: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: float) -> None:
        with self._lock:
            for key, value in counts.items():
                setattr(self, key, getattr(self, key) + value)

    def as_dict(self) -> dict[str, float]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}


class ChatClient:
    """A minimal chat-completions client: cache first, then HTTP with retries; answers cached on disk
    (atomically) before they are returned."""

    def __init__(self, cfg: LLMConfig) -> None:
        self.cfg = cfg
        self.stats = ClientStats()
        self.cache_dir = Path(cfg.cache_dir)

    def _key(self, messages: Sequence[dict[str, str]]) -> str:
        ident = {"base_url": self.cfg.base_url.rstrip("/"), "model": self.cfg.model, "temperature": self.cfg.temperature,
                 "max_tokens": self.cfg.max_tokens, "messages": list(messages)}
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()

    def _cache_path(self, key: str) -> Path:
        return self.cache_dir / key[:2] / f"{key}.json"

    def complete(self, messages: Sequence[dict[str, str]]) -> tuple[str, dict[str, int], bool]:
        """(answer text, token usage, came from cache). Raises :class:`LLMRequestError` when it fails for good."""
        key = self._key(messages)
        path = self._cache_path(key)
        if path.is_file():
            try:
                cached = json.loads(path.read_text(encoding="utf-8"))
                self.stats.add(cache_hits=1)
                return cached["content"], cached.get("usage", {}), True
            except (json.JSONDecodeError, KeyError):
                path.unlink(missing_ok=True)  # a damaged entry is asked again
        content, usage = self._post(messages)
        atomic_write_json(path, {"model": self.cfg.model, "base_url": self.cfg.base_url, "messages": list(messages),
                                 "content": content, "usage": usage, "time": time.time()})
        return content, usage, False

    def _post(self, messages: Sequence[dict[str, str]]) -> tuple[str, dict[str, int]]:
        body = json.dumps({"model": self.cfg.model, "messages": list(messages), "temperature": self.cfg.temperature,
                           "max_tokens": self.cfg.max_tokens}).encode()
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.cfg.api_key_env, "") if self.cfg.api_key_env else ""
        if key:
            headers["Authorization"] = f"Bearer {key}"
        url = self.cfg.base_url.rstrip("/") + "/chat/completions"
        last_error = ""
        for attempt in range(self.cfg.max_retries + 1):
            if attempt:
                self.stats.add(retries=1)
            start = time.perf_counter()
            retry_after = None
            try:
                self.stats.add(requests=1)
                req = urllib.request.Request(url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.cfg.timeout) as resp:
                    payload = json.loads(resp.read().decode("utf-8"))
                self.stats.add(seconds=time.perf_counter() - start)
                try:
                    content = payload["choices"][0]["message"]["content"]
                except (KeyError, IndexError, TypeError):
                    raise LLMRequestError(f"malformed response from {url}: {str(payload)[:200]}") from None
                usage = payload.get("usage") or {}
                usage = {"prompt_tokens": int(usage.get("prompt_tokens", 0)),
                         "completion_tokens": int(usage.get("completion_tokens", 0))}
                self.stats.add(**usage)
                return content or "", usage
            except urllib.error.HTTPError as exc:
                self.stats.add(seconds=time.perf_counter() - start)
                last_error = f"HTTP {exc.code}"
                if exc.code not in RETRYABLE_STATUS:
                    self.stats.add(failures=1)
                    raise LLMRequestError(f"{url}: {last_error} (not retried)") from None
                header = exc.headers.get("Retry-After") if exc.headers else None
                retry_after = float(header) if header and header.replace(".", "", 1).isdigit() else None
            except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, json.JSONDecodeError) as exc:
                self.stats.add(seconds=time.perf_counter() - start)
                last_error = type(exc).__name__ + (f": {exc.reason}" if isinstance(exc, urllib.error.URLError) else "")
            if attempt < self.cfg.max_retries:
                delay = retry_after if retry_after is not None else self.cfg.backoff * 2**attempt
                time.sleep(min(60.0, delay * (1 + 0.1 * random.random())))
        self.stats.add(failures=1)
        raise LLMRequestError(f"{url}: {last_error} after {self.cfg.max_retries + 1} tries")


# -- prompts and answers --------------------------------------------------------------------------------

SYSTEM_PROMPT = (
    "You edit short texts for a text classifier. Given a text, its current label and a target label, "
    "rewrite the text so that a careful reader would give it the target label, changing as few words as "
    "possible and keeping everything else (wording, style, length, punctuation) the same. "
    "Reply with the edited text only: no quotes, no explanation."
)


def build_messages(text: str, label: str, target: str, label_names: Sequence[str],
                   feedback: str | None = None) -> list[dict[str, str]]:
    """The chat messages for one original (and, on a retry, why the previous answer did not count)."""
    user = (f"Labels: {', '.join(label_names)}.\n"
            f"Current label: {label}\nTarget label: {target}\n"
            f"Text: {text}\n"
            f"Edited text:")
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]
    if feedback:
        messages.append({"role": "user", "content": feedback})
    return messages


_PREAMBLE = re.compile(r"^\s*(?:sure[,!.]?\s*)?(?:here(?: is|'s) (?:the |an |my )?(?:edited|rewritten|modified|revised)"
                       r"(?: text| version| sentence)?|edited text|rewritten text|revised text|answer)\s*[:\-]\s*",
                       re.IGNORECASE)


def clean_answer(answer: str) -> str:
    """Strip code fences, a leading "Here is the edited text:"-style preamble, and surrounding quotes."""
    text = answer.strip()
    text = re.sub(r"^```\w*\s*|\s*```$", "", text).strip()
    text = _PREAMBLE.sub("", text).strip()
    if "\n" in text:
        first, rest = text.split("\n", 1)
        if first.rstrip().endswith(":") and rest.strip():
            text = rest.strip()
    for quote in ('"', "'", "“", "”", "`"):
        if len(text) >= 2 and text[0] in (quote, "“") and text[-1] in (quote, "”"):
            text = text[1:-1].strip()
            break
    return " ".join(text.split())


def _feedback(previous: Attempt, label_names: Sequence[str], target: int) -> str:
    if previous.reason == "not_flipped" and previous.probs:
        read = label_names[max(range(len(previous.probs)), key=previous.probs.__getitem__)]
        return (f"The classifier still reads your edit \"{previous.text}\" as '{read}' "
                f"(probability of '{label_names[target]}': {previous.probs[target]:.2f}). "
                "Try a different minimal edit. Reply with the edited text only.")
    why = {"empty": "it was empty", "unchanged": "it did not change the text", "refusal": "it was a refusal",
           "echo": "it talked about the task instead of rewriting the text", "too_long": "it was far longer than the text",
           "too_many_edits": "it rewrote too much of the text; change only a few words"}.get(previous.reason, previous.reason)
    return f"Your previous answer was rejected because {why}. Reply with the edited text only."


class LLMGenerator(CounterfactualGenerator):
    """Counterfactuals from a chat model; each answer is cleaned, checked, then verified by the teacher.

    Attempts run in rounds: every original still without a flip gets its next prompt (with feedback on
    the previous answer), all requests of a round in flight together up to ``concurrency``.
    """

    name = "llm"

    def __init__(self, cfg: LLMConfig, client: ChatClient | None = None) -> None:
        self.cfg = cfg
        self.client = client or ChatClient(cfg)

    def _ask(self, messages: list[dict[str, str]]) -> tuple[str | None, dict[str, int], str]:
        try:
            content, usage, cached = self.client.complete(messages)
            return content, usage, "cached" if cached else "requested"
        except LLMRequestError as exc:
            return None, {}, str(exc)

    def generate(self, requests: Sequence[CFRequest], verifier, label_names: Sequence[str],
                 progress: bool = True) -> list[CFResult]:
        from tqdm.auto import tqdm

        requests = list(requests)
        before = verifier.probs([r.text for r in requests]) if requests else None
        results = [CFResult(r, f"llm:{self.cfg.model}", [round(x, 6) for x in before[i].tolist()])
                   for i, r in enumerate(requests)]
        conversations = [build_messages(r.text, label_names[r.label], label_names[r.target], label_names)
                         for r in requests]
        pending = list(range(len(requests)))
        bar = tqdm(total=len(requests), desc="llm counterfactuals", disable=not progress, leave=False)
        with ThreadPoolExecutor(max_workers=self.cfg.concurrency) as pool:
            for attempt_no in range(1, self.cfg.max_attempts + 1):
                if not pending:
                    break
                answers = list(pool.map(lambda qi: self._ask(conversations[qi]), pending))
                to_verify: list[tuple[int, str, str]] = []
                for qi, (content, usage, how) in zip(pending, answers):
                    res = results[qi]
                    for key, value in usage.items():
                        res.usage[key] = res.usage.get(key, 0) + value
                    if content is None:
                        res.attempts.append(Attempt(None, REQUEST_FAILED, f"attempt {attempt_no}: {how}"))
                        continue
                    candidate = clean_answer(content)
                    problem = check_candidate(requests[qi].text, candidate, self.cfg.max_changed_share,
                                              self.cfg.max_length_ratio)
                    if problem:
                        res.attempts.append(Attempt(candidate, problem, f"attempt {attempt_no} ({how})"))
                    else:
                        to_verify.append((qi, candidate, f"attempt {attempt_no} ({how})"))
                    conversations[qi] = conversations[qi] + [{"role": "assistant", "content": content}]
                verdicts = verifier.verify([c for _, c, _ in to_verify], [requests[qi].target for qi, _, _ in to_verify],
                                           [d for _, _, d in to_verify]) if to_verify else []
                for (qi, _, _), verdict in zip(to_verify, verdicts):
                    results[qi].attempts.append(verdict)
                still = []
                for qi in pending:
                    last = results[qi].attempts[-1]
                    if last.flipped:
                        bar.update(1)
                    elif last.reason == REQUEST_FAILED:
                        still.append(qi)  # the same prompt again next round
                    else:
                        conversations[qi] = conversations[qi] + [
                            {"role": "user", "content": _feedback(last, label_names, requests[qi].target)}]
                        still.append(qi)
                pending = still
        bar.update(len(pending))
        bar.close()
        return results

"""Counterfactuals from any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, llama.cpp server,
Ollama). Transport, timeouts and retries are the official ``openai`` client's; on top of it: an on-disk
cache written before any answer is used (a crash or a rerun never pays twice), a cross-process lock per
prompt (two runs sharing a cache never pay twice either), a total deadline, a stop after too many failed
requests in a row, and the validation and feedback loop of :class:`LLMGenerator`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from codistill.config import check_types
from codistill.counterfactuals.base import REQUEST_FAILED, Attempt, CFRequest, CFResult, CounterfactualGenerator
from codistill.counterfactuals.verify import check_candidate
from codistill.errors import CodistillError, ConfigError
from codistill.fileio import atomic_write_json, strip_credentials

FATAL_STATUS = {401: "unauthorized: check the key in --api-key-env", 403: "forbidden: the key may not use this model",
                404: "not found: check --base-url and --model"}


@dataclass
class LLMConfig:
    """How to reach the model and how hard to try.

    Attributes:
        base_url: the endpoint's base URL, e.g. ``https://api.openai.com/v1`` or ``http://localhost:8000/v1``.
        model: the model name the endpoint expects.
        api_key_env: name of the environment variable holding the API key (the key itself is never
            stored in any file or log). Unset or empty: a placeholder key (local servers ignore it).
        temperature: sampling temperature (0: as deterministic as the endpoint allows).
        max_tokens: cap on the answer's length.
        timeout: seconds per HTTP request.
        max_retries: retries of one request by the ``openai`` client (timeouts, connection errors, 408,
            409, 429, 5xx; exponential backoff, ``Retry-After`` honoured). 401/403/404 end the run at once.
        deadline: seconds the whole run may spend on requests; past it the run stops with what it has.
        max_consecutive_failures: requests failing in a row (after their retries) that end the run: the
            endpoint is down, and asking the rest would only wait.
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
    max_retries: int = 2
    deadline: float | None = 3600.0
    max_consecutive_failures: int = 8
    concurrency: int = 4
    max_attempts: int = 3
    max_changed_share: float = 0.5
    max_length_ratio: float = 2.0
    cache_dir: str = ".codistill_cache/llm"

    def __post_init__(self) -> None:
        check_types(self, "generator")
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"--base-url must start with http:// or https://, got '{self.base_url}'")
        if self.concurrency < 1 or self.max_attempts < 1 or self.max_retries < 0 or self.max_consecutive_failures < 1:
            raise ConfigError("concurrency, max_attempts and max_consecutive_failures must be >= 1, max_retries >= 0")
        if self.timeout <= 0 or (self.deadline is not None and self.deadline <= 0):
            raise ConfigError("timeout and deadline must be > 0")
        if not 0 < self.max_changed_share <= 1:
            raise ConfigError(f"max_changed_share must be in (0, 1], got {self.max_changed_share}")

    # fields that change how hard we try, not what is asked: left out of a counterfactual file's hash
    OPERATIONAL = ("api_key_env", "timeout", "max_retries", "deadline", "max_consecutive_failures", "concurrency",
                   "cache_dir")

    def build(self) -> "LLMGenerator":
        return LLMGenerator(self)


class LLMRequestError(RuntimeError):
    """One prompt failed for good (after the client's retries); the run goes on with the others."""


class LLMFatalError(CodistillError):
    """The run cannot go on: 401/403/404, the deadline passed, or too many requests failed in a row."""


@dataclass
class ClientStats:
    requests: int = 0
    cache_hits: int = 0
    retries: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    unsaved: int = 0  # answers the cache could not hold (a full disk), written to the fallback folder instead
    seconds: float = 0.0  # wall-clock time with at least one request in flight (not summed over threads)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _in_flight: int = field(default=0, repr=False)
    _busy_since: float = field(default=0.0, repr=False)

    def add(self, **counts: float) -> None:
        with self._lock:
            for key, value in counts.items():
                setattr(self, key, getattr(self, key) + value)

    def begin(self) -> None:
        with self._lock:
            if self._in_flight == 0:
                self._busy_since = time.perf_counter()
            self._in_flight += 1

    def end(self) -> None:
        with self._lock:
            self._in_flight -= 1
            if self._in_flight == 0:
                self.seconds += time.perf_counter() - self._busy_since

    def busy_seconds(self) -> float:
        """:attr:`seconds` so far, with the span of the requests in flight now."""
        with self._lock:
            return self.seconds + (time.perf_counter() - self._busy_since if self._in_flight else 0.0)

    def as_dict(self) -> dict[str, float]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}


@dataclass
class ChatAnswer:
    """One answer of :meth:`ChatClient.ask`.

    Attributes:
        content: the answer's text.
        usage: ``prompt_tokens`` and ``completion_tokens`` the endpoint reported.
        cached: read from the cache (nothing was sent).
        logprobs: per answer token, its most likely alternatives as ``(token, logprob)`` pairs, most likely
            first (the chosen token alone where the endpoint listed no alternatives); ``None`` when the
            endpoint returned no log-probabilities (or none were asked for).
    """

    content: str
    usage: dict[str, int]
    cached: bool
    logprobs: list[list[tuple[str, float]]] | None = None


def read_logprobs(raw: Any) -> list[list[tuple[str, float]]] | None:
    """A choice's ``logprobs`` as :attr:`ChatAnswer.logprobs`: the chat format (``content``: one entry per
    token with its ``top_logprobs``) or the legacy completions format that some servers send in chat
    answers (``top_logprobs``: one ``{token: logprob}`` mapping per token). ``None`` when neither holds any."""
    if raw is None:
        return None
    if hasattr(raw, "model_dump"):
        raw = raw.model_dump()
    if not isinstance(raw, dict):
        return None
    positions: list[list[tuple[str, float]]] = []
    if isinstance(raw.get("content"), list):
        for entry in raw["content"]:
            if not isinstance(entry, dict):
                continue
            top = [(str(t["token"]), float(t["logprob"])) for t in entry.get("top_logprobs") or []
                   if isinstance(t, dict) and t.get("token") is not None and t.get("logprob") is not None]
            if not top and entry.get("token") is not None and entry.get("logprob") is not None:
                top = [(str(entry["token"]), float(entry["logprob"]))]
            positions.append(sorted(top, key=lambda tl: -tl[1]))
    elif isinstance(raw.get("top_logprobs"), list):
        for entry in raw["top_logprobs"]:
            if isinstance(entry, dict):
                positions.append(sorted(((str(t), float(lp)) for t, lp in entry.items() if lp is not None),
                                        key=lambda tl: -tl[1]))
    return positions if any(positions) else None


class ChatClient:
    """Chat completions through the ``openai`` client: cache first (under a per-prompt file lock), then
    the request; answers cached on disk (atomically) before they are returned."""

    def __init__(self, cfg: LLMConfig) -> None:
        import openai

        self.cfg = cfg
        self.stats = ClientStats()
        self.cache_dir = Path(cfg.cache_dir)
        self._failures_in_a_row = 0
        self._lock = threading.Lock()
        self._thread = threading.local()  # this thread's HTTP requests: its retries are its own
        key = os.environ.get(cfg.api_key_env, "") if cfg.api_key_env else ""
        http = openai.DefaultHttpxClient(event_hooks={"request": [lambda request: self._sent()]})
        self._client = openai.OpenAI(base_url=cfg.base_url, api_key=key or "no-key", timeout=cfg.timeout,
                                     max_retries=cfg.max_retries, http_client=http)

    def _sent(self) -> None:
        """An HTTP request left (the first of a prompt or one of the client's retries), on this thread."""
        self.stats.add(requests=1)
        self._thread.requests = self._requests_here() + 1

    def _requests_here(self) -> int:
        return getattr(self._thread, "requests", 0)

    def _key(self, messages: Sequence[dict[str, str]], params: dict[str, Any] | None = None) -> str:
        ident = {"base_url": self.cfg.base_url.rstrip("/"), "model": self.cfg.model, "temperature": self.cfg.temperature,
                 "max_tokens": self.cfg.max_tokens, "messages": list(messages)}
        if params:  # only when given: the generator's keys (and the answers cached under them) stay as they were
            ident["params"] = params
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()

    def _cache_path(self, key: str) -> Path:
        return self.cache_dir / key[:2] / f"{key}.json"

    @staticmethod
    def fallback_path(path: Path) -> Path:
        """Where an answer goes when its cache cannot take it (a full disk): a folder of this user's in the
        system's temporary folder (mode 0700), looked up by later runs too, so an answer paid for is never
        asked again."""
        return Path(tempfile.gettempdir()) / f"codistill-llm-answers-{os.getuid()}" / path.name

    def _cached(self, path: Path) -> dict | None:
        """The cached entry (a mapping with at least ``content``), or ``None``."""
        for where in (path, self.fallback_path(path)):
            if not where.is_file() or (where != path and where.stat().st_uid != os.getuid()):
                continue  # the fallback folder is trusted only when this user made it
            try:
                cached = json.loads(where.read_text(encoding="utf-8"))
                if isinstance(cached, dict) and isinstance(cached["content"], str):
                    return cached
            except (json.JSONDecodeError, KeyError):
                pass
            where.unlink(missing_ok=True)  # a damaged entry is asked again
        return None

    def _save(self, path: Path, entry: dict) -> None:
        """Cache an answer before it is used; when the cache's disk refuses it, the fallback folder takes it
        (counted as ``unsaved``), and only when both refuse is the error raised."""
        try:
            atomic_write_json(path, entry)
        except OSError:
            fallback = self.fallback_path(path)
            fallback.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if fallback.parent.stat().st_uid != os.getuid():
                raise
            atomic_write_json(fallback, entry)
            self.stats.add(unsaved=1)

    def complete(self, messages: Sequence[dict[str, str]]) -> tuple[str, dict[str, int], bool]:
        """(answer text, token usage, came from cache). Raises :class:`LLMRequestError` when this prompt
        failed for good and :class:`LLMFatalError` when the run must stop."""
        answer = self.ask(messages)
        return answer.content, answer.usage, answer.cached

    def ask(self, messages: Sequence[dict[str, str]], params: dict[str, Any] | None = None,
            before_request: Callable[[], None] | None = None) -> ChatAnswer:
        """:meth:`complete` with extra request parameters and the answer's log-probabilities.

        Args:
            messages: the chat messages.
            params: extra keyword arguments of the request (e.g. ``logprobs``, ``top_logprobs``, ``seed``);
                ``temperature`` and ``max_tokens`` given here replace the config's. They are part of the
                cache key, so an answer asked with them is never confused with one asked without.
            before_request: called (under the prompt's lock) right before a request would be sent, never for
                a cached answer; whatever it raises propagates and nothing is sent (a budget stops here).

        Returns:
            The :class:`ChatAnswer`; ``logprobs`` are cached with it.
        """
        from filelock import FileLock

        params = dict(params or {})
        path = self._cache_path(self._key(messages, params))
        hit = self._cached(path)
        if hit is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(path) + ".lock"):  # another process may be asking this very prompt
                hit = self._cached(path)
                if hit is None:
                    if before_request is not None:
                        before_request()
                    content, usage, logprobs = self._request(messages, params)
                    entry = {"model": self.cfg.model, "base_url": strip_credentials(self.cfg.base_url),
                             "messages": list(messages), "content": content, "usage": usage, "time": time.time()}
                    if params:
                        entry.update(params=params, logprobs=logprobs)
                    self._save(path, entry)
                    return ChatAnswer(content, usage, False, logprobs)
        self.stats.add(cache_hits=1)
        logprobs = hit.get("logprobs")
        logprobs = [[(str(t), float(lp)) for t, lp in position] for position in logprobs] if logprobs else None
        return ChatAnswer(hit["content"], hit.get("usage", {}), True, logprobs)

    def _request(self, messages: Sequence[dict[str, str]], params: dict[str, Any] | None = None,
                 ) -> tuple[str, dict[str, int], list[list[tuple[str, float]]] | None]:
        import openai

        url = strip_credentials(self.cfg.base_url).rstrip("/")  # how it is named in messages
        timeout = self.cfg.timeout
        if self.cfg.deadline is not None:
            remaining = self.cfg.deadline - self.stats.busy_seconds()  # time spent on requests, not between them
            if remaining <= 0:
                raise LLMFatalError(f"{url}: the run's deadline of {self.cfg.deadline:.0f}s has passed")
            timeout = min(timeout, remaining)
        before = self._requests_here()
        self.stats.begin()
        try:
            response = self._client.with_options(timeout=timeout).chat.completions.create(
                model=self.cfg.model, messages=list(messages),
                **{"temperature": self.cfg.temperature, "max_tokens": self.cfg.max_tokens, **(params or {})})
            content = response.choices[0].message.content
            logprobs = read_logprobs(getattr(response.choices[0], "logprobs", None)) if params else None
        except openai.APIStatusError as exc:
            self._failed(before)
            if exc.status_code in FATAL_STATUS:
                raise LLMFatalError(f"{url} answered HTTP {exc.status_code} ({FATAL_STATUS[exc.status_code]}); "
                                    "not retried") from None
            self._count_failure(f"HTTP {exc.status_code}", url)
        except (openai.APIConnectionError, openai.APIResponseValidationError) as exc:
            self._failed(before)
            self._count_failure(type(exc).__name__, url)
        except (IndexError, AttributeError, TypeError, ValueError):
            self._failed(before)
            self._count_failure("malformed response", url, retried=False)
        finally:
            self.stats.end()
        with self._lock:
            self._failures_in_a_row = 0
        self.stats.add(retries=self._requests_here() - before - 1)
        usage = response.usage
        usage = {"prompt_tokens": int(getattr(usage, "prompt_tokens", 0) or 0),
                 "completion_tokens": int(getattr(usage, "completion_tokens", 0) or 0)}
        self.stats.add(**usage)
        return content or "", usage, logprobs

    def _failed(self, before: int) -> None:
        self.stats.add(failures=1, retries=max(0, self._requests_here() - before - 1))

    def _count_failure(self, error: str, url: str, retried: bool = True) -> None:
        tries = self.cfg.max_retries + 1 if retried else 1
        with self._lock:
            self._failures_in_a_row += 1
            stop = self._failures_in_a_row >= self.cfg.max_consecutive_failures
        if stop:
            raise LLMFatalError(f"{url}: {self.cfg.max_consecutive_failures} requests in a row failed (last: {error} "
                                f"after {tries} tries); the endpoint looks unreachable")
        raise LLMRequestError(f"{url}: {error} after {tries} tries" if retried else f"{url}: {error} (not retried)")


# -- prompts and answers --------------------------------------------------------------------------------

SYSTEM_PROMPT = (
    "You edit short texts for a text classifier. Given a text, its current label and a target label, change "
    "as few words as possible (one or two is best) so that a careful reader would give the text the target "
    "label. Keep every other word exactly as it is: the same casing, spacing, punctuation and tokenization "
    "(if the text writes \"do n't\" or is all lower case, so does your edit). Do not rewrite or summarize, "
    "do not add explanations. Reply with the edited text only."
)

# a worked example in the prompt (our own, in the labels of a made-up task): minimal, same style
EXAMPLE = (
    "Labels: complaint, praise.\nCurrent label: complaint\nTarget label: praise\n"
    "Text: the staff were rude and the room was cold .\nEdited text:",
    "the staff were kind and the room was warm .",
)


def build_messages(text: str, label: str, target: str, label_names: Sequence[str],
                   feedback: str | None = None) -> list[dict[str, str]]:
    """The chat messages for one original (and, on a retry, why the previous answer did not count): the
    instructions, the worked example as a first exchange, then the text."""
    user = (f"Labels: {', '.join(label_names)}.\n"
            f"Current label: {label}\nTarget label: {target}\n"
            f"Text: {text}\n"
            f"Edited text:")
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": EXAMPLE[0]},
                {"role": "assistant", "content": EXAMPLE[1]}, {"role": "user", "content": user}]
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
        self.fatal: str | None = None

    def _ask(self, messages: list[dict[str, str]]) -> tuple[str | None, dict[str, int], str]:
        if self.fatal is not None:
            return None, {}, f"not asked: {self.fatal}"
        try:
            content, usage, cached = self.client.complete(messages)
            return content, usage, "cached" if cached else "requested"
        except LLMRequestError as exc:
            return None, {}, str(exc)
        except LLMFatalError as exc:
            self.fatal = self.fatal or str(exc)
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
                if not pending or self.fatal is not None:
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

"""An OpenAI-compatible chat model as a classifier teacher: class probabilities from the log-probabilities
of the label words at the answer position.

Per text, one chat request (``temperature`` 0, ``max_tokens`` = ``answer_tokens``, ``logprobs`` on,
``top_logprobs`` = K) asks the model to answer with one of the label words. The returned top-K tokens of
the answer's first non-blank position are matched to the label words (a token matches a word when, with
case, surrounding whitespace and a tokenizer's word-start marker ignored, it is the start of the word:
``" Positive"``, ``"positive"`` and ``"Pos"`` all match ``positive``); each class gets the summed
probability of its tokens (a token that starts several words is shared equally between them), and the
classes are renormalised. The probability on tokens that match no word (and on the tail beyond the
top-K) is reported as ``unmatched_mass``. A class none of whose tokens made the top-K gets a floor of half
the smallest probability listed (its true probability is below every listed one), so the logits stay finite.

Endpoints that return no log-probabilities (some llama.cpp builds, some APIs) are said so once (a
warning) and estimated from ``fallback_samples`` sampled answers at temperature 1 instead: each answer's
first word votes for the label word it matches, and the probabilities are the add-one smoothed vote shares.
``stats()["estimate"]`` says which estimate was used (``"logprobs"``, ``"votes"``, or ``"mixed"``).

Every answer (text, usage and top log-probabilities) is cached on disk by
:class:`~codistill.counterfactuals.llm.ChatClient` under its per-prompt lock, with the request's
parameters in the key: asking the same texts again sends nothing. Its error handling is the generator's:
401/403/404 end the run at once, a dead port ends it after ``max_consecutive_failures`` failed requests in
a row, a black-holed endpoint after the ``deadline``. ``max_requests`` and ``max_tokens`` stop the teacher
before the request that would exceed them; cached answers never count.
"""

from __future__ import annotations

import math
import random
import re
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from codistill.config import build_config, check_types, read_yaml_mapping
from codistill.counterfactuals.llm import ChatAnswer, ChatClient, LLMConfig, LLMFatalError, LLMRequestError
from codistill.counterfactuals.verify import JUDGE_TRIES
from codistill.errors import CodistillError, ConfigError
from codistill.fileio import strip_credentials

if TYPE_CHECKING:  # torch is imported when texts are scored, so the command line starts without it
    import torch

    from codistill.data import LabeledTexts

SPEC_PREFIX = "llm:"

DEFAULT_SYSTEM_PROMPT = ("You are a text classifier. You read a text and answer with exactly one of the given "
                         "labels, written as given, and nothing else.")
DEFAULT_PROMPT = "Labels: {labels}.\nText: {text}\nAnswer with exactly one of the labels ({labels}).\nLabel:"

# prompt characters per token assumed before the endpoint has reported any usage (English runs near 4; a
# smaller figure overestimates the first request's cost, so a token budget stops early rather than late)
CHARS_PER_TOKEN_GUESS = 3.0


class LLMTeacherError(CodistillError):
    """The LLM teacher cannot give probabilities for some texts (failed requests, no log-probabilities and
    no fallback); the message names the endpoint and how many texts have no answer."""


class LLMBudgetExceeded(CodistillError):
    """``max_requests`` or ``max_tokens`` would be exceeded by the next request; nothing more was sent."""


class LLMTeacherWarning(UserWarning):
    """Something about the estimate the user should know (the endpoint gives no log-probabilities)."""


@dataclass
class LLMTeacherConfig:
    """An OpenAI-compatible chat model used as a classifier teacher.

    Attributes:
        model: the model name the endpoint expects.
        base_url: the endpoint's base URL, e.g. ``http://localhost:8080/v1``.
        api_key_env: name of the environment variable holding the API key (never written anywhere); unset
            or empty: a placeholder key (local servers ignore it).
        label_words: the word the model answers for each class, in label index order; ``None``: the
            dataset's label names.
        prompt: the user message for one text; ``{text}`` is replaced by the text and ``{labels}`` by the
            label words joined by ", " (no other braces are interpreted).
        system_prompt: the system message (empty: none).
        examples: in-context examples (user/assistant turns before the text), drawn class-balanced from the
            labelled rows given to :class:`LLMTeacher` with its seed; 0: zero-shot.
        top_logprobs: alternatives per answer token the endpoint is asked for (OpenAI allows up to 20).
        answer_tokens: the answer's length cap (1 is enough for log-probabilities; more lets a sampled
            answer finish its word).
        fallback_samples: sampled answers per text (temperature 1) whose votes estimate the probabilities
            when the endpoint returns no log-probabilities; 0: refuse (an error naming the endpoint).
        max_requests: requests this teacher may send (a prompt retried by the client counts once; cached
            answers never count); ``None``: unlimited.
        max_tokens: prompt plus completion tokens this teacher may spend; the next request's cost is
            estimated from its prompt's length (at the largest tokens per character seen so far); ``None``:
            unlimited.
        timeout: seconds per HTTP request.
        max_retries: retries of one request by the ``openai`` client (timeouts, 429, 5xx).
        deadline: seconds this teacher may spend on requests in all; past it the run stops.
        max_consecutive_failures: requests failing in a row (after their retries) that end the run.
        concurrency: requests in flight at once.
        cache_dir: where answers are cached (shared with the LLM generator; the keys never collide).
        proxy_rows: texts of the training pool the LLM labels to fit a local proxy
            (:mod:`codistill.counterfactuals.proxy`) that scores the edit search's candidates, so the LLM
            judges only those the proxy says flip it; 0: no proxy, the LLM scores every candidate.
        proxy_tries: candidates per original the LLM judges at most when a proxy guides the search.
        proxy_encoder: the frozen encoder whose embeddings the proxy reads (``minilm``, a folder or a Hub name).
    """

    model: str = "gpt-4o-mini"
    base_url: str = "https://api.openai.com/v1"
    api_key_env: str = "OPENAI_API_KEY"
    label_words: list[str] | None = None
    prompt: str = DEFAULT_PROMPT
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    examples: int = 0
    top_logprobs: int = 20
    answer_tokens: int = 1
    fallback_samples: int = 5
    max_requests: int | None = None
    max_tokens: int | None = None
    timeout: float = 60.0
    max_retries: int = 2
    deadline: float | None = 3600.0
    max_consecutive_failures: int = 8
    concurrency: int = 4
    cache_dir: str = ".codistill_cache/llm"
    proxy_rows: int = 256
    proxy_tries: int = JUDGE_TRIES
    proxy_encoder: str = "minilm"

    def __post_init__(self) -> None:
        check_types(self, "llm_teacher")
        if not self.model.strip():
            raise ConfigError("llm_teacher.model is empty: name the model the endpoint serves")
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"llm_teacher.base_url must start with http:// or https://, got '{self.base_url}'")
        if "{text}" not in self.prompt:
            raise ConfigError("llm_teacher.prompt must contain {text} (where the text goes)")
        for name in ("examples", "fallback_samples", "max_retries", "proxy_rows"):
            if getattr(self, name) < 0:
                raise ConfigError(f"llm_teacher.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("top_logprobs", "answer_tokens", "max_consecutive_failures", "concurrency", "proxy_tries"):
            if getattr(self, name) < 1:
                raise ConfigError(f"llm_teacher.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_requests", "max_tokens"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"llm_teacher.{name} must be >= 1 or null (unlimited), got {getattr(self, name)}")
        if self.timeout <= 0 or (self.deadline is not None and self.deadline <= 0):
            raise ConfigError("llm_teacher.timeout and llm_teacher.deadline must be > 0")
        if not self.proxy_encoder.strip():
            raise ConfigError("llm_teacher.proxy_encoder is empty: name the proxy's encoder (e.g. minilm), "
                              "or set llm_teacher.proxy_rows to 0 for no proxy")
        if self.label_words is not None:
            check_label_words(self.label_words, "llm_teacher.label_words")

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> "LLMTeacherConfig":
        """The config in a YAML or JSON spec file (a mapping of these fields); ``overrides`` (e.g. a
        ``base_url`` from the command line) replace the file's values. Unknown keys are a one-line error."""
        where = f"LLM teacher spec {path}"
        raw = read_yaml_mapping(path, where, "the spec")
        raw.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return build_config(cls, raw, where)
        except ConfigError as exc:
            raise ConfigError(str(exc) if str(exc).startswith(where) else f"{where}: {exc}") from None

    @classmethod
    def from_spec(cls, spec: str, base_url: str | None = None, **overrides: Any) -> "LLMTeacherConfig":
        """The config for ``llm:MODEL`` (at ``base_url``, or the default endpoint when ``None``) or for a spec
        file (``.yaml``/``.yml``/``.json``; a given ``base_url`` replaces the file's)."""
        if spec.startswith(SPEC_PREFIX):
            model = spec[len(SPEC_PREFIX):].strip()
            if not model:
                raise ConfigError(f"teacher '{spec}': name the model after '{SPEC_PREFIX}', "
                                  f"e.g. {SPEC_PREFIX}gpt-4o-mini")
            fields_ = {"model": model, **({"base_url": base_url} if base_url is not None else {}), **overrides}
            return build_config(cls, fields_, f"teacher '{spec}'")
        if is_llm_teacher_spec(spec):
            return cls.from_file(spec, base_url=base_url, **overrides)
        raise ConfigError(f"teacher '{spec}' is not an LLM teacher: use {SPEC_PREFIX}MODEL or a .yaml/.json spec file")

    # how patiently and where the endpoint is asked, and how much may be spent: none of it changes an answer
    OPERATIONAL = ("api_key_env", "max_requests", "max_tokens", "timeout", "max_retries", "deadline",
                   "max_consecutive_failures", "concurrency", "cache_dir")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def recipe(self) -> dict[str, Any]:
        """The fields that decide what the teacher answers (what a cached artifact is keyed by): all but the
        :attr:`OPERATIONAL` ones."""
        from codistill.config import decisive_fields

        return decisive_fields(self)

    def client_config(self) -> LLMConfig:
        """The transport settings as the generator's :class:`LLMConfig` (the shared client's input)."""
        return LLMConfig(base_url=self.base_url, model=self.model, api_key_env=self.api_key_env, temperature=0.0,
                         max_tokens=self.answer_tokens, timeout=self.timeout, max_retries=self.max_retries,
                         deadline=self.deadline, max_consecutive_failures=self.max_consecutive_failures,
                         concurrency=self.concurrency, cache_dir=self.cache_dir)


def is_llm_teacher_spec(spec: str) -> bool:
    """Whether a ``--teacher`` value names an LLM teacher: ``llm:MODEL`` or an existing ``.yaml``/``.yml``/
    ``.json`` file (a model is a folder or a Hub name, never such a file)."""
    return spec.startswith(SPEC_PREFIX) or (Path(spec).suffix.lower() in (".yaml", ".yml", ".json")
                                            and Path(spec).is_file())


def _norm(token: str) -> str:
    """A token or word as matched: a tokenizer's word-start marker (``Ġ``, ``▁``) and surrounding
    whitespace removed, lower case."""
    return token.replace("\u0120", " ").replace("\u2581", " ").strip().lower()


def check_label_words(words: Sequence[str], where: str) -> list[str]:
    """``words`` as strings, checked: at least two, none blank, distinct once case and spaces are ignored.
    Raises :class:`ConfigError` naming ``where``."""
    words = [str(w) for w in words]
    if len(words) < 2:
        raise ConfigError(f"{where} needs at least two words (one per class), got {words}")
    if any(not _norm(w) for w in words):
        raise ConfigError(f"{where} has a blank word: {words}")
    if len({_norm(w) for w in words}) != len(words):
        raise ConfigError(f"{where} has words that differ only in case or spaces: {words}")
    return words


def token_label_mass(top: Sequence[tuple[str, float]], words: Sequence[str]) -> tuple[list[float], float]:
    """The probability of each label word in one answer position's top tokens.

    Args:
        top: ``(token, logprob)`` pairs, the endpoint's top-K at the answer position.
        words: the label words, one per class.

    Returns:
        (mass per class: the summed probability of the tokens that start that word, a token that starts
        several words shared equally; unmatched: ``1 -`` the matched mass, the share on other tokens and
        beyond the top-K, clipped to [0, 1]).
    """
    normed = [_norm(w) for w in words]
    mass = [0.0] * len(words)
    for token, logprob in top:
        token = _norm(token)
        hits = [c for c, w in enumerate(normed) if token and w.startswith(token)]
        for c in hits:
            mass[c] += math.exp(logprob) / len(hits)
    return mass, min(1.0, max(0.0, 1.0 - sum(mass)))


def probs_from_logprobs(top: Sequence[tuple[str, float]], words: Sequence[str]) -> tuple[list[float], float]:
    """(class probabilities summing to 1, unmatched mass) from one answer position's top tokens: the label
    words' masses (:func:`token_label_mass`) renormalised, a class with no listed token given a floor of half
    the smallest listed probability first (all classes get it, so uniform, when no token matches)."""
    mass, unmatched = token_label_mass(top, words)
    floor = min(math.exp(lp) for _, lp in top) / 2 if top else 1.0
    floor = max(floor, 1e-30)  # a listed -inf or -9999 must not make the floor 0
    mass = [m if m > 0 else floor for m in mass]
    total = sum(mass)
    return [m / total for m in mass], unmatched


def vote_of(answer: str, words: Sequence[str]) -> int | None:
    """The class a sampled answer votes for: the label word the answer starts with (the longest such),
    else the one word its first word starts or is the start of; ``None`` when no word or several match."""
    tokens = re.findall(r"[^\W_]+", answer.lower())
    if not tokens:
        return None
    answer_norm = " ".join(tokens)
    normed = [" ".join(re.findall(r"[^\W_]+", w.lower())) for w in words]
    starts = [c for c, w in enumerate(normed) if w and (answer_norm == w or answer_norm.startswith(w + " "))]
    if starts:
        return max(starts, key=lambda c: len(normed[c]))
    first = tokens[0]
    partial = [c for c, w in enumerate(normed) if w and (w.startswith(first) or first.startswith(w))]
    return partial[0] if len(partial) == 1 else None


def probs_from_votes(answers: Sequence[str], words: Sequence[str]) -> tuple[list[float], float]:
    """(class probabilities: add-one smoothed vote shares ``(votes_c + 1) / (votes + C)``, the share of
    answers that voted for no class)."""
    votes = [vote_of(a, words) for a in answers]
    counts = [sum(v == c for v in votes) for c in range(len(words))]
    total = sum(counts) + len(words)
    return [(n + 1) / total for n in counts], (sum(v is None for v in votes) / len(votes) if votes else 0.0)


def draw_examples(labels: Sequence[int], n: int, num_labels: int, seed: int) -> list[int]:
    """Indices of ``n`` in-context examples drawn class-balanced: classes take turns (in a seeded order),
    each giving its next row in a seeded shuffle, a class with no rows left skipped; the drawn rows are
    then shuffled (so the last example is not always the same class). All rows when there are fewer than ``n``."""
    rng = random.Random(seed)
    pools = {c: [i for i, y in enumerate(labels) if y == c] for c in range(num_labels)}
    for pool in pools.values():
        rng.shuffle(pool)
    order = list(range(num_labels))
    rng.shuffle(order)
    chosen: list[int] = []
    while len(chosen) < min(n, len(labels)):
        for c in order:
            if pools[c] and len(chosen) < n:
                chosen.append(pools[c].pop())
    rng.shuffle(chosen)
    return chosen


class _BudgetStop(Exception):
    """Internal: the next request would exceed the budget (the message says which and by how much)."""


class LLMTeacher:
    """A chat model as a classifier teacher over the dataset's classes.

    Args:
        cfg: the endpoint, prompt and budget.
        label_names: the dataset's class names in index order.
        examples: labelled rows (``texts`` and ``labels``, e.g. the k training rows) to draw ``cfg.examples``
            in-context examples from; required when ``cfg.examples > 0``.
        seed: seed of that draw.
        client: a :class:`ChatClient` to share (tests); by default one built from ``cfg``.

    Attributes:
        label_names: the dataset's class names; ``num_labels`` their count.
        label_words: what the model is asked to answer, one per class.
        examples: the in-context examples as ``(text, class index)``, in prompt order.
        notes: what the user should know about the estimate (also warned once).
    """

    def __init__(self, cfg: LLMTeacherConfig, label_names: Sequence[str], examples: "LabeledTexts | None" = None,
                 seed: int = 0, client: ChatClient | None = None) -> None:
        self.cfg = cfg
        self.label_names = [str(n) for n in label_names]
        self.num_labels = len(self.label_names)
        words = cfg.label_words if cfg.label_words is not None else self.label_names
        if len(words) != self.num_labels:
            raise ConfigError(f"llm_teacher.label_words has {len(words)} words but the dataset has {self.num_labels} "
                              f"classes ({', '.join(self.label_names)})")
        self.label_words = check_label_words(words, "llm_teacher.label_words" if cfg.label_words else "label names")
        self.client = client or ChatClient(cfg.client_config())
        self.url = strip_credentials(cfg.base_url).rstrip("/")
        self.examples = self._examples(examples, seed)
        self._lock = threading.Lock()
        self._prompts = 0  # requests sent (the budget's unit)
        self._tokens = 0  # tokens of answered requests (the estimate where the endpoint reported none)
        self._reserved = 0  # estimated tokens of requests in flight
        self._tokens_per_char = 1 / CHARS_PER_TOKEN_GUESS  # the guess until the endpoint reports usage
        self._ratio_seen = False
        self._logprobs_supported: bool | None = None
        self._texts = {"logprobs": 0, "votes": 0}
        self._unmatched = 0.0
        self.notes: list[str] = []

    def _examples(self, rows, seed: int) -> list[tuple[str, int]]:
        if self.cfg.examples == 0:
            return []
        if rows is None or not len(rows.texts):
            raise ConfigError(f"llm_teacher.examples = {self.cfg.examples} needs labelled rows to draw them from; "
                              "none were given")
        picked = draw_examples(list(rows.labels), self.cfg.examples, self.num_labels, seed)
        return [(rows.texts[i], int(rows.labels[i])) for i in picked]

    # -- prompts ---------------------------------------------------------------------------------------

    def _user(self, text: str) -> str:
        return self.cfg.prompt.replace("{labels}", ", ".join(self.label_words)).replace("{text}", text)

    def messages(self, text: str) -> list[dict[str, str]]:
        """The chat messages for one text: the system prompt, each in-context example as a user turn and
        the assistant's label word, then the text."""
        messages = [{"role": "system", "content": self.cfg.system_prompt}] if self.cfg.system_prompt else []
        for example, label in self.examples:
            messages += [{"role": "user", "content": self._user(example)},
                         {"role": "assistant", "content": self.label_words[label]}]
        return messages + [{"role": "user", "content": self._user(text)}]

    # -- budget ----------------------------------------------------------------------------------------

    def _spent(self) -> str:
        return f"{self._prompts} requests sent, {self._tokens} tokens used"

    def _reserve(self, chars: int) -> int:
        """Count the request about to be sent and reserve its estimated tokens; raises :class:`_BudgetStop`
        when it would exceed a budget. Returns the estimate."""
        with self._lock:
            if self.cfg.max_requests is not None and self._prompts + 1 > self.cfg.max_requests:
                raise _BudgetStop(f"the next request would exceed max_requests={self.cfg.max_requests} "
                                  f"({self._spent()})")
            estimate = math.ceil(chars * self._tokens_per_char) + self.cfg.answer_tokens
            if self.cfg.max_tokens is not None and self._tokens + self._reserved + estimate > self.cfg.max_tokens:
                raise _BudgetStop(f"the next request (about {estimate} tokens) would exceed max_tokens="
                                  f"{self.cfg.max_tokens} ({self._spent()})")
            self._prompts += 1
            self._reserved += estimate
            return estimate

    def _settle(self, estimate: int, chars: int, usage: dict[str, int] | None) -> None:
        """A reserved request ended: its real tokens replace the estimate (the estimate stays when the
        endpoint reported none; nothing when it failed)."""
        with self._lock:
            self._reserved -= estimate
            if usage is None:
                return
            prompt = int(usage.get("prompt_tokens", 0))
            spent = prompt + int(usage.get("completion_tokens", 0))
            self._tokens += spent if spent else estimate
            if prompt and chars:
                ratio = prompt / chars
                self._tokens_per_char = max(self._tokens_per_char, ratio) if self._ratio_seen else ratio
                self._ratio_seen = True

    def _ask(self, messages: list[dict[str, str]], params: dict[str, Any]) -> ChatAnswer:
        chars = sum(len(m["content"]) for m in messages)
        reserved: list[int] = []
        try:
            answer = self.client.ask(messages, params, before_request=lambda: reserved.append(self._reserve(chars)))
        except BaseException:
            if reserved:
                self._settle(reserved[0], chars, None)
            raise
        if reserved:
            self._settle(reserved[0], chars, answer.usage)
        return answer

    # -- scoring ---------------------------------------------------------------------------------------

    def _no_logprobs(self) -> None:
        """The endpoint answered without log-probabilities: later texts go straight to votes; said once."""
        with self._lock:
            first = self._logprobs_supported is not False
            self._logprobs_supported = False
        if not first or self.cfg.fallback_samples == 0:
            return
        note = (f"{self.url} ({self.cfg.model}) returned no log-probabilities: class probabilities are estimated "
                f"from {self.cfg.fallback_samples} sampled answers per text at temperature 1 (add-one smoothed votes)")
        self.notes.append(note)
        warnings.warn(note, LLMTeacherWarning, stacklevel=4)

    def _score(self, text: str) -> tuple[list[float], str, float]:
        """(class probabilities, estimate kind, unmatched mass) of one text."""
        messages = self.messages(text)
        if self._logprobs_supported is not False:
            answer = self._ask(messages, {"temperature": 0.0, "max_tokens": self.cfg.answer_tokens,
                                          "logprobs": True, "top_logprobs": self.cfg.top_logprobs})
            if answer.logprobs:
                with self._lock:
                    self._logprobs_supported = True
                positions = [p for p in answer.logprobs if p]
                top = next((p for p in positions if _norm(p[0][0])), positions[0])
                probs, unmatched = probs_from_logprobs(top, self.label_words)
                return probs, "logprobs", unmatched
            self._no_logprobs()
        if self.cfg.fallback_samples == 0:
            raise LLMTeacherError(f"{self.url} ({self.cfg.model}) returns no log-probabilities and "
                                  "llm_teacher.fallback_samples is 0: set it > 0 to estimate from sampled answers")
        answers = [self._ask(messages, {"temperature": 1.0, "max_tokens": self.cfg.answer_tokens, "seed": i}).content
                   for i in range(self.cfg.fallback_samples)]
        probs, unmatched = probs_from_votes(answers, self.label_words)
        return probs, "votes", unmatched

    def predict_proba(self, texts: Sequence[str], progress: bool = False) -> "torch.Tensor":
        """Class probabilities ``(N, C)`` (float32, rows sum to 1) of ``texts``, in the dataset's label order.

        Raises :class:`LLMBudgetExceeded` when a budget stopped it, :class:`LLMFatalError` when the endpoint
        refused (401/403/404), is unreachable or the deadline passed, and :class:`LLMTeacherError` when some
        texts got no answer; each message says how many texts have none (the answers received are cached,
        so a rerun pays only for the rest).
        """
        import torch
        from tqdm.auto import tqdm

        texts = list(texts)
        unique = list(dict.fromkeys(texts))
        results: dict[str, tuple[list[float], str, float]] = {}
        errors: dict[type, str] = {}
        stop: list[str] = []

        def job(text: str):
            if stop:
                return None
            try:
                return self._score(text)
            except (LLMFatalError, LLMTeacherError) as exc:
                stop.append(str(exc))
                errors.setdefault(type(exc), str(exc))
            except _BudgetStop as exc:
                errors.setdefault(_BudgetStop, str(exc))
            except LLMRequestError as exc:
                errors[LLMRequestError] = str(exc)
            return None

        bar = tqdm(total=len(unique), desc=f"llm teacher ({self.cfg.model})", disable=not progress, leave=False)
        with ThreadPoolExecutor(max_workers=self.cfg.concurrency) as pool:
            futures = {pool.submit(job, text): text for text in unique}
            for future in as_completed(futures):
                if future.result() is not None:
                    results[futures[future]] = future.result()
                bar.update(1)
        bar.close()
        for probs, kind, unmatched in results.values():
            self._texts[kind] += 1
            self._unmatched += unmatched
        missing = f"{len(unique) - len(results)} of {len(unique)} texts have no answer"
        if LLMFatalError in errors:
            raise LLMFatalError(f"{errors[LLMFatalError]}; {missing}")
        if LLMTeacherError in errors:
            raise LLMTeacherError(f"{errors[LLMTeacherError]}; {missing}")
        if _BudgetStop in errors:
            raise LLMBudgetExceeded(f"LLM teacher budget: {errors[_BudgetStop]}; {missing} (the answers so far "
                                    "are cached: a larger budget pays only for the rest)")
        if LLMRequestError in errors:
            raise LLMTeacherError(f"LLM teacher: {missing} (last: {errors[LLMRequestError]}); the answers received "
                                  "are cached: a rerun asks only the rest")
        if not texts:
            return torch.empty(0, self.num_labels)
        out = torch.tensor([results[t][0] for t in texts], dtype=torch.float64)
        return (out / out.sum(-1, keepdim=True)).float()

    def logits(self, texts: Sequence[str], progress: bool = False) -> "torch.Tensor":
        """Log class probabilities ``(N, C)`` (float32, finite), what a KD loss takes as teacher logits."""
        return self.predict_proba(texts, progress=progress).log()

    def stats(self) -> dict[str, Any]:
        """What this teacher has done so far: ``requests`` (HTTP requests, retries included), ``prompts``
        (requests counted by the budget), ``cache_hits``, ``retries``, ``failures``, ``prompt_tokens``,
        ``completion_tokens``, ``seconds`` (wall-clock time with a request in flight), ``texts`` scored,
        ``estimate`` (``"logprobs"``, ``"votes"``, ``"mixed"``; ``None`` before any text),
        ``unmatched_mass`` (mean per text: probability on no label word, or the share of votes for none),
        ``examples`` (in-context examples per prompt), the budgets and any notes."""
        client = self.client.stats.as_dict()
        texts = sum(self._texts.values())
        kinds = [k for k, n in self._texts.items() if n]
        return {"model": self.cfg.model, "base_url": self.url,
                "estimate": (kinds[0] if len(kinds) == 1 else "mixed") if kinds else None,
                "texts": texts, "logprob_texts": self._texts["logprobs"], "vote_texts": self._texts["votes"],
                "unmatched_mass": round(self._unmatched / texts, 6) if texts else None,
                "prompts": self._prompts, **client, "seconds": round(client["seconds"], 3),
                "examples": len(self.examples), "max_requests": self.cfg.max_requests,
                "max_tokens": self.cfg.max_tokens, "notes": list(self.notes)}

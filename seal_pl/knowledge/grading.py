"""Grading closed-book answers: SQuAD metrics and pluggable graders.

The reference grades every answer with a GPT-4.1 yes/no judge, one uncached sequential call per
prediction, which makes accuracy noisy, slow and costly to reproduce. Here grading is an
interface with interchangeable implementations:

* ``ContainsGrader`` (default, offline): correct when a normalised gold answer appears in the
  normalised prediction as a whole run of words.
* ``LLMJudgeGrader``: the reference's yes/no judge protocol over any ``JudgeBackend``, either an
  OpenAI-compatible HTTP endpoint (``OpenAICompatibleJudge``, stdlib only, concurrent, retried)
  or any local callable (``CallableJudge``). Verdicts are cached on disk so re-runs cost nothing,
  and a judge failure marks the item incorrect with the error recorded instead of stopping a run.

Every verdict also carries SQuAD exact match and token F1, computed locally, so runs graded by
different judges remain comparable.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import string
import time
import urllib.error
import urllib.request
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from seal_pl.errors import UserError

_PUNCTUATION_TABLE = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_YES = re.compile(r"\byes\b", re.IGNORECASE)
_NO = re.compile(r"\bno\b", re.IGNORECASE)
_RETRYABLE_HTTP_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower-case, drop ASCII punctuation, drop a/an/the, collapse whitespace."""
    lowered = text.lower().translate(_PUNCTUATION_TABLE)
    return " ".join(_ARTICLES.sub(" ", lowered).split())


def is_gradable(gold: str) -> bool:
    """True when a gold answer keeps at least one word after :func:`normalize_answer`.

    A gold such as ``"the"``, ``"!!!"`` or ``""`` normalises to nothing: ``contains_match`` can never
    find it in a prediction and ``exact_match`` would count an empty answer as right, so the data
    loaders refuse such golds.
    """
    return bool(normalize_answer(gold))


def contains_match(prediction: str, golds: Sequence[str]) -> bool:
    """True if some non-empty normalised gold occurs in the normalised prediction as whole words.

    Matching is on word sequences, so "1847" does not match inside "18470".
    """
    prediction_tokens = normalize_answer(prediction).split()
    for gold in _checked_golds(golds):
        gold_tokens = normalize_answer(gold).split()
        if gold_tokens and _contains_run(prediction_tokens, gold_tokens):
            return True
    return False


def exact_match(prediction: str, golds: Sequence[str]) -> bool:
    """True if the normalised prediction equals some normalised gold."""
    normalized_prediction = normalize_answer(prediction)
    return any(normalized_prediction == normalize_answer(gold) for gold in _checked_golds(golds))


def f1(prediction: str, golds: Sequence[str]) -> float:
    """SQuAD token F1 between prediction and gold, maximised over the golds."""
    prediction_tokens = normalize_answer(prediction).split()
    return max(_token_f1(prediction_tokens, normalize_answer(gold).split()) for gold in _checked_golds(golds))


@dataclass(frozen=True)
class GradeItem:
    """One answer to grade: the question as shown to the model, its gold answers and the prediction."""

    question: str
    golds: tuple[str, ...]
    prediction: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "golds", tuple(self.golds))
        _checked_golds(self.golds)


@dataclass
class Verdict:
    """The grade of one item.

    Attributes:
        correct: the grader's decision (what accuracy counts).
        exact: SQuAD exact match, computed locally whatever the grader.
        f1: SQuAD token F1, computed locally whatever the grader.
        judge: name of the grader/judge that decided ``correct``.
        error: why the judge could not decide (then ``correct`` is False); None when it decided.
    """

    correct: bool
    exact: bool
    f1: float
    judge: str
    error: str | None = None


@runtime_checkable
class Grader(Protocol):
    """Grades a batch of answers, one verdict per item, in order."""

    def grade(self, items: Sequence[GradeItem]) -> list[Verdict]:
        """Return one verdict per item."""
        ...


@runtime_checkable
class JudgeBackend(Protocol):
    """Something that completes judge prompts: one reply per prompt, in order.

    A backend may raise ``JudgeBatchError`` to report the replies it did get alongside per-prompt
    errors; any other exception fails the whole batch. ``name`` identifies the judge in verdicts
    and in cache keys.
    """

    name: str

    def complete(self, prompts: list[str]) -> list[str]:
        """Return the reply text for every prompt."""
        ...


class JudgeBatchError(RuntimeError):
    """Some prompts of a batch failed; ``replies[i]`` is None exactly where ``errors[i]`` is set."""

    def __init__(self, replies: list[str | None], errors: list[str | None]) -> None:
        failed = sum(error is not None for error in errors)
        first = next((error for error in errors if error is not None), None)
        super().__init__(f"{failed} of {len(errors)} judge requests failed; first error: {first}")
        self.replies = replies
        self.errors = errors


class MissingAPIKeyError(UserError, RuntimeError):
    """The environment variable that should hold the judge's API key is not set."""


class ContainsGrader:
    """Offline grader: correct when a gold answer is contained, as whole words, in the prediction."""

    name = "contains"

    def grade(self, items: Sequence[GradeItem]) -> list[Verdict]:
        """Grade every item locally."""
        return [
            Verdict(
                correct=contains_match(item.prediction, item.golds),
                exact=exact_match(item.prediction, item.golds),
                f1=f1(item.prediction, item.golds),
                judge=self.name,
            )
            for item in items
        ]


def judge_prompt(item: GradeItem) -> str:
    """The yes/no grading prompt for one item (our wording of the reference's grading rules)."""
    if len(item.golds) == 1:
        gold_line = f"Gold answer: {item.golds[0]}"
    else:
        gold_line = "Gold answers (any one of them is acceptable): " + " | ".join(item.golds)
    return (
        "You are grading a student's answer to a quiz question. Base your decision only on the gold "
        "answer given here and not on anything else you know. The student's answer is correct if it "
        "conveys the whole gold answer and says nothing that contradicts it; additional detail and "
        "differences in wording or style do not matter. Reply with one word: yes or no.\n\n"
        f"Question: {item.question}\n{gold_line}\nStudent answer: {item.prediction}\n\n"
        "Is the student's answer correct?"
    )


def parse_judge_reply(reply: str) -> bool:
    """True iff the reply contains the word "yes" and not the word "no" (case-insensitive)."""
    return bool(_YES.search(reply)) and not _NO.search(reply)


class LLMJudgeGrader:
    """Yes/no LLM judge over any backend, with an optional JSONL verdict cache shared across runs.

    Empty predictions are graded False without asking the judge. Each distinct
    (question, golds, prediction, judge name) is judged once: its verdict is appended to
    ``cache_path`` and re-used on later calls and later runs. Failed judgements are not cached, so
    they are retried next time; in the current call they count as incorrect with ``error`` set.

    Under DDP (``LOCAL_RANK`` set) each process appends to a file of its own next to ``cache_path``
    (``<stem>.node<n>-rank<r><suffix>``), so that repairing a half-written last line can never cut
    another process's entry; every process reads ``cache_path`` and all those files.
    """

    def __init__(self, judge: JudgeBackend, cache_path: str | Path | None = None) -> None:
        self.judge = judge
        self.cache_path = None if cache_path is None else Path(cache_path)
        self._cache: dict[str, bool] = {}
        if self.cache_path is not None:
            for path in [self.cache_path, *sorted(self.cache_path.parent.glob(f"{self.cache_path.stem}.node*-rank*"))]:
                self._cache.update(_read_verdict_cache(path))

    @property
    def write_path(self) -> Path | None:
        """The file this process appends verdicts to."""
        if self.cache_path is None or os.environ.get("LOCAL_RANK") is None:
            return self.cache_path
        node, rank = os.environ.get("NODE_RANK", "0"), os.environ["LOCAL_RANK"]
        return self.cache_path.with_name(f"{self.cache_path.stem}.node{node}-rank{rank}{self.cache_path.suffix}")

    @property
    def name(self) -> str:
        """The judge's name, recorded in every verdict."""
        return self.judge.name

    def grade(self, items: Sequence[GradeItem]) -> list[Verdict]:
        """Grade the items, asking the judge only about non-empty predictions not in the cache."""
        keys = [verdict_cache_key(item, self.name) for item in items]
        pending: dict[str, GradeItem] = {}
        for key, item in zip(keys, items):
            if item.prediction.strip() and key not in self._cache:
                pending.setdefault(key, item)
        errors = self._judge_pending(pending)
        verdicts = []
        for key, item in zip(keys, items):
            if not item.prediction.strip():
                correct, error = False, None
            elif key in errors:
                correct, error = False, errors[key]
            else:
                correct, error = self._cache[key], None
            verdicts.append(
                Verdict(
                    correct=correct,
                    exact=exact_match(item.prediction, item.golds),
                    f1=f1(item.prediction, item.golds),
                    judge=self.name,
                    error=error,
                )
            )
        return verdicts

    def _judge_pending(self, pending: dict[str, GradeItem]) -> dict[str, str]:
        """Ask the judge about ``pending``; cache the decisions and return the errors by key."""
        if not pending:
            return {}
        keys = list(pending)
        replies, failures = _complete_safely(self.judge, [judge_prompt(pending[key]) for key in keys])
        errors: dict[str, str] = {}
        new_entries = []
        for key, reply, failure in zip(keys, replies, failures):
            if failure is not None or reply is None:
                errors[key] = failure or "judge returned no reply"
                continue
            correct = parse_judge_reply(reply)
            self._cache[key] = correct
            item = pending[key]
            new_entries.append(
                {
                    "key": key,
                    "correct": correct,
                    "reply": reply,
                    "judge": self.name,
                    "question": item.question,
                    "golds": list(item.golds),
                    "prediction": item.prediction,
                }
            )
        target = self.write_path
        if target is not None and new_entries:
            target.parent.mkdir(parents=True, exist_ok=True)
            _drop_partial_last_line(target)
            with target.open("a", encoding="utf-8") as stream:
                for entry in new_entries:
                    stream.write(json.dumps(entry, ensure_ascii=False) + "\n")
        return errors


def verdict_cache_key(item: GradeItem, judge_name: str) -> str:
    """sha256 of the question, gold answers, prediction and judge name."""
    payload = json.dumps([item.question, list(item.golds), item.prediction, judge_name], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class CallableJudge:
    """Judge backend around any ``generate(prompts) -> replies`` callable, e.g. a local HF model."""

    def __init__(self, fn: Callable[[list[str]], Sequence[str]], name: str) -> None:
        if not name:
            raise ValueError("CallableJudge needs a non-empty name (it is part of the cache key)")
        self.fn = fn
        self.name = name

    def complete(self, prompts: list[str]) -> list[str]:
        """Call the wrapped function and check it returned one string per prompt."""
        replies = list(self.fn(list(prompts)))
        if len(replies) != len(prompts):
            raise ValueError(f"judge {self.name!r} returned {len(replies)} replies for {len(prompts)} prompts")
        for position, reply in enumerate(replies):
            if not isinstance(reply, str):
                raise TypeError(f"judge {self.name!r} returned {type(reply).__name__} for prompt {position}")
        return replies


class OpenAICompatibleJudge:
    """Judge backend for any OpenAI-compatible ``/chat/completions`` endpoint, using only the stdlib.

    Prompts are sent concurrently (``concurrency`` threads), at temperature 0. Timeouts, connection
    errors and HTTP 408/409/425/429/5xx are retried ``max_retries`` times with a linearly growing
    pause; other HTTP errors fail at once. Failed prompts are reported through ``JudgeBatchError``
    so the grader can mark just those items.

    Args:
        base_url: e.g. ``https://api.openai.com/v1`` or ``http://localhost:8000/v1``.
        model: model name sent in the request.
        api_key_env: environment variable holding the API key; None for a server without auth.
        timeout_s: per-request timeout.
        max_retries: retries after the first failed attempt.
        concurrency: parallel requests.
        retry_backoff_s: pause before retry ``n`` is ``n * retry_backoff_s`` seconds.

    Raises:
        MissingAPIKeyError: ``api_key_env`` is given but not set (or empty).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = "OPENAI_API_KEY",
        timeout_s: float = 60.0,
        max_retries: int = 3,
        concurrency: int = 8,
        retry_backoff_s: float = 2.0,
    ) -> None:
        if max_retries < 0 or concurrency < 1 or timeout_s <= 0:
            raise ValueError("need max_retries >= 0, concurrency >= 1 and timeout_s > 0")
        self._api_key: str | None = None
        if api_key_env is not None:
            self._api_key = os.environ.get(api_key_env, "").strip() or None
            if self._api_key is None:
                raise MissingAPIKeyError(
                    f"the LLM judge needs an API key in the environment variable {api_key_env}, which is not "
                    f"set; export {api_key_env}=... or pass api_key_env=None for a server without auth"
                )
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.name = f"openai-compatible:{model}"
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.concurrency = concurrency
        self.retry_backoff_s = retry_backoff_s

    def complete(self, prompts: list[str]) -> list[str]:
        """Send every prompt; raise ``JudgeBatchError`` carrying partial replies if any failed."""
        if not prompts:
            return []
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(prompts))) as pool:
            outcomes = list(pool.map(self._complete_one, prompts))
        replies = [reply for reply, _ in outcomes]
        errors = [error for _, error in outcomes]
        if any(error is not None for error in errors):
            raise JudgeBatchError(replies, errors)
        return [reply for reply in replies if reply is not None]

    def _complete_one(self, prompt: str) -> tuple[str | None, str | None]:
        """(reply, None) on success, (None, error description) after the retries are spent."""
        body = json.dumps(
            {"model": self.model, "messages": [{"role": "user", "content": prompt}], "temperature": 0}
        ).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self._api_key is not None:
            headers["Authorization"] = f"Bearer {self._api_key}"
        error = "no attempt made"
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.retry_backoff_s * attempt)
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    return _reply_text(json.loads(response.read().decode("utf-8"))), None
            except urllib.error.HTTPError as http_error:
                error = f"HTTP {http_error.code} from {self.url}: {_read_error_body(http_error)}"
                if http_error.code not in _RETRYABLE_HTTP_STATUS:
                    break
            except (OSError, http.client.HTTPException) as network_error:
                error = f"{type(network_error).__name__} calling {self.url}: {network_error}"
            except (ValueError, KeyError, IndexError, TypeError) as bad_response:
                error = f"unexpected response from {self.url}: {type(bad_response).__name__}: {bad_response}"
        return None, f"{error} (after {attempt + 1} attempt(s))"


def accuracy(verdicts: Sequence[Verdict]) -> float:
    """Fraction of verdicts marked correct."""
    if not verdicts:
        raise ValueError("accuracy of zero verdicts is undefined")
    return sum(verdict.correct for verdict in verdicts) / len(verdicts)


def _complete_safely(judge: JudgeBackend, prompts: list[str]) -> tuple[list[str | None], list[str | None]]:
    """Run the backend and turn any failure into per-prompt error strings instead of an exception."""
    replies: list[Any]
    errors: list[str | None]
    try:
        replies = judge.complete(prompts)
        errors = [None] * len(replies) if isinstance(replies, list) else []
    except JudgeBatchError as batch_error:
        replies, errors = list(batch_error.replies), list(batch_error.errors)
    except Exception as error:  # noqa: BLE001 - a failing judge must cost verdicts, not the run
        message = f"{type(error).__name__}: {error}"
        return [None] * len(prompts), [message] * len(prompts)
    if not isinstance(replies, list) or len(replies) != len(prompts) or len(errors) != len(prompts):
        count = len(replies) if isinstance(replies, list) else type(replies).__name__
        message = f"judge {judge.name!r} returned {count} replies for {len(prompts)} prompts"
        return [None] * len(prompts), [message] * len(prompts)
    for position, reply in enumerate(replies):
        if errors[position] is None and not isinstance(reply, str):
            errors[position] = f"judge returned {type(reply).__name__} instead of text"
    return [reply if error is None else None for reply, error in zip(replies, errors)], errors


def _read_verdict_cache(path: Path) -> dict[str, bool]:
    """Load cached verdicts; a truncated last line (interrupted write) is skipped with a warning."""
    if not path.exists():
        return {}
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    cache: dict[str, bool] = {}
    for line_number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            key, correct = entry["key"], entry["correct"]
            if not isinstance(key, str) or not isinstance(correct, bool):
                raise TypeError("'key' must be a string and 'correct' a boolean")
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            is_unterminated_last_line = line_number == len(lines) and not text.endswith("\n")
            if is_unterminated_last_line and isinstance(error, json.JSONDecodeError):
                warnings.warn(
                    f"{path}: line {line_number}: ignoring a truncated cache entry (it is removed on the next write)",
                    stacklevel=3,
                )
                continue
            raise ValueError(f"{path}: line {line_number}: invalid verdict cache entry: {error}") from error
        cache[key] = correct
    return cache


def _drop_partial_last_line(path: Path) -> None:
    """Cut an unterminated last line (left by an interrupted append) so new entries start on their own line."""
    if not path.exists():
        return
    content = path.read_bytes()
    if content and not content.endswith(b"\n"):
        with path.open("r+b") as stream:
            stream.truncate(content.rfind(b"\n") + 1)


def _reply_text(payload: Any) -> str:
    """The assistant text of a chat-completions response."""
    content = payload["choices"][0]["message"]["content"]
    if not isinstance(content, str):
        raise TypeError(f"message content is {type(content).__name__}, not a string")
    return content


def _read_error_body(http_error: urllib.error.HTTPError) -> str:
    """A short excerpt of an HTTP error's body, for the recorded error."""
    try:
        return http_error.read().decode("utf-8", "replace")[:300]
    except OSError:
        return http_error.reason if isinstance(http_error.reason, str) else "no body"


def _checked_golds(golds: Sequence[str]) -> Sequence[str]:
    """The golds, or a ValueError when there are none (a metric over no answers is meaningless)."""
    if isinstance(golds, str):
        raise TypeError("golds must be a sequence of strings, not a single string")
    if not golds:
        raise ValueError("at least one gold answer is needed")
    return golds


def _contains_run(tokens: list[str], run: list[str]) -> bool:
    """True if ``run`` occurs as a contiguous sub-list of ``tokens``."""
    width = len(run)
    return any(tokens[start : start + width] == run for start in range(len(tokens) - width + 1))


def _token_f1(prediction_tokens: list[str], gold_tokens: list[str]) -> float:
    """Token-overlap F1 of two token lists (0 when nothing overlaps)."""
    overlap = sum((Counter(prediction_tokens) & Counter(gold_tokens)).values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(prediction_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)

"""Tests for seal_pl.knowledge.grading: SQuAD metrics, the contains grader and the cached LLM judge."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from seal_pl.knowledge.grading import (
    CallableJudge,
    ContainsGrader,
    GradeItem,
    Grader,
    JudgeBatchError,
    LLMJudgeGrader,
    MissingAPIKeyError,
    OpenAICompatibleJudge,
    Verdict,
    accuracy,
    contains_match,
    exact_match,
    f1,
    judge_prompt,
    normalize_answer,
    parse_judge_reply,
    verdict_cache_key,
)


class CountingJudge:
    """Fake judge backend: answers from a fixed rule and counts the prompts it sees."""

    def __init__(self, reply: str = "Yes.", name: str = "fake-judge") -> None:
        self.reply = reply
        self.name = name
        self.prompts: list[str] = []
        self.calls = 0

    def complete(self, prompts: list[str]) -> list[str]:
        self.calls += 1
        self.prompts.extend(prompts)
        return [self.reply for _ in prompts]


class ExplodingJudge:
    """Fake judge backend whose every call fails."""

    name = "exploding"

    def complete(self, prompts: list[str]) -> list[str]:
        raise ConnectionError("judge server unreachable")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Lantern Snails!", "lantern snails"),
        ("  an   apple, a pear and THE plum ", "apple pear and plum"),
        ("1,847", "1847"),
        ("theatre", "theatre"),
        ("A", ""),
        ("", ""),
    ],
)
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


def test_contains_match_works_on_whole_words() -> None:
    assert contains_match("It was mapped in 1847 by divers.", ["1847"])
    assert not contains_match("It was mapped in 18470.", ["1847"])
    assert not contains_match("the snailsong", ["snails"])
    assert contains_match("Because of THE lantern snails.", ["lantern snails"])
    assert not contains_match("lantern and snails", ["lantern snails"])
    assert contains_match("green", ["blue", "Green"])


def test_contains_match_ignores_golds_that_normalise_to_nothing() -> None:
    assert not contains_match("anything at all", ["the", "!!"])
    assert contains_match("anything at all", ["the", "at all"])


def test_exact_match() -> None:
    assert exact_match("The Lantern snails.", ["lantern snails"])
    assert not exact_match("lantern snails glow", ["lantern snails"])
    assert exact_match("snow", ["heavy snow", "Snow"])


def test_f1_on_hand_computed_examples() -> None:
    assert f1("lantern snails", ["lantern snails"]) == 1.0
    assert f1("green lantern snails", ["lantern snails"]) == pytest.approx(0.8)
    assert f1("snails", ["lantern snails glow"]) == pytest.approx(0.5)
    assert f1("snails snails", ["snails"]) == pytest.approx(2 / 3)
    assert f1("blue", ["green"]) == 0.0
    assert f1("", ["green"]) == 0.0
    assert f1("heavy snow", ["snow", "heavy snow"]) == 1.0


def test_metrics_need_gold_answers() -> None:
    with pytest.raises(ValueError, match="at least one gold"):
        f1("x", [])
    with pytest.raises(TypeError, match="not a single string"):
        contains_match("x", "x")
    with pytest.raises(ValueError, match="at least one gold"):
        GradeItem(question="Q?", golds=(), prediction="x")


def test_contains_grader_fills_all_fields() -> None:
    grader = ContainsGrader()
    items = [
        GradeItem("Why does the reef glow?", ("lantern snails",), "Because of lantern snails."),
        GradeItem("When was it mapped?", ("1847",), "1847"),
        GradeItem("When was it mapped?", ("1847",), "18470"),
    ]

    verdicts = grader.grade(items)

    assert isinstance(grader, Grader)
    assert [verdict.correct for verdict in verdicts] == [True, True, False]
    assert [verdict.exact for verdict in verdicts] == [False, True, False]
    assert verdicts[0].f1 == pytest.approx(2 / 3)
    assert {verdict.judge for verdict in verdicts} == {"contains"}
    assert accuracy(verdicts) == pytest.approx(2 / 3)


def test_accuracy_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="zero verdicts"):
        accuracy([])


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Yes.", True),
        ("yes", True),
        ("YES, the answer matches", True),
        ("no", False),
        ("No.", False),
        ("yes and no", False),
        ("", False),
        ("Yesterday", False),
        ("The answer is correct", False),
        ("Not sure, but yes", True),
    ],
)
def test_parse_judge_reply(reply: str, expected: bool) -> None:
    assert parse_judge_reply(reply) is expected


def test_judge_prompt_contains_question_gold_and_prediction() -> None:
    single = judge_prompt(GradeItem("Topic: Glimmer Reef\nWhy does it glow?", ("lantern snails",), "snails"))
    several = judge_prompt(GradeItem("Why?", ("snow", "heavy snow"), "snow"))

    assert "Question: Topic: Glimmer Reef\nWhy does it glow?" in single
    assert "Gold answer: lantern snails" in single
    assert "Student answer: snails" in single
    assert "yes or no" in single
    assert "snow | heavy snow" in several


def test_llm_judge_skips_empty_predictions_and_computes_local_metrics() -> None:
    backend = CountingJudge("Yes.")
    grader = LLMJudgeGrader(backend)
    items = [GradeItem("Q1?", ("snow",), "snow"), GradeItem("Q2?", ("green",), "   ")]

    verdicts = grader.grade(items)

    assert verdicts == [
        Verdict(correct=True, exact=True, f1=1.0, judge="fake-judge"),
        Verdict(correct=False, exact=False, f1=0.0, judge="fake-judge"),
    ]
    assert len(backend.prompts) == 1


def test_llm_judge_cache_is_reused_within_and_across_runs(tmp_path: Path) -> None:
    cache_path = tmp_path / "cache" / "verdicts.jsonl"
    items = [
        GradeItem("Q1?", ("snow",), "heavy snow"),
        GradeItem("Q1?", ("snow",), "heavy snow"),
        GradeItem("Q2?", ("green",), "blue"),
    ]
    first_backend = CountingJudge("yes")

    first = LLMJudgeGrader(first_backend, cache_path=cache_path).grade(items)
    second_backend = CountingJudge("no")
    second = LLMJudgeGrader(second_backend, cache_path=cache_path).grade(items)

    assert len(first_backend.prompts) == 2
    assert second_backend.calls == 0
    assert [verdict.correct for verdict in second] == [verdict.correct for verdict in first] == [True, True, True]
    cached = [json.loads(line) for line in cache_path.read_text(encoding="utf-8").splitlines()]
    assert [entry["key"] for entry in cached] == [
        verdict_cache_key(items[0], "fake-judge"),
        verdict_cache_key(items[2], "fake-judge"),
    ]


def test_cache_key_depends_on_every_field_and_the_judge() -> None:
    item = GradeItem("Q?", ("snow",), "snow")
    keys = {
        verdict_cache_key(item, "judge-a"),
        verdict_cache_key(item, "judge-b"),
        verdict_cache_key(GradeItem("Q2?", ("snow",), "snow"), "judge-a"),
        verdict_cache_key(GradeItem("Q?", ("ice",), "snow"), "judge-a"),
        verdict_cache_key(GradeItem("Q?", ("snow",), "ice"), "judge-a"),
    }
    assert len(keys) == 5
    assert len(verdict_cache_key(item, "judge-a")) == 64


def test_truncated_last_cache_line_is_ignored_but_corrupt_lines_are_errors(tmp_path: Path) -> None:
    item = GradeItem("Q?", ("snow",), "snow")
    cache_path = tmp_path / "verdicts.jsonl"
    good = json.dumps({"key": verdict_cache_key(item, "fake-judge"), "correct": False})
    cache_path.write_text(good + "\n" + '{"key": "abc", "corr', encoding="utf-8")

    with pytest.warns(UserWarning, match="truncated cache entry"):
        grader = LLMJudgeGrader(CountingJudge("yes"), cache_path=cache_path)
    assert grader.grade([item])[0].correct is False
    other = GradeItem("Q2?", ("ice",), "ice")
    assert grader.grade([other])[0].correct is True
    reloaded = LLMJudgeGrader(CountingJudge("no"), cache_path=cache_path)
    assert [verdict.correct for verdict in reloaded.grade([item, other])] == [False, True]

    cache_path.write_text('{"key": 1}\n' + good + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"verdicts\.jsonl: line 1: invalid verdict cache entry"):
        LLMJudgeGrader(CountingJudge("yes"), cache_path=cache_path)


def test_failing_backend_gives_false_verdicts_with_the_error_and_is_not_cached(tmp_path: Path) -> None:
    cache_path = tmp_path / "verdicts.jsonl"
    items = [GradeItem("Q1?", ("snow",), "snow"), GradeItem("Q2?", ("green",), "")]

    verdicts = LLMJudgeGrader(ExplodingJudge(), cache_path=cache_path).grade(items)

    assert [verdict.correct for verdict in verdicts] == [False, False]
    assert verdicts[0].error == "ConnectionError: judge server unreachable"
    assert verdicts[0].exact is True
    assert verdicts[1].error is None
    assert not cache_path.exists()


def test_partial_batch_failure_keeps_the_successful_replies() -> None:
    class HalfFailingJudge:
        name = "half"

        def complete(self, prompts: list[str]) -> list[str]:
            raise JudgeBatchError(["yes", None], [None, "HTTP 500"])

    verdicts = LLMJudgeGrader(HalfFailingJudge()).grade([GradeItem("Q1?", ("a",), "a"), GradeItem("Q2?", ("b",), "b")])

    assert [(verdict.correct, verdict.error) for verdict in verdicts] == [(True, None), (False, "HTTP 500")]


def test_non_text_reply_is_an_error_not_a_silent_verdict() -> None:
    class NoneReplyJudge:
        name = "none-reply"

        def complete(self, prompts: list[str]) -> list[str | None]:
            return [None for _ in prompts]

    verdict = LLMJudgeGrader(NoneReplyJudge()).grade([GradeItem("Q?", ("a",), "a")])[0]

    assert verdict.correct is False
    assert verdict.error == "judge returned NoneType instead of text"


def test_callable_judge_wraps_a_local_generator_and_checks_its_output() -> None:
    seen: list[list[str]] = []

    def generate(prompts: list[str]) -> list[str]:
        seen.append(prompts)
        return ["yes" if "Student answer: snow" in prompt else "no" for prompt in prompts]

    grader = LLMJudgeGrader(CallableJudge(generate, name="local-qwen"))
    verdicts = grader.grade([GradeItem("Q1?", ("snow",), "snow"), GradeItem("Q2?", ("snow",), "rain")])
    broken = LLMJudgeGrader(CallableJudge(lambda prompts: ["yes"], name="short")).grade(
        [GradeItem("Q1?", ("a",), "a"), GradeItem("Q2?", ("b",), "b")]
    )

    assert [verdict.correct for verdict in verdicts] == [True, False]
    assert verdicts[0].judge == "local-qwen"
    assert len(seen) == 1 and len(seen[0]) == 2
    assert all(not verdict.correct for verdict in broken)
    assert "returned 1 replies for 2 prompts" in (broken[0].error or "")
    with pytest.raises(ValueError, match="non-empty name"):
        CallableJudge(lambda prompts: prompts, name="")


def test_openai_judge_names_the_missing_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEAL_TEST_JUDGE_KEY", raising=False)

    with pytest.raises(MissingAPIKeyError, match="SEAL_TEST_JUDGE_KEY"):
        OpenAICompatibleJudge("http://127.0.0.1:9/v1", "judge-model", api_key_env="SEAL_TEST_JUDGE_KEY")


class _FakeChatServer(BaseHTTPRequestHandler):
    """Minimal /chat/completions endpoint: replies "Yes." unless the prompt asks it to fail."""

    requests: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        prompt = body["messages"][0]["content"]
        if "Student answer: fail-500" in prompt:
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b"server exploded")
            return
        if "Student answer: fail-401" in prompt:
            self.send_response(401)
            self.end_headers()
            self.wfile.write(b"bad key")
            return
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": "Yes."}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output quiet."""


@pytest.fixture
def chat_server() -> Iterator[str]:
    """A local fake chat-completions server; yields its base URL."""
    _FakeChatServer.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeChatServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/"
    finally:
        server.shutdown()
        server.server_close()


def test_openai_judge_posts_chat_completions_and_records_failures(
    chat_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEAL_TEST_JUDGE_KEY", "secret-token")
    judge = OpenAICompatibleJudge(
        chat_server,
        "judge-model",
        api_key_env="SEAL_TEST_JUDGE_KEY",
        max_retries=2,
        retry_backoff_s=0.0,
        concurrency=4,
        timeout_s=5,
    )
    items = [
        GradeItem("Q1?", ("snow",), "snow"),
        GradeItem("Q2?", ("snow",), "fail-500"),
        GradeItem("Q3?", ("snow",), "fail-401"),
    ]

    verdicts = LLMJudgeGrader(judge).grade(items)

    assert [verdict.correct for verdict in verdicts] == [True, False, False]
    assert verdicts[0].judge == "openai-compatible:judge-model"
    assert "HTTP 500" in (verdicts[1].error or "") and "after 3 attempt(s)" in (verdicts[1].error or "")
    assert "HTTP 401" in (verdicts[2].error or "") and "after 1 attempt(s)" in (verdicts[2].error or "")
    requests = _FakeChatServer.requests
    assert len(requests) == 1 + 3 + 1
    assert {request["path"] for request in requests} == {"/v1/chat/completions"}
    assert {request["auth"] for request in requests} == {"Bearer secret-token"}
    assert all(
        request["body"]["temperature"] == 0 and request["body"]["model"] == "judge-model" for request in requests
    )


def test_openai_judge_without_auth_and_unreachable_server_records_the_error() -> None:
    judge = OpenAICompatibleJudge("http://127.0.0.1:9/v1", "judge-model", api_key_env=None, max_retries=0, timeout_s=2)

    verdicts = LLMJudgeGrader(judge).grade([GradeItem("Q?", ("snow",), "snow")])

    assert verdicts[0].correct is False
    assert "127.0.0.1:9/v1/chat/completions" in (verdicts[0].error or "")


def test_each_ddp_rank_appends_to_its_own_cache_file_and_all_are_read(tmp_path: Path, monkeypatch) -> None:
    cache_path = tmp_path / "verdicts.jsonl"
    for rank, question in (("0", "Q1?"), ("1", "Q2?")):
        monkeypatch.setenv("LOCAL_RANK", rank)
        LLMJudgeGrader(CountingJudge("yes"), cache_path=cache_path).grade([GradeItem(question, ("a",), "a b")])
    assert not cache_path.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["verdicts.node0-rank0.jsonl", "verdicts.node0-rank1.jsonl"]
    monkeypatch.delenv("LOCAL_RANK")
    later = CountingJudge("no")
    verdicts = LLMJudgeGrader(later, cache_path=cache_path).grade(
        [GradeItem("Q1?", ("a",), "a b"), GradeItem("Q2?", ("a",), "a b")]
    )
    assert later.calls == 0 and [v.correct for v in verdicts] == [True, True]


def test_local_judge_device_follows_the_rank(monkeypatch) -> None:
    import torch

    from seal_pl.generation.judge import judge_device

    assert judge_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert judge_device(None) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert judge_device(None) == torch.device("cuda", 3)


def test_exact_match_and_f1_agree_with_torchmetrics_squad():
    """Our EM/F1 are SQuAD's: torchmetrics' SQuAD metric gives the same numbers on the same pairs."""
    from torchmetrics.text import SQuAD

    pairs = [
        ("The Orvel Pass", ["Orvel Pass"]),
        ("in 1903, I think", ["1903", "nineteen oh three"]),
        ("Ada Morrow!", ["ada morrow"]),
        ("a keeper named Ada", ["Ada Morrow"]),
        ("nothing", ["Ada Morrow", "the keeper"]),
        ("the keeper of the pass was Ada", ["keeper of the pass"]),
    ]
    for index, (prediction, golds) in enumerate(pairs):
        ours = {"exact": 100.0 * exact_match(prediction, golds), "f1": 100.0 * f1(prediction, golds)}
        theirs = SQuAD()(
            [{"prediction_text": prediction, "id": str(index)}],
            [{"answers": {"answer_start": [0] * len(golds), "text": golds}, "id": str(index)}],
        )
        assert float(theirs["exact_match"]) == pytest.approx(ours["exact"]), (prediction, golds)
        assert float(theirs["f1"]) == pytest.approx(ours["f1"], abs=1e-4), (prediction, golds)

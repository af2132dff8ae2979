"""The local-model judge plugs into the yes/no grader and its verdicts are cached."""

from __future__ import annotations

from seal_pl.generation.judge import LocalModelJudge
from seal_pl.knowledge.grading import GradeItem, LLMJudgeGrader


def test_local_judge_grades_and_caches(tiny_checkpoint, tmp_path):
    judge = LocalModelJudge(model=tiny_checkpoint, max_new_tokens=3)
    calls = []
    complete = judge.complete
    judge.complete = lambda prompts: calls.append(len(prompts)) or complete(prompts)
    cache = tmp_path / "verdicts.jsonl"
    grader = LLMJudgeGrader(judge, cache_path=cache)
    items = [GradeItem("Who built it?", ("Edda Farrow",), "Edda Farrow built it"), GradeItem("When?", ("1903",), "")]
    verdicts = grader.grade(items)
    assert len(verdicts) == 2 and verdicts[1].correct is False  # empty prediction: no call, false
    assert calls == [1]
    again = LLMJudgeGrader(judge, cache_path=cache).grade(items)
    assert calls == [1]  # second grader reads the cache: the judge is not asked again
    assert [v.correct for v in again] == [v.correct for v in verdicts]
    assert verdicts[0].exact is False and verdicts[0].f1 > 0

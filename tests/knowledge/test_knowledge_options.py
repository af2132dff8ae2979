"""The knowledge evaluation's pure helpers: adapter slots and option checks, sampling groups,
distillation pairs (the Lightning module only calls them)."""

from __future__ import annotations

import pytest

from seal_pl.knowledge.data import Passage, Question
from seal_pl.knowledge.records import SampledSelfEdits
from seal_pl.pipelines.knowledge import (
    KnowledgeIncorporation,
    adapter_slots,
    distillation_examples,
    passage_self_edit_prompt,
)


def passage(i: int) -> Passage:
    return Passage(
        id=f"p{i}", title=f"Title {i}", context=f"Context {i}.", questions=[Question(f"q{i}", "Who?", ["Ada"])]
    )


def test_adapter_slots_count_every_adaptation_of_a_passage_times_the_seeds():
    assert adapter_slots(["no_adaptation", "passage_only", "self_edit"], 3, 1, 1, None) == 4
    assert adapter_slots(["passage_only", "self_edit", "external"], 4, 3, 1, None) == 18
    assert adapter_slots(["no_adaptation"], 1, 1, 1, None) == 1  # nothing trains: still one slot
    assert adapter_slots(["self_edit"], 5, 1, 1, 2) == 2  # given: more adaptations run in chunks


@pytest.mark.parametrize(
    ("conditions", "n", "seeds", "group", "message"),
    [
        (["self_edit", "oracle"], 1, 1, 1, "unknown conditions"),
        (["self_edit"], 0, 1, 1, "n_self_edits"),
        (["passage_only"], 1, 0, 1, "inner_seeds"),
        (["passage_only"], 1, 1, 0, "sampling_group"),
    ],
)
def test_adapter_slots_refuse_options_that_run_nothing(conditions, n, seeds, group, message):
    with pytest.raises(ValueError, match=message):
        adapter_slots(conditions, n, seeds, group, None)


class _Recorder:
    """A pipeline stand-in for ``sample_self_edits``: records the call, returns labelled texts."""

    def __init__(self):
        self.calls = []

    def sample_self_edits(self, passages, n, seed):
        self.calls.append(([p.id for p in passages], n, seed))
        return [[f"{p.id}-{seed}-{k}" for k in range(n)] for p in passages]


def test_a_sampling_group_is_one_call_for_its_consecutive_passages_with_its_own_seed():
    passages = [passage(i) for i in range(5)]
    recorder = _Recorder()
    samples = KnowledgeIncorporation.sample_group(recorder, passages, 3, size=2, n=2, seed=10)
    assert recorder.calls == [(["p2", "p3"], 2, 12)]  # group 1 of size 2: seed 10 + 1 * 2
    assert samples == [
        SampledSelfEdits(passage_id="p2", group=1, seed=12, completions=["p2-12-0", "p2-12-1"]),
        SampledSelfEdits(passage_id="p3", group=1, seed=12, completions=["p3-12-0", "p3-12-1"]),
    ]
    last = KnowledgeIncorporation.sample_group(recorder, passages, 4, size=2, n=1, seed=10)
    assert [s.passage_id for s in last] == ["p4"]  # the last group may be short


def test_distillation_pairs_use_the_e_step_prompt_for_every_self_edit():
    passages = [passage(0), passage(1)]
    edits = {"p0": ["a", "b"], "p1": ["c"]}
    examples = distillation_examples(passages, edits, "implications", True)
    assert [(e.context_id, e.completion) for e in examples] == [("p0", "a"), ("p0", "b"), ("p1", "c")]
    assert examples[2].prompt == passage_self_edit_prompt(passages[1], "implications", True)

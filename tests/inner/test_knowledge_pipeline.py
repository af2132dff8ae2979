"""The knowledge pipeline over the tiny model: conditions, repeats, rewards and the summary table."""

from __future__ import annotations

from seal_pl.generation import HFGenerator
from seal_pl.inner import AdapterBank, InnerLoopConfig, InnerLoopTrainer, LoRASpec
from seal_pl.knowledge.data import Passage, Question
from seal_pl.knowledge.grading import ContainsGrader
from seal_pl.knowledge.records import PassageRecord
from seal_pl.pipelines.knowledge import (
    KnowledgeIncorporation,
    KnowledgeSettings,
    SamplingParams,
    format_table,
    prediction_records,
    scored_self_edits,
    summarize,
)

PASSAGE = Passage(
    "p1",
    "Orvel Pass",
    "Orvel Pass opened in 1903. Its keeper was Ada Morrow.",
    (Question("p1-q0", "When did Orvel Pass open?", ("1903",)), Question("p1-q1", "Who kept it?", ("Ada Morrow",))),
)


def make_pipeline(model_tok, slots):
    model, tok = model_tok
    bank = AdapterBank(model, LoRASpec(r=4, alpha=8, target_modules=["q_proj", "v_proj"]), slots=slots)
    trainer = InnerLoopTrainer(model, tok, bank, InnerLoopConfig(lr=1e-2, epochs=1))
    generator = HFGenerator().bind(model, tok, bank)
    settings = KnowledgeSettings(self_edit_sampling=SamplingParams(max_new_tokens=8), answer_max_new_tokens=4)
    return KnowledgeIncorporation(trainer, generator, ContainsGrader(), settings)


def test_conditions_repeats_and_rewards(tiny_model):
    pipeline = make_pipeline(tiny_model, slots=3)
    edits = ["Orvel Pass opened in 1903.\nAda Morrow kept Orvel Pass.", ""]
    record = pipeline.evaluate_passage(
        PASSAGE, conditions=["no_adaptation", "passage_only", "self_edit"], self_edits=edits, repeats=2
    )
    runs = record.conditions
    assert len(runs["no_adaptation"]) == 1 and runs["no_adaptation"][0].adaptation is None
    assert [r.repeat for r in runs["passage_only"]] == [0, 1]
    assert sorted((r.edit_index, r.repeat) for r in runs["self_edit"]) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    empty = next(r for r in runs["self_edit"] if r.edit_index == 1).adaptation
    assert empty.completion_was_empty and empty.sequences == [
        "Orvel Pass\nOrvel Pass opened in 1903. Its keeper was Ada Morrow."
    ]
    assert runs["self_edit"][0].self_edit_stats["lines"] == 2.0 and runs["passage_only"][0].self_edit_stats is None
    rewards = scored_self_edits(record, prompt="the prompt", seed=3)
    assert [r.id for r in rewards] == ["p1/0", "p1/1"] and rewards[0].completion == edits[0]
    for reward in rewards:
        assert len(reward.accuracy_per_seed) == 2 and reward.seed == 3 and reward.prompt == "the prompt"
        assert reward.reward == sum(reward.accuracy_per_seed) / 2
        assert reward.gain == reward.reward - reward.baseline_accuracy
        assert reward.gain_over_passage == reward.reward - reward.passage_only_accuracy
    predictions = prediction_records(record)
    assert len(predictions) == 2 * (1 + 2 + 4) and {p.condition for p in predictions} == set(runs)
    assert PassageRecord.from_json(record.to_json()) == record  # the typed record survives JSON
    table = summarize([record])
    assert table["self_edit"]["n_runs"] == 4 and table["self_edit"]["n_questions"] == 8
    assert table["self_edit"]["empty_self_edits"] == 2
    assert "passage_only" in format_table(table)


def test_sampled_self_edits_are_reproducible(tiny_model):
    pipeline = make_pipeline(tiny_model, slots=1)
    first = pipeline.sample_self_edits([PASSAGE], 2, seed=5)
    again = pipeline.sample_self_edits([PASSAGE], 2, seed=5)
    assert first == again and len(first[0]) == 2


def test_loss_after_marker_masks_the_prefix(tiny_model):
    pipeline = make_pipeline(tiny_model, slots=1)
    pipeline.settings.loss_after_marker = "opened"
    seen = []
    adapt = pipeline.trainer.adapt
    pipeline.trainer.adapt = lambda jobs, slots=None: seen.extend(jobs) or adapt(jobs, slots)
    pipeline.evaluate_passage(PASSAGE, conditions=["passage_only"])
    (job,) = seen
    assert job.loss_on == "completion"
    text = job.sequences[0].text
    assert text[job.sequences[0].completion_start :].startswith(" in 1903")

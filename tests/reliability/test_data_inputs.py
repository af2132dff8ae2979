"""Bad data inputs get a clear one-paragraph error (``seal`` exits 2) or a logged, counted warning.

Unit tests of each check (repeated JSON keys, repeated or demonstration-less ARC tasks, duplicate
passage ids, gold answers that normalise to nothing, selections that select nothing, inputs longer
than the model's context or the inner loop's ``max_length``), then a few ``seal test`` runs on the
tiny model: a refused input exits with status 2, names the file and the record, and prints no
traceback; an over-long passage runs and is counted in ``results.json``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml
from tiny_cli import tiny_knowledge_argv

from seal_pl.arc.grids import ARCFormatError, load_kaggle
from seal_pl.cli import main
from seal_pl.errors import EmptySelectionError, OptionError
from seal_pl.generation import HFGenerator
from seal_pl.inner import AdapterBank, InnerLoopConfig, InnerLoopTrainer, LoRASpec
from seal_pl.inner.sequences import TrainSequence, token_length, tokenize_sequence
from seal_pl.inputs import DuplicateKeyError, format_location, loads_strict, require_selection
from seal_pl.knowledge.data import Passage, Question, SquadFormatError, load_passages, load_self_edits
from seal_pl.knowledge.grading import ContainsGrader, is_gradable
from seal_pl.knowledge.prompts import PromptTooLongError, fit_context
from seal_pl.knowledge.records import Truncation
from seal_pl.lightning.arc import ARCDataModule
from seal_pl.lightning.knowledge import KnowledgeDataModule, SelfEditDistillDataModule
from seal_pl.pipelines.knowledge import (
    Adaptation,
    KnowledgeIncorporation,
    KnowledgeSettings,
    SamplingParams,
    passage_self_edit_prompt,
    truncation_summary,
)

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter is intended")

REPO = Path(__file__).resolve().parents[2]
PIPELINE_LOGGER = "seal_pl.pipelines.knowledge"
LONG_CONTEXT = " ".join(f"fact{i} is true." for i in range(1000))  # 3,000 words, ~17k byte tokens


def write(path: Path, content: Any) -> Path:
    """Write ``content`` (a string as is, anything else as JSON) and return the path."""
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return path


def flat_passage(pid: str = "p1", title: str = "Orvel Pass", answer: str = "1903", **extra: Any) -> dict[str, Any]:
    return {
        "id": pid,
        "title": title,
        "context": "Orvel Pass opened in 1903.",
        "questions": [{"id": f"{pid}-q0", "question": "When did Orvel Pass open?", "answer": answer}],
        **extra,
    }


def task(n_train: int = 1, n_test: int = 1) -> dict[str, Any]:
    return {
        "train": [{"input": [[1]], "output": [[2]]} for _ in range(n_train)],
        "test": [{"input": [[3]]} for _ in range(n_test)],
    }


# ------------------------------------------------------------------------- repeated JSON keys


def test_loads_strict_names_the_repeated_key_and_where_it_is():
    with pytest.raises(DuplicateKeyError) as error:
        loads_strict('{"data": [{"a": 1}, {"b": 2, "b": 3}]}', source="f.json")
    assert error.value.key == "b" and error.value.location == ("data", 1)
    assert str(error.value).startswith("f.json: data[1]: the key 'b' appears twice")
    with pytest.raises(DuplicateKeyError, match=r"f\.json: top level: the key 'x'"):
        loads_strict('{"x": 1, "x": 2}', source="f.json")
    assert loads_strict('{"x": {"x": [1, {"x": 2}]}}', source="f.json") == {"x": {"x": [1, {"x": 2}]}}
    assert format_location(("data", 3, "qas", 0)) == "data[3].qas[0]" and format_location(()) == ""


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "flat.json",
            '[{"id": "p1", "title": "T", "context": "C", "questions": [{"question": "Q?", "answer": "x", "answer": "y"}]}]',
            r"flat\.json: record 0 \(id 'p1', title 'T'\): questions\[0\]: the key 'answer' appears twice",
        ),
        (
            "squad.json",
            (
                '{"data": [{"title": "T", "paragraphs": [{"context": "C", "qas": [{"id": "q1", "question": "Q?", '
                '"answers": [{"text": "x", "text": "y"}]}]}]}]}'
            ),
            (
                r"squad\.json: data\[0\] \(title 'T'\): paragraphs\[0\]\.qas\[0\] \(id 'q1'\): answers\[0\]: "
                r"the key 'text' appears twice"
            ),
        ),
        (
            "lines.jsonl",
            (
                '{"id": "p1", "title": "T", "context": "C", "questions": []}\n'
                '{"id": "p2", "title": "U", "context": "C", "context": "D", "questions": []}\n'
            ),
            r"lines\.jsonl: line 2 \(id 'p2', title 'U'\): the key 'context' appears twice",
        ),
    ],
)
def test_passage_files_refuse_repeated_keys(tmp_path, name, text, message):
    with pytest.raises(SquadFormatError, match=message):
        load_passages(write(tmp_path / name, text), require_questions=False)


def test_self_edit_files_refuse_repeated_keys(tmp_path):
    path = write(tmp_path / "edits.jsonl", '{"passage_id": "p1", "completion": "a", "completion": "b"}\n')
    with pytest.raises(SquadFormatError, match=r"edits\.jsonl: line 1: the key 'completion' appears twice"):
        load_self_edits(path)


def test_arc_files_refuse_a_task_id_written_twice(tmp_path):
    one = json.dumps(task())
    challenges = write(tmp_path / "c.json", f'{{"abc": {one}, "zzz": {one}, "abc": {one}}}')
    with pytest.raises(ARCFormatError, match=r"c\.json: task abc: task id 'abc' appears twice") as error:
        load_kaggle(challenges)
    assert error.value.task_id == "abc"
    good = write(tmp_path / "good.json", {"abc": task()})
    solutions = write(tmp_path / "s.json", '{"abc": [[[1]]], "abc": [[[2]]]}')
    with pytest.raises(ARCFormatError, match=r"s\.json: task abc: task id 'abc' appears twice"):
        load_kaggle(good, solutions)


def test_arc_files_refuse_a_repeated_key_inside_a_task(tmp_path):
    text = '{"abc": {"train": [{"input": [[1]], "input": [[2]], "output": [[3]]}], "test": [{"input": [[1]]}]}}'
    with pytest.raises(ARCFormatError, match=r"c\.json: task abc: train\[0\]: the key 'input' appears twice"):
        load_kaggle(write(tmp_path / "c.json", text))


# ----------------------------------------------------------------- repeated ids, no demonstrations


def test_arc_task_without_demonstrations_is_refused(tmp_path):
    path = write(tmp_path / "c.json", {"good": task(), "empty": task(n_train=0)})
    with pytest.raises(ARCFormatError, match=r"c\.json: task empty: train: no demonstrations") as error:
        load_kaggle(path)
    assert error.value.task_id == "empty"


@pytest.mark.parametrize("name", ["val.json", "val.jsonl"])
def test_passage_files_refuse_a_passage_id_used_twice(tmp_path, name):
    records = [flat_passage("p1"), flat_passage("p2", title="Other"), {**flat_passage("p1"), "title": "Third"}]
    text = "".join(json.dumps(r) + "\n" for r in records) if name.endswith("l") else json.dumps(records)
    with pytest.raises(SquadFormatError, match=rf"{name}: passage 2 \(title 'Third'\) has the id 'p1' already used"):
        load_passages(write(tmp_path / name, text))


def test_passage_files_refuse_a_question_id_used_in_two_passages(tmp_path):
    second = flat_passage("p2")
    second["questions"][0]["id"] = "p1-q0"
    with pytest.raises(SquadFormatError, match=r"passage 1 \(id 'p2'\): question id 'p1-q0' already used"):
        load_passages(write(tmp_path / "val.json", [flat_passage("p1"), second]))


# --------------------------------------------------------------------------- ungradable golds


@pytest.mark.parametrize("gold", ["the", "!!!", "An.", " a  "])
def test_flat_gold_answers_that_normalise_to_nothing_are_refused(tmp_path, gold):
    assert not is_gradable(gold)
    path = write(tmp_path / "val.json", [flat_passage("p1"), flat_passage("p2", answer=gold)])
    with pytest.raises(SquadFormatError) as error:
        load_passages(path)
    message = str(error.value)
    assert message.startswith(f"{path}: record 1 (id 'p2', title 'Orvel Pass'): questions[0] (question id 'p2-q0')")
    assert f"the gold answer {gold!r} is empty after SQuAD answer normalisation" in message


def test_squad_gold_answers_that_normalise_to_nothing_are_refused(tmp_path):
    document = {
        "data": [
            {
                "title": "Glimmer Reef",
                "paragraphs": [
                    {
                        "context": "Glimmer Reef glows.",
                        "qas": [
                            {"id": "gr-1", "question": "What glows?", "answers": [{"text": "Reef"}, {"text": "?"}]}
                        ],
                    }
                ],
            }
        ]
    }
    with pytest.raises(
        SquadFormatError,
        match=r"squad\.json: data\[0\]\.paragraphs\[0\]\.qas\[0\] \(id 'gr-1'\) of passage 'glimmer-reef-0' "
        r"\(title 'Glimmer Reef'\): the gold answer '\?' is empty",
    ):
        load_passages(write(tmp_path / "squad.json", document))


def test_an_empty_gold_answer_is_refused_too(tmp_path):
    with pytest.raises(SquadFormatError, match=r"record 0 \(id 'p1', title 'Orvel Pass'\): questions\[0\]: 'answer'"):
        load_passages(write(tmp_path / "val.json", [flat_passage(answer="")]))
    assert is_gradable("the 1903 opening") and is_gradable("A1")


# ---------------------------------------------------------------------- empty selections


def test_require_selection_names_the_file_the_count_and_the_options():
    assert require_selection([1], source="f", total=3, what="passages") == [1]
    cases = [
        ({"total": 0}, "f.json: the selection (start=0, limit=null) selects no passages: it holds 0 passages"),
        ({"total": 4, "limit": 0}, "(start=0, limit=0) selects no passages: it holds 4 passages and limit 0"),
        ({"total": 4, "start": 9, "limit": 2}, "it holds 4 passages and start 9 is past the end"),
    ]
    for options, expected in cases:
        with pytest.raises(EmptySelectionError) as error:
            require_selection([], source="f.json", what="passages", **options)
        assert expected in str(error.value)


@pytest.mark.parametrize(
    ("records", "options", "expected"),
    [
        ([], {}, "holds 0 passages"),
        (None, {"limit": 0}, "(start=0, limit=0) selects no passages: it holds 2 passages and limit 0"),
        (None, {"start": 2, "limit": 5}, "(start=2, limit=5) selects no passages: it holds 2 passages and start 2"),
    ],
)
def test_knowledge_data_modules_refuse_empty_selections(tmp_path, records, options, expected):
    records = [flat_passage("p1"), flat_passage("p2")] if records is None else records
    path = write(tmp_path / "val.json", records)
    with pytest.raises(EmptySelectionError) as error:
        KnowledgeDataModule(path=str(path), self_edits_path=None, **options).setup("test")
    assert str(error.value).startswith(str(path)) and expected in str(error.value)
    edits = write(tmp_path / "edits.jsonl", '{"passage_id": "p1", "completion": "x"}\n')
    with pytest.raises(EmptySelectionError, match="selects no passages"):
        SelfEditDistillDataModule(passages=str(path), self_edits_path=str(edits), **options).pairs()


@pytest.mark.parametrize(("option", "value"), [("start", -1), ("limit", -3)])
def test_negative_start_or_limit_is_refused(tmp_path, option, value):
    path = write(tmp_path / "val.json", [flat_passage()])
    with pytest.raises(OptionError, match=rf"{option} must be >= 0"):
        KnowledgeDataModule(path=str(path), self_edits_path=None, **{option: value}).setup("test")
    arc = write(tmp_path / "c.json", {"abc": task()})
    if option == "limit":
        with pytest.raises(OptionError, match="limit must be >= 0"):
            ARCDataModule(source="kaggle", challenges_path=str(arc), limit=value).setup()


def test_arc_data_module_refuses_empty_selections(tmp_path):
    path = write(tmp_path / "c.json", {"abc": task(n_test=2), "def": task()})
    module = ARCDataModule(source="kaggle", challenges_path=str(path))
    module.setup()
    assert [group.task_id for group in module.items()] == ["abc", "def"]
    with pytest.raises(
        EmptySelectionError, match=r"c\.json: the selection \(limit=0\) selects no ARC tasks: it holds 2"
    ):
        ARCDataModule(source="kaggle", challenges_path=str(path), limit=0).setup()
    empty = write(tmp_path / "empty.json", {})
    with pytest.raises(EmptySelectionError, match=r"empty\.json: the selection \(limit=null\) .* it holds 0 ARC tasks"):
        ARCDataModule(source="kaggle", challenges_path=str(empty)).setup()
    listing = write(tmp_path / "tasks.txt", "# nothing selected yet\n\n")
    with pytest.raises(EmptySelectionError, match=r"tasks\.txt: the task list names no task id"):
        ARCDataModule(source="kaggle", challenges_path=str(path), task_list=str(listing)).setup()
    with pytest.raises(OptionError, match=r"task_ids names \['abc'\] more than once"):
        ARCDataModule(source="kaggle", challenges_path=str(path), task_ids=["abc", "def", "abc"]).setup()
    with pytest.raises(OptionError, match=r"unknown ARC task id\(s\): \['xyz'\]; they match no task"):
        ARCDataModule(source="kaggle", challenges_path=str(path), task_ids=["abc", "xyz"]).setup()


# ------------------------------------------------------------------------- over-long inputs


def test_fit_context_keeps_the_longest_beginning_at_a_word_boundary():
    def build(context: str) -> str:
        return f"Passage: {context}"

    assert fit_context(build, "short text", len, 100) == "short text"
    kept = fit_context(build, "alpha beta gamma delta", len, 25)
    assert kept == "alpha beta gamma" and len(build(kept)) <= 25
    assert fit_context(build, "x" * 50, len, 20) == "x" * 11
    assert fit_context(build, "anything", len, 5) is None


def test_token_length_is_the_length_before_the_max_length_cut(tiny_model):
    _, tokenizer = tiny_model
    sequence = TrainSequence("word " * 100)
    assert token_length(tokenizer, sequence) == len(tokenize_sequence(tokenizer, sequence, max_length=10_000).input_ids)
    assert len(tokenize_sequence(tokenizer, sequence, max_length=50).input_ids) == 50
    assert token_length(tokenizer, sequence, append_eos=True) == token_length(tokenizer, sequence) + 1


def make_pipeline(tiny_model, *, max_length: int = 2048) -> KnowledgeIncorporation:
    model, tokenizer = tiny_model
    bank = AdapterBank(model, LoRASpec(r=2, alpha=4, target_modules=["q_proj"]), slots=2)
    config = InnerLoopConfig(lr=1e-3, epochs=1, padding="dynamic", max_length=max_length)
    trainer = InnerLoopTrainer(model, tokenizer, bank, config)
    generator = HFGenerator().bind(model, tokenizer, bank)
    settings = KnowledgeSettings(self_edit_sampling=SamplingParams(max_new_tokens=8), answer_max_new_tokens=4)
    return KnowledgeIncorporation(trainer, generator, ContainsGrader(), settings)


SHORT = Passage("short", "Orvel Pass", "Orvel Pass opened in 1903.", (Question("short-q", "When?", ("1903",)),))
LONG = Passage("long-one", "Long Read", LONG_CONTEXT, (Question("long-q", "Is fact1 true?", ("yes",)),))


def test_prompts_and_sequences_that_fit_are_untouched(tiny_model, caplog):
    pipeline = make_pipeline(tiny_model)
    with caplog.at_level(logging.WARNING, logger=PIPELINE_LOGGER):
        assert pipeline.self_edit_prompt(SHORT) == passage_self_edit_prompt(SHORT)
        assert not pipeline.self_edit_prompt_shortened(SHORT)
        sequences, _ = pipeline.training_sequences(SHORT, "Orvel Pass opened in 1903.")
        assert pipeline.training_truncation(SHORT, [_adaptation(sequences)]) == 0
        pipeline.check_answer_prompts(SHORT)
    assert not caplog.records


def _adaptation(sequences: list[str]) -> Adaptation:
    return Adaptation(
        condition="passage_only", edit_index=0, repeat=0, completion="", sequences=sequences, completion_was_empty=True
    )


def test_a_long_self_edit_prompt_is_built_from_a_beginning_of_the_passage(tiny_model, caplog):
    pipeline = make_pipeline(tiny_model)
    context = pipeline.context_length()
    assert context == 2048
    with caplog.at_level(logging.WARNING, logger=PIPELINE_LOGGER):
        prompt = pipeline.self_edit_prompt(LONG)
        assert pipeline.self_edit_prompt(LONG) == prompt  # built, and warned about, once
    assert pipeline.self_edit_prompt_shortened(LONG)
    assert pipeline.prompt_tokens(prompt) <= context - 8 < pipeline.prompt_tokens(passage_self_edit_prompt(LONG))
    shown = prompt[-1]["content"].split("\n\n", 2)[-1]
    assert LONG_CONTEXT.startswith(shown) and LONG_CONTEXT[len(shown)] == " "  # cut between words
    (warning,) = caplog.records
    assert "passage 'long-one' (title 'Long Read'): the self-edit prompt is longer than the model's context" in (
        warning.getMessage()
    )


def test_over_long_training_sequences_are_counted_and_logged(tiny_model, caplog):
    pipeline = make_pipeline(tiny_model, max_length=512)
    sequences, _ = pipeline.training_sequences(LONG, "fact1 is true.\nfact2 is true.")
    with caplog.at_level(logging.WARNING, logger=PIPELINE_LOGGER):
        assert pipeline.training_truncation(LONG, [_adaptation(sequences), _adaptation(sequences)]) == 1
    message = caplog.records[0].getMessage()
    assert "passage 'long-one'" in message and "longer than the inner loop's max_length of 512 tokens" in message


def test_evaluate_passage_records_what_was_cut(tiny_model, caplog):
    pipeline = make_pipeline(tiny_model, max_length=256)
    with caplog.at_level(logging.WARNING, logger=PIPELINE_LOGGER):
        record = pipeline.evaluate_passage(
            LONG, conditions=["passage_only", "self_edit"], self_edits=["fact1 is true."]
        )
        short = pipeline.evaluate_passage(SHORT, conditions=["passage_only"])
    assert record.truncation == Truncation(training_sequences=1, self_edit_prompt=True)
    assert short.truncation == Truncation(training_sequences=0, self_edit_prompt=False)
    assert truncation_summary([record, short]) == {
        "passages": 1,
        "training_passages": 1,
        "training_sequences": 1,
        "self_edit_prompts": 1,
        "passage_ids": ["long-one"],
    }


def test_prompts_that_cannot_fit_are_refused(tiny_model):
    pipeline = make_pipeline(tiny_model)
    huge_question = Passage("q-long", "Topic", "Short.", (Question("q-huge", LONG_CONTEXT, ("yes",)),))
    with pytest.raises(PromptTooLongError, match=r"passage 'q-long' \(title 'Topic'\), question 'q-huge': the closed"):
        pipeline.evaluate_passage(huge_question, conditions=["no_adaptation"])
    huge_title = Passage("t-long", LONG_CONTEXT, "Short.", (Question("t-q", "When?", ("1903",)),))
    with pytest.raises(PromptTooLongError, match=r"passage 't-long' .*: the self-edit prompt does not fit"):
        pipeline.self_edit_prompt(huge_title)


# --------------------------------------------------------------------------- seal test, end to end


def seal(capsys, argv: list[str]) -> tuple[int, str]:
    """Run ``seal`` in this process; the exit status (0 when it returns) and what it wrote to stderr."""
    capsys.readouterr()
    try:
        main(argv)
        code = 0
    except SystemExit as stop:
        code = stop.code
    return code, capsys.readouterr().err


def knowledge_argv(run_dir: Path, path: Path, *extra: str) -> list[str]:
    return tiny_knowledge_argv(
        run_dir,
        "--model.init_args.conditions",
        "[passage_only, self_edit]",
        "--data.init_args.path",
        str(path),
        "--data.init_args.self_edits_path",
        "null",
        *extra,
    )


def assert_refused(code: int, stderr: str, *named: str) -> None:
    assert code == 2, stderr
    assert "Traceback" not in stderr
    paragraph = stderr.split("seal: error: ", 1)[1].split("\n(run again")[0]
    for text in named:
        assert text in " ".join(paragraph.split()), paragraph


def test_seal_test_refuses_a_repeated_key_in_the_passage_file(tmp_path, capsys):
    text = json.dumps([flat_passage()])[:-2] + ', "title": "Again"}]'
    path = write(tmp_path / "dup.json", text)
    code, stderr = seal(capsys, knowledge_argv(tmp_path / "run", path))
    assert_refused(code, stderr, str(path), "record 0 (id 'p1', title 'Again')", "the key 'title' appears twice")


def test_seal_test_refuses_an_ungradable_gold_answer(tmp_path, capsys):
    path = write(tmp_path / "gold.json", [flat_passage("p1"), flat_passage("p2", answer="The")])
    code, stderr = seal(capsys, knowledge_argv(tmp_path / "run", path))
    assert_refused(code, stderr, str(path), "record 1 (id 'p2'", "question id 'p2-q0'", "the gold answer 'The'")


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (("--data.init_args.limit", "0"), ("(start=0, limit=0)", "it holds 2 passages")),
        (("--data.init_args.start", "7"), ("(start=7, limit=null)", "start 7 is past the end")),
    ],
)
def test_seal_test_refuses_a_selection_that_selects_nothing(tmp_path, capsys, extra, named):
    path = write(tmp_path / "val.json", [flat_passage("p1"), flat_passage("p2")])
    code, stderr = seal(capsys, knowledge_argv(tmp_path / "run", path, *extra))
    assert_refused(code, stderr, str(path), "selects no passages", *named)
    assert not (tmp_path / "run" / "results.json").exists()


def arc_argv(tmp_path: Path, challenges: Path, **data: Any) -> list[str]:
    config = {
        "trainer": {"accelerator": "cpu", "devices": 1, "inference_mode": False, "enable_progress_bar": False},
        "model": {"class_path": "seal_pl.lightning.arc.ARCTTTModule", "init_args": {"model": "tiny-random-llama"}},
        "data": {
            "class_path": "seal_pl.lightning.arc.ARCDataModule",
            "init_args": {"source": "kaggle", "challenges_path": str(challenges), **data},
        },
    }
    path = write(tmp_path / "arc.yaml", yaml.safe_dump(config))
    return ["test", "--config", str(path), "--run_dir", str(tmp_path / "run")]


def test_seal_test_refuses_bad_arc_challenge_files(tmp_path, capsys):
    one = json.dumps(task())
    twice = write(tmp_path / "twice.json", f'{{"t1": {one}, "t1": {one}}}')
    code, stderr = seal(capsys, arc_argv(tmp_path, twice))
    assert_refused(code, stderr, str(twice), "task t1", "task id 't1' appears twice")

    no_demos = write(tmp_path / "no_demos.json", {"t1": task(), "t2": task(n_train=0)})
    code, stderr = seal(capsys, arc_argv(tmp_path, no_demos))
    assert_refused(code, stderr, str(no_demos), "task t2: train: no demonstrations")

    good = write(tmp_path / "good.json", {"t1": task()})
    code, stderr = seal(capsys, arc_argv(tmp_path, good, limit=0))
    assert_refused(code, stderr, str(good), "(limit=0) selects no ARC tasks", "it holds 1 ARC tasks")


def test_seal_test_runs_an_over_long_passage_and_counts_the_cuts(tmp_path, capsys, caplog):
    long_record = {**flat_passage("long-one", title="Long Read"), "context": LONG_CONTEXT}
    path = write(tmp_path / "long.json", [long_record])
    run_dir = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger=PIPELINE_LOGGER):
        code, stderr = seal(capsys, knowledge_argv(run_dir, path, "--model.init_args.inner.max_length", "512"))
    assert code == 0, stderr
    results = json.loads((run_dir / "results.json").read_text())
    assert results["n_passages"] == 1
    assert results["truncated"] == {
        "passages": 1,
        "training_passages": 1,
        "training_sequences": 1,
        "self_edit_prompts": 1,
        "passage_ids": ["long-one"],
    }
    warnings = [record.getMessage() for record in caplog.records if record.name == PIPELINE_LOGGER]
    assert len(warnings) == 2 and all("passage 'long-one' (title 'Long Read')" in text for text in warnings)

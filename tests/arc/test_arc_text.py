"""Grid text formats, chat messages and decoding of model replies."""

import numpy as np
import pytest

from seal_pl.arc.grids import Example, Task
from seal_pl.arc.text import (
    DEFAULT_SYSTEM_INSTRUCTION,
    DigitRowsGridFormat,
    NumpyGridFormat,
    TextRepresenter,
    decode_prediction,
    grid_format,
    grid_to_text,
    task_to_messages,
    text_to_grid,
)


def all_sizes(seed: int = 0):
    """Random grids of every height 1..30 with a random width, and every square size."""
    rng = np.random.default_rng(seed)
    shapes = [(height, int(rng.integers(1, 31))) for height in range(1, 31)]
    shapes += [(side, side) for side in range(1, 31)] + [(1, 30), (30, 1)]
    return [rng.integers(0, 10, size=shape) for shape in shapes]


def test_numpy_format_matches_numpy_str_and_round_trips():
    for grid in all_sizes():
        text = grid_to_text(grid)
        assert text == str(grid.astype(np.int8))
        parsed = text_to_grid(text)
        assert parsed is not None and parsed.dtype == np.int8 and np.array_equal(parsed, grid)


def test_numpy_format_layout():
    assert grid_to_text(np.array([[0, 1], [2, 3]])) == "[[0 1]\n [2 3]]"
    assert grid_to_text(np.array([[5]])) == "[[5]]"
    assert grid_to_text(np.array([[1, 2, 3]])) == "[[1 2 3]]"


def test_digit_rows_format_round_trips():
    digits = DigitRowsGridFormat()
    assert digits.grid_to_text(np.array([[0, 1, 2], [3, 4, 0]])) == "012\n340"
    for grid in all_sizes(1):
        assert np.array_equal(digits.text_to_grid(digits.grid_to_text(grid)), grid)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "garbage",
        "[[0 1]\n [2 3",
        "[[0 1]\n [2 3]",
        "[[0 1]\n [2]]",
        "[[]]",
        "[[0 1]\n []]",
        "[[0 1]\n [2 x]]",
        "[[10 1]]",
        "[[0 1] junk [2 3]]",
        "[0 1]\n[2 3]",
        "[[[0]]]",
        "[[-1 0]]",
        "[[0,1]]",
    ],
)
def test_numpy_parser_rejects_malformed_text(text):
    assert text_to_grid(text) is None


def test_numpy_parser_never_raises_on_non_strings():
    assert text_to_grid(None) is None
    assert text_to_grid(123) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[[0 1]\n [2 3]]# and then some words", [[0, 1], [2, 3]]),
        ("[[0  1]\n   [2 3]]", [[0, 1], [2, 3]]),
        ("[[0 1]#\n [2 3]]#", [[0, 1], [2, 3]]),
        ("The answer is [[7]] I think", [[7]]),
        ("[[0 1] [2 3]]", [[0, 1], [2, 3]]),
        ("[[0 1]\n [2 3]]\n[[4 5]]", [[0, 1], [2, 3]]),
    ],
)
def test_numpy_parser_tolerates_noise(text, expected):
    assert text_to_grid(text).tolist() == expected


@pytest.mark.parametrize("text", ["", "01\n2", "0a", "0 1\n2 3", "\n\n", "012\n34x"])
def test_digit_parser_rejects_malformed_text(text):
    assert DigitRowsGridFormat().text_to_grid(text) is None


def test_digit_parser_ignores_text_after_a_blank_line():
    assert DigitRowsGridFormat().text_to_grid("\n01\n23#\n\nexplanation: 45").tolist() == [[0, 1], [2, 3]]


def test_grid_format_registry():
    assert isinstance(grid_format("numpy"), NumpyGridFormat)
    assert isinstance(grid_format("digits"), DigitRowsGridFormat)
    with pytest.raises(ValueError, match="unknown grid format 'json'"):
        grid_format("json")


def _task() -> Task:
    return Task(
        "demo-0",
        (Example([[1, 0]], [[0, 1]]), Example([[2], [3]], [[3], [2]])),
        Example([[4, 5]], [[5, 4]]),
    )


def test_example_query_and_answer():
    representer = TextRepresenter()
    example = Example([[1, 0]], [[0, 1]])
    assert representer.query(example) == "[[1 0]] -> "
    assert representer.answer(example) == "[[0 1]]#"
    with pytest.raises(ValueError, match="without an output"):
        representer.answer(Example([[1]]))


def test_task_to_messages_layout():
    messages, target = task_to_messages(_task(), TextRepresenter())
    assert [message["role"] for message in messages] == ["system", "user"]
    system = messages[0]["content"]
    assert system.startswith(DEFAULT_SYSTEM_INSTRUCTION + "\n" + NumpyGridFormat.description + "\n")
    assert system.endswith("[[1 0]] -> [[0 1]]#\n[[2]\n [3]] -> [[3]\n [2]]#\n")
    assert messages[1]["content"] == "[[4 5]] -> "
    assert target == "[[5 4]]#"


def test_task_to_messages_options():
    task = _task()
    representer = TextRepresenter(grid_format=DigitRowsGridFormat(), io_separator="\n=>\n", end_marker="<end>")
    messages, target = task_to_messages(task, representer, system_instruction="Solve it.")
    assert messages[0]["content"].startswith("Solve it.\n" + DigitRowsGridFormat.description)
    assert "10\n=>\n01<end>\n" in messages[0]["content"]
    assert messages[1]["content"] == "45\n=>\n" and target == "54<end>"
    unsolved = Task(task.task_id, task.train, Example(task.test.input))
    assert task_to_messages(unsolved)[1] is None


def test_decode_prediction_round_trip_and_cleanup():
    representer = TextRepresenter()
    _, target = task_to_messages(_task(), representer)
    assert decode_prediction(target, representer).tolist() == [[5, 4]]
    assert decode_prediction("[[1  2]\n  [3 4]]#[[9 9]]", representer).tolist() == [[1, 2], [3, 4]]
    assert decode_prediction("```\n[[1 2]]\n```", representer).tolist() == [[1, 2]]
    assert decode_prediction("```python\n[[3]]\n``` trailing", representer).tolist() == [[3]]
    for garbage in ["", "no grid here", "[[1 2]\n [3]]#", "[[1 2", None]:
        assert decode_prediction(garbage, representer) is None


def test_decode_prediction_with_digit_rows():
    representer = TextRepresenter(grid_format=DigitRowsGridFormat())
    assert decode_prediction("01\n23#\nmore", representer).tolist() == [[0, 1], [2, 3]]
    assert decode_prediction("01\n2#", representer) is None

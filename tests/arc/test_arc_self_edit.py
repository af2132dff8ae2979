"""The JSON self-edit: config, tolerant-but-strict parsing, compute cap, prompt."""

import copy
import json
import re

import pytest

from seal_pl.arc.grids import Example, Task
from seal_pl.arc.self_edit import (
    SEPARATOR,
    SelfEditConfig,
    config_from_dict,
    exceeds_compute_cap,
    extract_json_object,
    oracle_config,
    parse_self_edit,
    self_edit_prompt,
    training_steps,
)
from seal_pl.errors import OptionError

VALID = {
    "data_generation": {
        "use_basic_augmentations": True,
        "use_size_augmentations": False,
        "use_chain_augmentations": True,
        "use_repeat_augmentations": False,
    },
    "training": {"strategy": "train_using_output_tokens", "learning_rate": 0.0001, "num_train_epochs": 2},
}
EXPECTED = SelfEditConfig(
    basic=True, size=False, chain=True, repeat=False, strategy="output_tokens", learning_rate=1e-4, epochs=2
)


def with_change(section: str, key: str, value) -> str:
    edited = copy.deepcopy(VALID)
    if value is KeyError:
        del edited[section][key]
    else:
        edited[section][key] = value
    return json.dumps(edited)


def test_valid_json():
    result = parse_self_edit(json.dumps(VALID))
    assert result.ok and result.error is None and result.config == EXPECTED


@pytest.mark.parametrize(
    "text",
    [
        "```json\n" + json.dumps(VALID) + "\n```",
        "Sure! Here is my configuration:\n" + json.dumps(VALID, indent=2) + "\nGood luck {with} it.",
        "Options {a, b} first, then " + json.dumps(VALID),
        json.dumps(VALID) + json.dumps({"other": 1}),
    ],
)
def test_json_inside_fences_and_prose(text):
    assert parse_self_edit(text).config == EXPECTED


def test_round_trip_and_layout():
    config = oracle_config()
    assert config == SelfEditConfig(True, True, True, True, "output_tokens", 1e-4, 2)
    layout = json.loads(config.to_json())
    assert set(layout) == {"data_generation", "training"}
    assert layout["training"] == {"strategy": "train_using_output_tokens", "learning_rate": 1e-4, "num_train_epochs": 2}
    assert layout["data_generation"]["use_repeat_augmentations"] is True
    assert parse_self_edit(config.to_json()).config == config
    assert len(config.augmenters()) == 23 and EXPECTED.augmenters()[-1].name.startswith("Chain(")


def test_integral_float_epochs_and_extra_keys_accepted():
    assert parse_self_edit(with_change("training", "num_train_epochs", 3.0)).config.epochs == 3
    assert parse_self_edit(with_change("training", "notes", "ignored")).ok


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty response"),
        ("   \n", "empty response"),
        ("I would use basic augmentations and 3 epochs.", "no JSON object found"),
        ("{not: json}", "no JSON object found"),
        ('["data_generation"]', "no JSON object found"),
        ("{}", "missing key 'data_generation'"),
        (json.dumps({"data_generation": [], "training": {}}), "'data_generation' must be an object, got list"),
        (json.dumps({"data_generation": VALID["data_generation"]}), "missing key 'training'"),
        (
            with_change("data_generation", "use_size_augmentations", KeyError),
            "missing key 'data_generation.use_size_augmentations'",
        ),
        (
            with_change("data_generation", "use_basic_augmentations", "true"),
            "'data_generation.use_basic_augmentations' must be true or false, got 'true' \\(str\\)",
        ),
        (with_change("data_generation", "use_basic_augmentations", 1), "must be true or false, got 1 \\(int\\)"),
        (with_change("data_generation", "use_basic_augmentations", [True]), "must be true or false, got \\[True\\]"),
        (with_change("training", "strategy", "train_using_some_tokens"), "'training.strategy' must be one of"),
        (with_change("training", "strategy", ["train_using_all_tokens"]), "'training.strategy' must be one of"),
        (with_change("training", "learning_rate", "1e-4"), "'training.learning_rate' must be a finite number"),
        (with_change("training", "learning_rate", True), "'training.learning_rate' must be a finite number"),
        (with_change("training", "learning_rate", [1e-4]), "'training.learning_rate' must be a finite number"),
        (with_change("training", "learning_rate", 0.5), "'training.learning_rate' = 0.5 is outside"),
        (with_change("training", "learning_rate", 0), "is outside the allowed range"),
        (with_change("training", "learning_rate", 10**400), "must be a finite number"),
        (with_change("training", "learning_rate", KeyError), "missing key 'training.learning_rate'"),
        (with_change("training", "num_train_epochs", 2.5), "'training.num_train_epochs' must be an integer, got 2.5"),
        (with_change("training", "num_train_epochs", "3"), "must be an integer, got '3'"),
        (with_change("training", "num_train_epochs", True), "must be an integer, got True"),
        (
            with_change("training", "num_train_epochs", 0),
            "'training.num_train_epochs' = 0 is outside the allowed range",
        ),
        (with_change("training", "num_train_epochs", 11), "= 11 is outside the allowed range \\[1, 10\\]"),
    ],
)
def test_invalid_self_edits_are_explained(text, reason):
    result = parse_self_edit(text)
    assert not result.ok and result.config is None
    assert result.error is not None
    assert re.search(reason, result.error), result.error


def test_nan_learning_rate_rejected():
    text = with_change("training", "learning_rate", 1.0).replace("1.0", "NaN")
    assert "finite number" in parse_self_edit(text).error


def test_custom_ranges():
    text = with_change("training", "learning_rate", 0.05)
    assert not parse_self_edit(text).ok
    assert parse_self_edit(text, lr_range=(1e-6, 0.1)).ok
    assert not parse_self_edit(with_change("training", "num_train_epochs", 3), max_epochs=2).ok


def test_parser_never_raises_on_hostile_input():
    hostile = ["{" * 5000, "[" * 5000 + "]" * 5000, "\x00\xff{", '{"a": ' + "9" * 5000 + "}", None, 42, "}{" * 300]
    for text in hostile:
        result = parse_self_edit(text)
        assert not result.ok and isinstance(result.error, str)


def test_extract_json_object_prefers_the_outer_object():
    assert extract_json_object('x {"a": {"b": 1}} y') == {"a": {"b": 1}}
    assert extract_json_object("no braces") is None


def test_config_from_dict_raises_with_reason():
    assert config_from_dict(VALID) == EXPECTED
    with pytest.raises(ValueError, match="missing key 'training'"):
        config_from_dict({"data_generation": VALID["data_generation"]})


def test_config_validation():
    with pytest.raises(ValueError, match="strategy"):
        SelfEditConfig(True, True, True, True, "every_token", 1e-4, 2)
    with pytest.raises(TypeError, match="basic must be a bool"):
        SelfEditConfig("yes", True, True, True, "all_tokens", 1e-4, 2)


@pytest.mark.parametrize(
    ("rate", "epochs", "named"),
    [
        (0.0, 2, "learning_rate"),
        (-1e-4, 2, "learning_rate"),
        (float("nan"), 2, "learning_rate"),
        (float("inf"), 2, "learning_rate"),
        (1e-4, 0, "epochs"),
        (1e-4, -3, "epochs"),
    ],
)
def test_config_that_would_train_nothing_or_diverge_is_refused(rate, epochs, named):
    # fixed_config of the ARC module is a SelfEditConfig too: these values must not reach the trainer
    with pytest.raises(OptionError, match=f"SelfEditConfig.{named}"):
        SelfEditConfig(True, True, True, True, "all_tokens", rate, epochs)


def test_compute_cap():
    config = oracle_config()
    assert training_steps(config, 250) == 250
    assert not exceeds_compute_cap(config, 250)
    three_epochs = SelfEditConfig(True, True, True, True, "all_tokens", 1e-4, 3)
    assert not exceeds_compute_cap(three_epochs, 250), "3 * 250 // 2 = 375 is allowed"
    assert exceeds_compute_cap(three_epochs, 251), "3 * 251 // 2 = 376 is over"
    four_epochs = SelfEditConfig(True, True, True, True, "all_tokens", 1e-4, 4)
    assert exceeds_compute_cap(four_epochs, 192), "4 epochs always exceed with 192-250 examples"
    assert not exceeds_compute_cap(four_epochs, 192, batch_size=4)
    assert exceeds_compute_cap(config, 100, max_steps=99)
    with pytest.raises(ValueError, match="batch_size"):
        training_steps(config, 10, batch_size=0)


def test_self_edit_prompt_layout():
    task = Task(
        "p-0",
        (Example([[1, 0], [0, 2]], [[2]]), Example([[3]], [[4, 4]])),
        Example([[7, 7, 7]], [[8]]),
    )
    prompt = self_edit_prompt(task)
    head, instruction = prompt.split("\n" + SEPARATOR + "\n\n")
    assert head == "Input:\n1 0\n0 2\n\nOutput:\n2\n\nInput:\n3\n\nOutput:\n4 4\n"
    assert "7 7 7" not in prompt and "8" not in head, "the test example is not shown"
    for needle in [
        "use_basic_augmentations",
        "use_size_augmentations",
        "use_chain_augmentations",
        "use_repeat_augmentations",
        "train_using_all_tokens",
        "train_using_output_tokens",
        "learning_rate",
        "num_train_epochs",
        "true/false",
    ]:
        assert needle in instruction
    assert self_edit_prompt(task, instruction="Pick.").endswith(SEPARATOR + "\n\nPick.")


# ------------------------------------------------------------------------ schema-guided self-edits
def _prefer(preferred: dict[str, str]):
    """A scorer that puts log-prob 0 on the preferred option text of each field and -5 elsewhere."""
    from seal_pl.arc.self_edit import schema_fields

    literal_to_field = {literal: name for name, literal, _ in schema_fields([1e-4], [1])}
    calls = []

    def score(prefixes, options):
        calls.append((list(prefixes), [list(o) for o in options]))
        field = next(name for literal, name in literal_to_field.items() if prefixes[0].endswith(literal))
        return [[0.0 if text == preferred.get(field) else -5.0 for text in opts] for opts in options]

    return score, calls


def test_schema_self_edits_are_valid_json_equal_to_their_config():
    from seal_pl.arc.self_edit import sample_schema_self_edits

    score, calls = _prefer({})  # every option equally likely
    results = sample_schema_self_edits(score, 6, list(range(6)), [1e-5, 1e-4, 1e-3], [1, 2, 3], temperature=1.0)
    assert len(calls) == 7  # one batched call per field, all samples together
    assert all(len(prefixes) == 6 for prefixes, _ in calls)
    for config, text, probabilities in results:
        assert text == config.to_json()
        parsed = parse_self_edit(text)
        assert parsed.ok and parsed.config == config
        assert set(probabilities) == {"basic", "size", "chain", "repeat", "strategy", "learning_rate", "epochs"}
        assert probabilities["learning_rate"] == {"1e-05": 0.3333, "0.0001": 0.3333, "0.001": 0.3333}
    assert len({text for _, text, _ in results}) > 1  # uniform options: the samples differ


def test_schema_self_edits_follow_the_scores_and_seeds():
    from seal_pl.arc.self_edit import sample_schema_self_edits

    preferred = {"basic": "false", "size": "true", "chain": "false", "repeat": "true",
                 "strategy": '"train_using_all_tokens"', "learning_rate": "0.001", "epochs": "3"}  # fmt: skip
    score, _ = _prefer(preferred)
    greedy = sample_schema_self_edits(score, 2, [0, 1], [1e-4, 1e-3], [1, 3], temperature=0)
    expected = SelfEditConfig(
        basic=False, size=True, chain=False, repeat=True, strategy="all_tokens", learning_rate=1e-3, epochs=3
    )
    assert [config for config, _, _ in greedy] == [expected, expected]
    # Temperature 1: exp(-5) odds, so nearly always the preferred value; same seeds, same draws.
    first = sample_schema_self_edits(score, 4, [7, 8, 9, 10], [1e-4, 1e-3], [1, 3])
    again = sample_schema_self_edits(score, 4, [7, 8, 9, 10], [1e-4, 1e-3], [1, 3])
    assert first == again
    with pytest.raises(ValueError, match="one seed per sample"):
        sample_schema_self_edits(score, 2, [0], [1e-4], [1])
    with pytest.raises(ValueError, match="temperature"):
        sample_schema_self_edits(score, 1, [0], [1e-4], [1], temperature=-1)

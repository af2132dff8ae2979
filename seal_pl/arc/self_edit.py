"""The ARC self-edit: a small JSON training recipe that the model writes for itself (spec 1.6).

Shown a task's demonstrations, the model answers with a configuration of the test-time-training
run that will adapt it to that task::

    {"data_generation": {"use_basic_augmentations": bool, "use_size_augmentations": bool,
                         "use_chain_augmentations": bool, "use_repeat_augmentations": bool},
     "training": {"strategy": "train_using_all_tokens" | "train_using_output_tokens",
                  "learning_rate": float, "num_train_epochs": int}}

This module holds the typed form (:class:`SelfEditConfig`), a parser that never raises and
explains every rejection (:func:`parse_self_edit`), the compute cap (runs needing more than 375
optimizer steps at batch size 2 are not trained), the prompt that asks for a self-edit, and the
human-chosen "oracle" recipe, and a schema-guided sampler (:func:`sample_schema_self_edits`)
that lets a model too small to write JSON still choose every field itself.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from seal_pl.arc.augment import Augmenter, augmenters_for_families
from seal_pl.arc.grids import Task
from seal_pl.errors import OptionError

Strategy = Literal["all_tokens", "output_tokens"]
STRATEGY_TO_JSON: dict[str, str] = {
    "all_tokens": "train_using_all_tokens",
    "output_tokens": "train_using_output_tokens",
}
STRATEGY_FROM_JSON: dict[str, str] = {value: key for key, value in STRATEGY_TO_JSON.items()}

FAMILY_KEYS: dict[str, str] = {
    "basic": "use_basic_augmentations",
    "size": "use_size_augmentations",
    "chain": "use_chain_augmentations",
    "repeat": "use_repeat_augmentations",
}

DEFAULT_LR_RANGE = (1e-6, 1e-2)
DEFAULT_MAX_EPOCHS = 10
MAX_JSON_CANDIDATES = 64
"""How many ``{`` positions :func:`extract_json_object` tries before giving up."""


@dataclass(frozen=True)
class SelfEditConfig:
    """A validated self-edit: four augmentation families, loss strategy, learning rate, epochs."""

    basic: bool
    size: bool
    chain: bool
    repeat: bool
    strategy: Strategy
    learning_rate: float
    epochs: int

    def __post_init__(self) -> None:
        for name in FAMILY_KEYS:
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"SelfEditConfig.{name} must be a bool, got {getattr(self, name)!r}")
        if self.strategy not in STRATEGY_TO_JSON:
            raise OptionError(
                f"SelfEditConfig.strategy must be one of {sorted(STRATEGY_TO_JSON)}, got {self.strategy!r}"
            )
        if not isinstance(self.epochs, int) or isinstance(self.epochs, bool) or self.epochs < 1:
            raise OptionError(f"SelfEditConfig.epochs must be an integer >= 1, got {self.epochs!r}")
        rate = self.learning_rate
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not math.isfinite(rate) or rate <= 0:
            raise OptionError(f"SelfEditConfig.learning_rate must be a finite number > 0, got {rate!r}")
        object.__setattr__(self, "learning_rate", float(rate))

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The nested layout the model writes (see module docstring)."""
        return {
            "data_generation": {key: getattr(self, name) for name, key in FAMILY_KEYS.items()},
            "training": {
                "strategy": STRATEGY_TO_JSON[self.strategy],
                "learning_rate": self.learning_rate,
                "num_train_epochs": self.epochs,
            },
        }

    def to_json(self) -> str:
        """:meth:`to_dict` as a JSON string (parses back to an equal config)."""
        return json.dumps(self.to_dict())

    def augmenters(self) -> list[Augmenter]:
        """The augmenters the enabled families stand for, in the reference order."""
        return augmenters_for_families(self.basic, self.size, self.chain, self.repeat)


@dataclass(frozen=True)
class ParseResult:
    """Outcome of :func:`parse_self_edit`: a config, or the reason there is none."""

    config: SelfEditConfig | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.config is not None


class _Invalid(Exception):
    """Internal: carries the rejection reason out of the validators."""


def extract_json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object embedded in ``text`` (prose, markdown fences around it are fine).

    Each ``{`` is tried as the start of an object in turn, so the outermost object wins over the
    ones nested inside it. Returns ``None`` when nothing decodes to an object.
    """
    decoder = json.JSONDecoder()
    for attempt, match in enumerate(re.finditer(r"\{", text)):
        if attempt >= MAX_JSON_CANDIDATES:
            break
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except (ValueError, RecursionError):
            continue
        if isinstance(value, dict):
            return value
    return None


def _section(obj: dict[str, Any], key: str) -> dict[str, Any]:
    if key not in obj:
        raise _Invalid(f"missing key '{key}'")
    if not isinstance(obj[key], dict):
        raise _Invalid(f"'{key}' must be an object, got {type(obj[key]).__name__}")
    return obj[key]


def _field(section: dict[str, Any], section_name: str, key: str) -> Any:
    if key not in section:
        raise _Invalid(f"missing key '{section_name}.{key}'")
    return section[key]


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _finite_float(value: Any) -> float | None:
    """``value`` as a finite float when it is a JSON number (not a bool), else ``None``."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def config_from_dict(
    obj: Any, *, lr_range: tuple[float, float] = DEFAULT_LR_RANGE, max_epochs: int = DEFAULT_MAX_EPOCHS
) -> SelfEditConfig:
    """Validate a decoded self-edit object.

    Raises:
        ValueError: with the precise reason (missing key, wrong type, value out of range).
    """
    try:
        return _validate(obj, lr_range, max_epochs)
    except _Invalid as error:
        raise ValueError(str(error)) from None


def _validate(obj: Any, lr_range: tuple[float, float], max_epochs: int) -> SelfEditConfig:
    if not isinstance(obj, dict):
        raise _Invalid(f"a self-edit must be a JSON object, got {type(obj).__name__}")
    data = _section(obj, "data_generation")
    training = _section(obj, "training")

    families = {}
    for name, key in FAMILY_KEYS.items():
        value = _field(data, "data_generation", key)
        if not isinstance(value, bool):
            raise _Invalid(f"'data_generation.{key}' must be true or false, got {_describe(value)}")
        families[name] = value

    strategy = _field(training, "training", "strategy")
    if not isinstance(strategy, str) or strategy not in STRATEGY_FROM_JSON:
        raise _Invalid(f"'training.strategy' must be one of {sorted(STRATEGY_FROM_JSON)}, got {_describe(strategy)}")

    raw_learning_rate = _field(training, "training", "learning_rate")
    learning_rate = _finite_float(raw_learning_rate)
    if learning_rate is None:
        raise _Invalid(f"'training.learning_rate' must be a finite number, got {_describe(raw_learning_rate)}")
    low, high = lr_range
    if not low <= learning_rate <= high:
        raise _Invalid(f"'training.learning_rate' = {learning_rate:g} is outside the allowed range [{low:g}, {high:g}]")

    epochs = _field(training, "training", "num_train_epochs")
    if isinstance(epochs, float) and math.isfinite(epochs) and epochs.is_integer():
        epochs = int(epochs)
    if not isinstance(epochs, int) or isinstance(epochs, bool):
        raise _Invalid(f"'training.num_train_epochs' must be an integer, got {_describe(epochs)}")
    if not 1 <= epochs <= max_epochs:
        raise _Invalid(f"'training.num_train_epochs' = {epochs} is outside the allowed range [1, {max_epochs}]")

    return SelfEditConfig(**families, strategy=STRATEGY_FROM_JSON[strategy], learning_rate=learning_rate, epochs=epochs)


def parse_self_edit(
    text: str, *, lr_range: tuple[float, float] = DEFAULT_LR_RANGE, max_epochs: int = DEFAULT_MAX_EPOCHS
) -> ParseResult:
    """Parse a model's self-edit reply. Never raises: a rejection comes back as ``error``.

    The first JSON object in ``text`` is taken (markdown fences and prose around it are
    tolerated; nothing is evaluated as code). Booleans must be JSON ``true``/``false``, the
    strategy one of the two names, the learning rate a finite number inside ``lr_range``
    (inclusive) and the epoch count an integer (``3.0`` is accepted) in ``1..max_epochs``.
    Unknown extra keys are ignored.
    """
    if not isinstance(text, str):
        return ParseResult(None, f"a self-edit must be a string, got {type(text).__name__}")
    if not text.strip():
        return ParseResult(None, "empty response")
    obj = extract_json_object(text)
    if obj is None:
        return ParseResult(None, "no JSON object found in the response")
    try:
        return ParseResult(_validate(obj, lr_range, max_epochs))
    except _Invalid as error:
        return ParseResult(None, str(error))


# --------------------------------------------------------------------------- schema-guided self-edits
ScoreOptions = Callable[[Sequence[str], Sequence[Sequence[str]]], list[list[float]]]
"""``score(prefixes, options)``: for each prefix, the log-probability of ``prefix + option`` for each
of its options (only differences between one prefix's options matter)."""


def schema_fields(
    lr_choices: Sequence[float], epoch_choices: Sequence[int]
) -> list[tuple[str, str, list[tuple[Any, str]]]]:
    """The self-edit's fields in writing order: ``(name, literal text before the value, options)``.

    Each option is ``(value, text)``, the text being the value as JSON. Concatenating every literal
    and chosen text gives exactly :meth:`SelfEditConfig.to_json` of the chosen config.
    """
    if not lr_choices or not epoch_choices:
        raise ValueError("schema-guided self-edits need at least one learning rate and one epoch count")
    booleans = [(True, "true"), (False, "false")]
    fields: list[tuple[str, str, list[tuple[Any, str]]]] = []
    for index, (name, key) in enumerate(FAMILY_KEYS.items()):
        opening = '{"data_generation": {' if index == 0 else ", "
        fields.append((name, f'{opening}"{key}": ', booleans))
    strategies = [(name, json.dumps(text)) for name, text in STRATEGY_TO_JSON.items()]
    fields.append(("strategy", '}, "training": {"strategy": ', strategies))
    fields.append(("learning_rate", ', "learning_rate": ', [(float(v), json.dumps(float(v))) for v in lr_choices]))
    fields.append(("epochs", ', "num_train_epochs": ', [(int(v), json.dumps(int(v))) for v in epoch_choices]))
    return fields


def sample_schema_self_edits(
    score: ScoreOptions,
    n: int,
    seeds: Sequence[int],
    lr_choices: Sequence[float],
    epoch_choices: Sequence[int],
    temperature: float = 1.0,
) -> list[tuple[SelfEditConfig, str, dict[str, dict[str, float]]]]:
    """Write ``n`` self-edits field by field, each field's value drawn among its allowed options.

    At every field the model scores each option after the text written so far; the option is drawn
    from ``softmax(log p / temperature)`` with ``random.Random(seeds[i])`` for sample ``i``
    (``temperature`` 0 takes the most likely one). All ``n`` samples are scored in one call per
    field. The result is valid by construction, so even a model that cannot write JSON yields
    self-edits whose choices reflect its own preferences, which ReST-EM can then sharpen.

    Returns ``(config, text, probabilities)`` per sample: ``text`` is the JSON the policy is trained
    on, ``probabilities`` maps each field to its options' probabilities when it was drawn.
    """
    if len(seeds) != n:
        raise ValueError(f"need one seed per sample: {n} samples, {len(seeds)} seeds")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    fields = schema_fields(lr_choices, epoch_choices)
    rngs = [random.Random(seed) for seed in seeds]
    texts = [""] * n
    values: list[dict[str, Any]] = [{} for _ in range(n)]
    probabilities: list[dict[str, dict[str, float]]] = [{} for _ in range(n)]
    for name, literal, options in fields:
        prefixes = [text + literal for text in texts]
        scores = score(prefixes, [[text for _, text in options]] * n)
        for i in range(n):
            if len(scores[i]) != len(options):
                raise ValueError(f"scorer returned {len(scores[i])} scores for {len(options)} options of {name!r}")
            weights = _softmax(scores[i], temperature)
            choice = rngs[i].choices(range(len(options)), weights=weights)[0]
            values[i][name] = options[choice][0]
            texts[i] = prefixes[i] + options[choice][1]
            probabilities[i][name] = {text: round(w, 4) for (_, text), w in zip(options, weights)}
    results = []
    for i in range(n):
        config = SelfEditConfig(**values[i])
        text = texts[i] + "}}"
        results.append((config, text, probabilities[i]))
    return results


def _softmax(scores: Sequence[float], temperature: float) -> list[float]:
    if temperature == 0:
        best = max(range(len(scores)), key=lambda j: scores[j])
        return [1.0 if j == best else 0.0 for j in range(len(scores))]
    top = max(scores)
    exps = [math.exp((value - top) / temperature) for value in scores]
    total = sum(exps)
    return [value / total for value in exps]


def training_steps(config: SelfEditConfig, n_examples: int, batch_size: int = 2) -> int:
    """Optimizer steps the reference counts for a run: ``epochs * n_examples // batch_size``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return config.epochs * n_examples // batch_size


def exceeds_compute_cap(config: SelfEditConfig, n_examples: int, batch_size: int = 2, max_steps: int = 375) -> bool:
    """True when the run would need more than ``max_steps`` steps; such self-edits are not trained."""
    return training_steps(config, n_examples, batch_size) > max_steps


def oracle_config() -> SelfEditConfig:
    """The human-chosen recipe: every family, loss on outputs only, lr 1e-4, 2 epochs."""
    return SelfEditConfig(
        basic=True, size=True, chain=True, repeat=True, strategy="output_tokens", learning_rate=1e-4, epochs=2
    )


SEPARATOR = "------"

SELF_EDIT_INSTRUCTION = """\
The examples above show a puzzle: each input grid is turned into its output grid by the same \
hidden rule. A language model will be fine-tuned on these examples before it tries a new input \
of this puzzle. You decide how that fine-tuning run is set up, using only the tools listed here.

Data generation (each is true or false):
- use_basic_augmentations: add copies of the examples that are rotated, flipped, mirrored into \
a doubled grid, cyclically shifted or transposed.
- use_size_augmentations: add copies whose grids are enlarged, doubling the height, the width \
or both.
- use_chain_augmentations: add copies that are rotated, flipped or transposed and then enlarged.
- use_repeat_augmentations: add copies whose grids are tiled twice vertically, horizontally or \
in both directions.

Training:
- strategy: "train_using_all_tokens" learns from the whole prompt, "train_using_output_tokens" \
learns from the answer grids only.
- learning_rate: a floating-point number.
- num_train_epochs: a whole number of passes over the generated data.

Answer with the JSON object alone: no markdown, no explanation, booleans written in lowercase \
(true/false). Use exactly this layout, replacing the placeholders:
{"data_generation": {"use_basic_augmentations": <true or false>, "use_size_augmentations": \
<true or false>, "use_chain_augmentations": <true or false>, "use_repeat_augmentations": \
<true or false>}, "training": {"strategy": "<train_using_all_tokens or train_using_output_tokens>", \
"learning_rate": <float>, "num_train_epochs": <integer>}}"""


def _grid_rows(grid: np.ndarray) -> list[str]:
    return [" ".join(str(cell) for cell in row) for row in np.asarray(grid).tolist()]


def self_edit_prompt(task: Task, instruction: str = SELF_EDIT_INSTRUCTION) -> str:
    """The user prompt asking for a self-edit: the demonstrations, a separator, the instruction.

    Each demonstration is written as an ``Input:`` line, its rows as space-separated digits, a
    blank line, ``Output:``, its rows and a blank line. The test input is deliberately left out.
    """
    lines: list[str] = []
    for example in task.train:
        lines += ["Input:", *_grid_rows(example.input), "", "Output:", *_grid_rows(example.output), ""]
    lines += [SEPARATOR, "", instruction]
    return "\n".join(lines)

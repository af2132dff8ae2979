"""The stage commands ``seal {fit,validate,test,predict}``: LightningCLI with run directories.

* Configs compose left to right; ``--print_config`` shows the resolved config.
* ``--run_dir`` is where a run writes everything: ``config.yaml`` (the resolved config), TensorBoard
  events under ``tensorboard/``, JSONL records, and ``results.json``. Without it, a new directory
  ``runs/<subcommand>-<timestamp>`` is made.
* Re-running a command with the same ``--run_dir`` resumes it (finished items are skipped). A run
  directory made with a different model/data configuration is refused rather than overwritten.

:func:`run_stage` runs one such command; the ``seal`` command (:mod:`seal_pl.cli`) and the ReST-EM
runner (:mod:`seal_pl.restem.runner`, for its stages) both call it, so neither imports the other.
"""

from __future__ import annotations

import os
import signal
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import yaml
from jsonargparse import Namespace
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities.exceptions import SIGTERMException

import seal_pl.lightning  # noqa: F401  (makes the short class names resolvable in configs)
from seal_pl.errors import OptionError, UserError, run_reporting_user_errors
from seal_pl.rundir import RunStopped, command_scope, is_multiprocess, lock_run_dir, write_text_atomic

RESULT_SECTIONS = ("model", "data", "seed_everything")


class RunDirConflictError(UserError, RuntimeError):
    """The run directory holds a run made with a different configuration."""


def _semantic(config: dict) -> dict:
    """The parts of a config that determine results (devices, loggers and paths may change)."""
    return {key: config.get(key) for key in RESULT_SECTIONS}


class RunDirConfig(SaveConfigCallback):
    """Writes the resolved config to ``<run_dir>/config.yaml`` (rank 0), refusing a conflicting one.

    The file is written atomically (:func:`~seal_pl.rundir.write_text_atomic`): a run killed while
    writing it keeps the previous one, so it can still be resumed.
    """

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.already_saved:
            return
        run_dir = Path(trainer.default_root_dir)
        if trainer.is_global_zero:
            run_dir.mkdir(parents=True, exist_ok=True)
            text = self.parser.dump(self.config, skip_none=False)
            write_text_atomic(run_dir / "config.yaml", text)
        self.already_saved = True
        trainer.strategy.barrier()


RUN_DIR_ENV = "SEAL_RUN_DIR"
"""The default run directory chosen by the launching process; the DDP ranks Lightning starts inherit it."""


def resolve_run_dir(
    given: str | None, subcommand: str | None, num_nodes: int = 1, env=None, *, spawns_ranks: bool = True
) -> str:
    """The run directory every process of one command agrees on.

    ``--run_dir`` wins. Otherwise the first process makes ``runs/<subcommand>-<timestamp>`` and puts
    it in ``$SEAL_RUN_DIR``, which the ranks Lightning launches inherit (they start seconds later and
    would otherwise pick another timestamp). Processes started by an outside launcher (torchrun,
    SLURM: ``LOCAL_RANK``/``WORLD_SIZE`` set) or on several nodes share no environment, so there the
    default is refused: pass ``--run_dir`` on a shared file system. ``spawns_ranks``: whether this
    command's trainer starts more processes (only then is the choice exported).
    """
    env = os.environ if env is None else env
    if given:
        return given
    if env.get(RUN_DIR_ENV):
        return env[RUN_DIR_ENV]
    launched_outside = env.get("LOCAL_RANK") is not None or int(env.get("WORLD_SIZE", "1") or 1) > 1
    if num_nodes > 1 or launched_outside:
        raise RunDirConflictError(
            "several processes (nodes, or ranks started by torchrun/SLURM) must write into one run "
            "directory: pass --run_dir DIR on a file system all of them share"
        )
    run_dir = f"runs/{subcommand or 'run'}-{time.strftime('%Y%m%d-%H%M%S')}"
    if spawns_ranks:  # only then: a later command in this process must get a directory of its own
        env[RUN_DIR_ENV] = run_dir
    return run_dir


class SealCLI(LightningCLI):
    """LightningCLI with a ``--run_dir`` and TensorBoard logging into it."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--run_dir",
            type=str | None,
            default=None,
            help="Run directory (config, TensorBoard events, JSONL records, results.json). Re-using it "
            "resumes that run. Default: runs/<subcommand>-<timestamp>.",
        )

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        trainer = config.trainer.as_dict() if hasattr(config.trainer, "as_dict") else dict(config.trainer)
        run_dir = resolve_run_dir(
            config.get("run_dir"),
            self.subcommand,
            int(trainer.get("num_nodes") or 1),
            spawns_ranks=is_multiprocess(trainer),
        )
        config.run_dir = run_dir
        config.trainer.default_root_dir = run_dir
        lock_run_dir(run_dir)  # before the saved config is read: no other run may change it now
        if config.trainer.get("logger") in (None, True):
            config.trainer.logger = Namespace(
                class_path="lightning.pytorch.loggers.TensorBoardLogger",
                init_args=Namespace(save_dir=run_dir, name="tensorboard", version="", default_hp_metric=False),
            )
        saved = Path(run_dir) / "config.yaml"
        if saved.is_file():
            previous = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
            current = yaml.safe_load(self.parser.dump(self.config, skip_none=False, skip_check=True))
            if self.subcommand:
                current = current.get(self.subcommand, current)
            if _semantic(previous) != _semantic(current):
                raise RunDirConflictError(
                    f"{run_dir} holds a run made with a different model/data configuration "
                    f"(see {saved}). Choose a new --run_dir, or delete that directory to start over."
                )


NOISY_WARNINGS = (
    r".*LightningCLI's args parameter is intended.*",  # main() hands the command line over as args
    r".*overridden `transfer_batch_to_device`.*",  # deliberate: batches are domain objects
    r".*LeafSpec.*is deprecated.*",
    r".*litlogger.*",
    r".*does not have many workers.*",  # items are whole passages/tasks; workers would not help
    r".*ckpt_path=\"last\"\) is set, but there is no last checkpoint.*",  # a fresh run dir: nothing to resume
)


RESTEM_EPILOG = (
    "ReST-EM outer loop: seal restem --config configs/knowledge/restem_demo.yaml [--run_dir DIR] "
    "(rounds of E-step, filter, M-step and held-out evaluation; see seal restem --help)."
)


def config_paths(argv: list[str]) -> list[str]:
    """The files given with ``--config``/``-c`` (``--config=F`` too), in order."""
    paths = []
    for index, arg in enumerate(argv):
        if arg in ("--config", "-c") and index + 1 < len(argv):
            paths.append(argv[index + 1])
        elif arg.startswith("--config="):
            paths.append(arg.split("=", 1)[1])
    return paths


OVERLAY_MARK = "# seal: overlay on"
"""A config that only changes another one says so in a comment line ``# seal: overlay on a.yaml b.yaml``."""


def overlay_bases(text: str) -> list[str]:
    """The configs an overlay config must come after (file names from its ``# seal: overlay on`` line)."""
    for line in text.splitlines():
        if line.startswith(OVERLAY_MARK):
            return line[len(OVERLAY_MARK) :].split()
    return []


def check_config_files(argv: list[str]) -> None:
    """Refuse a config file that is missing or not YAML, naming it (the parser's own message does not),
    and an overlay given without the configs it changes before it (it would run on module defaults)."""
    paths = config_paths(argv)
    for index, path in enumerate(paths):
        if not Path(path).is_file():
            raise OptionError(f"config file {path} does not exist (paths are relative to the current directory)")
        text = Path(path).read_text(encoding="utf-8")
        try:
            yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise OptionError(f"config file {path} is not valid YAML: {' '.join(str(error).split())}") from None
        bases = overlay_bases(text)
        earlier = {Path(p).name for p in paths[:index]}
        if any(Path(base).name not in earlier for base in bases):
            folder = Path(path).parent
            first = " ".join(f"--config {folder / Path(base).name}" for base in bases)
            raise OptionError(
                f"config file {path} is an overlay on {' and '.join(bases)}: alone it would run "
                f"with the modules' defaults. Give the config(s) it changes before it: {first} --config {path}"
            )


def run_stage(argv: list[str]) -> None:
    """Run one ``seal fit|validate|test|predict`` command line (``argv`` without ``seal``)."""
    check_config_files(argv)
    for pattern in NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    SealCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=RunDirConfig,
        save_config_kwargs={"overwrite": True},
        seed_everything_default=0,
        args=argv,
        auto_configure_optimizers=False,
        parser_kwargs={"epilog": RESTEM_EPILOG, "exit_on_error": False},  # errors: one paragraph (seal_pl.errors)
    )


def run_as_command(function: Callable[[list[str]], None], argv: list[str]) -> None:
    """Run ``function(argv)`` as a ``seal`` command: user errors print one paragraph and exit 2; a
    run stopped by SIGTERM or SIGINT exits 143 or 130 with the command that resumes it; the run
    directory's lock is released in every case (:func:`~seal_pl.rundir.command_scope`)."""
    with command_scope(argv):
        try:
            run_reporting_user_errors(function, argv)
        except SIGTERMException as stop:  # how Lightning's own loops stop after a SIGTERM
            raise RunStopped(signal.SIGTERM) from stop


def main(argv: list[str]) -> None:
    """One stage command (``fit``, ``validate``, ``test``, ``predict``) run as a ``seal`` command."""
    run_as_command(run_stage, list(argv))

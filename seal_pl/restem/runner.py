"""``seal restem``: the ReST-EM outer loop of SEAL, round after round, resumable.

One round (spec 1.10 and 2.8):

1. **E-step, sample and score** (``seal predict``): the current policy writes K self-edits per
   context (a passage, an ARC task); each goes through the shared inner loop and gets its reward
   (knowledge: adapted closed-book accuracy averaged over T inner-loop seeds; ARC: 1 iff the task
   is solved after TTT with that self-edit). The E-step module appends one record per self-edit as
   each context finishes; the runner has the domain collect them into one typed record per
   self-edit, ``round_<k>/<stem>.jsonl`` of the domain's kind (:mod:`seal_pl.records`).
2. **Filter**: the domain's (:class:`~seal_pl.pipelines.restem.ReSTEMDomain`): best-of-K per
   passage (optionally only with a minimum gain, without copies) or every ARC success, written to
   ``round_<k>/sft.jsonl``, with reward statistics and the domain's evidence in ``filter.json``.
3. **M-step** (``seal fit``): :class:`~seal_pl.lightning.PolicySFTModule` fine-tunes the policy on
   the kept (prompt, completion) pairs and saves the merged model to ``round_<k>/policy``: the
   policy and the learner of the next round. With nothing kept the policy stays as it was.
4. **Evaluation** (``seal test``): the round's policy on held-out contexts.

Each stage is an ordinary ``seal`` run whose config the runner writes (``round_<k>/<stage>.yaml``:
the stage section of the ``seal restem`` config with this round's model and paths filled in), so
any stage can be re-run alone: ``seal predict --config round_0/estep.yaml --run_dir round_0/estep``.
Stages run in this process when their trainer uses one device, and as their own ``seal`` command
(``python -m seal_pl ...``) when it asks for several processes (DDP), so Lightning launches and
shards them as it does for any ``seal`` run; the runner itself is one process on one machine.

Resume: re-running the same command skips finished rounds (``round_<k>/summary.json``) without
touching them, skips finished steps of the current round, and inside a stage the modules skip
finished contexts. An interrupted M-step is trained again from the start. A run directory holding
a run with a different configuration is refused (the number of rounds, the launcher and the
trainers' hardware options may change: re-run with more ``--rounds`` to extend a run).

One run at a time: the runner holds ``<run_dir>/.lock`` (:mod:`seal_pl.rundir`), which covers its
stages (in process, or as subprocesses that inherit ``$SEAL_LOCK_PID``); a second ``seal restem``
on the directory, or a ``seal`` run on one of its stage directories, is refused. SIGTERM or Ctrl-C
reaches the running stage (passed on to a stage subprocess, which finishes or abandons its item in
progress); the runner waits for it and exits 143 or 130 with the command that resumes the run.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import io
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from seal_pl.errors import USER_ERROR_EXIT, OptionError, check_choice
from seal_pl.pipelines.restem import (
    FilterOptions,
    GainBaseline,
    ReSTEMDomain,
    domain_of_class,
    reward_statistics,
)
from seal_pl.records import ScoredSelfEdit, SFTExample, read_typed, rewrite_typed, write_json
from seal_pl.restem.layout import (
    STAGE_COMMANDS,
    RoundLayout,
    input_policy,
    read_json,
    run_results,
    semantic_config,
    stage_config,
)
from seal_pl.rundir import (
    RunStopped,
    forwarding_stops,
    is_multiprocess,
    lock_run_dir,
    raise_if_stopped,
    stop_signal_of,
    write_text_atomic,
)

EVAL_TRAINER_DEFAULTS = {"inference_mode": False, "enable_checkpointing": False}
"""E-step and evaluation train adapters inside their steps: no inference mode, no checkpoints."""

SFT_TRAINER_DEFAULTS = {"enable_checkpointing": False, "log_every_n_steps": 1}
"""The policy is saved by the SFT module itself; every step's loss goes to TensorBoard."""

TEXT_SAMPLES = 3
"""Self-edits shown as text in TensorBoard per round (the best-rewarded ones)."""


SFTFrom = Literal["policy", "base"]
SFTData = Literal["round", "all_rounds"]
Launcher = Literal["auto", "inprocess", "subprocess"]


class ReSTEMConfigError(OptionError):
    """A ``seal restem`` config that cannot run (or a run directory made with another config)."""


@dataclass
class StageConfig:
    """One stage of a round: the ``model``/``data``/``trainer`` sections of a ``seal`` config.

    Args:
        model: the LightningModule section (``class_path`` + ``init_args``). Its ``model`` init
            argument is set by the runner every round (the base model in round 0, the previous
            round's policy afterwards); so are the SFT module's ``output_dir`` and the SFT data
            module's ``path``.
        data: the data module section (``class_path`` + ``init_args``).
        trainer: Trainer options of this stage; they override the run's shared ``trainer``.
    """

    model: dict[str, Any]
    data: dict[str, Any]
    trainer: dict[str, Any] = field(default_factory=dict)


def _stage(value: StageConfig | dict[str, Any] | None) -> StageConfig | None:
    if value is None or isinstance(value, StageConfig):
        return value
    return StageConfig(model=value.get("model") or {}, data=value.get("data") or {}, trainer=value.get("trainer") or {})


def _resolve_class(class_path: str) -> type:
    if "." not in class_path:
        import seal_pl.lightning

        return getattr(seal_pl.lightning, class_path)
    module, name = class_path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def domain_of(model_section: dict[str, Any]) -> ReSTEMDomain:
    """The domain the E-step (or evaluation) module's class names (its ``restem_domain``)."""
    try:
        return domain_of_class(_resolve_class(model_section["class_path"]))
    except TypeError:
        raise ReSTEMConfigError(
            f"{model_section['class_path']} cannot run a ReST-EM stage: its class names no ReST-EM domain "
            "(restem_domain); use a KnowledgeIncorporationModule or an ARCTTTModule"
        ) from None


class ReSTEMRun:
    """The ReST-EM outer loop: ``rounds`` rounds of E-step, filter, M-step and evaluation.

    Args:
        estep: E-step: sample K self-edits per context with the current policy and score each
            (``seal predict``). Knowledge: ``KnowledgeIncorporationModule`` with the
            ``self_edit`` condition, ``n_self_edits`` K and ``inner_seeds`` T (reference: K 5,
            T 3 on 50 training passages; keep ``no_adaptation`` in ``conditions`` for the gain);
            ARC: ``ARCTTTModule`` in ``mode: self_edit`` (reference: 15 self-edits per task).
        sft: M-step: ``PolicySFTModule`` + ``SFTDataModule`` (``seal fit``; set
            ``trainer.max_epochs``). Reference knowledge: LoRA r 64 / alpha 128 on all
            projections, lr 3e-4, 2 epochs, effective batch 10; ARC: r 16 / alpha 16, lr 5e-5,
            8 epochs, batch 5.
        eval: held-out evaluation after every round (``seal test``; left out, or
            ``--eval.model null --eval.data null`` on the command line: none). Knowledge: the
            table (no_adaptation, passage_only, self_edit) on validation passages; ARC: the
            success rate of sampled self-edits on evaluation tasks.
        model: the base model: policy and learner of round 0.
        rounds: ReST-EM rounds (reference: 2 for knowledge, 1 for ARC). Re-running a finished
            run with more rounds continues it.
        run_dir: the run directory (default ``runs/restem-<timestamp>``); re-using it resumes.
        trainer: Trainer options shared by every stage (accelerator, devices, strategy, ...).
        seed_everything: seed of every stage.
        top_k: knowledge: self-edits kept per passage (reference: 1, best-of-K).
        min_gain: knowledge: keep a passage's best self-edit only if its reward beats the
            ``gain_over`` baseline by at least this much (reference: null, the best is always kept).
        gain_over: knowledge: the baseline of ``min_gain``: ``no_adaptation`` (the un-adapted
            accuracy, reference) or ``passage_only`` (training on the passage alone; the E-step
            must then run the ``passage_only`` condition).
        max_copied_line_share: knowledge: leave out self-edits more than this share of whose
            lines are copied from the passage before picking the best (reference: null, none left
            out). A copy teaches what ``passage_only`` does; it wins only on reward noise.
        evaluate_base: also evaluate the base model (``base/``) before round 0.
        estep_start_stride: round ``k`` reads its E-step contexts from ``data.init_args.start +
            k * estep_start_stride`` (fresh passages every round); 0 uses the same every round.
        sft_from: the model each M-step fine-tunes: ``policy`` (the round's input policy, the
            reference) or ``base`` (the base ``model`` every round, as ReST-EM proper does; the
            E-step still samples with the previous round's policy).
        sft_data: the M-step's pairs: ``round`` (those kept this round, the reference) or
            ``all_rounds`` (this round's and every earlier round's, ``round_<k>/sft_all_rounds.jsonl``).
        launcher: how stages run: ``inprocess``, ``subprocess`` (a ``python -m seal_pl`` command
            per stage), or ``auto``: a subprocess when the stage's trainer asks for more than one
            process (DDP), in this process otherwise.

    The domain-specific steps (collecting the E-step's records, the filter, held-out numbers,
    comparisons) belong to the domain the E-step module names
    (:class:`~seal_pl.pipelines.restem.ReSTEMDomain`).
    """

    def __init__(
        self,
        estep: StageConfig | dict[str, Any],
        sft: StageConfig | dict[str, Any],
        eval: StageConfig | dict[str, Any] | None = None,
        model: str = "smollm2-135m-instruct",
        rounds: int = 1,
        run_dir: str | None = None,
        trainer: dict[str, Any] | None = None,
        seed_everything: int = 0,
        top_k: int = 1,
        min_gain: float | None = None,
        gain_over: GainBaseline = "no_adaptation",
        max_copied_line_share: float | None = None,
        evaluate_base: bool = True,
        estep_start_stride: int = 0,
        sft_from: SFTFrom = "policy",
        sft_data: SFTData = "round",
        launcher: Launcher = "auto",
    ):
        if rounds < 0:
            raise ReSTEMConfigError("rounds must be >= 0")
        for option, value, choices in (
            ("launcher", launcher, Launcher),
            ("sft_from", sft_from, SFTFrom),
            ("sft_data", sft_data, SFTData),
        ):
            check_choice(value, option, get_args(choices), ReSTEMConfigError)
        self.estep = _stage(estep)
        self.sft = _stage(sft)
        self.eval = _stage(eval)
        self.model = model
        self.rounds = rounds
        self.run_dir = Path(run_dir or f"runs/restem-{time.strftime('%Y%m%d-%H%M%S')}")
        self.trainer = dict(trainer or {})
        self.seed_everything = seed_everything
        self.evaluate_base = evaluate_base
        self.estep_start_stride = estep_start_stride
        self.sft_from, self.sft_data = sft_from, sft_data
        self.launcher = launcher
        try:
            self.filter_options = FilterOptions(
                top_k=top_k, min_gain=min_gain, gain_over=gain_over, max_copied_line_share=max_copied_line_share
            )
        except ValueError as error:
            raise ReSTEMConfigError(str(error)) from None
        self.domain = domain_of(self.estep.model)
        self._check_sections()
        self._writer = None

    # ------------------------------------------------------------------------------ config
    @property
    def config(self) -> dict[str, Any]:
        """The run's config as plain data (what ``config.yaml`` holds)."""
        return {
            "model": self.model,
            "rounds": self.rounds,
            "run_dir": str(self.run_dir),
            "trainer": self.trainer,
            "seed_everything": self.seed_everything,
            **asdict(self.filter_options),
            "evaluate_base": self.evaluate_base,
            "estep_start_stride": self.estep_start_stride,
            "sft_from": self.sft_from,
            "sft_data": self.sft_data,
            "launcher": self.launcher,
            "estep": asdict(self.estep),
            "sft": asdict(self.sft),
            "eval": None if self.eval is None else asdict(self.eval),
        }

    def _check_sections(self) -> None:
        from seal_pl.lightning.policy_sft import PolicySFTModule

        try:
            self.domain.check(self.estep.model.get("init_args") or {}, self.filter_options)
        except ValueError as error:
            raise ReSTEMConfigError(str(error)) from None
        if not issubclass(_resolve_class(self.sft.model["class_path"]), PolicySFTModule):
            raise ReSTEMConfigError("sft.model must be a PolicySFTModule")
        for name, stage in (("estep", self.estep), ("sft", self.sft), ("eval", self.eval)):
            if stage is None:
                continue
            merged = {**self.trainer, **stage.trainer}
            if int(merged.get("num_nodes") or 1) > 1:
                raise ReSTEMConfigError(
                    f"{name}: num_nodes > 1. seal restem launches every stage on this machine, so it runs on one "
                    "node (all of its GPUs: devices -1). For several nodes, run each round's stages as ordinary "
                    "`seal predict|fit|test` commands under your launcher (srun, torchrun) with a shared --run_dir; "
                    "the README's ReST-EM section lists the stage configs a round needs."
                )
            if self.launcher == "inprocess" and is_multiprocess(merged):
                raise ReSTEMConfigError(
                    f"{name}: launcher inprocess cannot run a multi-process (DDP) stage: Lightning would start the "
                    "whole `seal restem` command again on every rank. Use launcher: auto (or subprocess)."
                )
        sft_trainer = {**self.trainer, **self.sft.trainer}
        if sft_trainer.get("max_epochs") is None and sft_trainer.get("max_steps") in (None, -1):
            raise ReSTEMConfigError("set sft.trainer.max_epochs (or max_steps): Lightning's default is 1000 epochs")
        if self.eval is not None and type(domain_of(self.eval.model)) is not type(self.domain):
            raise ReSTEMConfigError("eval.model must be of the same domain as estep.model")

    def stage_configs(self, index: int | None, policy: str) -> dict[str, dict[str, Any]]:
        """The ``seal`` configs of every stage of round ``index`` (``None``: the base evaluation)."""
        layout = RoundLayout.of(self.run_dir, index)
        common = {"shared_trainer": self.trainer, "seed": self.seed_everything}
        configs = {}
        if index is not None:
            data_args = {}
            if self.estep_start_stride:
                start = (self.estep.data.get("init_args") or {}).get("start") or 0
                data_args["start"] = start + index * self.estep_start_stride
            configs["estep"] = stage_config(
                asdict(self.estep),
                trainer_defaults=EVAL_TRAINER_DEFAULTS,
                model_args={"model": policy},
                data_args=data_args,
                **common,
            )
            configs["sft"] = stage_config(
                asdict(self.sft),
                trainer_defaults=SFT_TRAINER_DEFAULTS,
                model_args={
                    "model": self.model if self.sft_from == "base" else policy,
                    "output_dir": str(layout.policy),
                },
                data_args={"path": str(layout.sft_all_rounds if self.sft_data == "all_rounds" else layout.sft_set)},
                **common,
            )
        if self.eval is not None:
            configs["eval"] = stage_config(
                asdict(self.eval), trainer_defaults=EVAL_TRAINER_DEFAULTS, model_args={"model": policy}, **common
            )
        return configs

    def check(self) -> None:
        """Parse round 0's stage configs with their ``seal`` subcommands (nothing is instantiated)."""
        for stage, config in self.stage_configs(0, self.model).items():
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / f"{stage}.yaml"
                path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
                out = io.StringIO()
                try:
                    with contextlib.redirect_stdout(out):
                        _seal([STAGE_COMMANDS[stage], "--config", str(path), "--print_config"])
                except RunStopped:
                    raise
                except SystemExit as exit_info:
                    if exit_info.code not in (0, None):
                        raise ReSTEMConfigError(
                            f"the {stage} section is not a valid `seal {STAGE_COMMANDS[stage]}` config "
                            "(see the error above)"
                        ) from None

    def _prepare(self) -> None:
        saved = self.run_dir / "config.yaml"
        current = self.config
        if saved.is_file():
            previous = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
            if semantic_config(previous) != semantic_config(current):
                raise ReSTEMConfigError(
                    f"{self.run_dir} holds a ReST-EM run made with a different configuration (see {saved}). "
                    "Choose a new --run_dir, or delete that directory to start over."
                )
        self.check()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        _write_text(saved, yaml.safe_dump(current, sort_keys=False))

    # ------------------------------------------------------------------------------- run
    def run(self) -> dict[str, Any]:
        """Run (or resume) every round under the run directory's lock; returns ``results.json``."""
        lock = lock_run_dir(self.run_dir)
        try:
            return self._run()
        finally:
            if lock is not None:
                lock.release()

    def _run(self) -> dict[str, Any]:
        self._prepare()
        self._measure_machine()
        try:
            if self.eval is not None and self.evaluate_base:
                self._base_evaluation()
            for index in range(self.rounds):
                if RoundLayout.of(self.run_dir, index).done:
                    print(f"[restem] round {index}: finished earlier, skipped")
                    continue
                self._round(index)
        finally:
            if self._writer is not None:
                self._writer.close()
        results = self._results()
        write_json(self.run_dir / "results.json", results)
        print("\n" + format_rounds(results) + f"\n\nresults: {self.run_dir / 'results.json'}")
        return results

    def _results(self) -> dict[str, Any]:
        """``results.json``: every finished round, the machine's peak and the paired comparisons."""
        results = run_results(self.run_dir)
        machine = self.run_dir / "machine.json"
        if machine.is_file():
            results["machine"] = read_json(machine)
        indices = [None] if (results.get("base") or {}).get("eval") else []
        indices += [s["round"] for s in results["rounds"] if s.get("eval")]
        evaluations = [
            ("base" if k is None else f"round_{k}", RoundLayout.of(self.run_dir, k).stage_dir("eval")) for k in indices
        ]
        comparisons = self.domain.comparisons(evaluations, seed=self.seed_everything)
        if comparisons:
            results["comparisons"] = comparisons
        return results

    def _measure_machine(self) -> None:
        """Measure the fp32 matrix-multiply peak once per run (the E-step's FLOP/s are read against it)."""
        path = self.run_dir / "machine.json"
        if path.is_file():
            return
        from seal_pl.inner.flops import peak_matmul_flops

        device = "cuda" if str(self.trainer.get("accelerator", "")) in ("gpu", "cuda") else "cpu"
        write_json(path, {"device": device, "peak_fp32_flops": peak_matmul_flops("fp32", device)})

    def _base_evaluation(self) -> None:
        layout = RoundLayout.of(self.run_dir, None)
        if layout.done:
            return
        heldout = self._evaluate(layout, self.stage_configs(None, self.model)["eval"])
        self._log_heldout(0, heldout)
        write_json(layout.summary, {"model": self.model, "eval": heldout})

    def _round(self, index: int) -> None:
        layout = RoundLayout.of(self.run_dir, index)
        started = time.perf_counter()
        policy_in = input_policy(self.run_dir, index, self.model)
        configs = self.stage_configs(index, policy_in)
        print(f"[restem] round {index}: policy {policy_in}")

        records = self._estep(layout, configs["estep"])
        kept, stats = self._filter(layout, records)
        print(
            f"[restem] round {index}: kept {stats['kept']} of {stats['n']} self-edits "
            f"({stats['contexts_kept']} of {stats['contexts']} contexts)"
        )
        sft = self._mstep(layout, configs["sft"], self._sft_pairs(index, kept))
        policy_out = str(layout.policy) if sft is not None else policy_in
        heldout = None
        if self.eval is not None:
            eval_config = self.stage_configs(index, policy_out)["eval"]
            heldout = self._evaluate(layout, eval_config)
        summary = {
            "round": index,
            "domain": self.domain.name,
            "policy_in": policy_in,
            "policy_out": policy_out,
            "estep": stats,
            "sft": _sft_summary(sft),
            "eval": heldout,
            "timing": self._round_timing(layout),
            "wall_seconds_this_invocation": round(time.perf_counter() - started, 1),
        }
        self._log_round(index, records, kept, stats, sft, heldout, summary["timing"])
        write_json(layout.summary, summary)
        write_json(self.run_dir / "results.json", self._results())

    # ------------------------------------------------------------------------------ steps
    def _estep(self, layout: RoundLayout, config: dict[str, Any]) -> list[ScoredSelfEdit]:
        path = layout.scored_self_edits(self.domain.scored)
        if not path.is_file():
            self._run_stage("estep", layout, config)
            rewrite_typed(path, self.domain.collect(layout.stage_dir("estep")))
        return list(read_typed(path, self.domain.scored))

    def _filter(self, layout: RoundLayout, records: list[ScoredSelfEdit]) -> tuple[list[SFTExample], dict[str, Any]]:
        if not layout.filter_stats.is_file():
            kept = self.domain.select(records, self.filter_options)
            stats = reward_statistics(records, kept)
            stats["rule"] = self.domain.rule(self.filter_options)
            stats.update(self.domain.evidence(records, kept))
            rewrite_typed(layout.sft_set, kept)
            write_json(layout.filter_stats, stats)
        return list(read_typed(layout.sft_set, SFTExample)), read_json(layout.filter_stats)

    def _sft_pairs(self, index: int, kept: list[SFTExample]) -> list[SFTExample]:
        """The M-step's pairs: this round's kept ones, or (``all_rounds``) every round's so far, written."""
        if self.sft_data == "round":
            return kept
        pairs = [p for k in range(index) for p in read_typed(RoundLayout.of(self.run_dir, k).sft_set, SFTExample)]
        pairs += kept
        rewrite_typed(RoundLayout.of(self.run_dir, index).sft_all_rounds, pairs)
        return pairs

    def _mstep(self, layout: RoundLayout, config: dict[str, Any], kept: list[SFTExample]) -> dict[str, Any] | None:
        """Train the policy on the kept pairs; ``None`` when nothing was kept (the policy stays)."""
        if not kept:
            print(f"[restem] {layout.root.name}: nothing kept, the policy is not trained this round")
            return None
        if not layout.policy_marker.is_file():
            # An interrupted M-step starts over: drop its partial outputs first.
            for stale in (layout.stage_dir("sft"), layout.policy):
                if stale.exists():
                    shutil.rmtree(stale)
            self._run_stage("sft", layout, config)
            if not layout.policy_marker.is_file():
                raise RuntimeError(f"the M-step finished without saving the policy ({layout.policy_marker})")
        return read_json(layout.policy_marker)

    def _evaluate(self, layout: RoundLayout, config: dict[str, Any]) -> dict[str, Any]:
        self._run_stage("eval", layout, config)
        eval_dir = layout.stage_dir("eval")
        numbers = self.domain.heldout(eval_dir)
        return {
            "model": config["model"]["init_args"]["model"],
            "metrics": numbers.metrics,
            "headline": numbers.headline,
            "results": str(eval_dir / "results.json"),
            **numbers.extras,
        }

    def _round_timing(self, layout: RoundLayout) -> dict[str, Any]:
        """Wall seconds of each stage (as first run), the E-step's phases and its achieved FLOP/s."""
        timing: dict[str, Any] = dict(read_json(layout.timing)) if layout.timing.is_file() else {}
        estep_results = layout.stage_dir("estep") / "results.json"
        if estep_results.is_file():
            phases = read_json(estep_results).get("timing") or {}
            timing["estep_phases"] = phases
            machine = self.run_dir / "machine.json"
            achieved = phases.get("train_flops_per_second")
            if achieved and machine.is_file():
                peak = read_json(machine)["peak_fp32_flops"]
                timing["estep_train_fraction_of_peak"] = achieved / peak
        return timing

    # ---------------------------------------------------------------------------- stages
    def _run_stage(self, stage: str, layout: RoundLayout, config: dict[str, Any]) -> None:
        path = layout.stage_config(stage)
        _write_text(path, yaml.safe_dump(config, sort_keys=False))
        argv = [STAGE_COMMANDS[stage], "--config", str(path), "--run_dir", str(layout.stage_dir(stage))]
        separate = self.launcher == "subprocess" or (self.launcher == "auto" and is_multiprocess(config["trainer"]))
        print(f"[restem] {layout.root.name}/{stage}: seal {' '.join(argv)}" + (" (subprocess)" if separate else ""))
        started = time.perf_counter()
        if separate:
            _run_command([sys.executable, "-m", "seal_pl", *argv])
        else:
            _seal(argv)
            gc.collect()
            with contextlib.suppress(Exception):
                import torch

                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
        _record_seconds(layout.timing, f"{stage}_seconds", time.perf_counter() - started)

    # --------------------------------------------------------------------------- logging
    @property
    def writer(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.run_dir / "tensorboard"))
        return self._writer

    def _log_heldout(self, step: int, heldout: dict[str, Any] | None) -> None:
        """Held-out metrics at ``step`` = rounds finished (0: the base model)."""
        if heldout is None:
            return
        for name, value in heldout["metrics"].items():
            if value is not None:
                self.writer.add_scalar(f"heldout/{name}", value, step)
        for name, value in (heldout.get("self_edit_stats") or {}).items():
            if name != "n":
                self.writer.add_scalar(f"heldout/self_edit_{name}", value, step)
        samples = heldout.get("samples") or []
        if samples:
            text = "\n\n".join(
                f"**{s['passage_id']}** accuracy {s['accuracy']:.2f}\n\n```\n{s['completion']}\n```" for s in samples
            )
            self.writer.add_text("heldout/self_edits", text, step)
        self.writer.flush()

    def _log_round(
        self,
        index: int,
        records: list[ScoredSelfEdit],
        kept: list[SFTExample],
        stats: dict[str, Any],
        sft: dict[str, Any] | None,
        heldout: dict[str, Any] | None,
        timing: dict[str, Any],
    ) -> None:
        writer = self.writer
        rewards = [float(r.reward) for r in records if r.reward is not None]
        if rewards:
            import numpy as np

            writer.add_scalar("estep/reward_mean", stats["mean"], index)
            writer.add_scalar("estep/reward_max", stats["max"], index)
            writer.add_scalar("estep/reward_min", stats["min"], index)
            writer.add_histogram("estep/reward", np.asarray(rewards), index, bins=np.linspace(0.0, 1.0, 11))
            writer.add_scalar("estep/reward_std", stats["std"], index)
        writer.add_scalar("filter/kept_fraction", stats["kept_fraction"], index)
        if stats.get("best_beats_passage_only") is not None:
            writer.add_scalar("estep/best_beats_passage_only", stats["best_beats_passage_only"], index)
        for group in ("self_edits", "kept_self_edits"):
            for name, value in (stats.get(group) or {}).items():
                if name != "n":
                    writer.add_scalar(f"estep/{group}_{name}", value, index)
        for name, value in timing.items():
            if isinstance(value, int | float):
                writer.add_scalar(f"time/{name}", value, index)
        writer.add_scalar("filter/kept", stats["kept"], index)
        if sft is not None:
            for point in sft.get("losses", []):
                writer.add_scalar(f"sft/loss_round_{index}", point["loss"], point["step"])
            if sft.get("final_loss") is not None:
                writer.add_scalar("sft/final_loss", sft["final_loss"], index)
        best = sorted(records, key=lambda r: -float(r.reward if r.reward is not None else -1))
        text = "\n\n".join(f"{self.domain.describe(r)}\n\n```\n{r.completion}\n```" for r in best[:TEXT_SAMPLES])
        if text:
            writer.add_text("estep/self_edits", text, index)
        self._log_heldout(index + 1, heldout)


def _seal(argv: list[str]) -> None:
    """Run a ``seal`` command in this process."""
    from seal_pl.stage_cli import main as seal_main

    with warnings.catch_warnings():
        # LightningCLI warns when it gets args while sys.argv holds the `seal restem` command line.
        warnings.filterwarnings("ignore", message=r".*args parameter is intended to run from within Python.*")
        seal_main(argv)


def _record_seconds(path: Path, key: str, seconds: float) -> None:
    timing = read_json(path) if path.is_file() else {}
    timing[key] = round(seconds, 1)
    write_json(path, timing)


def _sft_summary(info: dict[str, Any] | None) -> dict[str, Any]:
    if info is None:
        return {"trained": False, "reason": "nothing kept"}
    return {"trained": True, **{k: v for k, v in info.items() if k != "losses"}}


def _write_text(path: Path, text: str) -> None:
    """Write a config atomically (temp file + fsync + rename): a kill leaves the old or the new one."""
    write_text_atomic(path, text)


def _run_command(command: list[str]) -> None:
    """Run a stage command as a child process; SIGTERM and SIGINT reaching the runner reach it too.

    The stage runs in a process group of its own, so that a Ctrl-C at the terminal reaches it once,
    through the runner (:func:`~seal_pl.rundir.forwarding_stops`). The runner waits until the stage
    has stopped (it finishes or abandons its item in progress, keeping its records) and then stops
    itself with :class:`~seal_pl.rundir.RunStopped`, also when the stage was stopped directly.
    """
    process = subprocess.Popen(command, process_group=0)
    try:
        with forwarding_stops(process, own_group=True):
            code = _wait(process)
    except BaseException:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
        raise
    raise_if_stopped()
    raise_if_stopped(stop_signal_of(code))
    if code == USER_ERROR_EXIT:  # the stage has printed the paragraph saying what to fix
        raise ReSTEMConfigError(f"the stage stopped on the error printed above; its command: {' '.join(command)}")
    if code != 0:
        raise RuntimeError(f"stage command failed with exit code {code}: {' '.join(command)}")


def _wait(process: subprocess.Popen) -> int:
    """Wait for ``process``, waking up every second: a signal that another thread of this process
    received is then handled (passed on) at once, not only when the stage ends."""
    while True:
        try:
            return process.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            continue


def format_rounds(results: dict[str, Any]) -> str:
    """One line per round: rewards, kept, held-out headline metric."""
    lines = [f"{'round':<6} {'reward mean':>11} {'max':>6} {'kept':>10} {'sft loss':>9} {'held-out':>9}"]

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.1f}%"

    if results.get("base"):
        lines.append(f"{'base':<6} {'':>11} {'':>6} {'':>10} {'':>9} {pct(results['base']['eval']['headline']):>9}")
    for summary in results["rounds"]:
        stats = summary["estep"]
        loss = summary["sft"].get("final_loss")
        lines.append(
            f"{summary['round']:<6} {pct(stats.get('mean')):>11} {pct(stats.get('max')):>6} "
            f"{str(stats['kept']) + '/' + str(stats['n']):>10} {'-' if loss is None else f'{loss:.3f}':>9} "
            f"{pct((summary['eval'] or {}).get('headline')):>9}"
        )
    for name, comparison in (results.get("comparisons") or {}).items():
        if name.endswith(("_last", "_last_minus_base")):
            lines.append(
                f"{name} ({comparison['round']}): {100 * comparison['difference']:+.1f} points, "
                f"95% CI [{100 * comparison['low']:+.1f}, {100 * comparison['high']:+.1f}] over {comparison['n']} questions"
            )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- command
STAGE_SECTIONS = {"estep": True, "sft": True, "eval": False}
"""Stage sections of the config and whether they are required."""

STAGE_HELP = {
    "estep": "E-step (seal predict): sample K self-edits per context with the current policy and score each.",
    "sft": "M-step (seal fit): PolicySFTModule + SFTDataModule on the kept pairs; set trainer.max_epochs.",
    "eval": "Held-out evaluation (seal test) after every round; leave out (or set model and data to null) for none.",
}


def build_parser():
    """The ``seal restem`` parser: :class:`ReSTEMRun`'s arguments, stage sections typed by class."""
    from jsonargparse import ActionConfigFile, ArgumentParser
    from lightning.pytorch import LightningDataModule, LightningModule

    import seal_pl.lightning  # noqa: F401  (short class names in configs)

    parser = ArgumentParser(
        prog="seal restem",
        description="ReST-EM outer loop of SEAL: E-step (sample + score self-edits), filter, M-step (SFT of "
        "the policy), held-out evaluation, for N rounds. Re-running the same command resumes.",
    )
    parser.add_argument("--config", action=ActionConfigFile, help="YAML config (several compose left to right).")
    parser.add_class_arguments(ReSTEMRun, None, skip=set(STAGE_SECTIONS), fail_untyped=True, sub_configs=True)
    for name, required in STAGE_SECTIONS.items():
        note = " The runner sets its model (and the SFT paths) every round."
        parser.add_subclass_arguments(
            LightningModule, f"{name}.model", required=required, fail_untyped=False, help=STAGE_HELP[name] + note
        )
        parser.add_subclass_arguments(
            LightningDataModule,
            f"{name}.data",
            required=required,
            fail_untyped=False,
            help=f"Data of the {name} stage.",
        )
        parser.add_argument(
            f"--{name}.trainer", type=dict[str, Any], default={}, help=f"Trainer options of the {name} stage."
        )
    parser.set_defaults(
        {
            "sft.model": {"class_path": "seal_pl.lightning.PolicySFTModule"},
            "sft.data": {"class_path": "seal_pl.lightning.SFTDataModule"},
        }
    )
    return parser


def run_from_args(args: list[str]) -> ReSTEMRun:
    """Parse ``seal restem`` arguments into a :class:`ReSTEMRun` (nothing runs yet)."""
    parser = build_parser()
    config = parser.parse_args(args).as_dict()
    config.pop("config", None)
    stages = {}
    for name in STAGE_SECTIONS:
        section = config.pop(name)
        if name == "eval" and section.get("model") is None and section.get("data") is None:
            stages[name] = None
            continue
        if section.get("model") is None or section.get("data") is None:
            parser.error(f"{name} needs both a model and a data section")
        stages[name] = StageConfig(model=section["model"], data=section["data"], trainer=section.get("trainer") or {})
    return ReSTEMRun(**stages, **config)


def main(args: list[str] | None = None) -> dict[str, Any]:
    """``seal restem --config ... [--run_dir DIR] [--key value ...]``."""
    return run_from_args(sys.argv[1:] if args is None else args).run()

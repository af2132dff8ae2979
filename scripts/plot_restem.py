"""Draw a ReST-EM run's E-step rewards and held-out metrics per round as a PNG.

    python scripts/plot_restem.py runs/restem-demo                  # writes runs/restem-demo/restem.png
    python scripts/plot_restem.py runs/a runs/b --out compare.png   # several runs on the same axes

Top left: mean (± std) and max reward of the self-edits sampled in each round's E-step, the
fraction kept by the filter and (knowledge) the share of passages whose best self-edit beat
passage_only. Top right: the held-out metrics after each round (0 = the base model, round k's
policy at k + 1): knowledge accuracy per condition, or the ARC success rate, with the paired
bootstrap interval of the last round's self_edit gain in the title. Bottom left (knowledge): what
the held-out self-edits look like (words, lines, share of the passage's names and numbers, share of
lines copied from the passage). Bottom right: minutes per stage and E-step phase. Works on a run in
progress (it reads the finished rounds' ``summary.json``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from seal_pl.restem.layout import run_results


def series(results: dict) -> dict:
    """Per-round values of one run: rewards and kept fractions by round, held-out metrics by step."""
    rounds = results["rounds"]
    heldout: dict[str, list[tuple[int, float]]] = {}
    shape: dict[str, list[tuple[int, float]]] = {}
    evaluations = [(0, results["base"]["eval"])] if results.get("base") else []
    evaluations += [(summary["round"] + 1, summary["eval"]) for summary in rounds if summary.get("eval")]
    for step, evaluation in evaluations:
        for name, value in evaluation["metrics"].items():
            if value is not None:
                heldout.setdefault(name, []).append((step, value))
        for name, value in (evaluation.get("self_edit_stats") or {}).items():
            if name != "n":
                shape.setdefault(name, []).append((step, value))
    time_rows = []
    for summary in rounds:
        timing = summary.get("timing") or {}
        phases = timing.get("estep_phases") or {}
        time_rows.append(
            {
                "E-step sampling": phases.get("sample_seconds", 0.0),
                "E-step training": phases.get("train_seconds", 0.0),
                "E-step answering": phases.get("answer_seconds", 0.0),
                "SFT": timing.get("sft_seconds", 0.0),
                "evaluation": timing.get("eval_seconds", 0.0),
            }
        )
    return {
        "round": [s["round"] for s in rounds],
        "reward_mean": [s["estep"].get("mean") for s in rounds],
        "reward_max": [s["estep"].get("max") for s in rounds],
        "reward_std": [s["estep"].get("std") for s in rounds],
        "kept_fraction": [s["estep"].get("kept_fraction") for s in rounds],
        "best_beats_passage_only": [s["estep"].get("best_beats_passage_only") for s in rounds],
        "heldout": heldout,
        "self_edit_shape": shape,
        "time": time_rows,
    }


def _pct(values: list) -> list[float]:
    return [100 * v if v is not None else float("nan") for v in values]


def _load(run_dir: Path) -> dict:
    """``results.json`` when the runner wrote one (it has the comparisons), else the finished rounds."""
    path = run_dir / "results.json"
    if path.is_file():
        results = json.loads(path.read_text(encoding="utf-8"))
        if results.get("experiment") == "restem":
            return results
    return run_results(run_dir)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="PNG path (default: <first run>/restem.png)")
    args = parser.parse_args(argv)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        parser.error("matplotlib is needed to draw the plot: pip install matplotlib")
    runs = []
    for run_dir in args.run_dirs:
        if not (run_dir / "config.yaml").is_file():
            parser.error(f"{run_dir} is not a ReST-EM run directory (no config.yaml): run `seal restem` first")
        results = _load(run_dir)
        runs.append((run_dir.name, series(results), results.get("comparisons") or {}))

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    (left, right), (shape_axis, time_axis) = axes
    for name, data, _ in runs:
        rounds = data["round"]
        line = left.errorbar(
            rounds,
            _pct(data["reward_mean"]),
            yerr=_pct(data["reward_std"]),
            marker="o",
            capsize=3,
            label=f"{name}: reward mean (± std)",
        )
        color = line[0].get_color()
        left.plot(
            rounds, _pct(data["reward_max"]), marker="^", linestyle="--", color=color, label=f"{name}: reward max"
        )
        left.plot(rounds, _pct(data["kept_fraction"]), marker="s", linestyle=":", color=color, label=f"{name}: kept")
        if any(v is not None for v in data["best_beats_passage_only"]):
            left.plot(
                rounds,
                _pct(data["best_beats_passage_only"]),
                marker="d",
                linestyle="-.",
                color=color,
                label=f"{name}: best > passage_only",
            )
        for metric, points in data["heldout"].items():
            steps, values = zip(*points)
            right.plot(steps, [100 * v for v in values], marker="o", label=f"{name}: {metric}")
        for metric, points in data["self_edit_shape"].items():
            steps, values = zip(*points)
            scaled = [v if metric in ("words", "lines") else 100 * v for v in values]
            unit = "" if metric in ("words", "lines") else " (%)"
            shape_axis.plot(steps, scaled, marker="o", label=f"{name}: {metric}{unit}")
    name, data, comparisons = runs[0]
    last = comparisons.get("self_edit_last_minus_base")
    if last:
        right.set_title(
            f"Held-out evaluation (self_edit last - base: {100 * last['difference']:+.1f} pts, "
            f"95% CI [{100 * last['low']:+.1f}, {100 * last['high']:+.1f}])",
            fontsize=9,
        )
    else:
        right.set_title("Held-out evaluation")
    if data["time"]:
        bottom = [0.0] * len(data["time"])
        for phase in data["time"][0]:
            minutes = [row[phase] / 60 for row in data["time"]]
            time_axis.bar(data["round"], minutes, bottom=bottom, label=phase)
            bottom = [b + m for b, m in zip(bottom, minutes)]
    left.set_xlabel("round (E-step)")
    left.set_ylabel("reward / kept (%)")
    left.set_ylim(-2, 102)
    left.set_title("Self-edits sampled per round (train passages)")
    right.set_xlabel("rounds trained (0 = base model)")
    right.set_ylabel("held-out (%)")
    right.set_ylim(-2, 102)
    shape_axis.set_xlabel("rounds trained (0 = base model)")
    shape_axis.set_title("Held-out self-edits: size and what they carry over")
    time_axis.set_xlabel("round")
    time_axis.set_ylabel("minutes")
    time_axis.set_title(f"Where the time went ({name})")
    for axis in (left, right, shape_axis, time_axis):
        axis.xaxis.get_major_locator().set_params(integer=True)
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7)
    rounds_run = [r for _, d, _ in runs for r in d["round"]]
    if rounds_run:  # whole rounds on the E-step and time axes, also when only round 0 has run
        for axis in (left, time_axis):
            axis.set_xlim(-0.5, max(rounds_run) + 0.5)
            axis.set_xticks(range(max(rounds_run) + 1))
    fig.tight_layout()
    out = args.out or args.run_dirs[0] / "restem.png"
    fig.savefig(out, dpi=130)
    plt.close(fig)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()

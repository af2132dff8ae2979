"""Draw a ReST-EM run's E-step rewards and held-out metrics per round as a PNG.

    python scripts/plot_restem.py runs/restem-demo                  # writes runs/restem-demo/restem.png
    python scripts/plot_restem.py runs/a runs/b --out compare.png   # several runs on the same axes

Left: mean and max reward of the self-edits sampled in each round's E-step, and the fraction kept
by the filter. Right: the held-out metrics after each round (0 = the base model, round k's policy
at k + 1): knowledge accuracy per condition, or the ARC success rate. Works on a run in progress
(it reads the finished rounds' ``summary.json``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from seal_pl.restem.layout import run_results


def series(results: dict) -> dict:
    """Per-round values of one run: rewards and kept fractions by round, held-out metrics by step."""
    rounds = results["rounds"]
    heldout: dict[str, list[tuple[int, float]]] = {}
    evaluations = [(0, results["base"]["eval"])] if results.get("base") else []
    evaluations += [(summary["round"] + 1, summary["eval"]) for summary in rounds if summary.get("eval")]
    for step, evaluation in evaluations:
        for name, value in evaluation["metrics"].items():
            if value is not None:
                heldout.setdefault(name, []).append((step, value))
    return {
        "round": [s["round"] for s in rounds],
        "reward_mean": [s["estep"].get("mean") for s in rounds],
        "reward_max": [s["estep"].get("max") for s in rounds],
        "kept_fraction": [s["estep"].get("kept_fraction") for s in rounds],
        "heldout": heldout,
    }


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
        runs.append((run_dir.name, series(run_results(run_dir))))

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name, data in runs:
        rounds = data["round"]
        mean = [100 * v if v is not None else float("nan") for v in data["reward_mean"]]
        best = [100 * v if v is not None else float("nan") for v in data["reward_max"]]
        kept = [100 * v if v is not None else float("nan") for v in data["kept_fraction"]]
        line = left.plot(rounds, mean, marker="o", label=f"{name}: reward mean")[0]
        left.plot(rounds, best, marker="^", linestyle="--", color=line.get_color(), label=f"{name}: reward max")
        left.plot(rounds, kept, marker="s", linestyle=":", color=line.get_color(), label=f"{name}: kept")
        for metric, points in data["heldout"].items():
            steps, values = zip(*points)
            right.plot(steps, [100 * v for v in values], marker="o", label=f"{name}: {metric}")
    left.set_xlabel("round (E-step)")
    left.set_ylabel("reward / kept (%)")
    left.set_ylim(-2, 102)
    left.set_title("Self-edits sampled per round")
    right.set_xlabel("rounds trained (0 = base model)")
    right.set_ylabel("held-out (%)")
    right.set_ylim(-2, 102)
    right.set_title("Held-out evaluation")
    for axis in (left, right):
        axis.xaxis.get_major_locator().set_params(integer=True)
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7)
    fig.tight_layout()
    out = args.out or args.run_dirs[0] / "restem.png"
    fig.savefig(out, dpi=130)
    plt.close(fig)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()

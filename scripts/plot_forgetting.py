"""Redraw continual-self-edit forgetting matrices from results.json, compare strategies, pool runs.

    python scripts/plot_forgetting.py runs/continual-demo                 # writes runs/continual-demo/forgetting.png
    python scripts/plot_forgetting.py runs/continual-demo runs/continual-replay-demo runs/continual-route-demo \\
        --out forgetting_compare.png                                      # one heatmap per run, side by side
    python scripts/plot_forgetting.py runs/job-0 runs/job-1 --pool --out pooled.png   # one matrix over all runs

Prints, per run, the averages the goal is judged by: base row, diagonal (freshly learned), final
row, forgetting, and the differences to the first run (e.g. plain merging). ``--pool`` combines runs
of the same experiment (e.g. jobs over different sequences) into exact per-cell means and standard
deviations over all their sequences (not an average of standard deviations).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from seal_pl.pipelines.continual import forgetting_summary, format_matrix, pool_matrix_stats, save_heatmap


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="PNG path (default: <first run>/forgetting.png)")
    parser.add_argument("--pool", action="store_true", help="pool all runs into one matrix")
    parser.add_argument("--no-std", action="store_true", help="show means only")
    args = parser.parse_args()
    runs = []
    for run_dir in args.run_dirs:
        path = run_dir / "results.json"
        if not path.is_file():
            parser.error(f"{path} does not exist: run `seal test ... --run_dir {run_dir}` first")
        results = json.loads(path.read_text())
        if results.get("experiment") != "knowledge_continual":
            parser.error(f"{path} is not a continual self-edits result")
        runs.append((run_dir.name, results))
    if args.pool:
        stats = pool_matrix_stats([r["matrix"] for _, r in runs])
        name = "pooled: " + ", ".join(n for n, _ in runs)
        strategy = runs[0][1]["strategy"]["name"]
        runs = [
            (
                name,
                {"strategy": {"name": strategy}, "matrix": stats, "n_sequences": max(max(row) for row in stats["n"])},
            )
        ]
    panels = []
    print(
        f"{'run':<32} {'strategy':<9} {'seqs':>4} {'base':>6} {'diag':>6} {'final':>6} {'forget':>7} {'d diag':>7} {'d final':>8}"
    )
    first = None
    for name, results in runs:
        stats = results["matrix"]
        summary = forgetting_summary(stats["mean"])
        first = first or summary
        d_diag = None if summary["diagonal_mean"] is None else summary["diagonal_mean"] - first["diagonal_mean"]
        d_final = None if summary["final_row_mean"] is None else summary["final_row_mean"] - first["final_row_mean"]
        strategy = results["strategy"]["name"]
        print(
            f"{name[:32]:<32} {strategy:<9} {results['n_sequences']:>4} {_pct(summary['base_row_mean']):>6} "
            f"{_pct(summary['diagonal_mean']):>6} {_pct(summary['final_row_mean']):>6} "
            f"{_pct(summary['forgetting_mean']):>7} {_pct(d_diag):>7} {_pct(d_final):>8}"
        )
        panels.append(
            {
                "title": f"{name} ({strategy}, {results['n_sequences']} seq.)",
                "mean": stats["mean"],
                "std": None if args.no_std else stats["std"],
            }
        )
    if args.pool:
        print("\n" + format_matrix(panels[0]["mean"], panels[0]["std"]))
    out = args.out or args.run_dirs[0] / "forgetting.png"
    save_heatmap(panels, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""Draw a run's knowledge-incorporation table (accuracy per condition) as a PNG bar chart.

python scripts/plot_knowledge_table.py runs/knowledge-demo            # writes runs/knowledge-demo/table.png
python scripts/plot_knowledge_table.py runs/a runs/b --out compare.png  # several runs side by side
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ORDER = ("no_adaptation", "passage_only", "self_edit", "external")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="PNG path (default: <first run>/table.png)")
    args = parser.parse_args()
    runs = []
    for run_dir in args.run_dirs:
        path = run_dir / "results.json"
        if not path.is_file():
            parser.error(f"{path} does not exist: run `seal test ... --run_dir {run_dir}` first")
        runs.append((run_dir.name, json.loads(path.read_text())))
    conditions = [c for c in ORDER if any(c in r["conditions"] for _, r in runs)]
    width = 0.8 / len(runs)
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(conditions), 3.6))
    for index, (name, results) in enumerate(runs):
        xs = [i + index * width for i in range(len(conditions))]
        values = [100 * results["conditions"].get(c, {}).get("accuracy", 0.0) for c in conditions]
        bars = ax.bar(xs, values, width=width, label=f"{name} ({results['model']}, {results['n_passages']} passages)")
        for bar, c in zip(bars, conditions):
            row = results["conditions"].get(c)
            if row:
                ax.annotate(
                    f"{row['n_correct']}/{row['n_questions']}",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize=8,
                )
    ax.set_xticks([i + width * (len(runs) - 1) / 2 for i in range(len(conditions))], conditions)
    ax.set_ylabel("closed-book accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Single-passage knowledge incorporation")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    out = args.out or args.run_dirs[0] / "table.png"
    fig.savefig(out, dpi=130)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""`python -m esc.report <folder>`: tables and a chart of every finished run below a folder (e.g. a sweep).

One table per model and data set: rows are calibrators, columns quant presets (bit settings); each cell is the
quantized metric with its relative change from the FP reference, which has its own column. Runs that differ only
in their seed are averaged. A detail table follows with one row per (model, data set, quant, calibrator): the
number of seeds, the metric, its relative change from FP (for one seed with the run's 95% paired bootstrap interval
over clips, which says whether the change can be told from zero) and the fidelity to FP as mean ± standard deviation
over seeds, the agreement with FP, and the PTQ and calibration times. Writes `report.md`, `report.csv` and
`report.png` into the folder (or `--out`).
"""

from __future__ import annotations

import argparse
import csv
import io
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from statistics import mean, stdev

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402

from esc.results import find_results, write_atomic  # noqa: E402
from esc.run_labels import calibrator_labels, quant_labels, read_run  # noqa: E402


def tables(runs: Sequence[dict]) -> list[dict]:
    """Group runs by (model, dataset) into tables: rows, columns, cells {(row, column): (quantized, fp)}."""
    grouped = defaultdict(list)
    for run, label, quant in zip(runs, calibrator_labels(runs), quant_labels(runs)):
        grouped[(run["model"], run["dataset"], run["metric"])].append((label, quant, run))
    result = []
    for (model, dataset, metric), items in sorted(grouped.items()):
        values = defaultdict(list)
        for label, quant, run in items:
            values[(label, quant)].append((run["quantized"], run["fp"]))
        cells = {key: (mean(q for q, _ in vs), mean(f for _, f in vs)) for key, vs in values.items()}
        result.append({"model": model, "dataset": dataset, "metric": metric,
                       "rows": sorted({r for r, _ in cells}), "columns": sorted({c for _, c in cells}),
                       "fp": mean(fp for _, fp in cells.values()), "cells": cells})
    return result


def relative(quantized: float, fp: float) -> float | None:
    return (quantized - fp) / fp if fp else None


def cell_text(cell: tuple[float, float] | None) -> str:
    if cell is None:
        return "-"
    rel = relative(*cell)
    return f"{cell[0]:.4f} ({'n/a' if rel is None else f'{rel:+.1%}'})"


def markdown(table_list: Sequence[dict]) -> str:
    """All tables as Markdown sections."""
    out = []
    for t in table_list:
        out += [f"## {t['model']} on {t['dataset']} ({t['metric']}; FP reference {t['fp']:.4f})", "",
                "| calibrator | FP | " + " | ".join(t["columns"]) + " |",
                "| --- | --- | " + " | ".join("---" for _ in t["columns"]) + " |"]
        for row in t["rows"]:
            cells = [cell_text(t["cells"].get((row, c))) for c in t["columns"]]
            out.append(f"| {row} | {t['fp']:.4f} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def spread(values: Sequence[float | None], digits: int = 4) -> str:
    """Mean ± sample standard deviation (the mean alone for one value; '-' when there is none)."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    text = f"{mean(values):.{digits}f}"
    return text + (f" ± {stdev(values):.{digits}f}" if len(values) > 1 else "")


def change_text(group: Sequence[dict]) -> str:
    """Relative change from FP: mean ± standard deviation over seeds, or one run's change with its interval."""
    changes = [r.get("relative_change") for r in group]
    if len(group) > 1 or changes[0] is None:
        text = spread([100 * c if c is not None else None for c in changes], 1)
        return text + ("%" if text != "-" else "")
    interval = group[0].get("relative_change_interval")
    return f"{changes[0]:+.1%}" + (f" [{interval[0]:+.1%}, {interval[1]:+.1%}]" if interval else "")


def details_markdown(runs: Sequence[dict]) -> str:
    """One row per (model, data set, quant, calibrator label), seeds pooled, as a Markdown table."""
    grouped = defaultdict(list)
    for run, label, quant in zip(runs, calibrator_labels(runs), quant_labels(runs)):
        grouped[(run["model"], run["dataset"], quant, label)].append(run)
    out = ["## Details (mean ± standard deviation over seeds)", "",
           "| model | dataset | quant | calibrator | seeds | metric | FP | quantized | change [95% interval] "
           "| fidelity_kl | agreement | ptq s | calib s |", "| --- " * 13 + "|"]
    for (model, dataset, quant, label), group in sorted(grouped.items()):
        ptq_seconds = [sum(r.get("seconds", 0.0) for r in run.get("ptq_reports", [])) for run in group]
        out.append(f"| {model} | {dataset} | {quant} | {label} | {len(group)} | {group[0]['metric']} "
                   f"| {mean(r['fp'] for r in group):.4f} | {spread([r['quantized'] for r in group])} "
                   f"| {change_text(group)} "
                   f"| {spread([r.get('fidelity_kl') for r in group])} "
                   f"| {spread([r.get('agreement') for r in group], 3)} | {spread(ptq_seconds, 1)} "
                   f"| {spread([r['calib_seconds'] for r in group], 1)} |")
    return "\n".join(out + [""])


def csv_text(table_list: Sequence[dict]) -> str:
    """One CSV row per (table, calibrator): FP, then quantized value and relative change per quant preset."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    columns = sorted({c for t in table_list for c in t["columns"]})
    writer.writerow(["model", "dataset", "metric", "calibrator", "fp"]
                    + [f"{c}{suffix}" for c in columns for suffix in ("", "_relative_change")])
    for t in table_list:
        for row in t["rows"]:
            values = []
            for c in columns:
                cell = t["cells"].get((row, c))
                rel = None if cell is None else relative(*cell)
                values += ["" if cell is None else f"{cell[0]:.6g}", "" if rel is None else f"{rel:.6g}"]
            writer.writerow([t["model"], t["dataset"], t["metric"], row, f"{t['fp']:.6g}"] + values)
    return buffer.getvalue()


def chart(table_list: Sequence[dict], path: Path) -> Path:
    """Grouped bars per table: one group per quant preset, one bar per calibrator, FP as a dashed line."""
    fig, axes = plt.subplots(1, len(table_list), figsize=(5 * len(table_list), 4), squeeze=False)
    for ax, t in zip(axes[0], table_list):
        width = 0.8 / len(t["rows"])
        for i, row in enumerate(t["rows"]):
            heights = [t["cells"].get((row, c), (float("nan"), 0))[0] for c in t["columns"]]
            ax.bar([j + i * width for j in range(len(t["columns"]))], heights, width, label=row)
        ax.axhline(t["fp"], color="black", linestyle="--", linewidth=1, label="FP")
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(t["columns"]))], t["columns"])
        ax.set_title(f"{t['model']} / {t['dataset']}")
        ax.set_ylabel(t["metric"])
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def report(folder: str | Path, out: str | Path | None = None) -> dict[str, Path]:
    """Write report.md, report.csv and report.png for every results.json below `folder`; return their paths."""
    paths = find_results(folder)
    if not paths:
        raise FileNotFoundError(f"no results.json below {folder}")
    runs = [read_run(p) for p in paths]
    table_list = tables(runs)
    out = Path(out or folder)
    written = {"markdown": write_atomic(out / "report.md", markdown(table_list) + "\n" + details_markdown(runs)),
               "csv": write_atomic(out / "report.csv", csv_text(table_list))}
    written["chart"] = chart(table_list, out / "report.png")
    return written


def main(argv: list[str] | None = None) -> None:
    """Command line: `python -m esc.report FOLDER [--out DIR]`."""
    parser = argparse.ArgumentParser(prog="python -m esc.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="searched recursively for results.json")
    parser.add_argument("--out", type=Path, default=None, help="where to write the report (default: FOLDER)")
    args = parser.parse_args(argv)
    try:
        written = report(args.folder, args.out)
    except FileNotFoundError as err:
        parser.exit(1, f"error: {err}\n")
    print(Path(written["markdown"]).read_text(), end="")
    print("wrote " + ", ".join(str(p) for p in written.values()))


if __name__ == "__main__":
    main()

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
from omegaconf import OmegaConf

matplotlib.use("Agg")  # files only; no display on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402

from esc.results import (ID_NEUTRAL, calibration_options, find_results, model_options, ptq_options,  # noqa: E402
                         quant_options, read_json, write_atomic)


# Calibrator settings that do not change a run's result (a resumed search ends where an uninterrupted one does).
NOT_ROW_OPTIONS = {"seed", "checkpoint_dir", "resume"}
_NONE = object()  # a setting a run does not have (no neutral value)


def _row_options(run: dict) -> dict:
    """The settings that define a row: the calibrator's options, which calibration clips it saw (size, folder,
    filter), each PTQ stage's options (as `stage.option`) and the model's placement rules and front-end filter.
    Seeds (the calibration draw's, a calibrator's own sampling seed: by default the run's) are not: runs differing
    only in them are pooled into one row's mean and spread. Settings added later are left out at the value that
    reproduces the runs made before them (`ID_NEUTRAL`), so those runs and newer ones at that value share a row."""
    neutral = {f"{group}.{k}": v for group, values in ID_NEUTRAL.items() for k, v in values.items()}
    options = {k: v for k, v in run.get("calibrator_options", {}).items()
               if k not in NOT_ROW_OPTIONS and neutral.get(f"calibrator.{k}", _NONE) != v}
    options.update({k: v for k, v in run.get("calibration_options", {}).items() if k != "calibration_seed"})
    names = run.get("ptq") or []
    for i, (name, stage) in enumerate(zip(names, run.get("ptq_options") or [])):
        prefix = name if names.count(name) == 1 else f"{name}#{i}"
        options.update({f"{prefix}.{k}": v for k, v in stage.items()})
    options.update({k: v for k, v in (run.get("model_options") or {}).items()
                    if neutral.get(f"model.{k}", _NONE) != v and v != []})
    return options


def read_run(path: Path) -> dict:
    """One run's results.json; settings that results.json did not record when the run was written (its
    calibration clips, PTQ stage options, model placement) come from the resolved `config.yaml` beside it, so the
    run is not pooled with runs of other settings."""
    run = read_json(path)
    config = path.parent / "config.yaml"
    missing = [key for key in ("calibration_options", "ptq_options", "model_options", "quant_options")
               if key not in run]
    if missing and config.is_file():
        resolved = OmegaConf.to_container(OmegaConf.load(config))
        recorders = {"calibration_options": (calibration_options, "dataset"), "ptq_options": (ptq_options, "ptq"),
                     "model_options": (model_options, "model"), "quant_options": (quant_options, "quant")}
        for key in missing:
            recorder, group = recorders[key]
            run[key] = recorder(resolved.get(group) or {})
    return run


def _suffixes(runs: Sequence[dict], family, settings) -> list[str]:
    """Per run, " (k=v, ...)" for the `settings(run)` that differ among the runs of its `family(run)`, or ""."""
    variants = defaultdict(list)
    for run in runs:
        if settings(run) not in variants[family(run)]:
            variants[family(run)].append(settings(run))
    suffixes = []
    for run in runs:
        options = variants[family(run)]
        keys = set().union(*options)  # a setting only some runs have also tells them apart
        varying = sorted(k for k in keys if any(o.get(k, _NONE) != options[0].get(k, _NONE) for o in options))
        own = settings(run)
        shown = [f"{k}={own[k]}" for k in varying if k in own]
        suffixes.append(f" ({', '.join(shown)})" if shown else "")
    return suffixes


def calibrator_labels(runs: Sequence[dict]) -> list[str]:
    """Row label per run: the PTQ stages (if any) and the calibrator name, plus the settings (`_row_options`) that
    tell apart runs sharing that calibrator and chain (e.g. `rotation + mse (rotation.convolutions=True)`)."""
    suffixes = _suffixes(runs, lambda run: (run["calibrator"], tuple(run.get("ptq") or [])), _row_options)
    labels = []
    for run, suffix in zip(runs, suffixes):
        stages = run.get("ptq") or []
        label = run["calibrator"] + suffix
        labels.append(f"{'+'.join(stages)} + {label}" if stages else label)  # PTQ chains are rows of their own
    return labels


def _flat(value: dict, prefix: str = "") -> dict:
    """A nested config as {dotted.key: leaf value} (lists, such as rules, are leaves)."""
    flat = {}
    for key, item in value.items():
        if isinstance(item, dict) and item:
            flat.update(_flat(item, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = item
    return flat


def quant_labels(runs: Sequence[dict]) -> list[str]:
    """Column label per run: its quant preset's name, plus the preset settings that tell apart runs of that name
    (an override such as `quant.activation.symmetric=false` is a column of its own, not pooled with the preset)."""
    suffixes = _suffixes(runs, lambda run: run["quant"], lambda run: _flat(run.get("quant_options") or {}))
    return [run["quant"] + suffix for run, suffix in zip(runs, suffixes)]


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

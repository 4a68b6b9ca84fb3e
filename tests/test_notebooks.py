"""The notebooks' code runs against what esc writes (so they cannot silently rot): each is executed cell by cell
on a tiny sweep, with its parameters (the first code cell) pointed at it."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import pytest

from audio_folders import write_folder
from run_helpers import run_cli

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
TINY = ("dataset=folder", "logger=csv", "quant=w8a4", "dataset.calibration_size=3")
MODELS = ("ast_tiny", "wav2vec2_kws_tiny")


def code_cells(name: str) -> list[str]:
    cells = json.loads((NOTEBOOKS / name).read_text())["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]


@pytest.fixture(scope="module")
def mse_and_esc_sweep(tmp_path_factory):
    """Two tiny models at W8A4, each calibrated with MSE and with a short ESC search, on one tiny audiofolder."""
    tmp = tmp_path_factory.mktemp("nb")
    data, out = write_folder(tmp / "kws"), tmp / "out"
    for model in MODELS:
        common = (f"model={model}", *TINY, f"dataset.path={data}", f"out_dir={out}")
        run_cli("esc.run", *common, "calibrator=mse", cwd=tmp)
        run_cli("esc.run", *common, "calibrator=esc", "calibrator.max_evals=30", "calibrator.popsize=6", cwd=tmp)
    return out


def test_calibrator_comparison_runs_on_a_sweep(mse_and_esc_sweep, capsys):
    matplotlib.use("Agg")  # plt.show() draws nothing
    first, *rest = code_cells("calibrator_comparison.ipynb")
    namespace: dict = {}
    exec(first, namespace)
    assert {"SWEEP", "BASE", "OTHER"} <= set(namespace)
    namespace["SWEEP"] = mse_and_esc_sweep
    for cell in rest:
        exec(cell, namespace)
    printed = capsys.readouterr().out
    for model in MODELS:  # one row per model and calibrator in the printed table
        rows = [line.split(" | ") for line in printed.splitlines() if line.startswith(f"| {model} |")]
        assert sorted(row[3] for row in rows) == ["esc", "mse"]
    # each model's ESC scales are compared with its own MSE scales, never with the other model's
    assert "2 pairs of mse and esc runs compared" in printed
    assert sorted(key[0] for key in namespace["compared"]) == sorted(MODELS)
    for shifts in namespace["compared"].values():
        assert any(shift != 0.0 for shift in shifts.values())  # the search moved something, and the notebook saw it

"""A 2x2 sweep through the CLI, its report, and a re-run of the sweep that computes nothing."""

import csv
import json

import pytest
import torch
import yaml

from audio_folders import write_folder
from esc.report import report, tables
from esc.run_labels import calibrator_labels, quant_labels, read_run
from run_helpers import run_cli

SWEEP = ("-m", "model=ast_tiny", "dataset=folder", "logger=csv", "calibrator=percentile",
         "calibrator.percentile=99.0,99.99", "quant=w8a8,w4a4", "dataset.calibration_size=3")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    args = (*SWEEP, f"dataset.path={write_folder(tmp / 'kws')}", f"out_dir={tmp / 'out'}")
    run_cli("esc.run", *args, cwd=tmp)
    return tmp, args


def test_sweep_report_has_four_cells(sweep):
    tmp, _ = sweep
    out = tmp / "out"
    assert len(list(out.rglob("results.json"))) == 4
    written = report(out)
    text = written["markdown"].read_text()
    assert "| calibrator | FP | w4a4 | w8a8 |" in text
    rows = [line for line in text.splitlines() if line.startswith("| percentile")]
    assert [r.split(" |")[0] for r in rows] == ["| percentile (percentile=99.0)", "| percentile (percentile=99.99)"]
    assert all(r.count("%)") == 2 for r in rows)  # two quantized cells with their relative change per row
    with open(written["csv"]) as f:
        table = list(csv.DictReader(f))
    assert len(table) == 2 and all(row["w8a8"] and row["w4a4_relative_change"] for row in table)
    assert written["chart"].stat().st_size > 1000


def test_swept_percentile_reaches_the_scales(sweep):
    tmp, _ = sweep
    w8 = sorted((tmp / "out").glob("ast_tiny/folder/w8a8/percentile/*/scales.pt"))
    assert len(w8) == 2
    a, b = (torch.load(p, weights_only=True) for p in w8)
    activation = [k for k in a if k.endswith("input_quantizer")]
    assert any(not torch.equal(a[k]["scale"], b[k]["scale"]) for k in activation)


def test_rerun_of_the_sweep_computes_nothing(sweep):
    tmp, args = sweep
    files = {p: p.stat().st_mtime_ns for p in (tmp / "out").rglob("*") if p.suffix in (".json", ".pt", ".yaml")}
    done = run_cli("esc.run", *args, cwd=tmp)
    assert (done.stdout + done.stderr).count("skipped:") == 4
    assert {p: p.stat().st_mtime_ns for p in files} == files
    assert len(list((tmp / "out" / "multirun").glob("*/multirun.yaml"))) == 2  # one record per sweep invocation


def test_labels_show_only_the_options_that_differ():
    runs = [{"calibrator": "mse", "calibrator_options": {"num_candidates": 256, "weight_method": "minmax"}},
            {"calibrator": "minmax", "calibrator_options": {"weight_method": "minmax"}},
            {"calibrator": "mse", "calibrator_options": {"num_candidates": 64, "weight_method": "minmax"}}]
    assert calibrator_labels(runs) == ["mse (num_candidates=256)", "minmax", "mse (num_candidates=64)"]


def test_a_calibrators_sampling_seed_pools_runs_instead_of_splitting_rows():
    runs = [{"calibrator": "esc", "calibrator_options": {"seed": seed, "max_evals": 300}} for seed in (0, 1, 2)]
    runs.append({"calibrator": "esc", "calibrator_options": {"seed": 0, "max_evals": 600}})
    assert calibrator_labels(runs) == ["esc (max_evals=300)"] * 3 + ["esc (max_evals=600)"]


def test_calibration_sets_of_other_sizes_are_rows_of_their_own_but_their_draws_are_not():
    def run(size, draw):
        return {"calibrator": "mse", "calibrator_options": {},
                "calibration_options": {"calibration_size": size, "calibration_seed": draw}}

    labels = calibrator_labels([run(128, 0), run(128, 1), run(512, 0)])
    assert labels == ["mse (calibration_size=128)"] * 2 + ["mse (calibration_size=512)"]


def test_runs_without_calibration_options_take_them_from_their_config(sweep, tmp_path):
    root, _ = sweep
    recorded = next((root / "out").rglob("results.json"))
    old = json.loads(recorded.read_text())
    expected = old.pop("calibration_options")
    for size in (128, 512):
        run_dir = tmp_path / str(size)
        run_dir.mkdir()
        (run_dir / "results.json").write_text(json.dumps(old))
        config = yaml.safe_load((recorded.parent / "config.yaml").read_text())
        config["dataset"]["calibration_size"] = size
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    runs = [read_run(tmp_path / str(size) / "results.json") for size in (128, 512)]
    assert runs[0]["calibration_options"] == {**expected, "calibration_size": 128}
    assert calibrator_labels(runs) == [f"{old['calibrator']} (calibration_size={n})" for n in (128, 512)]
    assert read_run(recorded) == json.loads(recorded.read_text())  # recorded options are kept as they are


def test_report_of_an_empty_folder_fails(tmp_path):
    with pytest.raises(FileNotFoundError, match="no results.json"):
        report(tmp_path)


def test_ptq_chains_get_rows_of_their_own():
    runs = [{"calibrator": "mse", "calibrator_options": {}, "ptq": []},
            {"calibrator": "mse", "calibrator_options": {}, "ptq": ["smoothquant", "gptq"]}]
    assert calibrator_labels(runs) == ["mse", "smoothquant+gptq + mse"]


def test_ptq_stage_options_split_rows_and_plain_runs_add_no_noise():
    def run(ptq, options, rules=None):
        return {"calibrator": "mse", "calibrator_options": {}, "ptq": ptq, "ptq_options": options,
                "model_options": {"rules": rules or [], "highpass_hz": None}}

    runs = [run([], []), run(["rotation"], [{"convolutions": True, "seed": 0}]),
            run(["rotation"], [{"convolutions": False, "seed": 0}]),
            run(["smoothquant"], [{"alpha": 0.5}]), run([], [], rules=[{"match": "*.probs_quantizer", "grid": "log2"}])]
    assert calibrator_labels(runs) == [
        "mse", "rotation + mse (rotation.convolutions=True)", "rotation + mse (rotation.convolutions=False)",
        "smoothquant + mse", "mse (rules=[{'match': '*.probs_quantizer', 'grid': 'log2'}])"]


def test_settings_at_their_neutral_value_share_a_row_with_runs_from_before_them():
    old = {"calibrator": "esc", "calibrator_options": {"max_evals": 600}}
    new = {"calibrator": "esc", "calibrator_options": {"max_evals": 600, "start_bias_correction": False,
                                                       "search": None, "checkpoint_dir": "/tmp/x", "resume": True}}
    on = {"calibrator": "esc", "calibrator_options": {"max_evals": 600, "start_bias_correction": True}}
    assert calibrator_labels([old, new, on]) == ["esc", "esc", "esc (start_bias_correction=True)"]


def test_an_overridden_quant_preset_is_a_column_of_its_own():
    def run(quant, symmetric, bits=8):
        return {"model": "m", "dataset": "d", "metric": "accuracy", "fp": 0.8, "quantized": 0.7, "calibrator": "mse",
                "calibrator_options": {}, "quant": quant, "quant_options": {
                    "weight": {"bits": bits}, "activation": {"bits": bits, "symmetric": symmetric}}}

    runs = [run("w8a8", True), run("w8a8", False), run("w4a4", True, bits=4)]
    assert quant_labels(runs) == ["w8a8 (activation.symmetric=True)", "w8a8 (activation.symmetric=False)", "w4a4"]
    [table] = tables(runs)
    assert table["columns"] == ["w4a4", "w8a8 (activation.symmetric=False)", "w8a8 (activation.symmetric=True)"]


def test_runs_without_ptq_options_take_them_from_their_config(tmp_path):
    labels = []
    for guard in (True, False):
        run_dir = tmp_path / str(guard)
        run_dir.mkdir()
        (run_dir / "results.json").write_text(json.dumps({"calibrator": "mse", "calibrator_options": {},
                                                          "ptq": ["bias_correction"]}))
        config = {"model": {"name": "m", "rules": [], "highpass_hz": None}, "dataset": {"calibration_size": 128},
                  "quant": {"name": "w8a8", "activation": {"bits": 8}},
                  "ptq": {"name": "bias_correction", "stages": [{"_target_": "x.BiasCorrection", "guard": guard}]}}
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
        labels.append(read_run(run_dir / "results.json"))
    assert labels[0]["ptq_options"] == [{"guard": True}] and labels[0]["model_options"]["rules"] == []
    assert labels[0]["quant_options"] == {"activation": {"bits": 8}}
    assert calibrator_labels(labels) == [f"bias_correction + mse (bias_correction.guard={g})" for g in (True, False)]


def test_details_pool_seeds_with_their_spread():
    from esc.report import details_markdown

    def run(seed, wer, kl):
        return {"model": "m", "dataset": "d", "quant": "w8a8", "metric": "wer", "fp": 0.1, "quantized": wer,
                "relative_change": wer / 0.1 - 1,
                "fidelity_kl": kl, "agreement": 0.5, "calib_seconds": 10.0, "seed": seed, "calibrator": "esc",
                "calibrator_options": {}, "ptq": ["gptq"], "ptq_reports": [{"seconds": 2.0}]}

    text = details_markdown([run(0, 0.10, 0.01), run(1, 0.12, 0.03), run(2, 0.14, 0.05)])
    row = next(line for line in text.splitlines() if line.startswith("| m |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3:8] == ["gptq + esc", "3", "wer", "0.1000", "0.1200 ± 0.0200"]
    assert cells[8] == "20.0 ± 20.0%"  # relative change over seeds
    assert cells[9] == "0.0300 ± 0.0200" and cells[11] == "2.0 ± 0.0"
    one = details_markdown([run(0, 0.12, 0.01) | {"relative_change_interval": [-0.1, 0.5]}])
    row = next(line for line in one.splitlines() if line.startswith("| m |"))
    assert "| +20.0% [-10.0%, +50.0%] |" in row

"""End to end: `esc.run` on tiny models and tiny folders writes complete results, reloadable scales, W&B files."""

import json

import lightning as L
import numpy as np
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from audio_folders import write_folder
from esc.data.datamodule import AudioDataModule
from esc.evaluate import evaluate
from esc.experiment import run_experiment
from esc.inspect import quantized_adapter
from esc.quant.model import load_scales
from run_helpers import compose_run, run_cli

FIELDS = {"model", "dataset", "w_bits", "a_bits", "calibrator", "ptq", "seed", "metric", "fp", "quantized",
          "relative_change", "n_calib", "n_eval", "calib_seconds", "eval_seconds", "n_quantizers", "n_bad_files",
          "fidelity_kl", "agreement", "bad_files", "relative_change_interval", "calibration_options", "ptq_options",
          "model_options", "quant_options"}


def check_interval(results):
    """The bootstrap interval brackets the measured change, or is None where the change is undefined."""
    interval = results["relative_change_interval"]
    if results["relative_change"] is None:
        assert interval is None
    elif interval is not None:
        low, high = interval
        assert low <= results["relative_change"] <= high


def test_cli_recognition_run_with_wandb(tmp_path):
    data = write_folder(tmp_path / "asr", task="recognition", n_calibration=2, n_evaluation=2)
    done = run_cli("esc.run", "model=whisper_tiny", "dataset=folder", f"dataset.path={data}", "calibrator=minmax",
                   "logger=wandb", f"out_dir={tmp_path / 'out'}", "threads=2", cwd=tmp_path)
    [results_file] = (tmp_path / "out").rglob("results.json")
    run_dir = results_file.parent
    results = json.loads(results_file.read_text())
    assert FIELDS | {"cer"} <= set(results)
    assert (results["model"], results["w_bits"], results["a_bits"], results["calibrator"]) == ("whisper_tiny", 8, 8,
                                                                                                "minmax")
    assert (results["n_calib"], results["n_eval"], results["n_bad_files"], results["ptq"]) == (2, 2, 0, [])
    calibration = results["calibration_options"]  # which clips: size, folder, filter, packing, draw
    assert calibration["calibration_seed"] == 0 and "calibration_size" in calibration
    assert results["fidelity_kl"] >= 0 and 0 <= results["agreement"] <= 1 and results["n_quantizers"] > 0
    assert set(results["cer"]) == {"fp", "quantized"}
    check_interval(results)
    assert list(run_dir.glob("wandb/offline-run-*")), "no offline W&B run folder"
    assert (run_dir / "scales.pt").is_file() and (run_dir / "config.yaml").is_file()
    assert run_dir.parts[-4:-1] == ("folder", "w8a8", "minmax")
    assert "whisper_tiny w8a8 (W8A8) minmax: FP wer=" in done.stdout
    assert list((tmp_path / "out" / ".fp_cache").glob("whisper_tiny-folder-*.json"))


@pytest.fixture(scope="module")
def ast_run(tmp_path_factory):
    """One finished in-process run of the tiny AST (csv logger) and its config."""
    tmp = tmp_path_factory.mktemp("ast")
    cfg = compose_run("model=ast_tiny", "dataset=folder", f"dataset.path={write_folder(tmp / 'kws')}",
                      "dataset.calibration_size=3", "calibrator=percentile", "logger=csv", f"out_dir={tmp / 'out'}")
    results = run_experiment(cfg, tmp / "run")
    return cfg, tmp / "run", results


def test_results_are_complete(ast_run):
    cfg, run_dir, results = ast_run
    assert FIELDS <= set(results) and "cer" not in results
    assert results == json.loads((run_dir / "results.json").read_text())
    assert (results["metric"], results["n_calib"], results["n_eval"]) == ("accuracy", 3, 4)
    check_interval(results)
    assert results["calibrator_options"]["percentile"] == cfg.calibrator.percentile
    assert OmegaConf.load(run_dir / "config.yaml").dataset.calibration_size == 3


def test_saved_scales_rebuild_the_quantized_model(ast_run):
    cfg, run_dir, results = ast_run
    L.seed_everything(cfg.seed, verbose=False)  # the tiny model's random weights, as the run built them
    adapter = quantized_adapter(cfg.model, cfg.quant)
    load_scales(adapter.model, run_dir / "scales.pt")
    data = AudioDataModule(OmegaConf.to_container(cfg.dataset, resolve=True), adapter)
    data.setup()
    fp = json.loads((run_dir / "predictions.json").read_text())
    trainer = instantiate(cfg.trainer, logger=False)
    again = evaluate(adapter, trainer, data.test_dataloader(), "reloaded", fp["fp"])
    assert again.predictions == fp["quantized"]
    assert again.fidelity_kl == pytest.approx(results["fidelity_kl"], rel=1e-6, abs=1e-12)
    assert again.fidelity_kl > 0  # the quantizers are on: outputs differ from FP


def test_saved_scales_reproduce_a_run_after_its_ptq_stages(tmp_path):
    # one calibration reused on another evaluation: the stages run again (same data and seed, so the same
    # weights) and the scales are loaded; results equal the original run's, without a statistics pass
    base = ("model=ast_tiny", "dataset=folder", f"dataset.path={write_folder(tmp_path / 'kws')}",
            "dataset.calibration_size=3", "quant=w4a8_g64", "ptq=rotation+gptq", "logger=csv")
    first = run_experiment(compose_run(*base, "calibrator=mse", f"out_dir={tmp_path / 'a'}"), tmp_path / "a" / "run")
    again = run_experiment(compose_run(*base, "calibrator=saved", f"calibrator.path={tmp_path / 'a/run/scales.pt'}",
                                       f"out_dir={tmp_path / 'b'}"), tmp_path / "b" / "run")
    assert again["calibrator"] == "saved" and again["quantized"] == first["quantized"]
    assert again["fidelity_kl"] == pytest.approx(first["fidelity_kl"], rel=1e-6) and first["fidelity_kl"] > 0
    predictions = [json.loads((tmp_path / d / "run" / "predictions.json").read_text())["quantized"] for d in "ab"]
    assert predictions[0] == predictions[1]


def test_finished_run_is_skipped(ast_run, caplog):
    cfg, run_dir, _ = ast_run
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")}
    with caplog.at_level("INFO"):
        assert run_experiment(cfg, run_dir) is None
    assert "skipped" in caplog.text
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")} == before


@pytest.mark.parametrize("ptq, phase", [("smoothquant", "before_quantize"), ("gptq", "after_weight_calibration"),
                                        ("bias_correction", "after_calibration")])
def test_ptq_stages_run_in_their_phase(tmp_path, ptq, phase):
    cfg = compose_run("model=ast_tiny", "dataset=folder", f"dataset.path={write_folder(tmp_path / 'kws')}",
                      f"ptq={ptq}", "calibrator=minmax", "logger=csv", f"out_dir={tmp_path / 'out'}")
    results = run_experiment(cfg, tmp_path / "run")
    assert [r["phase"] for r in results["ptq_reports"]] == [phase]
    assert results["ptq"] == [results["ptq_reports"][0]["stage"]]
    [options] = results["ptq_options"]  # the stage's settings, which a report needs to tell chains apart
    assert options == {k: v for k, v in OmegaConf.to_container(cfg.ptq.stages[0], resolve=True).items() if k != "_target_"}


def test_esc_run_records_its_search(tmp_path):
    cfg = compose_run("model=ast_tiny", "dataset=folder", f"dataset.path={write_folder(tmp_path / 'kws')}",
                      "calibrator=esc", "calibrator.max_generations=2", "calibrator.popsize=4", "quant=w8a4",
                      "calibrator.local_search=true", "calibrator.local_evals=10", "logger=csv",
                      "calibrator.search=['*.attention.*']", f"out_dir={tmp_path / 'out'}")
    results = run_experiment(cfg, tmp_path / "run")
    search = results["search"]
    assert search["local_blocks"] == 2  # ast_tiny's two transformer blocks
    assert search["searched_scales"] == 2 * 8  # per block: four projection inputs, four attention matmul inputs
    assert json.loads((tmp_path / "run" / "local_search.json").read_text()).keys() == {
        "audio_spectrogram_transformer.layers.0", "audio_spectrogram_transformer.layers.1"}
    assert results["calibrator"] == "esc" and search["generations"] == 2
    assert search["best_fitness"] <= search["start_fitness"]
    assert search["evaluations"] >= 1 + 2 * 4  # the start, then two generations of four candidates
    history = json.loads((tmp_path / "run" / "search_history.json").read_text())
    assert [h["generation"] for h in history] == [1, 2]
    assert (tmp_path / "run" / "search_convergence.png").stat().st_size > 0
    assert np.load(tmp_path / "run" / "search_snapshots.npy").shape[0] == 2  # one solution per generation


def test_local_step_alone_is_recorded(tmp_path):
    cfg = compose_run("model=ast_tiny", "dataset=folder", f"dataset.path={write_folder(tmp_path / 'kws')}",
                      "calibrator=esc", "calibrator.max_evals=1", "calibrator.local_search=true",
                      "calibrator.local_evals=10", "quant=w8a4", "logger=csv", f"out_dir={tmp_path / 'out'}")
    results = run_experiment(cfg, tmp_path / "run")
    assert results["search"]["local_blocks"] == 2 and "generations" not in results["search"]
    assert (tmp_path / "run" / "local_search.json").is_file()


def test_start_bias_correction_reaches_the_run_and_is_recorded(tmp_path):
    cfg = compose_run("model=ast_tiny", "dataset=folder", f"dataset.path={write_folder(tmp_path / 'kws')}",
                      "calibrator=esc", "calibrator.max_generations=1", "calibrator.popsize=4", "quant=w8a4",
                      "calibrator.start_bias_correction=true", "logger=csv", f"out_dir={tmp_path / 'out'}")
    search = run_experiment(cfg, tmp_path / "run")["search"]
    before, after = search["start_bias_kl"]
    assert after <= before and search["start_fitness"] == pytest.approx(after, rel=1e-6)
    report = json.loads((tmp_path / "run" / "start_bias_correction.json").read_text())
    assert sum(r["kept"] for r in report["layers"].values()) == search["start_bias_kept"]


def test_budget_curve_scores_the_search_as_it_stood_at_each_budget(tmp_path):
    common = ("model=ast_tiny", "dataset=folder", f"dataset.path={write_folder(tmp_path / 'kws')}", "quant=w8a4",
              "logger=csv", f"out_dir={tmp_path / 'out'}")
    cfg = compose_run(*common, "calibrator=esc", "calibrator.max_generations=3", "calibrator.popsize=4",
                      "budget_curve=[0,5,1000]")
    results = run_experiment(cfg, tmp_path / "esc")
    start, middle, end = results["budget_curve"]
    assert [p["budget"] for p in results["budget_curve"]] == [0, 5, 1000]
    assert (start["generation"], middle["generation"], end["generation"]) == (0, 1, 3)
    assert end["fidelity_kl"] == pytest.approx(results["fidelity_kl"], rel=1e-9)  # final scales restored
    assert end["accuracy"] == results["quantized"]
    mse = run_experiment(compose_run(*common, "calibrator=mse"), tmp_path / "mse")
    assert start["fidelity_kl"] == pytest.approx(mse["fidelity_kl"], rel=1e-6)  # budget 0 is the MSE start


def test_fp_cache_is_shared_by_settings_that_only_change_calibration(tmp_path):
    from esc.results import fp_cache_path

    base = ("model=ast_tiny", "dataset=folder", f"dataset.path={tmp_path}", f"out_dir={tmp_path / 'out'}")
    reference = fp_cache_path(compose_run(*base))
    for override in ("dataset.pack_calibration=false", "dataset.calibration_size=2", "seed=3", "quant=w4a4",
                     'model.rules=[{match:"*.probs_quantizer",grid:log2}]'):
        assert fp_cache_path(compose_run(*base, override)) == reference, override
    assert fp_cache_path(compose_run(*base, "dataset.eval_limit=1")) != reference

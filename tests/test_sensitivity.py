"""Sensitivity analysis: role groups partition the quantizers, switching all off gives the FP model."""

import json

import pytest
from hydra import compose, initialize_config_dir

from audio_folders import write_folder
from run_helpers import CONF, run_cli

from esc.sensitivity import format_table, run_sensitivity


def compose_sensitivity(tmp_path, *overrides):
    data = write_folder(tmp_path / "kws")
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("sensitivity", overrides=["model=ast_tiny", "dataset=folder", f"dataset.path={data}",
                                                 "quant=w4a4", "calibrator=mse", "logger=csv", *overrides])


def test_role_groups_partition_the_quantizers_and_are_ranked_by_recovered_kl(tmp_path):
    result = run_sensitivity(compose_sensitivity(tmp_path, "dataset.batch_size=1", "eval_batches=2"), tmp_path / "out")
    assert result["eval_batches"] == 2  # of the 4 one-clip evaluation batches
    rows = result["groups"]
    assert result["kl"] > 0  # W4A4 on the tiny AST is not its FP model
    assert sum(r["quantizers"] for r in rows) == result["n_quantizers"] > len(rows)  # layers folded into roles
    assert any(r["group"].startswith("audio_spectrogram_transformer.layers.*.") for r in rows)
    assert [r["recovered"] for r in rows] == sorted((r["recovered"] for r in rows), reverse=True)
    assert all(r["kl_without"] == pytest.approx(result["kl"] - r["recovered"]) for r in rows)
    written = json.loads((tmp_path / "out" / "sensitivity.json").read_text())
    assert written["groups"] == rows and written["quant"] == "w4a4"
    assert format_table(result, 3).count("\n") == 3


def test_every_quantizer_off_is_the_fp_model_and_unknown_globs_fail(tmp_path):
    result = run_sensitivity(compose_sensitivity(tmp_path, "groups=['*','*.probs_quantizer']"), tmp_path / "out")
    everything = next(r for r in result["groups"] if r["group"] == "*")
    assert everything["kl_without"] == pytest.approx(0.0, abs=1e-6)
    assert everything["share"] == pytest.approx(1.0, abs=1e-2)
    with pytest.raises(ValueError, match=r"no enabled quantizer matches \['\*decoder\*'\]"):
        run_sensitivity(compose_sensitivity(tmp_path, "groups=['*decoder*']"), tmp_path / "out2")


def test_cli_prints_show_groups_and_writes_every_one(tmp_path):
    data = write_folder(tmp_path / "kws")
    done = run_cli("esc.sensitivity", "model=ast_tiny", "dataset=folder", f"dataset.path={data}", "quant=w4a4",
                   "calibrator=minmax", "logger=csv", f"out_dir={tmp_path / 'out'}", "show=2", cwd=tmp_path)
    rows = [line for line in done.stdout.splitlines() if line.strip().endswith("_quantizer")]
    [written] = (tmp_path / "out").rglob("sensitivity.json")
    assert len(rows) == 2 < len(json.loads(written.read_text())["groups"])

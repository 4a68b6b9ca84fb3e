"""Every option of every config group of `esc.run` composes and builds its objects; bad choices fail clearly."""

import copy
from pathlib import Path

import datasets
import huggingface_hub
import lightning as L
import pytest
import torch
from hydra.errors import MissingConfigException
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from audio_folders import write_folder
from esc.data.bundled import BUNDLED
from esc.data.datamodule import AudioDataModule
from esc.data.hub import DatasetUnavailableError
from esc.models.base import CheckpointError
from esc.models.registry import build_adapter
from esc.quant.model import quantize_model, quantizers
from esc.quant.placement import Placement
from esc.results import config_id, fp_cache_path
from run_helpers import CONF, ROOT, compose_run


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.fixture
def offline(monkeypatch):
    """No network here: make the hub clients fail at once instead of retrying."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)


@pytest.fixture(scope="module")
def ast_adapter():
    return build_adapter(OmegaConf.to_container(compose_run("model=ast_tiny").model))


def test_defaults_are_the_documented_ones():
    cfg = compose_run(hydra=True)
    assert cfg.hydra.runtime.choices["model"] == "whisper_tiny_en"
    assert (cfg.dataset.name, cfg.quant.name, cfg.ptq.stages) == ("sentences_small", "w8a8", [])
    assert cfg.calibrator._target_.endswith("MSECalibrator")
    assert cfg.logger._target_.endswith("WandbLogger") and cfg.logger.offline is True
    assert "${esc_config_id:}" in OmegaConf.to_container(cfg.hydra.run)["dir"]


@pytest.mark.parametrize("name", [n for n in options("model") if not n.endswith("_hub")])
def test_local_models_build(name):
    cfg = compose_run(f"model={name}").model
    assert build_adapter(OmegaConf.to_container(cfg, resolve=True)).task == cfg.task


@pytest.mark.parametrize("name", [n for n in options("model") if n.endswith("_hub")])
def test_hub_models_fail_clearly_offline(name, offline):
    with pytest.raises(CheckpointError, match="model.path"):
        build_adapter(OmegaConf.to_container(compose_run(f"model={name}").model, resolve=True))


@pytest.mark.parametrize("name", options("quant"))
def test_quant_presets_place_quantizers(name):
    model = build_adapter(OmegaConf.to_container(compose_run("model=ast_tiny").model)).model
    quant = OmegaConf.to_container(compose_run(f"quant={name}").quant, resolve=True)
    placement = Placement.from_config(quant)
    quantize_model(model, placement)
    weights = [q for q in quantizers(model, "weight")]
    # layers a rule sets to other bits (the 8-bit first and last layers of the group presets) aside
    ruled = {q.name for q in weights if any(r.matches(q.name) and "bits" in r.overrides for r in placement.rules)}
    assert len(ruled) <= 2 and len(weights) > len(ruled)
    assert all(q.bits == quant["weight"]["bits"] for q in weights if q.name not in ruled)
    assert all(q.enabled == quant["weight"]["enabled"] for q in weights)


@pytest.mark.parametrize(("model_name", "first_input", "first_weight"), [
    ("ast_tiny", "patch_embeddings.projection.input_quantizer", "patch_embeddings.projection.weight_quantizer"),
    ("wav2vec2_kws_tiny", "conv_layers.0.conv.input_quantizer", "conv_layers.0.conv.weight_quantizer"),
])
def test_per_token_w4a4_keeps_attention_and_one_channel_inputs_static_and_the_8_bit_layers(model_name, first_input,
                                                                                           first_weight):
    model = build_adapter(OmegaConf.to_container(compose_run(f"model={model_name}").model)).model
    quant = OmegaConf.to_container(compose_run("quant=w4a4_g64_token").quant, resolve=True)
    quantize_model(model, Placement.from_config(quant))
    activations = list(quantizers(model, "activation"))
    static_inputs = [q for q in activations if q.name.endswith(first_input)]
    inputs = [q for q in activations if q.name.endswith(".input_quantizer") and q not in static_inputs]
    attention = [q for q in activations if not q.name.endswith(".input_quantizer")]
    assert inputs and all(q.is_dynamic and q.bits == 4 and not q.spec.symmetric for q in inputs)
    # the one-channel input of the first convolution: per-token would be lossless, so 4-bit per tensor
    assert len(static_inputs) == 1 and not static_inputs[0].is_dynamic and static_inputs[0].bits == 4
    assert len(attention) == 4 * sum(1 for q in attention if q.name.endswith(".probs_quantizer")) > 0
    assert all(not q.is_dynamic and q.bits == 4 for q in attention)
    assert all(not q.spec.symmetric for q in attention if q.name.endswith(".probs_quantizer"))
    first = [q for q in quantizers(model, "weight") if q.name.endswith(first_weight)]
    assert len(first) == 1 and first[0].bits == 8 and first[0].spec.granularity == "channel"


def test_per_token_preset_takes_a_clip_ratio_from_the_command_line():
    model = build_adapter(OmegaConf.to_container(compose_run("model=ast_tiny").model)).model
    quant = compose_run("quant=w4a4_g64_token", "quant.activation.clip_ratio=0.9").quant
    quantize_model(model, Placement.from_config(OmegaConf.to_container(quant, resolve=True)))
    activations = list(quantizers(model, "activation"))
    dynamic = [q for q in activations if q.is_dynamic]
    assert dynamic and all(q.scale.item() == pytest.approx(0.9) for q in dynamic)
    assert all(q.spec.clip_ratio == 1.0 for q in activations if not q.is_dynamic)  # the static rules reset it


def test_per_token_over_one_feature_is_refused_naming_the_quantizer():
    model = build_adapter(OmegaConf.to_container(compose_run("model=wav2vec2_kws_tiny").model)).model
    quant = OmegaConf.to_container(compose_run("quant=w4a4_g64_token").quant, resolve=True)
    quant["rules"] = [rule for rule in quant["rules"] if "conv_layers.0" not in rule["match"]]
    quantize_model(model, Placement.from_config(quant))
    with pytest.raises(ValueError, match="'wav2vec2.feature_extractor.conv_layers.0.conv.input_quantizer'.*lossless"):
        model(torch.randn(1, 4000))


@pytest.mark.parametrize("name", options("calibrator"))
def test_calibrators_instantiate(name, tmp_path):
    extra = []
    if name == "saved":  # needs a scales file; without one it says which setting is missing
        with pytest.raises(Exception, match="calibrator.path"):
            instantiate(compose_run("calibrator=saved").calibrator)
        torch.save({}, tmp_path / "scales.pt")
        extra = [f"calibrator.path={tmp_path / 'scales.pt'}"]
    calibrator = instantiate(compose_run(f"calibrator={name}", "quant=w4a4", *extra).calibrator)
    assert calibrator.name == name


def test_calibrator_options_reach_the_object():
    cfg = compose_run("calibrator=percentile", "calibrator.percentile=99.5", "quant.weight_calibrator=mse")
    calibrator = instantiate(cfg.calibrator)
    assert (calibrator.percentile, calibrator.weight_method) == (99.5, "mse")


def test_esc_sampling_seed_follows_the_run_seed_unless_set():
    # a run's seed spreads over CMA-ES's own sampling, not only over the calibration draw
    assert instantiate(compose_run("calibrator=esc", "seed=3").calibrator).settings.seed == 3
    pinned = compose_run("calibrator=esc", "seed=3", "calibrator.seed=0")
    assert instantiate(pinned.calibrator).settings.seed == 0


@pytest.mark.parametrize("name", options("logger"))
def test_loggers_instantiate(name, tmp_path):
    logger = instantiate(compose_run(f"logger={name}").logger, save_dir=str(tmp_path))
    assert Path(logger.save_dir) == tmp_path


def test_trainer_and_ptq_build():
    cfg = compose_run()
    trainer = instantiate(cfg.trainer, logger=False)
    assert isinstance(trainer, L.Trainer) and trainer.accelerator.__class__.__name__ == "CPUAccelerator"
    assert "none" in options("ptq") and list(cfg.ptq.stages) == []


@pytest.mark.parametrize("launcher, target", [("basic", "BasicLauncher"), ("joblib", "JoblibLauncher"),
                                              ("submitit_slurm", "SlurmLauncher")])
def test_launchers_compose(launcher, target):
    cfg = compose_run(f"hydra/launcher={launcher}", hydra=True)
    assert cfg.hydra.launcher._target_.endswith(target)


@pytest.mark.parametrize("group", ["model", "dataset", "quant", "calibrator", "logger", "trainer", "ptq"])
def test_unknown_choice_lists_the_valid_ones(group):
    with pytest.raises(MissingConfigException) as err:
        compose_run(f"{group}=no_such_option")
    assert all(option in str(err.value) for option in options(group))


def test_config_id_follows_result_settings_only():
    base = config_id(compose_run("calibrator=percentile"))
    assert base == config_id(compose_run("calibrator=percentile", "logger=csv", "threads=1"))
    assert base != config_id(compose_run("calibrator=percentile", "calibrator.percentile=99.0"))
    assert base != config_id(compose_run("calibrator=percentile", "seed=1"))


@pytest.mark.parametrize("group, key, changed", [("calibrator", "start_bias_correction", "true"),
                                                 ("model", "highpass_hz", "300"),
                                                 ("calibrator", "search", "['*']")])
def test_settings_added_later_keep_earlier_ids_at_their_neutral_value(tmp_path, group, key, changed):
    cfg = compose_run("calibrator=esc", f"out_dir={tmp_path}")
    assert cfg[group][key] in (False, None)
    without_the_key = copy.deepcopy(cfg)
    with open_dict(without_the_key[group]):  # as composed before the setting existed
        del without_the_key[group][key]
    assert config_id(cfg) == config_id(without_the_key)
    assert fp_cache_path(cfg) == fp_cache_path(without_the_key)
    changed_cfg = compose_run("calibrator=esc", f"out_dir={tmp_path}", f"{group}.{key}={changed}")
    assert config_id(cfg) != config_id(changed_cfg)


def test_folder_dataset_builds(tmp_path, ast_adapter):
    cfg = compose_run("dataset=folder", f"dataset.path={write_folder(tmp_path)}", "dataset.calibration_size=3")
    data = AudioDataModule(OmegaConf.to_container(cfg.dataset, resolve=True), ast_adapter)
    data.setup()
    assert (len(data.calibration), len(data.evaluation), data.bad_files) == (3, 4, [])


@pytest.mark.skipif(not all((ROOT / "esc" / "assets" / n).is_dir() for n in BUNDLED),
                    reason="bundled sets not generated yet")
def test_bundled_dataset_builds():
    cfg = compose_run("model=whisper_tiny")
    adapter = build_adapter(OmegaConf.to_container(cfg.model, resolve=True))
    data = AudioDataModule(OmegaConf.to_container(cfg.dataset, resolve=True), adapter)
    data.setup()
    assert len(data.calibration) == cfg.dataset.calibration_size and data.evaluation
    assert all(e.target for e in data.calibration + data.evaluation)


@pytest.mark.parametrize("name", [n for n in options("dataset") if compose_run(f"dataset={n}").dataset.source == "hub"])
def test_hub_datasets_fail_clearly_offline(name, offline, ast_adapter):
    cfg = compose_run(f"dataset={name}")
    with pytest.raises(DatasetUnavailableError, match="HF_DATASETS_OFFLINE"):
        AudioDataModule(OmegaConf.to_container(cfg.dataset, resolve=True), ast_adapter).setup()

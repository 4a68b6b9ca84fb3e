"""`python -m esc.run [overrides]`: quantize, calibrate and evaluate one model (see conf/config.yaml).

    python -m esc.run model=whisper_tiny_en quant=w8a8 calibrator=mse
    python -m esc.run -m calibrator=minmax,percentile,mse,entropy quant=w8a8,w4a4   # a sweep
    python -m esc.report outputs/whisper_tiny_en/sentences_small                      # its tables

A run whose folder already holds results.json is skipped, so re-running a sweep only computes what is missing.
"""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from esc.experiment import run_experiment
from esc.results import register_resolvers

register_resolvers()  # the run folder name in conf/config.yaml uses ${esc_config_id:}


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_experiment(cfg, HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    main()

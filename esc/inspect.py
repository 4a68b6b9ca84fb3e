"""`python -m esc.inspect model=<name> quant=<preset>`: print the quantizer census of a model.

One line per quantizer (name, weight or activation, bits, symmetry, granularity, scale once calibrated),
then `N quantizers (W weight, A activation)`. With `scales=<file>` the scales of a finished run are loaded.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from esc.models.registry import build_adapter
from esc.quant.model import census, load_scales, quantize_model
from esc.quant.placement import Placement


def quantized_adapter(model_cfg: DictConfig, quant_cfg: DictConfig):
    """Build the model of `model_cfg` and insert quantizers as the quant preset and the model's rules say."""
    model = OmegaConf.to_container(model_cfg, resolve=True)
    placement = Placement.from_config(OmegaConf.to_container(quant_cfg, resolve=True), model.get("rules") or [])
    adapter = build_adapter(model)
    quantize_model(adapter.model, placement)
    return adapter


@hydra.main(config_path="../conf", config_name="inspect", version_base="1.3")
def main(cfg: DictConfig) -> None:
    adapter = quantized_adapter(cfg.model, cfg.quant)
    if cfg.scales:
        load_scales(adapter.model, cfg.scales)
    print(census(adapter.model))


if __name__ == "__main__":
    main()

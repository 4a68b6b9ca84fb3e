"""ESC's `search` option: the global step narrowed to the activation quantizers whose names match globs."""

from __future__ import annotations

import pytest
import torch
from test_esc import QUICK, tiny

from esc.calib.esc import ESCCalibrator
from esc.calib.mse import MSECalibrator
from esc.quant.model import quantizers

ATTENTION = "*.attention.*"  # ast_tiny's attention inputs: projections and both matmuls


def scales_by_name(model) -> dict[str, torch.Tensor]:
    return {q.name: q.scale.clone() for q in quantizers(model, "activation") if q.enabled and q.is_calibrated}


def test_only_the_matching_scales_move_and_the_rest_keep_the_mse_start():
    adapter, batches, loop = tiny("ast_tiny")
    MSECalibrator().calibrate(adapter.model, loop)
    start = scales_by_name(adapter.model)
    calibrator = ESCCalibrator(**QUICK, search=[ATTENTION])
    calibrator.bind(adapter, batches)
    calibrator.calibrate(adapter.model, loop)
    searched = set(calibrator.searched_scales)
    assert searched and searched < set(start)  # a proper subset
    assert all(".attention." in name for name in searched)
    after = scales_by_name(adapter.model)
    assert all(torch.equal(after[n], start[n]) for n in set(start) - searched)
    assert any(not torch.equal(after[n], start[n]) for n in searched)
    assert calibrator.best_fitness < calibrator.start_fitness
    everything = ESCCalibrator(**QUICK)
    everything.bind(adapter, batches)
    everything.calibrate(adapter.model, loop)
    assert set(everything.searched_scales) == set(start)


def test_a_glob_that_matches_nothing_is_refused_before_any_work():
    adapter, batches, _ = tiny("ast_tiny")
    calibrator = ESCCalibrator(**QUICK, search=[ATTENTION, "*no_such_layer*"])
    calibrator.bind(adapter, batches)

    def loop(model):
        raise AssertionError("calibration started")

    with pytest.raises(ValueError, match=r"\*no_such_layer\*"):
        calibrator.calibrate(adapter.model, loop)


@pytest.mark.parametrize("search", [[], "*attention*"])
def test_search_must_be_a_non_empty_list(search):
    with pytest.raises(ValueError, match="search must be a non-empty list"):
        ESCCalibrator(search=search)

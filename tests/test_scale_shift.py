"""esc.scale_shift: which quantizers one calibration moved against another, read from two scales.pt files."""

from __future__ import annotations

import math

import pytest
import torch
from test_esc import QUICK, tiny

from esc.calib.esc import ESCCalibrator
from esc.calib.mse import MSECalibrator
from esc.quant.model import save_scales
from esc.scale_shift import main, scale_shifts

ATTENTION = "*.attention.*"


@pytest.fixture(scope="module")
def mse_and_esc(tmp_path_factory):
    """scales.pt of an MSE calibration and of ESC searching only ast_tiny's attention inputs from it."""
    folder = tmp_path_factory.mktemp("scales")
    adapter, batches, loop = tiny("ast_tiny")
    MSECalibrator().calibrate(adapter.model, loop)
    mse = save_scales(adapter.model, folder / "mse.pt")
    calibrator = ESCCalibrator(**QUICK, search=[ATTENTION])
    calibrator.bind(adapter, batches)
    calibrator.calibrate(adapter.model, loop)
    return mse, save_scales(adapter.model, folder / "esc.pt"), set(calibrator.searched_scales)


def test_only_the_searched_quantizers_moved_by_their_true_ratio(mse_and_esc):
    mse, esc, searched = mse_and_esc
    shifts = scale_shifts(mse, esc)
    moved = {name for name, shift in shifts.items() if shift != 0.0}
    assert moved and moved <= searched
    assert all(shifts[name] == 0.0 for name in set(shifts) - searched)
    a, b = torch.load(mse, weights_only=True), torch.load(esc, weights_only=True)
    name = next(iter(moved))
    assert shifts[name] == pytest.approx(math.log(float(b[name]["scale"]) / float(a[name]["scale"])))
    assert list(shifts) == sorted(shifts, key=lambda n: -abs(shifts[n]))  # largest move first
    assert not any(n.endswith("weight_quantizer") for n in shifts)  # ast_tiny's weights are per channel
    assert scale_shifts(mse, mse) == {n: 0.0 for n in shifts}


def test_files_of_other_placements_or_not_scales_are_refused(mse_and_esc, tmp_path):
    mse, esc, _ = mse_and_esc
    fewer = torch.load(esc, weights_only=True)
    dropped = next(iter(fewer))
    del fewer[dropped]
    torch.save(fewer, tmp_path / "fewer.pt")
    with pytest.raises(ValueError, match="different quantizers"):
        scale_shifts(mse, tmp_path / "fewer.pt")
    other_bits = torch.load(esc, weights_only=True)
    other_bits[dropped]["bits"] = 8 if other_bits[dropped]["bits"] != 8 else 4
    torch.save(other_bits, tmp_path / "bits.pt")
    with pytest.raises(ValueError, match=dropped.replace(".", r"\.")):
        scale_shifts(mse, tmp_path / "bits.pt")
    torch.save({"a": torch.ones(2)}, tmp_path / "tensor.pt")
    with pytest.raises(ValueError, match="not a scales file"):
        scale_shifts(mse, tmp_path / "tensor.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        scale_shifts(mse, tmp_path / "missing.pt")


def test_the_command_line_prints_the_largest_moves(mse_and_esc, capsys):
    mse, esc, searched = mse_and_esc
    main([str(mse), str(esc), "--top", "3"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and all(line.split()[-1] in searched for line in lines[:3])
    assert lines[-1].endswith("single-scale quantizers moved")
    with pytest.raises(SystemExit):
        main([str(mse), str(mse.parent / "nothing.pt")])

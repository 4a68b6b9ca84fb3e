"""Calibrators as functions of ActivationStats: known answers, TensorRT's KL search, registry, weights."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from esc.calib.entropy import EntropyCalibrator, kl_divergences
from esc.calib.minmax import MinMaxCalibrator
from esc.calib.mse import MSECalibrator
from esc.calib.percentile import PercentileCalibrator
from esc.calib.registry import CALIBRATORS, make_calibrator
from esc.calib.stats import ActivationStats
from esc.calib.weights import calibrate_weights
from esc.quant.model import quantize_model
from esc.quant.placement import Placement
from esc.quant.quantizer import Quantizer
from esc.quant.spec import QuantSpec


def quantizer(bits=8, symmetric=True):
    return Quantizer("blk.input_quantizer", "activation", QuantSpec(bits, symmetric))


def stats_of(x: torch.Tensor, bins=2048, chunks=4) -> ActivationStats:
    s = ActivationStats("blk.input_quantizer", bins)
    for part in x.chunk(chunks):
        s.update(part)
    return s


def quant_mse(x, lo, hi, bits, symmetric=True):
    q = quantizer(bits, symmetric)
    q.set_range(lo, hi)
    return (q(x) - x).pow(2).mean().item()


@pytest.fixture(scope="module")
def normal():
    return torch.randn(1_000_000, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def laplace():
    torch.manual_seed(1)
    return torch.distributions.Laplace(0.0, 1.0).sample((200_000,))


def test_minmax_gives_the_abs_max_and_the_observed_range():
    x = torch.tensor([-3.0, 0.5, 2.0, 1.0])
    s = stats_of(x, bins=8, chunks=2)
    assert MinMaxCalibrator().compute_range(s, quantizer()) == (-3.0, 3.0)
    assert MinMaxCalibrator().compute_range(s, quantizer(symmetric=False)) == (-3.0, 2.0)


def test_percentile_is_within_one_bin_of_the_true_quantile(normal):
    s = stats_of(normal)
    lo, hi = PercentileCalibrator(99.9).compute_range(s, quantizer())
    true = float(np.quantile(normal.abs().numpy(), 0.999))
    assert lo == -hi
    assert abs(hi - true) <= s.bin_width
    # asymmetric: each tail within one bin of its quantile
    lo, hi = PercentileCalibrator(99.9).compute_range(s, quantizer(symmetric=False))
    assert abs(lo - float(np.quantile(normal.numpy(), 0.001))) <= s.bin_width
    assert abs(hi - float(np.quantile(normal.numpy(), 0.999))) <= s.bin_width
    # 100 is the full range
    assert PercentileCalibrator(100).compute_range(s, quantizer()) == (-s.amax, s.amax)


@pytest.mark.parametrize("p", [0, -1, 101, 100.5])
def test_percentile_out_of_range_rejected(p):
    with pytest.raises(ValueError, match="percentile"):
        PercentileCalibrator(p)
    with pytest.raises(ValueError, match="percentile"):
        make_calibrator("percentile", percentile=p)


@pytest.mark.parametrize("bits", [4, 8])
def test_mse_clips_laplace_below_the_max_with_lower_error_than_minmax(laplace, bits):
    s = stats_of(laplace)
    lo, hi = MSECalibrator().compute_range(s, quantizer(bits))
    assert lo == -hi and 0 < hi < s.amax
    assert quant_mse(laplace, lo, hi, bits) < quant_mse(laplace, -s.amax, s.amax, bits)
    # and no worse than any other candidate of a coarse sweep of the clip
    best_sweep = min(quant_mse(laplace, -t, t, bits) for t in np.linspace(0.05, 1.0, 40) * s.amax)
    assert quant_mse(laplace, lo, hi, bits) <= best_sweep * 1.02


def test_mse_asymmetric_and_options(laplace):
    x = laplace.abs() + 0.5  # non-negative data: the unsigned grid is used fully
    s = stats_of(x)
    lo, hi = MSECalibrator().compute_range(s, quantizer(4, symmetric=False))
    assert lo == 0.0 and 0 < hi < s.max
    assert quant_mse(x, lo, hi, 4, False) < quant_mse(x, 0.0, s.max, 4, False)
    with pytest.raises(ValueError):
        MSECalibrator(num_candidates=0)
    with pytest.raises(ValueError):
        MSECalibrator(min_fraction=0.0)


def brute_force_kl(hist: np.ndarray, levels: int) -> tuple[list[int], list[float]]:
    """TensorRT's entropy calibration, one candidate at a time."""
    n = len(hist)
    counts, divergences = [], []
    for i in range(levels, n + 1):
        p = hist[:i].astype(np.float64).copy()
        p[i - 1] += hist[i:].sum()
        q = np.zeros(i)
        groups = [j * levels // i for j in range(i)]
        for g in range(levels):
            members = [j for j in range(i) if groups[j] == g]
            nonzero = [j for j in members if hist[j] > 0]
            for j in nonzero:
                q[j] = hist[members].sum() / len(nonzero)
        p, q = p / p.sum(), q / q.sum()
        kl = 0.0
        for pj, qj in zip(p, q):
            if pj > 0:
                kl += math.inf if qj == 0 else pj * math.log(pj / qj)
        counts.append(i)
        divergences.append(kl)
    return counts, divergences


@pytest.fixture(scope="module")
def small_hist():
    rng = np.random.default_rng(3)
    hist = np.floor(rng.exponential(50.0, 64) * np.exp(-np.arange(64) / 12.0))
    hist[[5, 20, 33, 40, 41, 47, 58]] = 0  # empty bins, some of them where a candidate cut falls
    hist[63] = 2  # the last bin is occupied: every candidate threshold is a real one
    return hist


def test_entropy_kl_matches_brute_force(small_hist):
    counts, divs = kl_divergences(torch.from_numpy(small_hist), 8)
    ref_counts, ref_divs = brute_force_kl(small_hist, 8)
    assert counts.tolist() == ref_counts
    ref = torch.tensor(ref_divs, dtype=torch.float64)
    assert torch.equal(torch.isinf(divs), torch.isinf(ref))
    assert torch.isinf(ref).any()  # the Q = 0 < P case is exercised
    finite = ~torch.isinf(ref)
    torch.testing.assert_close(divs[finite], ref[finite], rtol=1e-9, atol=1e-12)
    assert int(counts[torch.argmin(divs)]) == ref_counts[int(np.argmin(ref_divs))]


def test_entropy_calibrator_uses_the_brute_force_threshold(small_hist):
    s = ActivationStats("blk.input_quantizer", bins=64)
    rng = np.random.default_rng(4)
    negative = np.floor(small_hist * rng.uniform(0, 1, 64))  # split each |x| bin between the two signs
    s.hist[64:] = torch.from_numpy(small_hist - negative)
    s.hist[:64] = torch.from_numpy(negative[::-1].copy())
    s.range, s.count = 6.4, int(small_hist.sum())
    s.min, s.max = -6.4, 6.3
    torch.testing.assert_close(s.abs_hist(), torch.from_numpy(small_hist))
    counts, divs = brute_force_kl(small_hist, 8)  # 4 bits signed: 2^3 levels
    best = counts[int(np.argmin(divs))]
    lo, hi = EntropyCalibrator().compute_range(s, quantizer(4))
    assert hi == pytest.approx(best * 0.1) and lo == -hi
    assert best < 64  # a real clip, not the whole range


def test_entropy_on_non_negative_data_uses_the_unsigned_grid(small_hist):
    s = ActivationStats("attn.probs_quantizer", bins=64)
    s.hist[64:] = torch.from_numpy(small_hist)  # |x| = x: nothing below zero
    s.range, s.count = 6.4, int(small_hist.sum())
    s.min, s.max = 0.05, 6.35
    counts, divs = brute_force_kl(small_hist, 16)  # 4 bits unsigned: 2^4 levels
    best = counts[int(np.argmin(divs))]
    lo, hi = EntropyCalibrator().compute_range(s, quantizer(4, symmetric=False))
    assert lo == 0.05 and hi == pytest.approx(best * 0.1)
    # the symmetric quantizer on the same data searches with 8 levels and clips at +-t
    counts8, divs8 = brute_force_kl(small_hist, 8)
    assert EntropyCalibrator().compute_range(s, quantizer(4))[1] == pytest.approx(counts8[int(np.argmin(divs8))] * 0.1)


STANDARD = ("minmax", "percentile", "mse", "entropy")


def test_registry_lists_valid_names_and_passes_options():
    assert set(STANDARD) <= set(CALIBRATORS)
    with pytest.raises(ValueError) as info:
        make_calibrator("nope")
    for name in CALIBRATORS:
        assert name in str(info.value)
    assert make_calibrator("percentile", percentile=99.0).percentile == 99.0
    assert make_calibrator("mse", weight_method="mse").weight_method == "mse"
    assert isinstance(make_calibrator("entropy"), EntropyCalibrator)


@pytest.fixture(scope="module")
def heavy_tailed_stats():
    torch.manual_seed(5)
    g = torch.Generator().manual_seed(5)
    t = torch.distributions.StudentT(torch.tensor(3.0)).sample((200_000,))
    laplace = torch.distributions.Laplace(0.0, 0.5).sample((100_000,))
    outliers = torch.tensor([60.0, -45.0, 80.0]) * (1 + torch.rand(3, generator=g))
    return stats_of(torch.cat([t, laplace, outliers])[torch.randperm(300_003, generator=g)])


def test_heavy_tails_give_four_different_ranges(heavy_tailed_stats):
    s, q = heavy_tailed_stats, quantizer(8)
    his = {name: make_calibrator(name).compute_range(s, q)[1] for name in STANDARD}
    assert len({round(h, 6) for h in his.values()}) == 4, his
    assert his["minmax"] == s.amax
    assert all(h < s.amax for name, h in his.items() if name != "minmax"), his
    # the swept percentile reaches the result
    p99 = make_calibrator("percentile", percentile=99.0).compute_range(s, q)[1]
    p9999 = make_calibrator("percentile", percentile=99.99).compute_range(s, q)[1]
    assert p99 < p9999 < s.amax


def test_all_zero_activation_gets_a_finite_range_from_every_calibrator():
    s = ActivationStats("dead.input_quantizer", bins=16)
    s.update(torch.zeros(100))
    for name in STANDARD:
        q = quantizer(4)
        lo, hi = make_calibrator(name).compute_range(s, q)
        assert math.isfinite(lo) and math.isfinite(hi) and lo <= 0 <= hi, name
        q.set_range(lo, hi)
        assert q(torch.zeros(3)).eq(0).all()


def test_weight_calibration_minmax_and_mse():
    torch.manual_seed(0)
    model = quantize_model(nn.Sequential(nn.Linear(16, 6)), Placement(weight=QuantSpec(4, True, "channel")))
    layer = model[0]
    with torch.no_grad():
        layer.weight[:, 0] *= 8  # an outlier column: MSE should clip it
    assert calibrate_weights(model, "minmax") == 1
    amax = layer.weight.detach().abs().amax(dim=1)
    torch.testing.assert_close(layer.weight_quantizer.scale, amax / 7)
    err_minmax = (layer.weight_quantizer._fake_quantize(layer.weight.detach()) - layer.weight).pow(2).sum(1)
    calibrate_weights(model, "mse", overwrite=True)
    err_mse = (layer.weight_quantizer._fake_quantize(layer.weight.detach()) - layer.weight).pow(2).sum(1)
    assert (err_mse <= err_minmax + 1e-7).all() and (err_mse < err_minmax).any()
    with pytest.raises(ValueError, match="unknown weight calibration method"):
        calibrate_weights(model, "gptq")

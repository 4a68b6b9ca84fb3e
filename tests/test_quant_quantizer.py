"""Known answers for the fake-quantization math (esc.quant.quantizer)."""

import pytest
import torch

from esc.quant.quantizer import Quantizer
from esc.quant.uniform_grid import integer_range, range_to_qparams
from esc.quant.spec import QuantSpec


def act(bits=8, symmetric=True, granularity="tensor", axis=-1, clip_ratio=1.0):
    spec = QuantSpec(bits, symmetric, granularity, clip_ratio=clip_ratio)
    return Quantizer("blk.input_quantizer", "activation", spec, axis=axis)


def test_integer_range():
    assert integer_range(4, True) == (-8, 7)
    assert integer_range(4, False) == (0, 15)
    assert integer_range(8, True) == (-128, 127)


@pytest.mark.parametrize("symmetric", [True, False])
def test_four_bits_give_at_most_sixteen_values(symmetric):
    q = act(4, symmetric)
    x = torch.randn(10_000, generator=torch.Generator().manual_seed(0)) * 3
    q.set_range(float(x.min()), float(x.max()))
    out = q(x)
    assert out.unique().numel() <= 16
    assert out.unique().numel() >= 14  # the range is actually used
    # values sit on the grid: integers after dividing by the scale (and removing the zero point)
    grid = out / q.scale + q.zero_point
    torch.testing.assert_close(grid, grid.round(), atol=1e-4, rtol=0)


def test_symmetric_zero_stays_zero_and_grid_is_symmetric():
    q = act(8, True)
    q.set_range(-3.0, 5.0)
    assert q.zero_point.item() == 0
    assert q.scale.item() == pytest.approx(5.0 / 127)
    x = torch.tensor([0.0, -0.0, 1e-9, 5.0, -5.0, 100.0, -100.0])
    out = q(x)
    assert out[0].item() == 0.0 and out[1].item() == 0.0 and out[2].item() == 0.0
    assert out[3].item() == pytest.approx(5.0) and out[4].item() == pytest.approx(-5.0)
    assert out[5].item() == pytest.approx(127 * q.scale.item())  # clipped to qmax
    assert out[6].item() == pytest.approx(-128 * q.scale.item())  # clipped to qmin


def test_asymmetric_range():
    q = act(8, False)
    q.set_range(-1.0, 3.0)
    scale, zp = q.scale.item(), q.zero_point.item()
    assert scale == pytest.approx(4.0 / 255)
    assert zp == round(1.0 / scale)
    lo, hi = q.clip_range()
    assert lo.item() == pytest.approx(-1.0, abs=scale) and hi.item() == pytest.approx(3.0, abs=scale)
    assert q(torch.zeros(3)).eq(0).all()  # zero stays exact with a zero point
    out = q(torch.tensor([-10.0, 10.0]))
    torch.testing.assert_close(out, torch.stack([lo, hi]).reshape(2))
    # a positive-only range still includes zero
    q.set_range(2.0, 4.0)
    assert q.zero_point.item() == 0 and q.scale.item() == pytest.approx(4.0 / 255)


def test_per_channel_weight_scales():
    w = torch.randn(6, 4, 3, generator=torch.Generator().manual_seed(0))
    w[2] *= 10
    q = Quantizer("conv.weight_quantizer", "weight", QuantSpec(4, True, "channel"), axis=0)
    lo, hi = torch.aminmax(w.reshape(6, -1), dim=1)
    q.set_range(lo, hi)
    assert q.scale.shape == (6,) and q.zero_point.shape == (6,)
    torch.testing.assert_close(q.scale, w.abs().reshape(6, -1).amax(dim=1) / 7)
    out = q(w)
    for c in range(6):  # each channel on its own grid of at most 16 values
        assert out[c].unique().numel() <= 16
        torch.testing.assert_close(out[c], torch.clamp(torch.round(w[c] / q.scale[c]), -8, 7) * q.scale[c])


@pytest.mark.parametrize("clip_ratio", [1.0, 0.6])
@pytest.mark.parametrize("symmetric", [True, False])
def test_per_token_dynamic_scales_by_hand(symmetric, clip_ratio):
    x = torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(1))
    x[0, 1] *= 50  # one loud token must not coarsen the others
    q = act(4, symmetric, "token", axis=-1, clip_ratio=clip_ratio)
    assert q.is_dynamic and q.is_calibrated and q.scale.item() == pytest.approx(clip_ratio)
    out = q(x)
    rows, expected = x.reshape(-1, 8), []
    qmin, qmax = integer_range(4, symmetric)
    for r in rows:  # the grid covers clip_ratio of each token's range
        lo, hi = clip_ratio * min(r.min().item(), 0.0), clip_ratio * max(r.max().item(), 0.0)
        if symmetric:
            scale, zp = max(-lo, hi) / qmax, 0
        else:
            scale = (hi - lo) / (qmax - qmin)
            zp = min(max(round(qmin - lo / scale), qmin), qmax)
        expected.append((torch.clamp(torch.round(r / scale) + zp, qmin, qmax) - zp) * scale)
    torch.testing.assert_close(out, torch.stack(expected).reshape(x.shape), atol=1e-5, rtol=1e-5)
    # the quiet tokens keep a fine grid: their error is far below the loud token's step
    assert (out[1] - x[1]).abs().max() < (out[0, 1] - x[0, 1]).abs().max() / 5


def test_per_token_over_channel_axis_of_conv_input():
    x = torch.randn(2, 5, 7, generator=torch.Generator().manual_seed(2))  # (batch, channels, time)
    q = act(8, True, "token", axis=1)
    out = q(x)
    by_hand = act(8, True, "token", axis=-1)(x.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(out, by_hand)


@pytest.mark.parametrize("granularity", ["tensor", "token"])
def test_straight_through_gradient(granularity):
    q = act(8, True, granularity)
    if granularity == "tensor":
        q.set_range(-1.0, 1.0)
        x = torch.tensor([[-0.9, -0.3, 0.0, 0.5, 0.99, -3.0, 2.0, 10.0]], requires_grad=True)
        inside = torch.tensor([[1, 1, 1, 1, 1, 0, 0, 0]], dtype=torch.float32)
    else:  # dynamic ranges cover every value: the gradient passes everywhere
        x = torch.randn(3, 8, requires_grad=True)
        inside = torch.ones(3, 8)
    q(x).sum().backward()
    assert torch.equal(x.grad, inside)


def test_disabled_quantizer_returns_its_input_object():
    q = act()
    q.enabled = False
    x = torch.randn(4)
    assert q(x) is x


def test_uncalibrated_enabled_quantizer_raises_with_its_name():
    with pytest.raises(RuntimeError, match="blk.input_quantizer"):
        act()(torch.randn(3))


@pytest.mark.parametrize(("kind", "bits"), [("activation", 1), ("activation", 9), ("activation", 16),
                                            ("weight", 1), ("weight", 17)])
def test_bits_out_of_range_raise_naming_the_quantizer(kind, bits):
    with pytest.raises(ValueError, match=r"'layer\.x_quantizer'.*bits"):
        Quantizer("layer.x_quantizer", kind, QuantSpec(bits))


def test_sixteen_bit_weights_are_allowed_and_nearly_lossless():
    w = torch.randn(4, 8)
    q = Quantizer("l.weight_quantizer", "weight", QuantSpec(16, True, "channel"))
    q.set_range(*torch.aminmax(w, dim=1))
    torch.testing.assert_close(q(w), w, atol=1e-4, rtol=0)


@pytest.mark.parametrize(("kind", "granularity"), [("weight", "token"), ("activation", "channel"),
                                                   ("activation", "row")])
def test_bad_granularity_raises(kind, granularity):
    with pytest.raises(ValueError, match="'q'"):
        Quantizer("q", kind, QuantSpec(8, True, granularity))


def test_bad_scale_rejected():
    q = act()
    with pytest.raises(ValueError, match="finite and positive"):
        q.set_qparams(torch.tensor(float("nan")), torch.tensor(0))
    with pytest.raises(ValueError, match="finite and positive"):
        q.set_qparams(torch.tensor(0.0), torch.tensor(0))


def test_zero_range_gets_a_tiny_positive_scale():
    scale, zp = range_to_qparams(torch.tensor(0.0), torch.tensor(0.0), 8, False)
    assert scale.item() > 0 and zp.item() == 0
    q = act(8, False)
    q.set_range(0.0, 0.0)
    assert q(torch.zeros(4)).eq(0).all()


def test_state_dict_adopts_saved_scale_shape():
    src = Quantizer("w", "weight", QuantSpec(8, True, "channel"))
    src.set_range(-torch.arange(1.0, 5.0), torch.arange(1.0, 5.0))
    dst = Quantizer("w", "weight", QuantSpec(8, True, "channel"))
    assert dst.scale.numel() == 0 and not dst.is_calibrated
    dst.load_state_dict(src.state_dict())
    assert torch.equal(dst.scale, src.scale) and torch.equal(dst.zero_point, src.zero_point)
    w = torch.randn(4, 3)
    assert torch.equal(dst(w), src(w))


@pytest.mark.parametrize("bits, symmetric, zero_point", [(8, True, 0), (4, True, 0), (2, True, 0), (16, True, 0),
                                                         (8, False, 7), (4, False, 3)])
def test_inference_fake_quantization_is_bit_exact_with_the_fused_kernel(bits, symmetric, zero_point):
    from esc.quant.uniform_grid import fake_quantize_inference, integer_range

    qmin, qmax = integer_range(bits, symmetric)
    x = torch.randn(50_000, generator=torch.Generator().manual_seed(bits)) * 3
    for value in (1e-4, 0.0123, 0.37):
        scale, zp = torch.tensor(value), torch.tensor(zero_point, dtype=torch.int32)
        expected = torch.fake_quantize_per_tensor_affine(x, scale, zp, qmin, qmax)
        assert torch.equal(fake_quantize_inference(x, scale, zp, qmin, qmax), expected)


def test_quantizer_uses_the_gradient_path_only_when_a_gradient_is_needed():
    q = Quantizer("x", "activation", QuantSpec(4, True, "tensor"))
    q.set_range(-1.0, 1.0)
    x = torch.linspace(-2, 2, 101, requires_grad=True)
    q(x).sum().backward()
    # Straight-through inside the clipping range (about [-8.5, 7.5] steps of 1/7), zero outside.
    inside = (x.detach() > -8 / 7) & (x.detach() < 1.0)
    assert torch.all(x.grad[inside] == 1) and torch.all(x.grad[x.detach().abs() > 1.3] == 0)
    with torch.no_grad():
        assert torch.equal(q(x), torch.fake_quantize_per_tensor_affine(x, q.scale, q.zero_point, -8, 7))

"""Cheap training augmentation of cached model inputs (a batch of float tensors), per example.

Inputs are cached once (see `esc.training.cache_inputs`), so every perturbation here works on the model's own input
tensors rather than on waveforms: the adapters' float inputs are `(batch, time)` (a raw waveform: wav2vec2) or
`(batch, time, frequency)` (a log-mel spectrogram: AST). Axis 1 is time in both, so time shift, speed (a stretch
along time) and time masks are generic; a spectrogram additionally gets frequency masks and a warp along the mel
axis. A stretch of the waveform is speed perturbation by resampling (speed and pitch together); a stretch of the
spectrogram's time axis is its tempo-only proxy; a stretch of its mel axis moves formants and harmonics up or down,
a cheap proxy for another speaker's vocal tract and pitch, which is what held-out voices differ in. A waveform can
also get a random low shelf (its low frequencies boosted or cut), since voices differ in how much of their energy
sits at the fundamental; a spectrogram, its spectral-tilt counterpart: a random straight-line gain in dB across the
mel axis (a voice whose energy sits low, like flite's slt, is a steeply tilted spectrum).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class AugmentConfig:
    """Strengths; every zero switches its perturbation off (all zero: inputs pass through unchanged).

    `time_shift`: circular shift up to this fraction of the length; `speed`: time stretch by a factor in
    1 +- speed; `mel_warp`: frequency-axis stretch by a factor in 1 +- mel_warp (spectrograms only);
    `time_masks` / `freq_masks`: how many masks, each up to `time_mask_width` / `freq_mask_width` of the axis;
    `low_shelf`: gain in +- low_shelf dB below a corner drawn in LOW_SHELF_CORNERS_HZ (waveforms only);
    `tilt`: a gain rising or falling linearly across the mel axis, the highest band up to +- tilt dB against the
    lowest (log-mel spectrograms only; the input's units per dB are passed to `augment_batch`).
    """

    time_shift: float = 0.0
    speed: float = 0.0
    mel_warp: float = 0.0
    time_masks: int = 0
    time_mask_width: float = 0.0
    freq_masks: int = 0
    freq_mask_width: float = 0.0
    low_shelf: float = 0.0
    tilt: float = 0.0


WAVEFORM_RATE = 16000  # every adapter's waveform input is 16 kHz audio
# Where a voice's fundamental and first harmonics lie (about 80-300 Hz): e.g. flite's slt has 74% of its energy at
# 80-300 Hz, the espeak-ng voices 8-26%.
LOW_SHELF_CORNERS_HZ = (150.0, 500.0)


def _factors(n: int, strength: float, generator: torch.Generator) -> torch.Tensor:
    return 1.0 + strength * (2.0 * torch.rand(n, generator=generator) - 1.0)


def stretch(x: torch.Tensor, axis: int, factors: torch.Tensor) -> torch.Tensor:
    """Each example resampled along `axis` by its factor (> 1: faster/higher), cropped or edge-padded to size.

    Output position i reads input position i * factor by linear interpolation, so the start of the axis stays put
    (the first frame in time, the lowest mel band in frequency).
    """
    moved = x.movedim(axis, -1)
    size = moved.shape[-1]
    positions = torch.arange(size, dtype=x.dtype).unsqueeze(0) * factors.to(x.dtype).unsqueeze(1)  # (B, size)
    positions = positions.clamp(max=size - 1)
    low = positions.floor().long()
    high = (low + 1).clamp(max=size - 1)
    weight = positions - low
    shape = (x.shape[0],) + (1,) * (moved.dim() - 2) + (size,)
    low, high, weight = (t.view(shape).expand_as(moved) for t in (low, high, weight))
    out = moved.gather(-1, low) * (1 - weight) + moved.gather(-1, high) * weight
    return out.movedim(-1, axis)


def time_shift(x: torch.Tensor, fraction: float, generator: torch.Generator) -> torch.Tensor:
    """Each example rolled along time by up to +- fraction of its length."""
    limit = int(fraction * x.shape[1])
    shifts = torch.randint(-limit, limit + 1, (x.shape[0],), generator=generator)
    return torch.stack([row.roll(int(s), dims=0) for row, s in zip(x, shifts)])


def mask(x: torch.Tensor, axis: int, count: int, width: float, generator: torch.Generator) -> torch.Tensor:
    """SpecAugment: `count` bands per example, each up to `width` of `axis`, set to the example's mean."""
    size = x.shape[axis]
    limit = max(1, int(width * size))
    keep = torch.ones(x.shape[0], size, dtype=torch.bool)
    for _ in range(count):
        widths = torch.randint(0, limit + 1, (x.shape[0],), generator=generator)
        starts = (torch.rand(x.shape[0], generator=generator) * (size - widths + 1)).long()
        index = torch.arange(size).unsqueeze(0)
        keep &= ~((index >= starts.unsqueeze(1)) & (index < (starts + widths).unsqueeze(1)))
    shape = [x.shape[0]] + [1] * (x.dim() - 1)
    shape[axis] = size
    # The mean (0 for normalised inputs) rather than 0, so a masked band carries no level information.
    fill = x.mean(dim=tuple(range(1, x.dim())), keepdim=True)
    return torch.where(keep.view(shape), x, fill)


def low_shelf(x: torch.Tensor, max_db: float, generator: torch.Generator) -> torch.Tensor:
    """Each waveform `(B, time)` with its low frequencies boosted or cut by up to +- `max_db` (4th-order shelf).

    Each example keeps its mean and standard deviation, since wav2vec2-style inputs are normalised per clip."""
    n, size = x.shape
    gains_db = max_db * (2.0 * torch.rand(n, generator=generator) - 1.0)
    low, high = LOW_SHELF_CORNERS_HZ
    corners = low + (high - low) * torch.rand(n, generator=generator)
    freqs = torch.fft.rfftfreq(size, d=1.0 / WAVEFORM_RATE)
    shelf = 1.0 / (1.0 + (freqs.unsqueeze(0) / corners.unsqueeze(1)) ** 4)  # 1 well below the corner, 0 above
    gain = 10.0 ** (gains_db.unsqueeze(1) / 20.0 * shelf)
    y = torch.fft.irfft(torch.fft.rfft(x.double(), dim=1) * gain, n=size, dim=1).to(x.dtype)
    mean, std = x.mean(1, keepdim=True), x.std(1, keepdim=True)
    return (y - y.mean(1, keepdim=True)) / y.std(1, keepdim=True).clamp_min(1e-12) * std + mean


def tilt(x: torch.Tensor, max_db: float, units_per_db: float, generator: torch.Generator) -> torch.Tensor:
    """Each log-mel spectrogram `(B, time, mel)` plus a gain linear in the mel band, from -g/2 dB at the lowest
    band to +g/2 at the highest, g drawn in +- `max_db` per example (centred, so the mean level stays put)."""
    n, bands = x.shape[0], x.shape[2]
    slopes_db = max_db * (2.0 * torch.rand(n, generator=generator) - 1.0)
    position = torch.linspace(-0.5, 0.5, bands, dtype=x.dtype)
    return x + (slopes_db.to(x.dtype).view(n, 1, 1) * position.view(1, 1, bands)) * units_per_db


def augment_input(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator,
                  units_per_db: float | None = None) -> torch.Tensor:
    """One float model input `(B, time[, frequency])`, perturbed per example as `cfg` says; `units_per_db`: how
    far one dB of power moves a spectrogram value (needed by `tilt`)."""
    n = x.shape[0]
    if x.dim() == 2 and cfg.low_shelf:  # before the masks, so their flat fill stays flat
        x = low_shelf(x, cfg.low_shelf, generator)
    if cfg.speed:
        x = stretch(x, 1, _factors(n, cfg.speed, generator))
    if cfg.time_shift:
        x = time_shift(x, cfg.time_shift, generator)
    if cfg.time_masks and cfg.time_mask_width:
        x = mask(x, 1, cfg.time_masks, cfg.time_mask_width, generator)
    if x.dim() == 3:
        if cfg.mel_warp:
            x = stretch(x, 2, _factors(n, cfg.mel_warp, generator))
        if cfg.tilt:  # before the frequency masks, so their flat fill stays flat
            if units_per_db is None:
                raise ValueError("augment.tilt needs a log-mel input whose units per dB are known; this model's "
                                 "inputs are not one")
            x = tilt(x, cfg.tilt, units_per_db, generator)
        if cfg.freq_masks and cfg.freq_mask_width:
            x = mask(x, 2, cfg.freq_masks, cfg.freq_mask_width, generator)
    return x


def augment_batch(batch: dict[str, torch.Tensor], cfg: AugmentConfig, generator: torch.Generator,
                  units_per_db: float | None = None) -> dict[str, torch.Tensor]:
    """The batch with its float tensors (the model inputs; masks and labels are integer) augmented."""
    return {k: augment_input(v, cfg, generator, units_per_db) if torch.is_floating_point(v) else v
            for k, v in batch.items()}

"""How far one run's scales sit from another's: per quantizer, the natural log of the ratio of its scales.

ESC searches log-multipliers of the MSE start, so comparing an ESC run's `scales.pt` with the MSE run's on the same
model, placement and data shows which quantizers its search moved and how far (0 = kept, +0.69 = doubled). Only
quantizers with one scale in both files are compared: per-tensor activation scales, per-token clip ratios, and
per-tensor weights; per-channel and group-wise weight scales are left out.

    python -m esc.scale_shift RUN_A/scales.pt RUN_B/scales.pt [--top 20]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch


def load_scale_file(path: str | Path) -> dict[str, dict]:
    """A `scales.pt` written by `esc.quant.model.save_scales`, with an error naming the file when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no scales file at {path}")
    saved = torch.load(path, weights_only=True)
    if not isinstance(saved, dict) or not all(isinstance(v, dict) and "scale" in v for v in saved.values()):
        raise ValueError(f"{path} is not a scales file written by esc (quantizer name -> scale and zero point)")
    return saved


def scale_shifts(base: str | Path, other: str | Path) -> dict[str, float]:
    """log(other scale / base scale) per quantizer that both files hold with one positive scale, largest move first.

    The two files must come from the same placement: a quantizer held by one file only, or at other bits or on
    another grid, is an error naming it (a comparison across placements would silently compare nothing)."""
    a, b = load_scale_file(base), load_scale_file(other)
    if set(a) != set(b):
        only = sorted(set(a) ^ set(b))
        raise ValueError(f"{base} and {other} hold different quantizers (e.g. {only[:3]}): not the same placement")
    shifts = {}
    for name, entry in a.items():
        if (entry["bits"], entry.get("grid")) != (b[name]["bits"], b[name].get("grid")):
            raise ValueError(f"{name}: {entry['bits']} bits in {base}, {b[name]['bits']} in {other} (or another grid)")
        sa, sb = entry["scale"], b[name]["scale"]
        if sa.numel() == 1 and sb.numel() == 1 and float(sa) > 0 and float(sb) > 0:
            shifts[name] = math.log(float(sb) / float(sa))
    return dict(sorted(shifts.items(), key=lambda kv: -abs(kv[1])))


def main(argv: list[str] | None = None) -> None:
    """Command line: print the largest moves, then how many quantizers moved at all."""
    parser = argparse.ArgumentParser(prog="python -m esc.scale_shift", description=__doc__.split("\n\n")[0])
    parser.add_argument("base", type=Path, help="scales.pt of the reference run (e.g. MSE)")
    parser.add_argument("other", type=Path, help="scales.pt of the run to compare (e.g. ESC)")
    parser.add_argument("--top", type=int, default=20, help="how many of the largest moves to print")
    args = parser.parse_args(argv)
    try:
        shifts = scale_shifts(args.base, args.other)
    except (FileNotFoundError, ValueError) as err:
        parser.exit(1, f"error: {err}\n")
    for name, shift in list(shifts.items())[:args.top]:
        print(f"{shift:+8.3f}  x{math.exp(shift):7.3f}  {name}")
    moved = sum(1 for s in shifts.values() if s != 0.0)  # a kept scale is copied exactly: log(1) = 0
    print(f"{moved} of {len(shifts)} single-scale quantizers moved")


if __name__ == "__main__":
    main()

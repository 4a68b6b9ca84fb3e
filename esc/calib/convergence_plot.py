"""ESC's convergence plot: fitness per generation from the search history (matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def save_convergence_plot(history: Sequence[dict], path: str | Path, start_f: float | None = None) -> Path:
    """Plot best, mean (with spread) and incumbent fitness per generation to a PNG (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    gens = [h["generation"] for h in history]
    mean = np.array([h["mean"] for h in history])
    spread = np.array([h["spread"] for h in history])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(gens, [h["best"] for h in history], label="generation best")
    ax.plot(gens, mean, label="generation mean")
    ax.fill_between(gens, mean - spread, mean + spread, alpha=0.2)
    ax.plot(gens, [h["incumbent"] for h in history], label="incumbent (all fitness batches)")
    if history and "validation_best" in history[0]:
        ax.plot(gens, [h["validation_best"] for h in history], label="best on validation batches")
    if start_f is not None:
        ax.axhline(start_f, color="gray", linestyle="--", label="local start")
    ax.set(xlabel="generation", ylabel="fitness", title="ESC convergence")
    ax.legend()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path

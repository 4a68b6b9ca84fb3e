"""ESC's budget curve: the held-out metric of the solution as it stood after a given number of evaluations.

A search records its solution after every generation (`ESCCalibrator.snapshots`), so one search with a large
budget answers "what would a smaller budget have given" without searching again: each point writes that
solution into the model, evaluates the evaluation split against the FP predictions, and puts the final solution
back. Users pick a budget from it (`budget_curve: [0, 50, 100, 200]` in a run's config; 0 is the local start).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import lightning as L
import numpy as np

from esc.evaluate import evaluate
from esc.models.base import ModelAdapter

log = logging.getLogger(__name__)


def budget_curve(calibrator, points: Sequence[int], adapter: ModelAdapter, trainer: L.Trainer,
                 loader: Callable[[], object], fp_predictions: Mapping[str, str]) -> list[dict]:
    """One record per evaluation count in `points`: the generation reached, its incumbent fitness (on all fitness
    batches; with `resample` only the start and the finalists are scored on all) and validation fitness, and the
    evaluation split's task scores and fidelity to FP with that generation's solution. Empty for calibrators
    that do not search; the model holds the calibrator's final solution afterwards."""
    if not points or not getattr(calibrator, "history", None):
        return []
    if any(int(p) < 0 for p in points):
        raise ValueError(f"budget_curve: evaluation counts must be >= 0, got {list(points)}")
    history, snapshots = calibrator.history, calibrator.snapshots
    curve = []
    for budget in sorted({int(p) for p in points}):
        # the generations that ended within the budget (a prefix: evaluations only grow); none: the local start
        reached = [h for h in history if h["evaluations"] <= budget]
        solution = snapshots[len(reached) - 1] if reached else np.zeros_like(snapshots[0])
        with calibrator.scales_written(solution):
            scored = evaluate(adapter, trainer, loader(), f"budget{budget}", fp_predictions)
        point = {"budget": budget, "generation": reached[-1]["generation"] if reached else 0,
                 "evaluations": reached[-1]["evaluations"] if reached else 1,
                 "incumbent": reached[-1]["incumbent"] if reached else calibrator.start_fitness,
                 **scored.scores, "fidelity_kl": scored.fidelity_kl, "agreement": scored.agreement}
        if reached and "validation_best" in reached[-1]:
            point["validation"] = reached[-1]["validation_best"]
        log.info("budget %d: %s", budget, point)
        curve.append(point)
    return curve

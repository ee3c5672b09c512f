"""The recommended N: the smallest training-set size whose fine-tuned models are good enough.

``recommend_n`` is the smallest N whose seed-averaged results pass every
criterion in :data:`DEFAULT_CRITERIA`; each criterion is a small pure function
of (summary at N, summary at the largest N), so a later EXAFS criterion is
one more function in that tuple. Pure functions of the validation numbers:
the study's summary and the ``learning-curve`` verb both use them.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

Criterion = Callable[[dict, dict], bool]


def force_mae_within(fraction: float = 0.10) -> Criterion:
    """Mean force MAE at N within ``fraction`` of the value at the largest N."""
    return lambda at_n, at_max: at_n["force_mae_ev_a_mean"] <= (1.0 + fraction) * at_max["force_mae_ev_a_mean"]


SLOPE_TOLERANCE = 0.03  # |softening slope - 1| that counts as "as stiff as DFT"


def slope_within(tolerance: float = SLOPE_TOLERANCE) -> Criterion:
    """Mean softening slope at N within ``tolerance`` of 1."""
    return lambda at_n, at_max: abs(at_n["softening_slope_mean"] - 1.0) <= tolerance


DEFAULT_CRITERIA: tuple[Criterion, ...] = (force_mae_within(0.10), slope_within(SLOPE_TOLERANCE))
RULE_TEXT = "smallest N with mean force MAE <= 1.10 x that at the largest N and |mean softening slope - 1| <= 0.03"


def recommend_n(summary: list[dict], criteria: tuple[Criterion, ...] = DEFAULT_CRITERIA) -> int | None:
    """Smallest N whose summary passes every criterion; None if none does."""
    if not summary:
        return None
    ordered = sorted(summary, key=lambda s: s["n"])
    at_max = ordered[-1]
    for at_n in ordered:
        if all(criterion(at_n, at_max) for criterion in criteria):
            return at_n["n"]
    return None


def summarize_by_n(rows: list[dict], keys=("force_mae_ev_a", "softening_slope", "energy_mae_mev_atom", "cmae_ev_a")) -> list[dict]:
    """Mean and sample standard deviation (n − 1 in the denominator; 0 for one seed) over seeds for each N.

    A few seeds are a sample of the draws a user might make: the population formula would understate their
    spread (by √(2/3) for three seeds).
    """
    summary = []
    for n in sorted({r["n"] for r in rows}):
        at_n = [r for r in rows if r["n"] == n]
        entry = {"n": n, "n_seeds": len(at_n)}
        for key in keys:
            if any(r.get(key) is None for r in at_n):  # e.g. no stress MAE without DFT stress: null, not NaN
                entry[f"{key}_mean"] = entry[f"{key}_std"] = None
                continue
            values = np.array([r[key] for r in at_n], dtype=float)
            entry[f"{key}_mean"] = float(values.mean())
            entry[f"{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        summary.append(entry)
    return summary

"""Plotting helpers in one place: the headless pyplot every stage draws with, the χ(k) / |FT| figures, the learning curve.

Stages write PNG (and SVG) files and never open a window, on a laptop, in a
study step's child process or in CI alike: the Agg backend is chosen here, once,
before pyplot is imported. The EXAFS stage, the comparison and the report draw
χ(k) and its Fourier transform with the same axes (:func:`chi_axes`, :func:`ft_axes`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # files only: no display in a study step, on a cluster node or in CI

import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402

from mlip_exafs.files import save_figure  # noqa: E402
from mlip_exafs.spectra import FTWindow, fourier_transform  # noqa: E402

if TYPE_CHECKING:  # the stage imports this module: its type only for annotations
    from mlip_exafs.exafs.stage import AveragedChi

__all__ = ["plt", "save_figure", "chi_axes", "ft_axes", "plot_chi", "plot_ft", "plot_models", "plot_learning_curve"]

FT_RMAX_A = 8.0  # |FT| panels end here: past the shells an MD cell or an EXAFS fit resolves


def chi_axes(ax, window: FTWindow) -> None:
    """Labels and k range of a k^w·χ(k) panel."""
    ax.set_xlabel("k (1/Å)")
    ax.set_ylabel(f"k$^{window.kweight}$ χ(k) (Å$^{{-{window.kweight}}}$)")
    ax.set_xlim(0, window.kmax_inv_a + 2)


def ft_axes(ax, window: FTWindow) -> None:
    """Labels and R range of a |FT k^w·χ| panel."""
    ax.set_xlabel("R (Å), no phase correction")
    ax.set_ylabel(f"|FT k$^{window.kweight}$χ| (Å$^{{-{window.kweight + 1}}}$)")
    ax.set_xlim(0, FT_RMAX_A)


def plot_chi(avg: AveragedChi, window: FTWindow, path: Path) -> None:
    """k^w·χ(k) of all frames, with the two halves and the ±2 block standard error when there are blocks."""
    k, w = avg.k_inv_a, avg.k_inv_a**window.kweight
    fig, ax = plt.subplots(figsize=(7, 4))
    if avg.n_blocks >= 2:
        ax.fill_between(k, w * (avg.chi - 2 * avg.stderr), w * (avg.chi + 2 * avg.stderr), color="C0", alpha=0.3, label="±2 block std. error")
        ax.plot(k, w * avg.first_half, "C1--", lw=0.8, label="first half")
        ax.plot(k, w * avg.second_half, "C2:", lw=0.8, label="second half")
    ax.plot(k, w * avg.chi, "C0", lw=1.2, label="all frames")
    chi_axes(ax, window)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def plot_ft(avg: AveragedChi, window: FTWindow, path: Path) -> None:
    """|FT| of all frames and of each half."""
    fig, ax = plt.subplots(figsize=(7, 4))
    curves = [("all frames", avg.chi, "C0")]
    if avg.n_blocks >= 2:
        curves += [("first half", avg.first_half, "C1"), ("second half", avg.second_half, "C2")]
    for label, chi, color in curves:
        ft = fourier_transform(avg.k_inv_a, chi, window)
        ax.plot(ft.r, ft.chir_mag, color=color, lw=1.2 if label == "all frames" else 0.8, label=label)
    ft_axes(ax, window)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def plot_models(chis: dict[str, tuple[np.ndarray, np.ndarray]], window: FTWindow, path: Path, reference: str | None = None) -> None:
    """Every potential's averaged χ(k) and |FT| on one figure: their differences are the point of a study.

    The curve named ``reference`` (the experiment, when there is one) is drawn in black, the others in colour.
    A journal page wide (7 in), PNG and SVG: it goes into a paper as it is.
    """
    fig, (ax_k, ax_r) = plt.subplots(1, 2, figsize=(7.0, 2.8), layout="constrained")
    colors = iter(f"C{i}" for i in range(len(chis)))
    for name, (k, chi) in chis.items():
        style = {"color": "k", "lw": 1.6} if name == reference else {"color": next(colors), "lw": 1.0}
        ax_k.plot(k, k**window.kweight * chi, label=name, **style)
        ft = fourier_transform(k, chi, window)
        ax_r.plot(ft.r, ft.chir_mag, label=name, **style)
    chi_axes(ax_k, window)
    ft_axes(ax_r, window)
    ax_r.legend(fontsize=7)
    save_figure(fig, path, vector=True)


def plot_learning_curve(rows: list[dict], summary: list[dict], baseline: dict, path: Path) -> None:
    """Force MAE and softening slope vs N: seeds as dots, mean +- std as a line, the pretrained model dashed."""
    fig, axes = plt.subplots(1, 2, figsize=(7.0, 2.8), layout="constrained")  # a journal page's width
    for ax, key, label in ((axes[0], "force_mae_ev_a", "force MAE (eV/Å)"), (axes[1], "softening_slope", "softening slope")):
        ns = [s["n"] for s in summary]
        ax.errorbar(ns, [s[f"{key}_mean"] for s in summary], yerr=[s[f"{key}_std"] for s in summary], marker="o", capsize=3, label="fine-tuned (mean ± std)")
        ax.scatter([r["n"] for r in rows], [r[key] for r in rows], s=10, color="gray", alpha=0.6, label="single seeds")
        ax.axhline(baseline[key], color="r", ls="--", lw=1, label="pretrained")
        ax.set_xscale("log")
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.minorticks_off()
        ax.set_xlabel("training structures N")
        ax.set_ylabel(label)
    axes[1].axhline(1.0, color="k", lw=0.6)
    axes[0].legend(fontsize=7, frameon=False)
    save_figure(fig, path, vector=True)

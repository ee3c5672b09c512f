"""One self-contained HTML report of a study: the answer first, the figures that decide it, the rest on demand.

The first screen is the verdict (``<section id="verdict">``): per potential its
softening slope, force MAE, σ² of the first shells against the experiment's own
fitted σ² (or, without an experiment, against the best fine-tuned model), its
EXAFS R-factor, and the recommended N with the rule that chose it, in sentences.
Then the deciding figures (learning curve, σ² per shell vs N, R-factor vs N,
the experiment with every potential); tables per seed and per test group,
galleries and provenance sit in collapsed ``<details>``. Plots are embedded as
base64 PNGs so the file can be mailed or archived alone; the report's own
figures are also written as SVG beside their PNG, journal-column sized, so they
go into a paper as they are. The report is built only from files on disk
(``summary.json`` — or the finished steps of an unfinished study — ``study.json``
and the step folders), so ``mlip-exafs report DIR`` can rebuild it any time.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from mlip_exafs.files import read_json, save_figure, write_text

SEED_SUFFIX = re.compile(r"-s(\d+)$")  # step folders of fine-tuned models end in -s{seed}
FINETUNED = re.compile(r"-ft-n(\d+)-s(\d+)$")
VERDICT_SHELLS = 2  # σ² of this many first shells go into the verdict (the experiment fit's shells when there is one)
COLUMN_IN, FULL_WIDTH_IN = 3.4, 7.0  # journal single-column and full-page widths


def natural(name: str) -> list:
    """Sort key that puts n2 before n10 and n100, as a reader of a learning curve expects."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


@dataclass
class StudyView:
    """What the report reads, once: the summary, the study record and the per-shell σ² errors of every MD."""

    folder: Path
    summary: dict
    record: dict
    sigma2_err: dict = field(default_factory=dict)  # potential -> shell -> σ² error (Å²) from analysis.json

    @property
    def steps(self) -> Path:
        return self.folder / "steps"

    @property
    def potentials(self) -> dict:
        return self.summary["potentials"]

    @property
    def pristine(self) -> list[str]:
        return [name for name in self.potentials if not FINETUNED.search(name)]

    @property
    def finetuned_md(self) -> list[tuple[int, str]]:
        """(N, name) of the fine-tuned models that have MD, N ascending."""
        found = [(int(m.group(1)), name) for name, v in self.potentials.items() if (m := FINETUNED.search(name)) and v.get("msrd")]
        return sorted(found)

    @property
    def fit(self) -> dict | None:
        return (self.summary.get("experiment") or {}).get("fit")

    def shells(self) -> list[str]:
        """The shells the verdict compares: the experiment fit's, else the first shells of the MDs."""
        if self.fit:
            return list(self.fit["shells"])[:VERDICT_SHELLS]
        with_md = [v["msrd"] for v in self.potentials.values() if v.get("msrd")]
        return list(with_md[0])[:VERDICT_SHELLS] if with_md else []


def load_view(study_dir: Path) -> StudyView:
    """summary.json, or for a study still running the summary of its finished steps (unfinished ones named)."""
    from mlip_exafs.study.pipeline import summary_of_finished_steps

    path = study_dir / "summary.json"
    summary = read_json(path) if path.exists() else summary_of_finished_steps(study_dir)
    view = StudyView(study_dir, summary, read_json(study_dir / "study.json"))
    for name in view.potentials:
        analysis = view.steps / f"analyze-{name}" / "analysis.json"
        if analysis.exists():
            shells = read_json(analysis)["trajectories"][0]["shells"]
            view.sigma2_err[name] = {s["label"]: s.get("sigma2_err") for s in shells}
    return view


def write_report(study_dir: Path) -> Path:
    """Build ``report.html`` (and its figures, PNG + SVG) from a study folder."""
    view = load_view(study_dir)
    parts = [_head(view.summary["study"]), _title(view), _verdict(view), _deciding_figures(view)]
    parts += [_parity_section(view), *_on_demand(view), "</body></html>"]
    out = study_dir / "report.html"
    write_text(out, "\n".join(p for p in parts if p))
    return out


# ---------------------------------------------------------------- page frame

def _head(title: str) -> str:
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:1.2em auto;color:#222;line-height:1.35}"
        "h1{font-size:1.45em;margin:0.2em 0}h2{font-size:1.2em;margin:1em 0 0.4em}"
        "table{border-collapse:collapse;margin:0.4em 0}td,th{border:1px solid #ccc;padding:2px 7px;text-align:right}"
        "th{background:#f0f0f0}td:first-child{text-align:left}img{max-width:100%;border:1px solid #eee}"
        "figure{display:inline-block;margin:4px;vertical-align:top}figure.half{width:48%}figure.third{width:31%}figure.wide{width:98%}"
        "figcaption{font-size:0.8em;color:#555}"
        "pre{background:#f7f7f7;padding:8px;overflow-x:auto;font-size:0.8em}"
        "#verdict{border:2px solid #2a6;border-radius:6px;padding:0.3em 1em 0.6em;background:#f6fbf7}"
        "#verdict h2{margin-top:0.3em}#verdict li{margin:0.15em 0}.answer{font-size:1.1em}"
        "details{margin:0.5em 0;border-top:1px solid #ddd;padding-top:0.3em}summary{font-weight:600;cursor:pointer}"
        "small{color:#555}@media print{details:not([open])>*:not(summary){display:none}}"
    )
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>mlip-exafs: {html.escape(title)}</title><style>{style}</style></head><body>"


def _title(view: StudyView) -> str:
    config = view.record["config"]
    dataset = config["dataset"]
    if isinstance(dataset, dict):
        dataset = f"sampled and labelled with CP2K in this study ({dataset['train']['structure']}, steps/dataset)"
    return (
        f"<h1>mlip-exafs study: {html.escape(view.summary['study'])}</h1>"
        f"<p><small>Structure {html.escape(str(config['structure']))}, absorber {html.escape(config['absorber'])}, "
        f"DFT dataset {html.escape(str(dataset))}, profile {html.escape(str(view.record.get('profile') or 'none (base config)'))}.</small></p>"
    )


def _section(title: str, body: str, anchor: str | None = None) -> str:
    ident = f" id='{anchor}'" if anchor else ""
    return f"<section{ident}><h2>{html.escape(title)}</h2>\n{body}</section>"


def _details(title: str, body: str) -> str:
    return f"<details><summary>{html.escape(title)}</summary>\n{body}</details>" if body else ""


# ---------------------------------------------------------------- the verdict

def _verdict(view: StudyView) -> str:
    items = [_pristine_sentence(view, name) for name in view.pristine]
    items += [_finetuned_sentence(view, n, name) for n, name in view.finetuned_md]
    if view.fit:
        items.append(_experiment_sentence(view))
    body = _recommendation(view) + "<ul>" + "".join(f"<li>{item}</li>" for item in items) + "</ul>" + _verdict_table(view)
    notes = []
    if view.finetuned_md or any(view.potentials[p].get("msrd") for p in view.pristine):
        notes.append("σ² from classical MD lacks zero-point motion, which the experiment includes; ratios are MD / reference." if view.fit
                     else "σ² are from classical MD (no zero-point motion); ratios are MD / reference.")
    if view.summary.get("unfinished_steps"):
        notes.append("Unfinished steps, not in this report yet: " + ", ".join(html.escape(s) for s in view.summary["unfinished_steps"]) + ".")
    body += "".join(f"<p><small>{note}</small></p>" for note in notes)
    return _section("Verdict", body, anchor="verdict")


def _recommendation(view: StudyView) -> str:
    """The answer to 'how much DFT does it take': the recommended N and the rule, in words."""
    n = view.summary.get("recommended_n")
    base = view.record["config"].get("finetune", {}).get("base", "the base model")
    rule = html.escape(view.summary.get("recommended_n_rule", ""))
    if n is None:
        return f"<p class='answer'><b>No training-set size met the criteria</b>{_closest(view.summary)}.</p><p><small>Rule: {rule}.</small></p>"
    largest = max((r["n"] for r in view.summary["learning_curve"]), default=n)
    caveat = " It is the largest N tried: the learning curve may not have flattened yet." if n == largest else ""
    return (f"<p class='answer'><b>Recommended: fine-tune {html.escape(base)} on N = {n} DFT-labelled structures.</b>{caveat}</p>"
            f"<p><small>Rule: {rule}.</small></p>")


def _closest(summary: dict) -> str:
    """Where the largest N stands when no N passes: what the reader needs to decide on more data."""
    rows = summary["learning_curve"]
    if not rows:
        return ""
    largest = max(r["n"] for r in rows)
    at_largest = [r for r in rows if r["n"] == largest]
    slope = sum(r["softening_slope"] for r in at_largest) / len(at_largest)
    force_mae = sum(r["force_mae_ev_a"] for r in at_largest) / len(at_largest)
    return (
        f" — at the largest N ({largest}, mean of {len(at_largest)} seed(s)) the softening slope is {slope:.3f} "
        f"and the force MAE {force_mae:.3f} eV/Å; label more structures or add a larger N"
    )


def stiffness(slope: float) -> str:
    """Too soft / too stiff / as stiff as DFT, with the learning-curve rule's tolerance on the slope."""
    from mlip_exafs.learning_curve import SLOPE_TOLERANCE

    if slope < 1.0 - SLOPE_TOLERANCE:
        return "too soft"
    return "too stiff" if slope > 1.0 + SLOPE_TOLERANCE else "as stiff as DFT"


def _pristine_sentence(view: StudyView, name: str) -> str:
    v = view.potentials[name]["validation"]
    text = (f"<b>Pretrained {html.escape(name)} is {stiffness(v['softening_slope'])}</b>: softening slope {v['softening_slope']:.2f} "
            f"(DFT = 1), force MAE {v['force_mae_ev_a']:.3f} eV/Å{_finetuned_reference(view)}.")
    return text + _sigma2_clause(view, name) + _r_factor_clause(view, name)


def _finetuned_reference(view: StudyView) -> str:
    """' (fine-tuned, N = 10: slope 0.99, 0.122 eV/Å)' at the recommended (else largest) N, mean over seeds."""
    rows = view.summary["learning_curve"]
    if not rows:
        return ""
    n = view.summary.get("recommended_n") or max(r["n"] for r in rows)
    at_n = [r for r in rows if r["n"] == n]
    slope = sum(r["softening_slope"] for r in at_n) / len(at_n)
    mae = sum(r["force_mae_ev_a"] for r in at_n) / len(at_n)
    return f"; fine-tuned on N = {n}: slope {slope:.2f}, {mae:.3f} eV/Å"


def _finetuned_sentence(view: StudyView, n: int, name: str) -> str:
    v = view.potentials[name]["validation"]
    seed = FINETUNED.search(name).group(2)
    text = (f"<b>Fine-tuned on N = {n}</b> (seed {seed}): {stiffness(v['softening_slope'])}, softening slope {v['softening_slope']:.2f}, "
            f"force MAE {v['force_mae_ev_a']:.3f} eV/Å.")
    return text + _sigma2_clause(view, name) + _r_factor_clause(view, name)


def sigma2_reference(view: StudyView) -> tuple[str, str | None, dict[str, tuple[float, float | None]]] | None:
    """What σ² is held against (words, model name or None, shell -> (σ², error)): the experiment's shell fit,
    else the fine-tuned MD at the recommended (else largest) N."""
    if view.fit:
        return "the experiment's", None, {s: (f["sigma2"], f["sigma2_err"]) for s, f in view.fit["shells"].items()}
    if not view.finetuned_md:
        return None
    recommended = view.summary.get("recommended_n")
    n, name = next(((n, m) for n, m in view.finetuned_md if n == recommended), view.finetuned_md[-1])
    msrd = view.potentials[name]["msrd"]
    return f"the fine-tuned N = {n} model's", name, {s: (msrd[s]["sigma2"], view.sigma2_err.get(name, {}).get(s)) for s in msrd}


def _sigma2_clause(view: StudyView, name: str) -> str:
    msrd = view.potentials[name].get("msrd")
    if not msrd:
        pending = f"md-{name}" in view.summary.get("unfinished_steps", [])
        return " Its MD is still running." if pending else ""
    reference = sigma2_reference(view)
    if reference is None or reference[1] == name:
        return " σ²: " + ", ".join(f"{s} {msrd[s]['sigma2']:.5f} Å²" for s in view.shells() if s in msrd) + "."
    whose, _, ref = reference
    parts = []
    for shell in view.shells():
        if shell not in msrd or shell not in ref or ref[shell][0] <= 0:
            continue
        md, md_err = msrd[shell]["sigma2"], view.sigma2_err.get(name, {}).get(shell)
        value, err = ref[shell]
        parts.append(f"{shell} {md:.5f} Å² is {md / value:.2f}× {whose} ({value:.5f}{_pm(err)} Å²{_bars(md, md_err, value, err)})")
    return (" Its σ² of " + "; ".join(parts) + ".") if parts else ""


def _pm(err: float | None) -> str:
    return f" ± {err:.5f}" if err else ""


def _bars(md: float, md_err: float | None, ref: float, ref_err: float | None) -> str:
    """', 8.9 error bars above': the difference in combined 1-σ errors, when there are errors."""
    combined = math.hypot(md_err or 0.0, ref_err or 0.0)
    if combined <= 0:
        return ""
    z = (md - ref) / combined
    return ", within the error bars" if abs(z) < 1 else f", {abs(z):.1f} error bars {'above' if z > 0 else 'below'}"


def _r_factor_clause(view: StudyView, name: str) -> str:
    e = view.potentials[name].get("exafs")
    if not e:
        return ""
    return f" Its MD-EXAFS fits the experiment with R-factor {e['r_factor_r']:.3f} (S0² {e['s02']:.2f}, ΔE0 {e['de0_ev']:.1f} eV)."


def _experiment_sentence(view: StudyView) -> str:
    fit = view.fit
    shells = "; ".join(f"σ²({s}) {f['sigma2']:.5f}{_pm(f['sigma2_err'])} Å² at {f['r']:.3f} Å (N = {f['n']:g})" for s, f in fit["shells"].items())
    source = Path(view.summary["experiment"].get("file", "")).name
    return (f"<b>The experiment</b> ({html.escape(source)}), fitted on its own with {len(fit['shells'])} FEFF shells of the ideal crystal "
            f"(N fixed, larch feffit, R-factor {fit['r_factor']:.4f}, S0² {fit['s02']:.2f}): {shells}.")


def _verdict_table(view: StudyView) -> str:
    shells = view.shells()
    has_exafs = any(v.get("exafs") for v in view.potentials.values())
    header = ["model", "softening slope", "force MAE (eV/Å)"] + [f"σ² {s} (Å²)" for s in shells] + (["EXAFS R-factor"] if has_exafs else [])
    names = view.pristine + [name for _, name in view.finetuned_md]
    rows = []
    for name in names:
        v = view.potentials[name]
        msrd = v.get("msrd") or {}
        row = [name, v["validation"]["softening_slope"], v["validation"]["force_mae_ev_a"]]
        row += [f"{msrd[s]['sigma2']:.5f}{_pm(view.sigma2_err.get(name, {}).get(s))}" if s in msrd else None for s in shells]
        rows.append(row + ([v["exafs"]["r_factor_r"] if v.get("exafs") else None] if has_exafs else []))
    if view.fit:
        fit_shells = view.fit["shells"]
        row = ["experiment (shell fit)", None, None] + [f"{fit_shells[s]['sigma2']:.5f}{_pm(fit_shells[s]['sigma2_err'])}" for s in shells]
        rows.append(row + ([f"{view.fit['r_factor']:.4f} (shell fit)"] if has_exafs else []))
    return _table(header, rows)


# ---------------------------------------------------------------- the deciding figures

def _deciding_figures(view: StudyView) -> str:
    figures = []
    if view.summary["learning_curve"]:
        path = view.folder / "learning_curve.png"
        plot_learning_curve(view.summary, path)
        figures.append(_img(path, "learning curve: force MAE and softening slope vs N (seeds as dots)", "half"))
    if view.finetuned_md and view.shells():
        path = view.folder / "sigma2_vs_n.png"
        plot_sigma2_vs_n(view, path)
        figures.append(_img(path, "σ² per shell vs N: fine-tuned MDs (points), pretrained (lines), experiment's shell fit (band)", "half"))
    if any(view.potentials[name].get("exafs") for _, name in view.finetuned_md):
        path = view.folder / "r_factor_vs_n.png"
        plot_r_factor_vs_n(view, path)
        figures.append(_img(path, "MD-EXAFS against the experiment: R-factor vs N (pretrained as lines)", "half"))
    fit_png = view.steps / "fit-experiment" / "experiment_fit.png"
    if fit_png.exists():
        figures.append(_img(fit_png, "the experiment and its own shell fit (FEFF paths of the ideal crystal)", "half"))
    overlay = _experiment_overlay(view.folder) or _exafs_overlay(view.folder)
    body = "\n".join(figures) + overlay
    note = "<p><small>Each figure is also in the study folder as SVG beside its PNG, sized for a journal page.</small></p>"
    return _section("The figures that decide it", body + note) if body else ""


def plot_learning_curve(summary: dict, path: Path) -> None:
    """The learning-curve figure of the learning-curve stage, with the study's first pretrained model as baseline."""
    from mlip_exafs.learning_curve import plot_learning_curve as plot, summarize_by_n

    rows = summary["learning_curve"]
    pristine = [v["validation"] for k, v in summary["potentials"].items() if not FINETUNED.search(k)]
    baseline = pristine[0] if pristine else {"force_mae_ev_a": float("nan"), "softening_slope": float("nan")}
    plot(rows, summarize_by_n(rows, keys=("force_mae_ev_a", "softening_slope")), baseline, path)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_sigma2_vs_n(view: StudyView, path: Path) -> None:
    """One panel per verdict shell: σ² of the fine-tuned MDs vs N, pretrained ones as lines, the experiment as a band."""
    plt = _pyplot()
    shells = view.shells()
    fig, axes = plt.subplots(1, len(shells), figsize=(COLUMN_IN * len(shells) / 1.5, 2.4), layout="constrained", squeeze=False)
    ns = [n for n, _ in view.finetuned_md]
    for ax, shell in zip(axes[0], shells):
        points = [(n, view.potentials[name]["msrd"].get(shell), view.sigma2_err.get(name, {}).get(shell)) for n, name in view.finetuned_md]
        points = [(n, s["sigma2"], e or 0.0) for n, s, e in points if s]
        ax.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[p[2] for p in points], fmt="o-", color="C0", ms=4, capsize=2, label="fine-tuned")
        for i, name in enumerate(p for p in view.pristine if (view.potentials[p].get("msrd") or {}).get(shell)):
            ax.axhline(view.potentials[name]["msrd"][shell]["sigma2"], color=f"C{i + 1}", ls="--", lw=1, label=name)
        if view.fit and shell in view.fit["shells"]:
            f = view.fit["shells"][shell]
            err = f["sigma2_err"] or 0.0
            ax.axhspan(f["sigma2"] - err, f["sigma2"] + err, color="0.8", zorder=0, label="experiment")
        ax.set_xscale("log")
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.minorticks_off()
        ax.set_xlabel("training structures N")
        ax.set_title(shell, fontsize=9)
    axes[0][0].set_ylabel("σ² (Å²)")
    legend = {label: handle for ax in axes[0] for handle, label in zip(*ax.get_legend_handles_labels())}
    fig.legend(legend.values(), legend.keys(), loc="outside lower center", ncols=min(4, len(legend)), fontsize=7, frameon=False)
    save_figure(fig, path, vector=True)


def plot_r_factor_vs_n(view: StudyView, path: Path) -> None:
    """R-space R-factor of each fine-tuned MD's EXAFS against the experiment vs N; pretrained as lines."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(COLUMN_IN, 2.4), layout="constrained")
    points = [(n, view.potentials[name]["exafs"]["r_factor_r"]) for n, name in view.finetuned_md if view.potentials[name].get("exafs")]
    ax.plot([p[0] for p in points], [p[1] for p in points], "o-", color="C0", ms=4, label="fine-tuned")
    for i, name in enumerate(p for p in view.pristine if view.potentials[p].get("exafs")):
        ax.axhline(view.potentials[name]["exafs"]["r_factor_r"], color=f"C{i + 1}", ls="--", lw=1, label=name)
    ax.set_xscale("log")
    ax.set_xticks([p[0] for p in points], [str(p[0]) for p in points])
    ax.minorticks_off()
    ax.set_ylim(bottom=0)
    ax.set_xlabel("training structures N")
    ax.set_ylabel("R-factor (R space)")
    ax.legend(fontsize=7, frameon=False)
    save_figure(fig, path, vector=True)


def _exafs_overlay(study_dir: Path) -> str:
    """One figure with every shown potential's χ(k) and |FT| (the pristine ones and the first seed of each N)."""
    from mlip_exafs.exafs import FTWindowSettings, plot_models, read_chi_csv  # imports ASE: only when a study has EXAFS

    steps = study_dir / "steps"
    folders = first_seed_only(sorted(steps.glob("exafs-*/"), key=lambda p: natural(p.name)))
    folders = [f for f in folders if (f / "chi.csv").exists() and (f / "exafs.json").exists()]
    if len(folders) < 2:
        return ""
    window = FTWindowSettings(**read_json(folders[0] / "exafs.json")["settings"]["ft"]).window()
    chis = {f.name.removeprefix("exafs-"): read_chi_csv(f / "chi.csv") for f in folders}
    path = study_dir / "exafs_models.png"
    plot_models(chis, window, path)
    return _img(path, "all potentials: k-weighted χ(k) and its Fourier transform", "wide")


def _experiment_overlay(study_dir: Path) -> str:
    """The experiment and every shown potential's χ(k), each with its own fitted S0² and ΔE0, on one figure."""
    import numpy as np

    from mlip_exafs.compare import FITTED_FILE
    from mlip_exafs.exafs import plot_models
    from mlip_exafs.spectra import FTWindow

    folders = first_seed_only(sorted(study_dir.glob("steps/compare-*/"), key=lambda p: natural(p.name)))
    folders = [f for f in folders if (f / FITTED_FILE).exists() and (f / "compare.json").exists()]
    if not folders:
        return ""
    fitted = {f.name.removeprefix("compare-"): np.loadtxt(f / FITTED_FILE, delimiter=",", skiprows=1, ndmin=2) for f in folders}
    c = read_json(folders[0] / "compare.json")
    window = FTWindow(c["kmin"], c["kmax"], c["settings"]["dk_inv_a"], c["kweight"])
    first = next(iter(fitted.values()))
    chis = {"experiment": (first[:, 0], first[:, 1])} | {name: (d[:, 0], d[:, 2]) for name, d in fitted.items()}
    path = study_dir / "exafs_experiment.png"
    plot_models(chis, window, path, reference="experiment")
    return _img(path, "experiment and every potential (each with its fitted S0², ΔE0): k-weighted χ(k) and its Fourier transform", "wide")


# ---------------------------------------------------------------- parity plots and everything on demand

def _parity_section(view: StudyView) -> str:
    """Parity plots of the pretrained models and the largest N (first seed); every other model's on demand."""
    folders = first_seed_only(sorted(view.steps.glob("validate-*/"), key=lambda p: natural(p.name)))
    if not folders:
        return ""
    largest = max((int(m.group(1)) for f in folders if (m := FINETUNED.search(f.name))), default=None)
    pristine = [f for f in folders if not FINETUNED.search(f.name)]
    shown = pristine + [f for f in folders if (m := FINETUNED.search(f.name)) and int(m.group(1)) == largest]
    others = [f for f in folders if f not in shown]
    body = "".join(_folder_images(f, "validate-", "third") for f in shown)
    body += _details(f"Parity plots of the other {len(others)} fine-tuned models", "".join(_folder_images(f, "validate-", "third") for f in others))
    return _section("Parity against held-out DFT (pretrained and largest N)", body)


def _folder_images(folder: Path, prefix: str, size: str) -> str:
    return "".join(_img(png, f"{folder.name[len(prefix):]}: {png.stem.replace('_', ' ')}", size) for png in sorted(folder.glob("*.png")))


def _on_demand(view: StudyView) -> list[str]:
    steps = view.steps
    fit_json = steps / "fit-experiment" / "experiment_fit.json"
    return [
        _details("Validation of every model against DFT (each N and seed, each kind of test structure)",
                 _validation_table(view.summary) + _group_table(steps)),
        _details("Structure from MD: σ² of every shell, RDFs, bond angles", _msrd_table(view.summary, steps) + _gallery(steps, "analyze-")),
        _details("Configuration-averaged EXAFS of each potential", _gallery(steps, "exafs-")),
        _details("Each potential against the experiment", _exafs_table(view.summary) + _fit_table(fit_json) + _gallery(steps, "compare-")),
        _details("Fine-tuning curves", _gallery(steps, "finetune-")),
        _details("Compute cost", _cost_table(steps)),
        _details("Provenance (study.json)", _provenance(view.record)),
    ]


def _table(header: list[str], rows: list[list]) -> str:
    def cell(v):
        if v is None:
            return "–"
        if isinstance(v, float):
            return f"{v:.4g}"
        return html.escape(str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _validation_table(summary: dict) -> str:
    keys = ["energy_mae_mev_atom", "force_mae_ev_a", "force_rmse_ev_a", "stress_mae_gpa", "softening_slope", "cmae_ev_a", "n_test_structures"]
    header = ["potential", "E MAE (meV/atom)", "F MAE (eV/Å)", "F RMSE (eV/Å)", "σ MAE (GPa)", "softening slope", "cMAE (eV/Å)", "test structures"]
    rows = [[name] + [entry["validation"][k] for k in keys] for name, entry in summary["potentials"].items()]
    return _table(header, rows)


def _group_table(steps_dir: Path) -> str:
    """Force errors per kind of test structure (validate_by_group.json of every validate step)."""
    rows = []
    for path in sorted(steps_dir.glob("validate-*/validate_by_group.json"), key=lambda p: natural(p.parent.name)):
        for group, g in read_json(path).items():
            rows.append([path.parent.name.removeprefix("validate-"), group, g["n_test_structures"], g["force_mae_ev_a"],
                         g["mean_abs_dft_force_ev_a"], g["softening_slope"], g["stress_mae_gpa"]])
    if not rows:
        return ""
    header = ["potential", "test structures made by", "n", "F MAE (eV/Å)", "mean |F_DFT| (eV/Å)", "softening slope", "σ MAE (GPa)"]
    return "<h3>By how the test structures were made</h3>" + _table(header, rows)


def _msrd_table(summary: dict, steps_dir: Path) -> str:
    with_md = {k: v["msrd"] for k, v in summary["potentials"].items() if v.get("msrd")}
    if not with_md:
        return ""
    shells = list(next(iter(with_md.values())))
    header = ["potential", "T (K), production mean ± std"] + [f"{s}: r (Å) / σ² (Å²)" for s in shells]
    rows = [[name, production_temperature(steps_dir / f"md-{name}")]
            + [f"{m[s]['r_mean']:.4f} / {m[s]['sigma2']:.5f}" if s in m else None for s in shells] for name, m in with_md.items()]
    note = ("<p><small>σ² grows with temperature (∝ T for a harmonic bond), so each row's σ² belongs to the temperature "
            "its MD actually ran at. All MDs of a study share the thermostat seed, so they ran at the same realized "
            "temperature and their σ² compare directly (docs/md.md).</small></p>")
    return _table(header, rows) + note


def production_temperature(md_folder: Path) -> str | None:
    """'mean ± std' of an MD step's production temperature (K); None if the folder has no md.json."""
    from mlip_exafs.md import SUMMARY_FILE, production_temperature_text  # md imports ASE: only when a study has MDs

    path = md_folder / SUMMARY_FILE
    return production_temperature_text(read_json(path)) if path.exists() else None


def _exafs_table(summary: dict) -> str:
    rows = [[name, e["r_factor_r"], e["r_factor_k"], e["s02"], e["de0_ev"], f"{e['kmin']}–{e['kmax']}", f"{e['rmin']}–{e['rmax']}"]
            for name, v in summary["potentials"].items() if (e := v.get("exafs"))]
    if not rows:
        return ""
    return _table(["potential", "R-factor (R)", "R-factor (k)", "S0²", "ΔE0 (eV)", "k range (Å⁻¹)", "R range (Å)"], rows)


def _fit_table(fit_json: Path) -> str:
    """The experiment's shell fit, every parameter with its error."""
    if not fit_json.exists():
        return ""
    fit = read_json(fit_json)
    rows = [[s, f["n"], f["r"], f.get("r_err"), f["sigma2"], f["sigma2_err"]] for s, f in fit["shells"].items()]
    head = (f"<h3>The experiment's own shell fit</h3><p>S0² {fit['s02']:.3f}{_pm(fit.get('s02_err'))}, ΔE0 {fit['de0_ev']:.2f} eV, "
            f"R-factor {fit['r_factor']:.4f}, k {fit['kmin']:g}–{fit['kmax']:g} Å⁻¹, R {fit['rmin']:g}–{fit['rmax']:.2f} Å, "
            f"{fit['n_variables']} variables, {fit['n_independent']:.1f} independent points.</p>")
    return head + _table(["shell", "N (fixed)", "r (Å)", "r error (Å)", "σ² (Å²)", "σ² error (Å²)"], rows)


def _img(path: Path, caption: str, size: str = "half") -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (f"<figure class='{size}'><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _gallery(steps_dir: Path, prefix: str) -> str:
    if not steps_dir.exists():
        return ""
    folders = sorted((p for p in steps_dir.iterdir() if p.name.startswith(prefix)), key=lambda p: natural(p.name))
    shown = first_seed_only(folders)
    figures = [_folder_images(folder, prefix, "half") for folder in shown]
    if len(shown) < len(folders):
        figures.append(f"<p><small>Plots of the first seed of each N; those of the other seeds are in "
                       f"<code>{html.escape(steps_dir.name)}/{prefix}*</code>, their numbers in the tables above.</small></p>")
    return "\n".join(f for f in figures if f)


def first_seed_only(folders: list[Path]) -> list[Path]:
    """Pristine folders and fine-tuned ones of the smallest seed: a paper study's 3 seeds x 7 N would
    otherwise put ~90 near-identical plots in the report."""
    seeds = [int(m.group(1)) for f in folders if (m := SEED_SUFFIX.search(f.name))]
    first = min(seeds, default=None)
    return [f for f in folders if not (m := SEED_SUFFIX.search(f.name)) or int(m.group(1)) == first]


def _cost_table(steps_dir: Path) -> str:
    """Wall time of every step, so a user sees what a profile costs on their machine."""
    records = [read_json(p) for p in sorted(steps_dir.glob("*/step.json"), key=lambda p: natural(p.parent.name))]
    rows = [[r["step"], _seconds(r.get("wall_s"))] for r in records]
    total = sum(r.get("wall_s") or 0.0 for r in records)
    note = "<p><small>Wall time of each step, killed and resumed runs included; steps on parallel workers overlap.</small></p>"
    return _table(["step", "wall time (s)"], rows + [["sum of steps", f"{_seconds(total)} ({total / 3600:.2f} h)"]]) + note


def _seconds(wall_s: float | None) -> str | None:
    """Whole seconds, so an MD's 22159 s does not read as 2.216e+04."""
    return None if wall_s is None else f"{wall_s:.1f}" if wall_s < 100 else f"{wall_s:.0f}"


def _provenance(record: dict) -> str:
    return "<pre>" + html.escape(json.dumps(record, indent=2, default=str)) + "</pre>"
